"""Bounding-box regression losses on aligned box pairs, per sample.

Boxes are ``(x1, y1, x2, y2)`` with ``x1 <= x2`` and ``y1 <= y2``; ``preds[i]`` is scored
against ``target[i]`` and every function returns ``Tensor[N]``, the loss of each pair (lower
is better). Formulas and the placement of ``eps`` follow torchvision's ``ops``
(``generalized_box_iou_loss``, ``distance_box_iou_loss``, ``complete_box_iou_loss``):
``IoU = I / (U + eps)`` with ``eps = 1e-7``. Zero-area and disjoint boxes give finite losses.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ._utils import check_positive
from .registry import MetricSpec, ParamSpec, TensorSpec, register

FAMILY = "boxes"
PAIR = (
    TensorSpec("preds", ("N", 4), "float32", "predicted boxes (x1, y1, x2, y2)"),
    TensorSpec("target", ("N", 4), "float32", "ground-truth boxes (x1, y1, x2, y2)"),
)
SCORE = (TensorSpec("score", ("N",), "float32", "per-pair loss"),)
EPS = 1e-7  # torchvision's default


# -- box helpers --------------------------------------------------------------------------
def _area(boxes: Tensor) -> Tensor:
    x1, y1, x2, y2 = boxes.unbind(-1)
    return (x2 - x1) * (y2 - y1)


def _inter_union(preds: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Intersection and union areas of aligned pairs: ``[N, 4] x [N, 4] -> [N], [N]``."""
    x1, y1, x2, y2 = preds.unbind(-1)
    x1g, y1g, x2g, y2g = target.unbind(-1)
    w = (torch.min(x2, x2g) - torch.max(x1, x1g)).clamp(min=0.0)
    h = (torch.min(y2, y2g) - torch.max(y1, y1g)).clamp(min=0.0)
    inter = w * h
    return inter, _area(preds) + _area(target) - inter


