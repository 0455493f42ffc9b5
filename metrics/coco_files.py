"""COCO files to batches: parse and check an instances dict and a results list for
``bbox``, ``segm`` or ``keypoints``, and cut them into batches for the pairwise graph.

Batches hold whole (image, category) groups. Only the detections of groups that have a
ground truth reach the graph, at most ``maxDets`` of them per group (the best-scored,
file order breaking ties, as pycocotools' ``mergesort`` keeps): every other detection is a
false positive or ignored whatever its geometry, and travels as ``lone_*`` arrays with its
score and area alone. That is what keeps the pairwise matrix small: on COCO-like data most
detections are clutter in a category the image has no ground truth of.

Areas as pycocotools: a ground truth's ``area`` field; a detection's ``w * h`` (``bbox``),
``pycocotools.mask.area`` of its RLE (``segm``), or the extent of its keypoints
(``keypoints``, ``loadRes``'s ``(x1 - x0) * (y1 - y0)`` over every keypoint).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .coco_eval import (  # noqa: F401 - re-exported for the drivers
    IOU_THRESHOLDS,
    RECALL_THRESHOLDS,
    CocoAggregator,
    coco_params,
)
from .coco_json import boxes, column, field_of
from .coco_keypoints import COCO_SIGMAS  # noqa: F401 - re-exported


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
    iou_type: str = "bbox"
    dt_area: np.ndarray | None = None  # None: w * h of dt_box
    gt_ignore: np.ndarray | None = None  # keypoints: num_keypoints == 0
    gt_keypoints: np.ndarray | None = None  # float64[G, K, 3]
    dt_keypoints: np.ndarray | None = None  # float64[D, K, 3]
    gt_rle: list[Any] = field(default_factory=list)  # segm: one RLE dict per annotation
    dt_rle: list[Any] = field(default_factory=list)
    sigmas: np.ndarray | None = None  # keypoints: float64[K]
    category_names: dict[int, str] = field(default_factory=dict)


def parse_coco(
    gt: Any,
    dt: Any,
    gt_name: str = "gt",
    dt_name: str = "dt",
    iou_type: str = "bbox",
    sigmas: Sequence[float] | None = None,
) -> CocoData:
    """Check and flatten a COCO instances dict and a results list (pycocotools' formats).

    ``sigmas`` (keypoints): one per keypoint; default a ``sigmas`` list shared by the
    ground truth's categories, else COCO's 17.
    """
    coco_params(iou_type)
    if not isinstance(gt, Mapping):
        raise ValueError(f"{gt_name}: expected a COCO instances object, got {type(gt).__name__}")
    images = field_of(gt, "images", gt_name)
    anns = field_of(gt, "annotations", gt_name)
    cats = field_of(gt, "categories", gt_name)
    image_ids = np.unique(column(images, "id", f"{gt_name}: images", int))
    categories = np.unique(column(cats, "id", f"{gt_name}: categories", int))
    names = {int(c["id"]): str(c.get("name", c["id"])) for c in cats}
    if isinstance(dt, Mapping) and "annotations" in dt:
        dt = dt["annotations"]
    if not isinstance(dt, list):
        raise ValueError(f"{dt_name}: expected a list of detections, got {type(dt).__name__}")
    gt_where, dt_where = f"{gt_name}: annotations", dt_name
    gt_image = column(anns, "image_id", gt_where, int)
    dt_image = column(dt, "image_id", dt_where, int)
    for image, where in ((gt_image, gt_where), (dt_image, dt_where)):
        known = np.isin(image, image_ids)
        if not known.all():
            i = int(np.nonzero(~known)[0][0])
            raise ValueError(f"{where}[{i}]: unknown image id {int(image[i])}")
    gt_category = column(anns, "category_id", gt_where, int)
    dt_category = column(dt, "category_id", dt_where, int)
    gt_area = column(anns, "area", gt_where, float)
    gt_crowd = np.array([int(a.get("iscrowd", 0) or 0) for a in anns], dtype=np.int64)
    dt_score = column(dt, "score", dt_where, float)
    # pycocotools evaluates only the categories listed in the ground truth.
    gt_keep = np.isin(gt_category, categories)
    dt_keep = np.isin(dt_category, categories)
    out = CocoData(
        image_ids, categories,
        gt_image[gt_keep], gt_category[gt_keep], np.zeros((int(gt_keep.sum()), 4)),
        gt_area[gt_keep], gt_crowd[gt_keep],
        dt_image[dt_keep], dt_category[dt_keep], np.zeros((int(dt_keep.sum()), 4)),
        dt_score[dt_keep], iou_type=iou_type, category_names=names,
    )  # fmt: skip
    gt_kept = [a for a, k in zip(anns, gt_keep.tolist(), strict=True) if k]
    dt_kept = [d for d, k in zip(dt, dt_keep.tolist(), strict=True) if k]
    if iou_type == "bbox":
        out.gt_box, out.dt_box = boxes(anns, gt_where)[gt_keep], boxes(dt, dt_where)[dt_keep]
    elif iou_type == "segm":
        from . import coco_masks

        sizes = coco_masks.image_sizes(images, f"{gt_name}: images")
        out.gt_rle = coco_masks.to_rles(gt_kept, out.gt_image, sizes, gt_where)
        out.dt_rle = coco_masks.to_rles(dt_kept, out.dt_image, sizes, dt_where)
        out.dt_area = coco_masks.areas(out.dt_rle)
    else:
        from .coco_keypoints import parse_keypoints

        parse_keypoints(out, gt_kept, dt_kept, gt_where, dt_where, cats, sigmas)
    return out


def _top_per_group(image: np.ndarray, category: np.ndarray, score: np.ndarray, top: int):
    """Detection indices by (image, category, -score, file order), and each one's rank."""
    order = np.lexsort((np.arange(len(score)), -score, category, image))
    key = np.stack([image[order], category[order]], 1)
    new = np.ones(len(order), dtype=bool)
    new[1:] = (key[1:] != key[:-1]).any(1)
    starts = np.nonzero(new)[0]
    rank = np.arange(len(order)) - np.repeat(starts, np.diff(np.append(starts, len(order))))
    keep = rank < top
    return order[keep]


def coco_batches(data: CocoData, max_pairs: int = 1 << 16) -> Iterator[dict[str, np.ndarray]]:
    """Batches of whole images for the pairwise graph and :meth:`CocoAggregator.update`.

    Images are taken in id order until paired detections x ground truths reaches
    ``max_pairs`` (the size of the similarity matrix). Each group is one (image, category)
    pair of the batch; the first batch also lists every category of the ground truth.
    """
    top = coco_params(data.iou_type).max_dets[-1]
    kept = _top_per_group(data.dt_image, data.dt_category, data.dt_score, top)
    gt_pairs = np.unique(np.stack([data.gt_image, data.gt_category], 1), axis=0)
    dt_pairs = np.stack([data.dt_image[kept], data.dt_category[kept]], 1)
    # a detection is paired when its (image, category) has a ground truth
    width = max(int(data.categories.max(initial=0)) + 1, 1)
    gt_codes = gt_pairs[:, 0] * width + gt_pairs[:, 1] if len(gt_pairs) else np.zeros(0, int)
    dt_codes = dt_pairs[:, 0] * width + dt_pairs[:, 1] if len(kept) else np.zeros(0, int)
    paired = np.isin(dt_codes, gt_codes)
    # kept is image-ordered; keep it so (stable) within every image
    bounds = [
        np.searchsorted(data.dt_image[kept], data.image_ids, side=s) for s in ("left", "right")
    ]
    gt_order = np.argsort(data.gt_image, kind="stable")
    gt_sorted = data.gt_image[gt_order]
    g_bounds = [np.searchsorted(gt_sorted, data.image_ids, side=s) for s in ("left", "right")]
    paired_count = np.concatenate([[0], np.cumsum(paired)])
    first, start, num = True, 0, len(data.image_ids)
    while start < num or first:
        stop = start
        while stop < num:
            n = paired_count[bounds[1][stop]] - paired_count[bounds[0][start]]
            g = g_bounds[1][stop] - g_bounds[0][start]
            if stop > start and n * g > max_pairs:
                break
            stop += 1
        if stop > start:
            d_idx = kept[bounds[0][start] : bounds[1][stop - 1]]
            d_paired = paired[bounds[0][start] : bounds[1][stop - 1]]
            g_idx = gt_order[g_bounds[0][start] : g_bounds[1][stop - 1]]
        else:
            d_idx, d_paired, g_idx = kept[:0], paired[:0], gt_order[:0]
        yield _batch(data, d_idx[d_paired], d_idx[~d_paired], g_idx, first)
        first = False
        start = stop


def _batch(
    data: CocoData, d_idx: np.ndarray, lone: np.ndarray, g_idx: np.ndarray, first: bool
) -> dict[str, np.ndarray]:
    keys = np.concatenate(
        [
            np.stack([data.dt_image[d_idx], data.dt_category[d_idx]], 1),
            np.stack([data.dt_image[lone], data.dt_category[lone]], 1),
            np.stack([data.gt_image[g_idx], data.gt_category[g_idx]], 1),
        ]
    ).reshape(-1, 2)
    pairs, inverse = np.unique(keys, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1).astype(np.int64)
    n, lo = len(d_idx), len(lone)
    dt_area = data.dt_area if data.dt_area is not None else data.dt_box[:, 2] * data.dt_box[:, 3]
    out = {
        "pred_group": inverse[:n],
        "target_group": inverse[n + lo :],
        "pred_score": data.dt_score[d_idx],
        "pred_area": dt_area[d_idx],
        "lone_group": inverse[n : n + lo],
        "lone_score": data.dt_score[lone],
        "lone_area": dt_area[lone],
        "target_area": data.gt_area[g_idx],
        "target_crowd": data.gt_crowd[g_idx],
        "group_image": pairs[:, 0].astype(np.int64),
        "group_category": pairs[:, 1].astype(np.int64),
        "categories": data.categories if first else np.zeros(0, dtype=np.int64),
    }
    if data.iou_type == "bbox":
        out["preds"], out["target"] = data.dt_box[d_idx], data.gt_box[g_idx]
    elif data.iou_type == "keypoints":
        assert data.dt_keypoints is not None and data.gt_keypoints is not None
        assert data.sigmas is not None and data.gt_ignore is not None
        rows, cols = _pairs(out["pred_group"], out["target_group"])
        out["preds"] = data.dt_keypoints[d_idx[rows]]
        out["target"] = data.gt_keypoints[g_idx[cols]]
        out["target_box"] = data.gt_box[g_idx[cols]]
        out["gt_area"] = out.pop("target_area")  # the aggregator's: one per ground truth
        out["target_area"] = data.gt_area[g_idx[cols]]  # the graph's: one per pair
        out["sigmas"] = data.sigmas
        out["pair_pred"], out["pair_target"] = rows, cols
        out["target_ignore"] = data.gt_ignore[g_idx]
    else:
        out["pred_index"], out["target_index"] = d_idx.astype(np.int64), g_idx.astype(np.int64)
    return out


def _pairs(pred_group: np.ndarray, target_group: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every (detection, ground truth) index pair of the same group, by detection."""
    order = np.argsort(target_group, kind="stable")
    lo = np.searchsorted(target_group[order], pred_group, side="left")
    hi = np.searchsorted(target_group[order], pred_group, side="right")
    count = hi - lo
    rows = np.repeat(np.arange(len(pred_group)), count)
    starts = np.repeat(lo - np.concatenate([[0], np.cumsum(count)[:-1]]), count)
    cols = order[np.arange(len(rows)) + starts] if len(rows) else order[:0]
    return rows.astype(np.int64), cols.astype(np.int64)


GRAPH_INPUTS = {
    "bbox": ("preds", "pred_group", "target", "target_group", "target_crowd"),
    "keypoints": ("preds", "target", "target_box", "target_area", "sigmas"),
    "segm": (),
}  # fmt: skip
GRAPH_METRIC = {"bbox": "coco_map", "keypoints": "coco_oks", "segm": None}


def graph_inputs(batch: Mapping[str, np.ndarray], iou_type: str) -> dict[str, np.ndarray]:
    """The graph's inputs of a batch."""
    return {k: batch[k] for k in GRAPH_INPUTS[iou_type]}


def evaluate(
    data: CocoData, run: Any = None, progress: bool = False, max_pairs: int = 1 << 16
) -> CocoAggregator:
    """Evaluate a whole dataset; ``run`` maps graph inputs to outputs (default: eager).

    ``segm`` has no graph: its mask IoU is computed here (:mod:`.coco_masks` says why).
    """
    from tqdm import tqdm

    iou_type = data.iou_type
    segm = iou_type == "segm"
    if segm:
        from .coco_masks import mask_iou

        def run_masks(batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
            return {"iou": mask_iou(data, batch)}

    elif run is None:
        run = _eager(str(GRAPH_METRIC[iou_type]))
    agg = CocoAggregator(iou_type)
    bar = tqdm(total=len(data.image_ids), desc="coco", unit="img", disable=not progress)
    for batch in coco_batches(data, max_pairs):
        agg.update(run_masks(batch) if segm else run(graph_inputs(batch, iou_type)), batch)
        bar.update(len(np.unique(batch["group_image"])))
    bar.close()
    return agg


def _eager(metric: str) -> Any:
    import torch

    from . import registry

    module = registry.get(metric).build()
    name = registry.get(metric).outputs[0].name

    def run(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            out = module(
                **{k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in inputs.items()}
            )
        return {name: out.numpy()}

    return run
