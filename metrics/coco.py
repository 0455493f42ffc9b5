"""COCO mAP: the box IoU and keypoint OKS graphs, the greedy matching and the aggregator.

What is a graph and what is not
-------------------------------
* **Graphs** (``coco_map`` for boxes, ``coco_oks`` for keypoints, exported like every
  metric; ``segm`` mask IoU is host-side, :mod:`.coco_masks` says why). ``coco_map``: the
  pairwise IoU of each detection
  with every ground-truth box of the batch, in pycocotools' definition (boxes
  ``(x, y, w, h)``, float64, ``I / (a_d + a_g - I)``, or ``I / a_d`` against a crowd region),
  and ``-1`` where the two belong to different (image, category) groups. Ragged data travels
  flattened: every detection and every ground truth carries the int64 id of its group.
  One detection's row depends only on it and on the ground truths, so batching is exact.
  ``coco_oks``: pycocotools' ``computeOks`` for a list of (detection, ground truth) pairs
  of the same group (a dense matrix would cost K keypoints per useless pair), ``Σ exp(-d²/(2 s² k²)) / n`` over the
  ground truth's labelled keypoints (``v > 0``; ``s²`` its ``area``, ``k = 2 σ``), or, when
  it has none, over all keypoints with ``d`` the distance outside its box grown by one box
  size on each side; the sigmas are an input, so one artifact serves any skeleton.
* **Host** (:class:`CocoAggregator.update`): COCO's greedy matching. It walks each group's
  detections in score order and lets each one take the best still-free ground truth, so the
  match of detection ``d`` depends on the matches of detections ``0 .. d-1``: a sequential,
  data-dependent loop whose trip count is a per-group value, which no fixed graph expresses
  without unrolling to the worst case. It is vectorised over groups, the 4 area ranges and
  the 10 IoU thresholds at once, stepping only over detection rank (at most ``maxDets``).
* **State**: per kept detection its category, image id, rank in its group, score and, per
  (area range, IoU threshold), whether it is a true positive or ignored; per (category, area
  range) the number of non-ignored ground truths. Merging concatenates and adds: exactly
  associative. ``compute`` orders each category's detections by (-score, image id, rank),
  which is the order pycocotools' ``mergesort`` over image-ordered lists produces, and
  reproduces ``COCOeval.accumulate`` and ``summarize`` (101 recall points, IoU 0.50:0.05:0.95,
  maxDets 1/10/100, areas all/small/medium/large; keypoints maxDets 20, all/medium/large).

Conventions copied from pycocotools 2.0 (Lin et al. 2014, https://arxiv.org/abs/1405.0312):
ground-truth area ranges use the annotation's ``area`` field, detection area is ``w * h``;
crowd regions are ignored, match any number of detections and those matches are ignored;
area bounds are inclusive on both sides; an IoU tie goes to the later ground truth; a category
without non-ignored ground truth is left out of the means (``-1`` when nothing is left).
One difference: pycocotools treats a match to a ground truth whose ``id`` is 0 as no match
(``dtm == 0``); here any match counts.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from .coco_eval import (  # noqa: F401 - the host half, re-exported
    _SUMMARY,
    AREA_LABELS,
    AREA_RANGES,
    IOU_THRESHOLDS,
    MAX_DETS,
    RECALL_THRESHOLDS,
    STAT_NAMES,
    CocoAggregator,
    match_groups,
    summarize,
)
from .coco_files import GRAPH_INPUTS as _GRAPH_INPUTS
from .coco_files import (  # noqa: F401 - the file half, re-exported
    CocoData,
    coco_batches,
    evaluate,
    parse_coco,
)
from .coco_keypoints import COCO_SIGMAS  # noqa: F401 - re-exported
from .registry import MetricSpec, TensorSpec, register

FAMILY = "dataset"


# -- graph ----------------------------------------------------------------------------------
def coco_box_iou(
    preds: Tensor, pred_group: Tensor, target: Tensor, target_group: Tensor, target_crowd: Tensor
) -> Tensor:
    """IoU of every detection with every ground truth of its group, as pycocotools' ``bbIou``.

    preds (Tensor[N, 4]) and target (Tensor[G, 4]) are ``(x, y, w, h)`` boxes; pred_group
    (Tensor[N]) and target_group (Tensor[G]) int64 group ids ((image, category) pairs);
    target_crowd (Tensor[G]) int64, 1 for a crowd region, whose IoU is ``I / area(pred)``.
    Returns ``Tensor[N, G]``: the IoU in [0, 1] within a group, -1 across groups.
    """
    px, py, pw, ph = preds.unbind(-1)
    gx, gy, gw, gh = target.unbind(-1)
    w = torch.minimum((pw + px)[:, None], (gw + gx)[None, :]) - torch.maximum(
        px[:, None], gx[None, :]
    )
    h = torch.minimum((ph + py)[:, None], (gh + gy)[None, :]) - torch.maximum(
        py[:, None], gy[None, :]
    )
    overlap = (w > 0) & (h > 0)
    inter = w * h
    area_p = (pw * ph)[:, None]
    area_g = (gw * gh)[None, :]
    union = torch.where(target_crowd[None, :] != 0, area_p, (area_p + area_g) - inter)
    safe = torch.where(overlap, union, torch.ones_like(union))
    iou = torch.where(overlap, inter / safe, torch.zeros_like(inter))
    same = pred_group[:, None] == target_group[None, :]
    return torch.where(same, iou, -torch.ones_like(iou))


class CocoBoxIoU(nn.Module):
    """Per-detection IoU rows for COCO matching; see :func:`coco_box_iou`."""

    def forward(
        self,
        preds: Tensor,
        pred_group: Tensor,
        target: Tensor,
        target_group: Tensor,
        target_crowd: Tensor,
    ) -> Tensor:
        return coco_box_iou(preds, pred_group, target, target_group, target_crowd)


def _sample(gen: torch.Generator, sizes: Mapping[str, int], dtype: torch.dtype):
    # COCO boxes are float64 by contract (pycocotools thresholds double-precision IoUs), so
    # the sampler, and the exported artifact, use float64 whatever `dtype` asks for.
    del dtype
    n, g = sizes["N"], sizes["G"]

    def boxes(k: int) -> Tensor:
        xy = torch.rand(k, 2, generator=gen, dtype=torch.float64) * 20
        wh = torch.rand(k, 2, generator=gen, dtype=torch.float64) * 15 + 0.5
        return torch.cat([xy, wh], 1)

    return {
        "preds": boxes(n),
        "pred_group": torch.randint(0, 3, (n,), generator=gen),
        "target": boxes(g),
        "target_group": torch.randint(0, 3, (g,), generator=gen),
        "target_crowd": (torch.rand(g, generator=gen) < 0.3).long(),
    }


def _sample_extreme(gen: torch.Generator, sizes: Mapping[str, int], dtype: torch.dtype):
    """Boxes from 1e-3 to 1e4 wide at offsets up to 1e4, detections jittered copies of a
    ground truth (high IoU), much smaller boxes inside one (nested), and crowd regions."""
    del dtype
    n, g = sizes["N"], sizes["G"]
    log_wh = torch.rand(g, 2, generator=gen, dtype=torch.float64) * (math.log(1e7)) + math.log(1e-3)
    gt = torch.cat([torch.rand(g, 2, generator=gen, dtype=torch.float64) * 1e4, log_wh.exp()], 1)
    pick = torch.randint(0, max(g, 1), (n,), generator=gen)
    base = gt[pick] if g else torch.ones(n, 4, dtype=torch.float64)
    jitter = 1 + torch.randn(n, 4, generator=gen, dtype=torch.float64) * 0.05
    nested = torch.rand(n, 1, generator=gen) < 0.3
    shrink = torch.cat([base[:, :2] + base[:, 2:] * 0.25, base[:, 2:] * 1e-3], 1)
    preds = torch.where(nested, shrink, base * jitter.abs())
    groups = torch.randint(0, 2, (g,), generator=gen)
    return {
        "preds": preds,
        "pred_group": groups[pick] if g else torch.zeros(n, dtype=torch.int64),
        "target": gt,
        "target_group": groups,
        "target_crowd": (torch.rand(g, generator=gen) < 0.3).long(),
    }


def _sample_degenerate(gen: torch.Generator, sizes: Mapping[str, int], dtype: torch.dtype):
    """Detections identical to a ground truth (IoU 1), zero-width or zero-height boxes, boxes
    that touch at an edge, all in one group."""
    del dtype
    n, g = sizes["N"], sizes["G"]
    gt = torch.cat(
        [torch.randint(0, 20, (g, 2), generator=gen), torch.randint(1, 6, (g, 2), generator=gen)], 1
    ).to(torch.float64)
    pick = torch.randint(0, max(g, 1), (n,), generator=gen)
    base = gt[pick] if g else torch.ones(n, 4, dtype=torch.float64)
    kind = torch.randint(0, 4, (n, 1), generator=gen)
    flat = base * torch.tensor([1.0, 1.0, 0.0, 1.0], dtype=torch.float64)
    beside = base + base[:, 2:3] * torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    preds = torch.where(kind == 1, flat, torch.where(kind == 2, beside, base))
    zero_gt = torch.rand(g, 1, generator=gen) < 0.2
    gt = torch.where(zero_gt, gt * torch.tensor([1.0, 1.0, 1.0, 0.0], dtype=torch.float64), gt)
    return {
        "preds": preds,
        "pred_group": torch.zeros(n, dtype=torch.int64),
        "target": gt,
        "target_group": torch.zeros(g, dtype=torch.int64),
        "target_crowd": (torch.rand(g, generator=gen) < 0.3).long(),
    }


def _validate(params: Mapping[str, Any], inputs: Mapping[str, Tensor]) -> None:
    for name in ("preds", "target"):
        boxes = inputs[name]
        if boxes.numel() and bool((boxes[:, 2:] < 0).any()):
            raise ValueError(f"Expected `{name}` to hold (x, y, w, h) boxes with w, h >= 0")


# -- keypoints -------------------------------------------------------------------------------
def coco_oks(
    preds: Tensor, target: Tensor, target_box: Tensor, target_area: Tensor, sigmas: Tensor
) -> Tensor:
    """OKS of each (detection, ground truth) pair, as pycocotools' ``computeOks``.

    preds (Tensor[N, K, 3]) and target (Tensor[N, K, 3]) are ``(x, y, v)`` keypoints of the
    N pairs; target_box (Tensor[N, 4]) the ground truth's ``(x, y, w, h)``; target_area
    (Tensor[N]) its ``area``; sigmas (Tensor[K]) per keypoint (COCO's 17: ``COCO_SIGMAS``).
    Returns ``Tensor[N]`` in [0, 1].

    Pairwise, not a dense matrix as ``coco_map``: a pair costs K keypoints, so the host
    sends only the pairs of the same (image, category) group.
    """
    var = (sigmas * 2) ** 2
    xd, yd = preds[..., 0], preds[..., 1]  # [N, K]
    xg, yg, vg = target[..., 0], target[..., 1], target[..., 2]
    visible = vg > 0
    labelled = visible.any(-1, keepdim=True)  # [N, 1]
    bx, by, bw, bh = (c[:, None] for c in target_box.unbind(-1))
    zero = torch.zeros_like(xd)
    dx_out = torch.maximum(zero, (bx - bw) - xd) + torch.maximum(zero, xd - (bx + bw * 2))
    dy_out = torch.maximum(zero, (by - bh) - yd) + torch.maximum(zero, yd - (by + bh * 2))
    dx = torch.where(labelled, xd - xg, dx_out)
    dy = torch.where(labelled, yd - yg, dy_out)
    # np.spacing(1), as pycocotools. A tensor, not a literal: the ONNX optimizer drops
    # `x + 2.2e-16` as adding zero, and a zero area then gives 0 / 0.
    eps = torch.full_like(target_area, 2.220446049250313e-16)
    e = (dx**2 + dy**2) / var / (target_area + eps)[:, None] / 2
    counted = visible | ~labelled
    total = torch.where(counted, torch.exp(-e), torch.zeros_like(e)).sum(-1)
    return total / counted.sum(-1).to(total.dtype)


class CocoKeypointOks(nn.Module):
    """OKS of (detection, ground truth) pairs for COCO keypoint matching; see :func:`coco_oks`."""

    def forward(
        self, preds: Tensor, target: Tensor, target_box: Tensor, target_area: Tensor, sigmas: Tensor
    ) -> Tensor:
        return coco_oks(preds, target, target_box, target_area, sigmas)


def _oks_inputs(gen: torch.Generator, n: int, k: int, scale: float) -> dict[str, Tensor]:
    f64 = torch.float64
    box = torch.cat([torch.rand(n, 2, generator=gen, dtype=f64) * scale * 4,
                     (torch.rand(n, 2, generator=gen, dtype=f64) + 0.2) * scale], 1)  # fmt: skip
    xy = box[:, None, :2] + torch.rand(n, k, 2, generator=gen, dtype=f64) * box[:, None, 2:]
    vis = torch.randint(0, 3, (n, k, 1), generator=gen).to(f64)
    vis[torch.rand(n, generator=gen) < 0.25] = 0  # no labelled keypoint: the box rule
    noise = torch.randn(n, k, 2, generator=gen, dtype=f64) * scale * 0.1
    return {
        "preds": torch.cat([xy + noise, torch.ones(n, k, 1, dtype=f64)], -1),
        "target": torch.cat([xy, vis], -1),
        "target_box": box,
        "target_area": box[:, 2] * box[:, 3] * 0.7,
        "sigmas": torch.rand(k, generator=gen, dtype=f64) * 0.1 + 0.02,
    }


def _sample_oks(gen: torch.Generator, sizes: Mapping[str, int], dtype: torch.dtype):
    del dtype  # float64 by contract, as coco_map
    return _oks_inputs(gen, sizes["N"], sizes["K"], 50.0)


def _sample_oks_extreme(gen: torch.Generator, sizes: Mapping[str, int], dtype: torch.dtype):
    """People from 1e-2 to 1e4 px, far-off detections (OKS ~ 0) and tiny areas."""
    del dtype
    n = sizes["N"]
    out = _oks_inputs(gen, n, sizes["K"], 1e4)
    far = torch.rand(n, 1, 1, generator=gen) < 0.3
    out["preds"] = torch.where(far, out["preds"] * 3 + 1e4, out["preds"])
    tiny = torch.rand(n, generator=gen) < 0.3
    out["target_area"] = torch.where(tiny, out["target_area"] * 1e-8, out["target_area"])
    return out


def _sample_oks_degenerate(gen: torch.Generator, sizes: Mapping[str, int], dtype: torch.dtype):
    """Detections equal to their ground truth (OKS 1), no labelled keypoint, zero areas."""
    del dtype
    n = sizes["N"]
    out = _oks_inputs(gen, n, sizes["K"], 20.0)
    same = torch.rand(n, 1, 1, generator=gen) < 0.5
    out["preds"] = torch.where(same, out["target"], out["preds"])
    unlabelled = torch.rand(n, 1, generator=gen) < 0.5
    out["target"][..., 2] = torch.where(unlabelled, 0.0, out["target"][..., 2])
    zero = torch.rand(n, generator=gen) < 0.3
    out["target_area"] = torch.where(zero, 0.0, out["target_area"]).to(torch.float64)
    return out


def _validate_oks(params: Mapping[str, Any], inputs: Mapping[str, Tensor]) -> None:
    if bool((inputs["sigmas"] <= 0).any()):
        raise ValueError("Expected `sigmas` to be positive")
    if bool((inputs["target_area"] < 0).any()):
        raise ValueError("Expected `target_area` to be >= 0")


def _oks_work(sizes: Mapping[str, int], params: Mapping[str, Any]) -> int:
    """Bytes at the peak: a few float64 [N, K] temporaries."""
    return 96 * sizes.get("N", 0) * max(sizes.get("K", 1), 1)


GRAPH_INPUTS = _GRAPH_INPUTS["bbox"]


def _coco_work(sizes: Mapping[str, int], params: Mapping[str, Any]) -> int:
    """Bytes at the peak: the float64 IoU matrix and its temporaries (measured ~68 per
    N·G pair by bench/work.py)."""
    return 96 * sizes.get("N", 0) * sizes.get("G", 0)


register(
    MetricSpec(
        name="coco_map",
        family=FAMILY,
        module=CocoBoxIoU,
        functional=coco_box_iou,
        inputs=(
            TensorSpec("preds", ("N", 4), "float64", "detections (x, y, w, h)"),
            TensorSpec("pred_group", ("N",), "int64", "(image, category) group id per detection"),
            TensorSpec("target", ("G", 4), "float64", "ground truths (x, y, w, h)"),
            TensorSpec("target_group", ("G",), "int64", "group id per ground truth"),
            TensorSpec("target_crowd", ("G",), "int64", "1 for a crowd region"),
        ),
        outputs=(TensorSpec("iou", ("N", "G"), "float64", "IoU within a group, -1 across"),),
        params=(),
        higher_is_better=True,
        paper="Lin et al. 2014, Microsoft COCO, arXiv:1405.0312",
        oracle="pycocotools.cocoeval.COCOeval (bbox); graph: pycocotools.mask.iou",
        sample=_sample,
        regimes={"extreme": _sample_extreme, "degenerate": _sample_degenerate},
        summary="COCO box mAP: IoU graph + greedy matching + accumulate (12 stats)",
        differentiable=False,
        validate=_validate,
        example_sizes={"N": 5, "G": 3},
        work=_coco_work,
        aggregator=CocoAggregator,
    )
)


register(
    MetricSpec(
        name="coco_oks",
        family=FAMILY,
        module=CocoKeypointOks,
        functional=coco_oks,
        inputs=(
            TensorSpec("preds", ("N", "K", 3), "float64", "detected keypoints (x, y, v) per pair"),
            TensorSpec("target", ("N", "K", 3), "float64", "its ground truth's keypoints"),
            TensorSpec("target_box", ("N", 4), "float64", "its ground truth's box (x, y, w, h)"),
            TensorSpec("target_area", ("N",), "float64", "its ground truth's `area`"),
            TensorSpec("sigmas", ("K",), "float64", "per-keypoint OKS sigmas"),
        ),
        outputs=(TensorSpec("oks", ("N",), "float64", "OKS of each pair"),),
        params=(),
        higher_is_better=True,
        paper="Lin et al. 2014, Microsoft COCO, arXiv:1405.0312 (keypoint OKS)",
        oracle="pycocotools.cocoeval.COCOeval (keypoints); graph: COCOeval.computeOks",
        sample=_sample_oks,
        regimes={"extreme": _sample_oks_extreme, "degenerate": _sample_oks_degenerate},
        summary="COCO keypoint mAP: OKS graph + greedy matching + accumulate (10 stats)",
        differentiable=False,
        validate=_validate_oks,
        example_sizes={"N": 5, "K": 4},
        work=_oks_work,
        aggregator=functools.partial(CocoAggregator, iou_type="keypoints"),
    )
)