def _enclosing(preds: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Width and height of the smallest box enclosing each pair."""
    x1, y1, x2, y2 = preds.unbind(-1)
    x1g, y1g, x2g, y2g = target.unbind(-1)
    return torch.max(x2, x2g) - torch.min(x1, x1g), torch.max(y2, y2g) - torch.min(y1, y1g)


def _iou(preds: Tensor, target: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """``(I / (U + eps), U)``."""
    inter, union = _inter_union(preds, target)
    return inter / (union + eps), union


def _diou_penalty(preds: Tensor, target: Tensor, eps: float) -> Tensor:
    """Squared centre distance over the squared enclosing diagonal: ``ρ² / (c² + eps)``."""
    x1, y1, x2, y2 = preds.unbind(-1)
    x1g, y1g, x2g, y2g = target.unbind(-1)
    cw, ch = _enclosing(preds, target)
    # Centre offsets as sums of corner differences, not differences of corner sums: for
    # small boxes far from the origin the sums round away the offset (x ~ 1e4, w ~ 1e-3).
    rho2 = (((x1 - x1g) + (x2 - x2g)) * 0.5).square() + (((y1 - y1g) + (y2 - y2g)) * 0.5).square()
    return rho2 / (cw.square() + ch.square() + eps)


def _aspect_angle(boxes: Tensor) -> Tensor:
    """``atan2(w, h)``: ``atan(w / h)`` where ``h > 0``, ``π/2`` for ``h = 0``, 0 for a point.

    A point box (w = h = 0) gets ``h = 1`` first: the angle stays 0 and its gradient, which is
    0/0 for ``atan2(0, 0)``, becomes finite.
    """
    x1, y1, x2, y2 = boxes.unbind(-1)
    w = x2 - x1
    h = y2 - y1
    point = (w == 0) & (h == 0)
    return torch.atan2(w, torch.where(point, torch.ones_like(h), h))


# -- functional core ----------------------------------------------------------------------
def iou(preds: Tensor, target: Tensor, eps: float = EPS) -> Tensor:
    """IoU loss per pair: ``1 - I / (U + eps)``.

    preds, target (Tensor[N, 4]) boxes ``(x1, y1, x2, y2)``. Returns Tensor[N] in [0, 1]:
    0 for identical boxes (up to eps), 1 for disjoint ones and for zero-area ones.
    Yu et al. 2016, UnitBox, https://arxiv.org/abs/1608.01471 (the linear IoU loss).
    """
    value, _ = _iou(preds, target, eps)
    return 1.0 - value


def giou(preds: Tensor, target: Tensor, eps: float = EPS) -> Tensor:
    """Generalized IoU loss per pair: ``1 - (IoU - (A_c - U) / (A_c + eps))``.

    ``A_c`` is the area of the smallest box enclosing both. preds, target (Tensor[N, 4]) boxes
    ``(x1, y1, x2, y2)``. Returns Tensor[N] in [0, 2], as torchvision's
    ``generalized_box_iou_loss(reduction="none")``.
    Rezatofighi et al. 2019, https://arxiv.org/abs/1902.09630.
    """
    value, union = _iou(preds, target, eps)
    cw, ch = _enclosing(preds, target)
    area_c = cw * ch
    return 1.0 - (value - (area_c - union) / (area_c + eps))


def diou(preds: Tensor, target: Tensor, eps: float = EPS) -> Tensor:
    """Distance IoU loss per pair: ``1 - IoU + ρ² / (c² + eps)``.

    ``ρ`` is the distance between the box centres, ``c`` the diagonal of the smallest
    enclosing box. preds, target (Tensor[N, 4]) boxes ``(x1, y1, x2, y2)``. Returns Tensor[N]
    in [0, 2), as torchvision's ``distance_box_iou_loss(reduction="none")``.
    Zheng et al. 2020, https://arxiv.org/abs/1911.08287.
    """
    value, _ = _iou(preds, target, eps)
    return 1.0 - value + _diou_penalty(preds, target, eps)


def ciou(preds: Tensor, target: Tensor, eps: float = EPS) -> Tensor:
    """Complete IoU loss per pair: ``1 - IoU + ρ² / (c² + eps) + α v``.

    ``v = 4/π² (atan(w_t / h_t) - atan(w_p / h_p))²`` measures aspect-ratio mismatch and
    ``α = v / (1 - IoU + v + eps)`` is treated as a constant (no gradient), as in torchvision's
    ``complete_box_iou_loss`` and the paper. preds, target (Tensor[N, 4]) boxes
    ``(x1, y1, x2, y2)``. Returns Tensor[N].
    Deviation from torchvision: the angle is ``atan2(w, h)``, equal to ``atan(w / h)`` for
    ``h > 0`` and ``h = 0 < w``, but 0 (not NaN) for a point box ``w = h = 0``, whose gradient
    is finite too. Zheng et al. 2020, https://arxiv.org/abs/1911.08287.
    """
    value, _ = _iou(preds, target, eps)
    loss = 1.0 - value + _diou_penalty(preds, target, eps)
    v = (4.0 / (math.pi * math.pi)) * (_aspect_angle(target) - _aspect_angle(preds)).square()
    alpha = (v / (1.0 - value + v + eps)).detach()
    return loss + alpha * v


def unitbox(preds: Tensor, target: Tensor, eps: float = EPS) -> Tensor:
    """UnitBox IoU loss per pair: ``-log((I + eps) / (U + eps))``.

    The paper's ``-ln(IoU)``, made finite: disjoint boxes give ``log((U + eps) / eps)``, two
    identical zero-area boxes 0. preds, target (Tensor[N, 4]) boxes ``(x1, y1, x2, y2)``.
    Returns Tensor[N] >= 0. Yu et al. 2016, https://arxiv.org/abs/1608.01471.
    """
    inter, union = _inter_union(preds, target)
    return torch.log(union + eps) - torch.log(inter + eps)


# -- modules ------------------------------------------------------------------------------
class IoULoss(nn.Module):
    def __init__(self, eps: float = EPS) -> None:
        super().__init__()
        self.eps = float(eps)

    def forward(self, preds: Tensor, target: Tensor) -> Tensor:
        return iou(preds, target, self.eps)


class GIoULoss(IoULoss):
    def forward(self, preds: Tensor, target: Tensor) -> Tensor:
        return giou(preds, target, self.eps)


class DIoULoss(IoULoss):
    def forward(self, preds: Tensor, target: Tensor) -> Tensor:
        return diou(preds, target, self.eps)


class CIoULoss(IoULoss):
    def forward(self, preds: Tensor, target: Tensor) -> Tensor:
        return ciou(preds, target, self.eps)


class UnitBoxLoss(IoULoss):
    def forward(self, preds: Tensor, target: Tensor) -> Tensor:
        return unitbox(preds, target, self.eps)


# -- sampler and domain checks ------------------------------------------------------------
def _sample(gen: torch.Generator, sizes: Mapping[str, int], dtype: torch.dtype):
    """Valid boxes, targets jittered around preds so IoUs spread over [0, 1)."""
    n = sizes["N"]
    corner = torch.rand(n, 2, generator=gen, dtype=dtype) * 10
    wh = torch.rand(n, 2, generator=gen, dtype=dtype) * 4 + 0.5
    jitter = torch.rand(n, 1, generator=gen, dtype=dtype) * 0.6  # per pair: near-copy .. far
    centre = corner + wh / 2 + torch.randn(n, 2, generator=gen, dtype=dtype) * wh * jitter
    twh = wh * torch.exp(torch.randn(n, 2, generator=gen, dtype=dtype) * jitter)
    preds = torch.cat([corner, corner + wh], 1)
    target = torch.cat([centre - twh / 2, centre + twh / 2], 1)
    return {"preds": preds, "target": target}


def _log_uniform(gen: torch.Generator, shape: list[int], low: float, high: float, dtype):
    u = torch.rand(shape, generator=gen, dtype=torch.float64)
    return torch.exp(math.log(low) + u * (math.log(high) - math.log(low))).to(dtype)


def extreme_pairs(gen: torch.Generator, n: int, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Box pairs from 1e-3 to 1e4 pixels wide, at offsets up to 1e4, with aspect ratios up to
    1e7: overlapping (same scale, jittered), nested (one 1e3 times smaller) and far apart."""
    centre = (torch.rand(n, 2, generator=gen, dtype=torch.float64) - 0.5) * 2e4
    wh = _log_uniform(gen, [n, 2], 1e-3, 1e4, torch.float64)
    kind = torch.randint(0, 3, (n, 1), generator=gen)
    jitter = torch.randn(n, 2, generator=gen, dtype=torch.float64) * 0.2
    tcentre = torch.where(kind == 0, centre + jitter * wh, centre)
    tcentre = torch.where(kind == 2, centre + 3 * wh.amax(1, keepdim=True) + 1.0, tcentre)
    twh = torch.where(kind == 1, wh * 1e-3, wh * torch.exp(jitter))
    preds = torch.cat([centre - wh / 2, centre + wh / 2], 1)
    target = torch.cat([tcentre - twh / 2, tcentre + twh / 2], 1)
    return _ordered(preds.to(dtype)), _ordered(target.to(dtype))


def degenerate_pairs(gen: torch.Generator, n: int, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Identical boxes, zero-area boxes (points and lines, alone or paired) and disjoint
    boxes that touch at an edge."""
    corner = torch.randint(0, 20, (n, 2), generator=gen).to(dtype)
    wh = torch.randint(1, 6, (n, 2), generator=gen).to(dtype)
    box = torch.cat([corner, corner + wh], 1)
    kind = torch.randint(0, 5, (n, 1), generator=gen)
    point = torch.cat([corner, corner], 1)
    line = torch.cat([corner, corner[:, :1] + wh[:, :1], corner[:, 1:]], 1)
    touching = torch.cat([corner + wh * torch.tensor([1.0, 0.0], dtype=dtype), corner + 2 * wh], 1)
    preds = torch.where(kind == 1, point, torch.where(kind == 2, line, box))
    target = torch.where(kind == 3, touching, torch.where(kind == 4, point, box))
    return preds, target


def _ordered(boxes: Tensor) -> Tensor:
    # rounding to float32 can swap nearly equal corners of a 1e-3 box at 1e4; keep x1 <= x2
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack([x1, y1, torch.maximum(x1, x2), torch.maximum(y1, y2)], -1)


def _sample_extreme(gen: torch.Generator, sizes: Mapping[str, int], dtype: torch.dtype):
    preds, target = extreme_pairs(gen, sizes["N"], dtype)
    return {"preds": preds, "target": target}


def _sample_degenerate(gen: torch.Generator, sizes: Mapping[str, int], dtype: torch.dtype):
    preds, target = degenerate_pairs(gen, sizes["N"], dtype)
    return {"preds": preds, "target": target}


_FLOAT32_INF_BITS = np.uint32(0x7F800000)


def _sides_ok(b: np.ndarray) -> bool:
    """True when every coordinate of contiguous float32 ``(N, 4)`` boxes is finite and
    ``x2 >= x1``, ``y2 >= y1``, in one pass over the sides: a side ``x2 - x1`` is finite only
    when both corners are. False also for any other layout, where a side overflows float32,
    and where one is -0.0 (the exact checks in :func:`_validate` then decide)."""
    if b.dtype != np.float32 or b.ndim != 2 or b.shape[1] != 4 or not b.flags.c_contiguous:
        return False
    if not len(b):
        return True
    # (x1 + i·y1, x2 + i·y2) per box: one contiguous complex subtraction gives every side,
    # exactly as float32 subtraction would (a 2-wide strided one costs several times more)
    corners = b.view(np.complex64)
    sides = (corners[:, 1] - corners[:, 0]).view(np.uint32)
    # As unsigned integers, the float32 values that are finite and >= +0.0 are exactly those
    # below the bits of +inf: a set sign bit (negatives, -0.0) or an all-ones exponent (inf,
    # NaN) lands at or above it. One integer reduction decides.
    return bool(np.maximum.reduce(sides) < _FLOAT32_INF_BITS)


def _well_formed(boxes: Tensor) -> bool:
    """:func:`_sides_ok` for CPU float32 tensors (False for others: the torch checks)."""
    if boxes.dtype != torch.float32 or boxes.requires_grad or boxes.device.type != "cpu":
        return False
    return _sides_ok(boxes.numpy())


def _host_check(params: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> bool:
    """The server's fast path: True when :func:`_validate` would pass these arrays."""
    return params["eps"] > 0 and all(_sides_ok(arrays[name]) for name in ("preds", "target"))


def _validate(params: Mapping[str, Any], inputs: Mapping[str, Tensor]) -> None:
    check_positive("eps", params["eps"])
    for name in ("preds", "target"):
        boxes = inputs[name]
        if boxes.numel() == 0:
            continue
        if _well_formed(boxes):
            continue  # the common case, in two numpy passes (torch's dispatch costs more)
        if not bool(torch.isfinite(boxes).all()):
            raise ValueError(f"Expected `{name}` to hold finite coordinates, got inf or NaN")
        bad = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
        if bool(bad.any()):
            i = int(bad.nonzero()[0, 0])
            raise ValueError(
                f"Expected `{name}` boxes as (x1, y1, x2, y2) with x2 >= x1 and y2 >= y1, "
                f"got {boxes[i].tolist()} at index {i}"
            )


# -- registry -----------------------------------------------------------------------------
_ZHENG = "Zheng et al. 2020, Distance-IoU Loss, arXiv:1911.08287"
_YU = "Yu et al. 2016, UnitBox, arXiv:1608.01471"


def _spec(
    name: str,
    module: type[nn.Module],
    functional,
    summary: str,
    paper: str,
    oracle: str,
    exact_gradient: bool = True,
):
    return register(
        MetricSpec(
            name=name,
            family=FAMILY,
            module=module,
            functional=functional,
            inputs=PAIR,
            outputs=SCORE,
            params=(ParamSpec("eps", EPS, "added to the union (and enclosing areas); > 0"),),
            higher_is_better=False,
            paper=paper,
            oracle=oracle,
            sample=_sample,
            regimes={"extreme": _sample_extreme, "degenerate": _sample_degenerate},
            summary=summary,
            validate=_validate,
            host_check=_host_check,
            example_sizes={"N": 3},
            exact_gradient=exact_gradient,
        )
    )


_spec("iou", IoULoss, iou, "1 - IoU of aligned box pairs", _YU, "hand-worked; numpy formula")
_spec(
    "giou",
    GIoULoss,
    giou,
    "1 - generalized IoU",
    "Rezatofighi et al. 2019, Generalized IoU, arXiv:1902.09630",
    "torchvision.ops.generalized_box_iou_loss formula (hand-worked; numpy)",
)
_spec(
    "diou",
    DIoULoss,
    diou,
    "1 - distance IoU",
    _ZHENG,
    "torchvision.ops.distance_box_iou_loss formula (hand-worked; numpy)",
)
_spec(
    "ciou",
    CIoULoss,
    ciou,
    "1 - complete IoU (alpha without gradient)",
    _ZHENG,
    "torchvision.ops.complete_box_iou_loss formula, atan2 aspect (hand-worked; numpy)",
    exact_gradient=False,  # alpha is detached: the gradient is a deliberate surrogate
)
_spec("unitbox", UnitBoxLoss, unitbox, "-log IoU, finite", _YU, "hand-worked; numpy formula")
