"""Dataset drivers: files people already have -> batches -> a backend -> figures.

One driver per kind of dataset, used by ``cvscore evaluate`` and by the gate alike:

- :func:`coco`: a COCO instances JSON and a results JSON -> COCOeval's statistics for
  bbox, segm or keypoints (12, 12, 10), every statistic per category, precision-recall
  curves;
- :func:`segmentation`: folders of PNG label maps -> per-class IoU, mIoU, accuracies, and
  each image's mean IoU;
- :func:`retrieval`: ``.npy`` embeddings and labels -> hit rate@k and recall@k, and each
  query's recall at the largest k;
- :func:`image_pairs`: folders of PNGs (or ``.npy``) -> every per-sample score of a
  per-sample metric (PSNR, SSIM, ...), reduced as asked.

Figures and per-sample series are named relative to the metric (``AP``, ``mean_iou``,
``recall@5``, ``mean``); the caller prefixes them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import readers
from .backends import Backend
from .errors import DataError

REDUCTIONS = ("mean", "median", "min", "max", "std")


@dataclass
class Result:
    """What a driver measured on one dataset with one metric."""

    metric: str
    figures: dict[str, float] = field(default_factory=dict)
    samples: dict[str, list[float]] = field(default_factory=dict)  # per-sample series
    curves: dict[str, list[float]] = field(default_factory=dict)  # COCO: recall + precisions
    artifact: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # per-category AP, counts, ...
    # What a bootstrap resamples (``kind`` names the layout, ``ids`` the resampled units):
    # see :mod:`cvscore.gate.evidence`.
    evidence: dict[str, Any] = field(default_factory=dict)


# -- COCO -----------------------------------------------------------------------------------
def coco(
    gt_path: str | Path,
    dt_path: str | Path,
    backend: Backend,
    iou_type: str = "bbox",
    sigmas: Sequence[float] | None = None,
) -> Result:
    """COCOeval for ``iou_type`` bbox, segm or keypoints. segm's mask IoU is computed in
    this process whatever the backend (``metrics/coco_masks.py`` says why)."""
    from ..metrics import coco_files
    from ..metrics.coco_resample import coco_evidence

    gt, dt = readers.read_json(gt_path), readers.read_json(dt_path)
    try:
        data = coco_files.parse_coco(gt, dt, str(gt_path), str(dt_path), iou_type, sigmas)
    except ValueError as exc:  # the parser names the file and the item
        raise DataError(str(exc)) from None
    metric = coco_files.GRAPH_METRIC[iou_type]
    if metric is None:
        run, info = None, {"metric": "coco_map", "iou_type": iou_type, "runtime": "host"}
    else:
        run, info = backend.runner(metric, {})
        info = {**info, "iou_type": iou_type}
    agg = coco_files.evaluate(data, run, progress=backend.progress)
    out = Result(agg.metric, figures=agg.compute(), artifact=info)
    if iou_type == "bbox":  # the bootstrap resamples box AP (its area ranges and ignore rules)
        out.evidence = {"kind": "coco", **coco_evidence(data, agg)}
    per_category = agg.per_category()
    names = data.category_names
    out.extra = {
        "iou_type": iou_type,
        "per_category_ap": {c: v["AP"] for c, v in per_category.items()},
        "per_category": [
            {"id": c, "name": names.get(c, str(c)), **v} for c, v in per_category.items()
        ],
        "images": len(data.image_ids),
        "detections": len(data.dt_score),
    }
    precision, _, _ = agg.accumulate()
    curve = precision[:, :, :, 0, -1]  # [T, R, K] all areas, most detections
    iou = list(coco_files.IOU_THRESHOLDS.round(2))
    out.curves = {
        "recall": [float(r) for r in coco_files.RECALL_THRESHOLDS],
        "IoU=0.50:0.95": _mean_over_categories(curve.mean(axis=0)),
        "IoU=0.50": _mean_over_categories(curve[iou.index(0.5)]),
        "IoU=0.75": _mean_over_categories(curve[iou.index(0.75)]),
    }
    return out


def _mean_over_categories(p: np.ndarray) -> list[float]:
    """Mean over the categories with ground truth (-1 marks none), 0 where there is none."""
    valid = p > -1
    count = valid.sum(axis=-1)
    total = np.where(valid, p, 0.0).sum(axis=-1)
    mean = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
    return [float(v) for v in mean.reshape(-1)]


# -- segmentation -----------------------------------------------------------------------------
def segmentation(
    pred_dir: Path, gt_dir: Path, params: Mapping[str, Any], backend: Backend
) -> Result:
    from tqdm import tqdm

    from ..metrics.states import SegmentationAggregator, iou_from_confusion

    k, ignore = int(params["num_classes"]), int(params["ignore_index"])
    if k < 2:
        raise DataError(f"Expected at least 2 classes, got num_classes={k}")
    names = readers.label_pair_names(pred_dir, gt_dir)
    run, info = backend.runner("mean_iou", params)
    agg = SegmentationAggregator(num_classes=k, ignore_index=ignore)
    per_image: list[float] = []
    confusions: list[np.ndarray] = []
    for name in tqdm(names, desc="segmentation", unit="img", disable=not backend.progress):
        pred, target = readers.read_label_pair(pred_dir / name, gt_dir / name, k, ignore)
        outputs = run({"preds": pred.reshape(1, -1), "target": target.reshape(1, -1)})
        agg.update(outputs)
        confusion = np.rint(outputs["confusion"][0]).astype(np.int64)
        confusions.append(confusion)
        ious = iou_from_confusion(confusion)
        per_image.append(float(np.nanmean(ious)) if not np.isnan(ious).all() else math.nan)
    out = Result("mean_iou", figures=agg.compute(), artifact=info)
    out.samples["image_mean_iou"] = per_image
    out.extra = {"images": len(names)}
    out.evidence = {
        "kind": "confusion",
        "ids": np.array(names, dtype=str),
        "confusion": np.stack(confusions) if confusions else np.zeros((0, k, k), np.int64),
    }
    return out


# -- retrieval --------------------------------------------------------------------------------
def retrieval(
    data: readers.Retrieval, params: Mapping[str, Any], backend: Backend, batch_size: int
) -> Result:
    from tqdm import tqdm

    from ..metrics.states import RetrievalAggregator

    if batch_size < 1:
        raise DataError(f"Expected a positive batch size, got {batch_size}")
    run, info = backend.runner("recall_at_k", params)
    agg = RetrievalAggregator(**params)
    per_query: list[np.ndarray] = []
    starts = range(0, len(data.queries), batch_size)
    for start in tqdm(starts, desc="retrieval", unit="batch", disable=not backend.progress):
        stop = start + batch_size
        outputs = run(
            {
                "preds": data.queries[start:stop],
                "target": data.labels[start:stop],
                "gallery": data.gallery,
                "gallery_target": data.gallery_labels,
                "exclude": data.exclude[start:stop],
            }
        )
        agg.update(outputs)
        per_query.append(np.rint(outputs["counts"]).astype(np.int64))
    out = Result("recall_at_k", figures=agg.compute(), artifact=info)
    if per_query:
        counts = np.concatenate(per_query)
        k_max = max(int(k) for k in params["ks"])
        keep = counts[:, -1] > 0
        out.samples[f"query_recall@{k_max}"] = (counts[keep, -2] / counts[keep, -1]).tolist()
    else:
        counts = np.zeros((0, len(params["ks"]) + 1), dtype=np.int64)
    out.evidence = {
        "kind": "retrieval",
        "ids": np.arange(len(counts), dtype=np.int64),
        "hits": counts[:, :-1],
        "relevant": counts[:, -1],
    }
    return out


# -- image pairs ------------------------------------------------------------------------------
def image_batches(pred: Path, target: Path, batch_size: int) -> list[dict[str, np.ndarray]]:
    """Pairs in file-name order, batched by runs of equal shape."""
    pred_names, preds = readers.read_images(pred)
    target_names, targets = readers.read_images(target)
    if pred_names != target_names:
        unmatched = sorted(set(target_names) ^ set(pred_names))
        raise DataError(
            f"{pred} and {target} do not pair up ({len(pred_names)} vs {len(target_names)} "
            f"items; first unmatched {unmatched[:1]})"
        )
    batches: list[dict[str, np.ndarray]] = []
    start = 0
    while start < len(preds):
        stop = start
        while (
            stop < len(preds)
            and stop - start < batch_size
            and preds[stop].shape == preds[start].shape
        ):
            if preds[stop].shape != targets[stop].shape:
                raise DataError(
                    f"{pred}: {pred_names[stop]} has shape {list(preds[stop].shape)}, "
                    f"its target {list(targets[stop].shape)}"
                )
            stop += 1
        batches.append(
            {"preds": np.stack(preds[start:stop]), "target": np.stack(targets[start:stop])}
        )
        start = stop
    return batches


def image_pairs(
    batches: Sequence[Mapping[str, np.ndarray]],
    metric: str,
    params: Mapping[str, Any],
    reduce: Sequence[str],
    backend: Backend,
) -> Result:
    scores, info = backend.per_sample(metric, params, batches)
    if scores.ndim != 1:
        raise DataError(
            f"{metric}: per-sample scores of shape {list(scores.shape)}; only scalar scores "
            "can be reduced"
        )
    out = Result(metric, artifact=info)
    out.samples["score"] = scores.astype(np.float64).tolist()
    out.evidence = {
        "kind": "samples",
        "ids": np.arange(len(scores), dtype=np.int64),
        "scores": scores.astype(np.float64),
    }
    out.figures = {how: reduce_scores(scores, how) for how in reduce}
    return out


def reduce_scores(scores: np.ndarray, how: str) -> float:
    values = np.asarray(scores, dtype=np.float64).reshape(-1)
    if how not in REDUCTIONS:
        raise ValueError(f"Expected a reduction in {list(REDUCTIONS)}, got {how!r}")
    if values.size == 0:
        return math.nan
    if how == "mean":
        return math.fsum(values.tolist()) / values.size  # exact sum: order-independent
    if how == "median":
        return float(np.median(values))
    if how == "min":
        return float(values.min())
    if how == "max":
        return float(values.max())
    return float(values.std())
