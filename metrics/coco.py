"""COCO detection mAP for boxes: the IoU graph, the greedy matching and the aggregator.

What is a graph and what is not
-------------------------------
* **Graph** (``coco_map``, exported like every metric): the pairwise IoU of each detection
  with every ground-truth box of the batch, in pycocotools' definition (boxes
  ``(x, y, w, h)``, float64, ``I / (a_d + a_g - I)``, or ``I / a_d`` against a crowd region),
  and ``-1`` where the two belong to different (image, category) groups. Ragged data travels
  flattened: every detection and every ground truth carries the int64 id of its group.
  One detection's row depends only on it and on the ground truths, so batching is exact.
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
  maxDets 1/10/100, areas all/small/medium/large).

Conventions copied from pycocotools 2.0 (Lin et al. 2014, https://arxiv.org/abs/1405.0312):
ground-truth area ranges use the annotation's ``area`` field, detection area is ``w * h``;
crowd regions are ignored, match any number of detections and those matches are ignored;
area bounds are inclusive on both sides; an IoU tie goes to the later ground truth; a category
without non-ignored ground truth is left out of the means (``-1`` when nothing is left).
One difference: pycocotools treats a match to a ground truth whose ``id`` is 0 as no match
(``dtm == 0``); here any match counts.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
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


# -- host: COCO files to batches --------------------------------------------------------------
@dataclass
class CocoData:
    """A ground-truth file and a detections file, parsed and checked."""

    image_ids: np.ndarray  # int64, sorted
    categories: np.ndarray  # int64, sorted
    gt_image: np.ndarray
    gt_category: np.ndarray
    gt_box: np.ndarray  # float64[G, 4] (x, y, w, h)
    gt_area: np.ndarray
    gt_crowd: np.ndarray  # int64
    dt_image: np.ndarray
    dt_category: np.ndarray
    dt_box: np.ndarray
    dt_score: np.ndarray


def _field(item: Any, key: str, where: str) -> Any:
    if not isinstance(item, Mapping):
        raise ValueError(f"{where}: expected an object, got {type(item).__name__}")
    if key not in item:
        raise ValueError(f"{where}: missing key {key!r}")
    return item[key]


def _boxes(items: Sequence[Any], where: str) -> np.ndarray:
    out = np.zeros((len(items), 4))
    for i, item in enumerate(items):
        box = _field(item, "bbox", f"{where}[{i}]")
        try:
            arr = np.asarray(box, dtype=np.float64)
        except (TypeError, ValueError):
            arr = np.zeros(0)
        if arr.shape != (4,) or not np.isfinite(arr).all() or (arr[2:] < 0).any():
            raise ValueError(f"{where}[{i}]: bad box {box!r}, expected [x, y, w, h] with w, h >= 0")
        out[i] = arr
    return out


def parse_coco(gt: Any, dt: Any, gt_name: str = "gt", dt_name: str = "dt") -> CocoData:
    """Check and flatten a COCO instances dict and a results list (pycocotools' formats)."""
    if not isinstance(gt, Mapping):
        raise ValueError(f"{gt_name}: expected a COCO instances object, got {type(gt).__name__}")
    images = _field(gt, "images", gt_name)
    anns = _field(gt, "annotations", gt_name)
    cats = _field(gt, "categories", gt_name)
    image_ids = np.array(
        sorted({int(_field(im, "id", f"{gt_name}: images[{i}]")) for i, im in enumerate(images)}),
        dtype=np.int64,
    )
    categories = np.array(
        sorted({int(_field(c, "id", f"{gt_name}: categories[{i}]")) for i, c in enumerate(cats)}),
        dtype=np.int64,
    )
    known_images = set(image_ids.tolist())
    known_cats = set(categories.tolist())

    def ints(items: Sequence[Any], key: str, where: str) -> np.ndarray:
        return np.array(
            [int(_field(it, key, f"{where}[{i}]")) for i, it in enumerate(items)], dtype=np.int64
        )

    if isinstance(dt, Mapping) and "annotations" in dt:
        dt = dt["annotations"]
    if not isinstance(dt, list):
        raise ValueError(f"{dt_name}: expected a list of detections, got {type(dt).__name__}")
    gt_where, dt_where = f"{gt_name}: annotations", dt_name
    gt_image = ints(anns, "image_id", gt_where)
    dt_image = ints(dt, "image_id", dt_where)
    for image, where in ((gt_image, gt_where), (dt_image, dt_where)):
        unknown = sorted(set(image.tolist()) - known_images)
        if unknown:
            i = int(np.nonzero(image == unknown[0])[0][0])
            raise ValueError(f"{where}[{i}]: unknown image id {unknown[0]}")
    gt_category = ints(anns, "category_id", gt_where)
    dt_category = ints(dt, "category_id", dt_where)
    gt_area = np.array(
        [float(_field(a, "area", f"{gt_where}[{i}]")) for i, a in enumerate(anns)], dtype=np.float64
    )
    gt_crowd = np.array([int(a.get("iscrowd", 0) or 0) for a in anns], dtype=np.int64)
    dt_score = np.array(
        [float(_field(d, "score", f"{dt_where}[{i}]")) for i, d in enumerate(dt)], dtype=np.float64
    )
    gt_box, dt_box = _boxes(anns, gt_where), _boxes(dt, dt_where)
    # pycocotools evaluates only the categories listed in the ground truth.
    gt_keep = np.isin(gt_category, list(known_cats))
    dt_keep = np.isin(dt_category, list(known_cats))
    return CocoData(
        image_ids, categories,
        gt_image[gt_keep], gt_category[gt_keep], gt_box[gt_keep], gt_area[gt_keep], gt_crowd[gt_keep],
        dt_image[dt_keep], dt_category[dt_keep], dt_box[dt_keep], dt_score[dt_keep],
    )  # fmt: skip


def coco_batches(data: CocoData, max_pairs: int = 1 << 17) -> Iterator[dict[str, np.ndarray]]:
    """Batches of whole images for the ``coco_map`` graph and :meth:`CocoAggregator.update`.

    Images are taken in id order until ``detections x ground truths`` reaches ``max_pairs``
    (the size of the IoU matrix). Each group is one (image, category) pair of the batch.
    """
    dt_order = np.argsort(data.dt_image, kind="stable")
    gt_order = np.argsort(data.gt_image, kind="stable")
    dt_sorted, gt_sorted = data.dt_image[dt_order], data.gt_image[gt_order]
    dt_bounds = np.searchsorted(dt_sorted, data.image_ids)
    dt_ends = np.searchsorted(dt_sorted, data.image_ids, side="right")
    gt_bounds = np.searchsorted(gt_sorted, data.image_ids)
    gt_ends = np.searchsorted(gt_sorted, data.image_ids, side="right")
    first = True
    start = 0
    num = len(data.image_ids)
    while start < num or first:
        stop = start
        while stop < num:
            n = dt_ends[stop] - dt_bounds[start]
            g = gt_ends[stop] - gt_bounds[start]
            if stop > start and n * g > max_pairs:
                break
            stop += 1
        d_idx = dt_order[dt_bounds[start] : dt_ends[stop - 1]] if stop > start else dt_order[:0]
        g_idx = gt_order[gt_bounds[start] : gt_ends[stop - 1]] if stop > start else gt_order[:0]
        yield _batch(data, d_idx, g_idx, categories=data.categories if first else None)
        first = False
        start = stop


def _batch(
    data: CocoData, d_idx: np.ndarray, g_idx: np.ndarray, categories: np.ndarray | None
) -> dict[str, np.ndarray]:
    keys = np.concatenate(
        [
            np.stack([data.dt_image[d_idx], data.dt_category[d_idx]], 1),
            np.stack([data.gt_image[g_idx], data.gt_category[g_idx]], 1),
        ]
    ).reshape(-1, 2)
    pairs, inverse = np.unique(keys, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    n = len(d_idx)
    return {
        "preds": data.dt_box[d_idx],
        "pred_group": inverse[:n].astype(np.int64),
        "target": data.gt_box[g_idx],
        "target_group": inverse[n:].astype(np.int64),
        "target_crowd": data.gt_crowd[g_idx],
        "pred_score": data.dt_score[d_idx],
        "target_area": data.gt_area[g_idx],
        "group_image": pairs[:, 0].astype(np.int64),
        "group_category": pairs[:, 1].astype(np.int64),
        "categories": categories if categories is not None else np.zeros(0, dtype=np.int64),
    }


GRAPH_INPUTS = ("preds", "pred_group", "target", "target_group", "target_crowd")


def evaluate(
    data: CocoData, run: Any = None, progress: bool = False, max_pairs: int = 1 << 17
) -> CocoAggregator:
    """Evaluate a whole dataset; ``run`` maps graph inputs to outputs (default: eager)."""
    from tqdm import tqdm

    if run is None:
        module = CocoBoxIoU().eval()

        def run(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
            with torch.inference_mode():
                out = module(
                    **{k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in inputs.items()}
                )
            return {"iou": out.numpy()}

    agg = CocoAggregator()
    bar = tqdm(total=len(data.image_ids), desc="coco", unit="img", disable=not progress)
    for batch in coco_batches(data, max_pairs):
        out = run({k: batch[k] for k in GRAPH_INPUTS})
        agg.update(out, batch)
        bar.update(len(np.unique(batch["group_image"])))
    bar.close()
    return agg


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
