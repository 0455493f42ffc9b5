"""COCO evaluation tables per ``iouType``, ``COCOeval.accumulate`` and ``summarize``.

numpy only; the state they read is :class:`.coco_eval.CocoAggregator`'s.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
RECALL_THRESHOLDS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
IOU_TYPES = ("bbox", "segm", "keypoints")


@dataclass(frozen=True)
class CocoParams:
    """``COCOeval.Params`` for one ``iouType``: maxDets, area ranges, the summary lines."""

    iou_type: str
    max_dets: tuple[int, ...]
    area_ranges: tuple[tuple[float, float], ...]
    area_labels: tuple[str, ...]
    # (name, is AP, IoU threshold or None, area label, maxDets): COCOeval.summarize's lines.
    summary: tuple[tuple[str, bool, float | None, str, int], ...]

    @property
    def stat_names(self) -> tuple[str, ...]:
        return tuple(line[0] for line in self.summary)


_BOX_SUMMARY = (
    ("AP", True, None, "all", 100), ("AP50", True, 0.5, "all", 100),
    ("AP75", True, 0.75, "all", 100), ("AP_small", True, None, "small", 100),
    ("AP_medium", True, None, "medium", 100), ("AP_large", True, None, "large", 100),
    ("AR1", False, None, "all", 1), ("AR10", False, None, "all", 10),
    ("AR100", False, None, "all", 100), ("AR_small", False, None, "small", 100),
    ("AR_medium", False, None, "medium", 100), ("AR_large", False, None, "large", 100),
)  # fmt: skip
_KP_SUMMARY = (
    ("AP", True, None, "all", 20), ("AP50", True, 0.5, "all", 20),
    ("AP75", True, 0.75, "all", 20), ("AP_medium", True, None, "medium", 20),
    ("AP_large", True, None, "large", 20), ("AR", False, None, "all", 20),
    ("AR50", False, 0.5, "all", 20), ("AR75", False, 0.75, "all", 20),
    ("AR_medium", False, None, "medium", 20), ("AR_large", False, None, "large", 20),
)  # fmt: skip
_BOX_AREAS = ((0.0, 1e5**2), (0.0, 32.0**2), (32.0**2, 96.0**2), (96.0**2, 1e5**2))
_BOX_PARAMS = dict(
    max_dets=(1, 10, 100), area_ranges=_BOX_AREAS,
    area_labels=("all", "small", "medium", "large"), summary=_BOX_SUMMARY,
)  # fmt: skip
PARAMS = {
    "bbox": CocoParams("bbox", **_BOX_PARAMS),  # type: ignore[arg-type]
    "segm": CocoParams("segm", **_BOX_PARAMS),  # type: ignore[arg-type]
    "keypoints": CocoParams(
        "keypoints",
        (20,),
        (_BOX_AREAS[0], _BOX_AREAS[2], _BOX_AREAS[3]),
        ("all", "medium", "large"),
        _KP_SUMMARY,
    ),
}


def accumulate(
    dets: Any, gt_counts: Mapping[int, np.ndarray], max_dets: Sequence[int]
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """``COCOeval.accumulate``, vectorised over area ranges, IoU and recall thresholds."""
    cats = sorted(gt_counts)
    t_n, r_n = len(IOU_THRESHOLDS), len(RECALL_THRESHOLDS)
    a_n, m_n = dets.tp.shape[1], len(max_dets)
    precision = -np.ones((t_n, r_n, len(cats), a_n, m_n))
    recall = -np.ones((t_n, len(cats), a_n, m_n))
    # pycocotools' order: by score (mergesort over image-ordered, then rank-ordered lists).
    order = np.lexsort((dets.rank, dets.image, -dets.score, dets.category))
    bounds = np.searchsorted(dets.category[order], [*cats, np.iinfo(np.int64).max])
    for k, cat in enumerate(cats):
        npig = np.asarray(gt_counts[cat], dtype=np.int64)
        areas = np.nonzero(npig > 0)[0]
        if not len(areas):
            continue
        idx = order[bounds[k] : bounds[k + 1]]
        for m, max_det in enumerate(max_dets):
            sel = idx[dets.rank[idx] < max_det]
            nd = len(sel)
            if nd == 0:
                recall[:, k, areas, m] = 0
                precision[:, :, k, areas, m] = 0
                continue
            tps = dets.tp[sel][:, areas, :]  # [D, A', T]
            fps = ~tps & ~dets.ignore[sel][:, areas, :]
            tp_int = np.cumsum(tps, axis=0)
            tp_sum = tp_int.astype(float)
            fp_sum = np.cumsum(fps, axis=0).astype(float)
            n_a = npig[areas]
            rc = tp_sum / n_a[None, :, None]
            pr = tp_sum / (fp_sum + tp_sum + np.spacing(1))
            recall[:, k, areas, m] = rc[-1].T
            pr = np.maximum.accumulate(pr[::-1], axis=0)[::-1]
            # searchsorted(rc[:, a, t], RECALL_THRESHOLDS, "left") for every column at once,
            # exactly: rc = tp / n rises with the integer tp, so "rc < r" is "tp < k(r)" with
            # k(r) the least integer whose k / n (in float64, as rc) reaches r.
            thr = RECALL_THRESHOLDS[None, :]
            least = np.maximum(np.ceil(thr * n_a[:, None]).astype(np.int64) - 2, 0)
            for _ in range(4):
                least = np.where(least / n_a[:, None] < thr, least + 1, least)  # [A', R]
            cols = rc.shape[1] * rc.shape[2]
            width = nd + 2
            offset = np.arange(cols)[:, None] * width
            keys = (tp_int.reshape(nd, cols).T + offset).ravel()
            limit = np.minimum(np.repeat(least, t_n, axis=0), nd + 1)  # [C, R], C = (A', T)
            inds = (
                np.searchsorted(keys, limit + offset, side="left") - np.arange(cols)[:, None] * nd
            )
            inside = inds < nd
            pr_cols = pr.reshape(nd, cols).T
            q = np.where(inside, pr_cols[np.arange(cols)[:, None], np.minimum(inds, nd - 1)], 0.0)
            # q: [C, R] with C = (A', T) -> precision[T, R, k, A', m]
            precision[:, :, k, areas, m] = q.reshape(len(areas), t_n, r_n).transpose(1, 2, 0)
    return precision, recall, cats


def summarize(
    precision: np.ndarray, recall: np.ndarray, params: CocoParams = PARAMS["bbox"]
) -> list[float]:
    """``COCOeval.summarize``'s numbers from accumulated precision and recall."""
    stats = []
    for _, is_ap, iou_thr, area, max_det in params.summary:
        a = params.area_labels.index(area)
        m = params.max_dets.index(max_det)
        s = precision if is_ap else recall
        if iou_thr is not None:
            s = s[np.where(iou_thr == IOU_THRESHOLDS)[0]]
        s = s[:, :, :, a, m] if is_ap else s[:, :, a, m]
        stats.append(float(np.mean(s[s > -1])) if (s > -1).any() else -1.0)
    return stats


def coco_params(iou_type: str) -> CocoParams:
    """The tables of one ``iouType``; a ValueError naming the choices otherwise."""
    if iou_type not in PARAMS:
        raise ValueError(f"Expected `iou_type` in {list(IOU_TYPES)}, got {iou_type!r}")
    return PARAMS[iou_type]
