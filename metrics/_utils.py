"""Helpers shared by the metric families: reductions, input checks, samplers."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def per_sample_mean(x: Tensor) -> Tensor:
    """Mean over every axis but the first: ``[N, ...] -> [N]`` (``[N]`` passes through)."""
    if x.dim() == 1:
        return x
    return x.flatten(1).mean(1)


def per_sample_sum(x: Tensor) -> Tensor:
    """Sum over every axis but the first: ``[N, ...] -> [N]``."""
    if x.dim() == 1:
        return x
    return x.flatten(1).sum(1)


# -- stable forms ---------------------------------------------------------------------------
# Written so that they stay accurate after export in float32. ONNX has no Log1p or
# LogSigmoid operator: the exporter turns ``log1p(z)`` into ``Log(1 + z)`` (0 once z < 6e-8)
# and ``logsigmoid(x)`` into ``Log(Sigmoid(x))`` (-inf once sigmoid underflows, NaN in some
# gradients). Everything below uses only Exp, Log, Abs, Min/Max, Where and arithmetic.
def log1p(z: Tensor) -> Tensor:
    """``log(1 + z)`` for ``z > -1``, accurate in float32 in export-safe operators.

    With ``u = 1 + z`` (rounded), ``log(u) · z / (u - 1)`` cancels the rounding of ``u``
    (Goldberg 1991, "What every computer scientist should know about floating-point
    arithmetic", Theorem 4); where ``u`` rounds to 1, ``log1p(z) = z`` to within ``z²/2``.
    """
    u = 1.0 + z
    den = u - 1.0
    tiny = den == 0
    ratio = z / torch.where(tiny, torch.ones_like(den), den)
    return torch.where(tiny, z, torch.log(u) * ratio)


def log1p_exp_neg_abs(x: Tensor) -> Tensor:
    """``log(1 + exp(-|x|))``, accurate in float32 for every x, in export-safe operators."""
    return log1p(torch.exp(-x.abs()))


def softplus(x: Tensor) -> Tensor:
    """``log(1 + exp(x)) = max(x, 0) + log(1 + exp(-|x|))``: finite and accurate for all x."""
    return x.clamp(min=0.0) + log1p_exp_neg_abs(x)


def log_sigmoid(x: Tensor) -> Tensor:
    """``log σ(x) = -softplus(-x) = min(x, 0) - log(1 + exp(-|x|))``."""
    return x.clamp(max=0.0) - log1p_exp_neg_abs(x)


def sigmoid(x: Tensor) -> Tensor:
    """``1 / (1 + exp(-x))``; not ``torch.sigmoid``, whose CPU kernel computes the last
    ``numel mod 16`` elements with a scalar routine that differs from the vector one in the
    last bit, so an element's value would depend on how many rows share its batch."""
    return 1.0 / (1.0 + torch.exp(-x))


def power(x: Tensor, p: float) -> Tensor:
    """``x ** p`` for ``x >= 0``, the same bits wherever ``x`` sits in its batch.

    Exponents 1, 2 and 3 are products and 0.5 a square root (exact); any other is
    ``exp(p log x)``, because
    torch's ``pow`` by a general scalar has the same scalar-tail split as ``torch.sigmoid``.
    ``x = 0`` gives 0 for ``p > 0``.
    """
    if p in (1.0, 2.0, 3.0):
        return x.pow(int(p))
    if p == 0.5:
        return torch.sqrt(x)
    if p == 0.0:
        return torch.ones_like(x)
    return torch.exp(p * torch.log(x))


def check_positive(name: str, value: float, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        bound = "non-negative" if allow_zero else "positive"
        raise ValueError(f"Expected `{name}` to be {bound}, got {value}")


def check_range(name: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise ValueError(f"Expected `{name}` to be in [{low}, {high}], got {value}")


def check_labels(
    name: str, target: Tensor, num_classes: int, ignore_index: int | None = None
) -> None:
    """Class indices must lie in ``[0, num_classes)`` (or equal ``ignore_index``)."""
    if target.numel() == 0:
        return
    valid = target if ignore_index is None else target[target != ignore_index]
    if valid.numel() == 0:
        return
    low, high = int(valid.min()), int(valid.max())
    if low < 0 or high >= num_classes:
        bad = low if low < 0 else high
        extra = f" or {ignore_index}" if ignore_index is not None else ""
        raise ValueError(
            f"Expected `{name}` to hold class indices in [0, {num_classes - 1}]{extra}, got {bad}"
        )


def check_unit_interval(name: str, x: Tensor) -> None:
    if x.numel() and (bool((x < 0).any()) or bool((x > 1).any())):
        raise ValueError(
            f"Expected `{name}` to hold values in [0, 1], got range "
            f"[{float(x.min()):.4g}, {float(x.max()):.4g}]"
        )


def as_weight(values: Sequence[float] | None) -> Tensor:
    """Class weights as a buffer; an empty tensor means "no weights"."""
    if values is None:
        return torch.empty(0)
    return torch.tensor([float(v) for v in values], dtype=torch.float32)


def check_binary(name: str, x: Tensor) -> None:
    """Values must be exactly 0 or 1 (labels or masks carried as floats)."""
    if x.numel() and not bool(((x == 0) | (x == 1)).all()):
        bad = x[(x != 0) & (x != 1)][0]
        raise ValueError(f"Expected `{name}` to hold only 0 and 1, got {float(bad):.4g}")


def check_finite(name: str, x: Tensor) -> None:
    if x.numel() and not bool(torch.isfinite(x).all()):
        raise ValueError(f"Expected `{name}` to hold finite values, got inf or NaN")
