"""Samplers of the pixel-wise and classification losses (:mod:`metrics.pixel`).

These draw the typical / extreme / degenerate inputs (``registry.REGIMES``) that the
registry-driven tests and benches use (see :mod:`metrics.samples`). The family's domain
checks (the specs' ``validate``) live here with them, as they did in one section there.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .._utils import check_labels, check_positive, check_range, check_unit_interval


def pair_sampler(kind: str):
    def sample(gen: torch.Generator, sizes: Mapping[str, int], dtype: torch.dtype):
        shape = [sizes["N"], sizes["H"], sizes["W"]]
        preds = torch.randn(shape, generator=gen, dtype=dtype)
        if kind == "regression":
            target = torch.randn(shape, generator=gen, dtype=dtype)
        else:
            target = (torch.rand(shape, generator=gen, dtype=dtype) > 0.5).to(dtype)
            if kind == "probability":
                preds = torch.rand(shape, generator=gen, dtype=dtype) * 0.98 + 0.01
        return {"preds": preds, "target": target}

    return sample


def _choice(gen: torch.Generator, values: list[float], shape: list[int], dtype: torch.dtype):
    table = torch.tensor(values, dtype=dtype)
    return table[torch.randint(0, len(values), shape, generator=gen)]


# Confident logits: each element is ±15, ±40 or ±80 (|logsigmoid| overflows float32's
# Log(Sigmoid(x)) from |x| ~ 17), so with random 0/1 targets half are confidently right and
# half confidently wrong; a few moderate ones keep the mean from being a single term.
_CONFIDENT = [-80.0, -40.0, -20.0, -15.0, -2.0, 0.5, 15.0, 17.0, 20.0, 40.0, 80.0]


def _pair_extreme(kind: str):
    def sample(gen: torch.Generator, sizes: Mapping[str, int], dtype: torch.dtype):
        shape = [sizes["N"], sizes["H"], sizes["W"]]
        if kind == "regression":
            # errors from 1e-6 to 1e4 side by side, on large offsets
            scale = _choice(gen, [1e-6, 1e-3, 1.0, 1e2, 1e4], shape, dtype)
            offset = _choice(gen, [0.0, 1e3, -1e4], shape, dtype)
            target = offset + torch.randn(shape, generator=gen, dtype=dtype)
            preds = target + scale * torch.randn(shape, generator=gen, dtype=dtype)
            return {"preds": preds, "target": target}
        target = (torch.rand(shape, generator=gen, dtype=dtype) > 0.5).to(dtype)
        if kind == "probability":
            # probabilities at and next to 0 and 1: confident right and confident wrong
            preds = _choice(
                gen, [0.0, 1e-12, 1e-7, 1e-3, 0.5, 1 - 1e-3, 1 - 1e-7, 1.0], shape, dtype
            )
            return {"preds": preds, "target": target}
        return {"preds": _choice(gen, _CONFIDENT, shape, dtype), "target": target}

    return sample


def _pair_degenerate(kind: str):
    def sample(gen: torch.Generator, sizes: Mapping[str, int], dtype: torch.dtype):
        shape = [sizes["N"], sizes["H"], sizes["W"]]
        if kind == "regression":
            # identical pairs (loss 0) and constant ones
            target = torch.randn(shape, generator=gen, dtype=dtype)
            same = torch.rand(sizes["N"], 1, 1, generator=gen) < 0.5
            preds = torch.where(same, target, torch.full_like(target, 3.0))
            return {"preds": preds, "target": target}
        if kind == "probability":
            # predictions equal to hard targets (0 and 1 exactly), and a flat 0.5
            target = (torch.rand(shape, generator=gen, dtype=dtype) > 0.5).to(dtype)
            same = torch.rand(sizes["N"], 1, 1, generator=gen) < 0.5
            return {
                "preds": torch.where(same, target, torch.full_like(target, 0.5)),
                "target": target,
            }
        # zero logits against soft and all-equal targets
        target = _choice(gen, [0.0, 0.5, 1.0], [sizes["N"], 1, 1], dtype).expand(shape).clone()
        return {"preds": torch.zeros(shape, dtype=dtype), "target": target}

    return sample


def pair_regimes(kind: str):
    return {"extreme": _pair_extreme(kind), "degenerate": _pair_degenerate(kind)}


def sample_ce(gen: torch.Generator, sizes: Mapping[str, int], dtype: torch.dtype):
    n, c, h, w = sizes["N"], sizes["C"], sizes["H"], sizes["W"]
    preds = torch.randn(n, c, h, w, generator=gen, dtype=dtype) * 2
    target = torch.randint(0, c, (n, h, w), generator=gen)
    return {"preds": preds, "target": target}


def sample_ce_extreme(gen: torch.Generator, sizes: Mapping[str, int], dtype: torch.dtype):
    # one class far ahead (by 15 to 80) of the rest; the target is it or another class
    n, c, h, w = sizes["N"], sizes["C"], sizes["H"], sizes["W"]
    lead = torch.randint(0, c, (n, h, w), generator=gen)
    margin = _choice(gen, [15.0, 40.0, 80.0], [n, 1, h, w], dtype)
    onehot = F.one_hot(lead, c).permute(0, 3, 1, 2).to(dtype)
    preds = torch.randn(n, c, h, w, generator=gen, dtype=dtype) + margin * onehot
    preds = preds + _choice(gen, [0.0, 1e3, -1e3], [n, 1, 1, 1], dtype)  # shift: no effect
    target = torch.where(torch.rand(n, h, w, generator=gen) < 0.5, lead, (lead + 1) % c)
    return {"preds": preds, "target": target}


def sample_ce_degenerate(gen: torch.Generator, sizes: Mapping[str, int], dtype: torch.dtype):
    # every logit equal: the loss is log C wherever the target is
    n, c, h, w = sizes["N"], sizes["C"], sizes["H"], sizes["W"]
    preds = torch.full((n, c, h, w), 2.5, dtype=dtype)
    return {"preds": preds, "target": torch.randint(0, c, (n, h, w), generator=gen)}


def sample_kl(gen: torch.Generator, sizes: Mapping[str, int], dtype: torch.dtype):
    n, c, h = sizes["N"], sizes["C"], sizes["H"]
    preds = F.log_softmax(torch.randn(n, c, h, generator=gen, dtype=dtype), dim=1)
    target = F.softmax(torch.randn(n, c, h, generator=gen, dtype=dtype) * 2, dim=1)
    return {"preds": preds, "target": target}


def sample_kl_extreme(gen: torch.Generator, sizes: Mapping[str, int], dtype: torch.dtype):
    # near one-hot distributions: log-probabilities down to ~-80, targets with exact zeros
    n, c, h = sizes["N"], sizes["C"], sizes["H"]
    preds = F.log_softmax(torch.randn(n, c, h, generator=gen, dtype=dtype) * 30, dim=1)
    target = F.softmax(torch.randn(n, c, h, generator=gen, dtype=dtype) * 30, dim=1)
    target = torch.where(target < 1e-20, torch.zeros_like(target), target)
    return {"preds": preds, "target": target}


def sample_kl_degenerate(gen: torch.Generator, sizes: Mapping[str, int], dtype: torch.dtype):
    # preds equal to log(target): KL 0, one-hot targets included
    n, c, h = sizes["N"], sizes["C"], sizes["H"]
    target = F.softmax(torch.randn(n, c, h, generator=gen, dtype=dtype), dim=1)
    onehot = F.one_hot(torch.randint(0, c, (n, h), generator=gen), c).permute(0, 2, 1).to(dtype)
    target = torch.where(torch.rand(n, 1, 1, generator=gen) < 0.5, target, onehot)
    preds = torch.log(target.clamp(min=1e-30))
    return {"preds": preds, "target": target}


# -- domain checks -------------------------------------------------------------------------
def validate_ce(params: Mapping[str, Any], inputs: Mapping[str, Tensor]) -> None:
    num_classes = inputs["preds"].shape[1]
    weight = params.get("weight")
    if weight is not None and len(weight) != num_classes:
        raise ValueError(
            f"Expected `weight` to have one entry per class ({num_classes}), got {len(weight)}"
        )
    check_labels("target", inputs["target"], num_classes, params["ignore_index"])


def validate_probability(params: Mapping[str, Any], inputs: Mapping[str, Tensor]) -> None:
    check_unit_interval("preds", inputs["preds"])
    check_unit_interval("target", inputs["target"])


def validate_binary_target(params: Mapping[str, Any], inputs: Mapping[str, Tensor]) -> None:
    check_unit_interval("target", inputs["target"])


def validate_kl(params: Mapping[str, Any], inputs: Mapping[str, Tensor]) -> None:
    preds, target = inputs["preds"], inputs["target"]
    if preds.numel() and bool((preds > 1e-6).any()):
        raise ValueError(
            f"Expected `preds` to hold log-probabilities (<= 0), got max {float(preds.max()):.4g}"
        )
    if target.numel() and bool((target < 0).any()):
        raise ValueError(
            f"Expected `target` to hold probabilities (>= 0), got min {float(target.min()):.4g}"
        )


def validate_smooth_l1(params: Mapping[str, Any], inputs: Mapping[str, Tensor]) -> None:
    check_positive("beta", params["beta"], allow_zero=True)


def validate_focal(params: Mapping[str, Any], inputs: Mapping[str, Tensor]) -> None:
    check_positive("gamma", params["gamma"], allow_zero=True)
    if params["alpha"] >= 0:
        check_range("alpha", params["alpha"], 0.0, 1.0)
    check_unit_interval("target", inputs["target"])


def validate_balanced(params: Mapping[str, Any], inputs: Mapping[str, Tensor]) -> None:
    check_range("alpha", params["alpha"], 0.0, 1.0)
    check_unit_interval("target", inputs["target"])
