"""Landmark and ordinal-regression losses, per sample.

Every function returns ``Tensor[N]``, the loss of each sample (lower is better).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._utils import check_finite, check_positive, log1p, per_sample_sum
from .registry import MetricSpec, ParamSpec, TensorSpec, register

FAMILY = "landmarks"
SCORE = (TensorSpec("score", ("N",), "float32", "per-sample loss"),)


# -- functional core ----------------------------------------------------------------------
def wing(preds: Tensor, target: Tensor, w: float = 10.0, eps: float = 2.0) -> Tensor:
    """Wing loss per sample, summed over the sample's coordinates.

    With ``x = preds - target``: ``w ln(1 + |x| / eps)`` where ``|x| < w``, else
    ``|x| - C`` with ``C = w - w ln(1 + w / eps)``, which joins the two pieces continuously.
    preds, target (Tensor[N, *]), e.g. ``[N, L, 2]`` landmark coordinates.
    Returns Tensor[N] >= 0: the paper's Eq. 5 summed over the 2L coordinates of a shape.
    Feng et al. 2018, https://arxiv.org/abs/1711.06753 (w = 10, eps = 2 for pixel
    coordinates). Convention: many reimplementations average over coordinates instead,
    i.e. this divided by 2L.
    """
    x = (preds - target).abs()
    c = w - w * math.log(1.0 + w / eps)
    loss = torch.where(x < w, w * log1p(x / eps), x - c)  # export-safe log1p
    return per_sample_sum(loss)


def mean_variance(
    preds: Tensor, target: Tensor, lambda1: float = 0.2, lambda2: float = 0.05
) -> Tensor:
    """Mean-variance loss for age estimation per sample: ``L_s + λ1 L_m + λ2 L_v``.

    With ``p = softmax(preds)`` over ages ``j = 0 .. K-1``, ``m = Σ_j j p_j`` and
    ``v = Σ_j p_j (j - m)²``: ``L_s = -log p_round(y)`` (softmax cross-entropy on the age
    rounded half-to-even), ``L_m = ½ (m - y)²`` and ``L_v = v``.
    preds (Tensor[N, K]) logits; target (Tensor[N]) float ages in [0, K - 1].
    Returns Tensor[N], the total; its batch mean is the paper's loss, whose ``L_m`` and
    ``L_v`` are batch means too. Pan et al. 2018, "Mean-Variance Loss for Deep Age
    Estimation from a Face", CVPR (λ1 = 0.2, λ2 = 0.05).
    """
    num_classes = preds.shape[1]
    ages = torch.arange(num_classes, device=preds.device).to(preds.dtype).unsqueeze(0)
    logp = F.log_softmax(preds, dim=1)
    probs = logp.exp()
    mean = (probs * ages).sum(1)
    variance = (probs * (ages - mean.unsqueeze(1)).square()).sum(1)
    onehot = (torch.round(target).unsqueeze(1) == ages).to(preds.dtype)
    softmax_loss = -(logp * onehot).sum(1)
    mean_loss = 0.5 * (mean - target).square()
    return softmax_loss + lambda1 * mean_loss + lambda2 * variance


# -- modules ------------------------------------------------------------------------------
class Wing(nn.Module):
    def __init__(self, w: float = 10.0, eps: float = 2.0) -> None:
        super().__init__()
        self.w = float(w)
        self.eps = float(eps)

    def forward(self, preds: Tensor, target: Tensor) -> Tensor:
        return wing(preds, target, self.w, self.eps)


class MeanVariance(nn.Module):
    def __init__(self, lambda1: float = 0.2, lambda2: float = 0.05) -> None:
        super().__init__()
        self.lambda1 = float(lambda1)
        self.lambda2 = float(lambda2)

    def forward(self, preds: Tensor, target: Tensor) -> Tensor:
        return mean_variance(preds, target, self.lambda1, self.lambda2)


# -- samplers and domain checks -------------------------------------------------------------
def _sample_landmarks(gen: torch.Generator, sizes: Mapping[str, int], dtype: torch.dtype):
    n, points = sizes["N"], sizes["L"]
    target = torch.rand(n, points, 2, generator=gen, dtype=dtype) * 64
    # errors on both sides of w = 10: the log and the linear piece are both exercised
    preds = target + torch.randn(n, points, 2, generator=gen, dtype=dtype) * 8
    return {"preds": preds, "target": target}


def _sample_ages(gen: torch.Generator, sizes: Mapping[str, int], dtype: torch.dtype):
    n, k = sizes["N"], sizes["K"]
    preds = torch.randn(n, k, generator=gen, dtype=dtype) * 2
    # whole ages: rounding is then stable under gradcheck's perturbation
    target = torch.randint(0, k, (n,), generator=gen).to(dtype)
    return {"preds": preds, "target": target}


def _choice(gen: torch.Generator, values: list[float], shape: list[int], dtype: torch.dtype):
    table = torch.tensor(values, dtype=dtype)
    return table[torch.randint(0, len(values), shape, generator=gen)]


def _sample_landmarks_extreme(gen: torch.Generator, sizes: Mapping[str, int], dtype: torch.dtype):
    # errors from 1e-7 to 1e4: per sample all near 0, all near the default width w = 10
    # (just inside, at, just beyond), all far beyond, or all of those side by side; on
    # normalised ([0, 1)), pixel and 1e3-pixel coordinates (which hold the tiny errors only
    # as far as float32 resolves them)
    n, points = sizes["N"], sizes["L"]
    shape = [n, points, 2]
    scale = _choice(gen, [1.0, 1.0, 64.0, 1e3], [n, 1, 1], dtype)
    target = torch.rand(shape, generator=gen, dtype=dtype) * scale
    bands = [
        [0.0, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3],
        [10.0 - 1e-3, 10.0 - 1e-6, 10.0, 10.0 + 1e-6, 10.0 + 1e-3],
        [1e2, 1e3, 1e4],
        [0.0, 1e-7, 1e-5, 1e-3, 0.1, 2.0, 10.0 - 1e-3, 10.0, 10.0 + 1e-3, 1e2, 1e4],
    ]
    band = torch.randint(0, len(bands), (n, 1, 1), generator=gen)
    error = torch.zeros(shape, dtype=dtype)
    for index, values in enumerate(bands):
        error = torch.where(band == index, _choice(gen, values, shape, dtype), error)
    sign = torch.where(torch.rand(shape, generator=gen) < 0.5, -1.0, 1.0).to(dtype)
    return {"preds": target + sign * error, "target": target}


def _sample_landmarks_degenerate(
    gen: torch.Generator, sizes: Mapping[str, int], dtype: torch.dtype
):
    # perfect predictions (0), and every error exactly at the width w = 10 of the default
    n, points = sizes["N"], sizes["L"]
    target = (torch.rand(n, points, 2, generator=gen, dtype=dtype) * 64).floor()
    at_width = torch.rand(n, 1, 1, generator=gen) < 0.5
    preds = torch.where(at_width, target + 10.0, target)
    return {"preds": preds, "target": target}


def _sample_ages_extreme(gen: torch.Generator, sizes: Mapping[str, int], dtype: torch.dtype):
    # very peaked age distributions: one age ahead of the rest by 15 to 80 (on logits
    # shifted by up to 1e3), the target that age (confidently right), the farthest age
    # (confidently wrong) or a half age next to it (the softmax term's age rounds half-even)
    n, k = sizes["N"], sizes["K"]
    lead = torch.randint(0, k, (n,), generator=gen)
    margin = _choice(gen, [15.0, 40.0, 80.0], [n, 1], dtype)
    onehot = F.one_hot(lead, k).to(dtype)
    preds = torch.randn(n, k, generator=gen, dtype=dtype) + margin * onehot
    preds = preds + _choice(gen, [0.0, 1e3, -1e3], [n, 1], dtype)
    far = torch.where(lead < k / 2, k - 1, 0)
    half = (lead.to(dtype) + 0.5).clamp(max=k - 1)
    case = torch.randint(0, 3, (n,), generator=gen)
    target = torch.where(case == 0, lead.to(dtype), torch.where(case == 1, far.to(dtype), half))
    return {"preds": preds, "target": target}


def _sample_ages_degenerate(gen: torch.Generator, sizes: Mapping[str, int], dtype: torch.dtype):
    # all-equal logits (the uniform distribution) with the target at either end or inside
    n, k = sizes["N"], sizes["K"]
    preds = _choice(gen, [0.0, 7.5, -1e3], [n, 1], dtype).expand(n, k).clone()
    target = _choice(gen, [0.0, float(k - 1), (k - 1) / 2], [n], dtype)
    return {"preds": preds, "target": target}


def _validate_wing(params: Mapping[str, Any], inputs: Mapping[str, Tensor]) -> None:
    check_positive("w", params["w"])
    check_positive("eps", params["eps"])
    check_finite("preds", inputs["preds"])
    check_finite("target", inputs["target"])


def _validate_ages(params: Mapping[str, Any], inputs: Mapping[str, Tensor]) -> None:
    check_positive("lambda1", params["lambda1"], allow_zero=True)
    check_positive("lambda2", params["lambda2"], allow_zero=True)
    target = inputs["target"]
    top = inputs["preds"].shape[1] - 1
    check_finite("target", target)
    if target.numel() and (float(target.min()) < 0 or float(target.max()) > top):
        bad = float(target.min()) if float(target.min()) < 0 else float(target.max())
        raise ValueError(f"Expected `target` to hold ages in [0, {top}], got {bad:.4g}")


# -- registry -----------------------------------------------------------------------------
register(
    MetricSpec(
        name="wing",
        family=FAMILY,
        module=Wing,
        functional=wing,
        inputs=(
            TensorSpec("preds", ("N", "*"), "float32", "predicted coordinates, e.g. [N, L, 2]"),
            TensorSpec("target", ("N", "*"), "float32", "ground-truth coordinates"),
        ),
        outputs=SCORE,
        params=(
            ParamSpec("w", 10.0, "width of the non-linear (log) region; > 0"),
            ParamSpec("eps", 2.0, "curvature of the log region; > 0"),
        ),
        higher_is_better=False,
        paper="Feng et al. 2018, Wing Loss, arXiv:1711.06753",
        oracle="numpy piecewise formula; hand-worked values at |x| = 0, w",
        sample=_sample_landmarks,
        regimes={
            "extreme": _sample_landmarks_extreme,
            "degenerate": _sample_landmarks_degenerate,
        },
        summary="wing loss summed over coordinates",
        validate=_validate_wing,
        example_sizes={"N": 3, "L": 5},
    )
)

register(
    MetricSpec(
        name="mean_variance",
        family=FAMILY,
        module=MeanVariance,
        functional=mean_variance,
        inputs=(
            TensorSpec("preds", ("N", "K"), "float32", "logits over ages 0 .. K-1"),
            TensorSpec("target", ("N",), "float32", "ages in [0, K-1]"),
        ),
        outputs=SCORE,
        params=(
            ParamSpec("lambda1", 0.2, "weight of the mean loss"),
            ParamSpec("lambda2", 0.05, "weight of the variance loss"),
        ),
        higher_is_better=False,
        paper="Pan et al. 2018, Mean-Variance Loss for Deep Age Estimation (CVPR)",
        oracle="numpy re-implementation; hand-worked uniform distribution",
        sample=_sample_ages,
        regimes={"extreme": _sample_ages_extreme, "degenerate": _sample_ages_degenerate},
        summary="softmax CE + mean loss + variance loss over ages",
        validate=_validate_ages,
        example_sizes={"N": 3, "K": 6},
        min_sizes={"K": 1},
    )
)
