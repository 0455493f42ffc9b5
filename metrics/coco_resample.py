"""COCO mAP on resampled image sets, from per-image statistics, without re-matching.

numpy only. A bootstrap resample of a COCO dataset is a multiset of its images: image ``i``
taken ``w[i]`` times (multinomial counts). Greedy matching is per (image, category), so a
duplicated image matches exactly as the original did, and COCOeval on the resampled set
(each copy a distinct image id) differs from the original only in how often each image's
detections and ground truths count. :func:`resampled_stats` therefore needs only what the
COCO aggregator keeps (per detection: image, category, rank, score, true-positive and
ignore flags per area range and IoU threshold) plus each image's non-ignored ground-truth
count per (category, area range) (:func:`coco_evidence`).

For every category the detections are sorted once, by (-score, image, rank) as
:meth:`CocoAggregator.accumulate` does; per resample each detection is weighted by the
multiplicity of its image, and the weighted true / false positive cumulative sums replace
COCOeval's unweighted ones (ground-truth counts weighted likewise). A detection of weight
``w`` stands for ``w`` consecutive copies with the same flags; the points inside such a run
never change an interpolated precision (a run of true positives only raises precision, so
the envelope at its inner points equals the envelope at its end; a run of false positives
keeps recall, so the recall search never stops inside it), so the result is COCOeval's on
the resampled set whose copies of an image get consecutive ids in the original order.
Recall thresholds are found on integer counts, so the search is exact. One case differs:
an image holding two detections of one category with exactly the same score (pycocotools
then orders a duplicated image's copies one after the other, here each detection's copies
sit together); only the precision inside that tie can move.

Cost: per category, area range and chunk of resamples, ``[B, T, D_k]`` cumulative sums;
vectorised across resamples, no Python loop over them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from .coco_eval import (
    AREA_RANGES,
    IOU_THRESHOLDS,
    MAX_DETS,
    RECALL_THRESHOLDS,
    STAT_NAMES,
    CocoAggregator,
    _area_ignored,
)

if TYPE_CHECKING:
    from .coco import CocoData

_CHUNK_ELEMENTS = 1 << 21  # resamples x thresholds x detections per chunk (16 MB float64)


def coco_evidence(data: CocoData, agg: CocoAggregator) -> dict[str, np.ndarray]:
    """What :func:`resampled_stats` needs, image and category as positions in ``ids`` and
    ``categories``, detections sorted by (category, -score, image, rank)."""
    ids, cats = np.asarray(data.image_ids), np.asarray(data.categories)
    dets = agg.detections()
    image = np.searchsorted(ids, dets["image"])
    category = np.searchsorted(cats, dets["category"])
    order = np.lexsort((dets["rank"], image, -dets["score"], category))
    gt = np.zeros((len(ids), len(cats), len(AREA_RANGES)), dtype=np.int64)
    kept = ~((np.asarray(data.gt_crowd) != 0)[:, None] | _area_ignored(data.gt_area))
    np.add.at(
        gt, (np.searchsorted(ids, data.gt_image), np.searchsorted(cats, data.gt_category)), kept
    )
    return {
        "ids": ids.astype(np.int64),
        "categories": cats.astype(np.int64),
        "image": image[order].astype(np.int64),
        "category": category[order].astype(np.int64),
        "rank": dets["rank"][order].astype(np.int64),
        "score": dets["score"][order].astype(np.float64),
        "tp": dets["tp"][order],
        "ignore": dets["ignore"][order],
        "gt": gt,
    }


def resampled_stats(ev: Mapping[str, Any], weights: np.ndarray) -> dict[str, np.ndarray]:
    """COCOeval's twelve statistics for each resample: ``weights`` (int[B, N]) says how
    often each image is drawn. Returns name -> float64[B] (``-1`` where undefined)."""
    weights = np.asarray(weights, dtype=np.int64)
    b_n = len(weights)
    t_n, r_n, a_n, m_n = (
        len(IOU_THRESHOLDS),
        len(RECALL_THRESHOLDS),
        len(AREA_RANGES),
        len(MAX_DETS),
    )
    gt = np.asarray(ev["gt"], dtype=np.int64)
    k_n = gt.shape[1]
    npig = (weights @ gt.reshape(len(gt), -1)).reshape(b_n, k_n, a_n)  # [B, K, A]
    ap_sum = np.zeros((b_n, k_n, a_n, t_n))  # sum over recall thresholds, maxDets 100
    recall = np.zeros((b_n, k_n, a_n, m_n, t_n))
    category = np.asarray(ev["category"])
    bounds = np.searchsorted(category, np.arange(k_n + 1))
    for k in range(k_n):
        lo, hi = int(bounds[k]), int(bounds[k + 1])
        image, rank = ev["image"][lo:hi], ev["rank"][lo:hi]
        tp, ignore = ev["tp"][lo:hi], ev["ignore"][lo:hi]
        w = weights[:, image]  # [B, D_k]
        for a in range(a_n):
            total = np.maximum(npig[:, k, a], 1)[:, None]
            for m, max_det in enumerate(MAX_DETS):
                sel = rank < max_det
                recall[:, k, a, m] = (w[:, sel] @ tp[sel, a, :].astype(np.int64)) / total
            live = ~ignore[:, a, :].all(1)  # always-ignored detections add no point
            ap_sum[:, k, a] = _precision_sums(
                w[:, live], tp[live, a, :], ignore[live, a, :], npig[:, k, a]
            )
    valid = npig > 0  # [B, K, A]: categories COCOeval keeps
    iou = list(np.round(IOU_THRESHOLDS, 2))
    out: dict[str, np.ndarray] = {}
    specs = (
        ("AP", slice(None), 0), ("AP50", slice(iou.index(0.5), iou.index(0.5) + 1), 0),
        ("AP75", slice(iou.index(0.75), iou.index(0.75) + 1), 0),
        ("AP_small", slice(None), 1), ("AP_medium", slice(None), 2), ("AP_large", slice(None), 3),
    )  # fmt: skip
    for name, ts, a in specs:
        s = np.where(valid[:, :, a, None], ap_sum[:, :, a, ts], 0.0).sum((1, 2))
        count = valid[:, :, a].sum(1) * r_n * len(range(t_n)[ts])
        out[name] = _mean_or_minus_one(s, count)
    for name, a, m in (
        ("AR1", 0, 0), ("AR10", 0, 1), ("AR100", 0, 2),
        ("AR_small", 1, 2), ("AR_medium", 2, 2), ("AR_large", 3, 2),
    ):  # fmt: skip
        s = np.where(valid[:, :, a, None], recall[:, :, a, m], 0.0).sum((1, 2))
        out[name] = _mean_or_minus_one(s, valid[:, :, a].sum(1) * t_n)
    return {name: out[name] for name in STAT_NAMES}


def _mean_or_minus_one(total: np.ndarray, count: np.ndarray) -> np.ndarray:
    return np.where(count > 0, total / np.maximum(count, 1), -1.0)


def _precision_sums(
    w: np.ndarray, tp: np.ndarray, ignore: np.ndarray, npig: np.ndarray
) -> np.ndarray:
    """Sum over the 101 recall thresholds of interpolated precision, per resample and IoU
    threshold: ``w`` int[B, D] weights, ``tp`` / ``ignore`` bool[D, T], ``npig`` int[B]."""
    b_n, d_n = w.shape
    t_n = tp.shape[1]
    out = np.zeros((b_n, t_n))
    if d_n == 0:
        return out
    fp = (~tp & ~ignore).T.astype(np.int64)[None]  # [1, T, D]
    tpi = tp.T.astype(np.int64)[None]
    # The smallest count c with c / npig >= r, as COCOeval's float comparison decides it.
    need = _counts_reaching(npig)  # [B, R]
    step = max(1, _CHUNK_ELEMENTS // (t_n * d_n))
    for b0 in range(0, b_n, step):
        wb = w[b0 : b0 + step, None, :]  # [b, 1, D]
        tp_sum = np.cumsum(wb * tpi, axis=-1)  # [b, T, D] int
        fp_sum = np.cumsum(wb * fp, axis=-1)
        tpf = tp_sum.astype(np.float64)
        pr = tpf / (fp_sum.astype(np.float64) + tpf + np.spacing(1))
        env = np.maximum.accumulate(pr[:, :, ::-1], axis=-1)[:, :, ::-1]
        rows = tp_sum.shape[0] * t_n
        big = int(max(tp_sum[..., -1].max(initial=0), npig.max(initial=0))) + 1
        offsets = (np.arange(rows, dtype=np.int64) * big).reshape(-1, t_n, 1)
        flat = (tp_sum + offsets).reshape(-1)
        queries = need[b0 : b0 + step, None, :] + offsets  # [b, T, R]
        inds = np.searchsorted(flat, queries.reshape(-1), side="left").reshape(queries.shape)
        inds -= (np.arange(rows, dtype=np.int64) * d_n).reshape(-1, t_n, 1)
        inside = inds < d_n
        flat_env = env.reshape(-1)
        pos = np.where(inside, inds, 0) + (np.arange(rows) * d_n).reshape(-1, t_n, 1)
        q = np.where(inside, flat_env[pos], 0.0)
        out[b0 : b0 + step] = q.sum(-1)
    return out


def _counts_reaching(npig: np.ndarray) -> np.ndarray:
    """int[B, R]: the least integer ``c`` with ``c / npig >= r`` (float64 division) per
    recall threshold ``r``; ``npig`` 0 gives 0 (such categories are left out anyway)."""
    n = np.maximum(np.asarray(npig, dtype=np.int64), 1)[:, None].astype(np.float64)
    r = RECALL_THRESHOLDS[None, :]
    c = np.ceil(r * n)
    c = np.where((c - 1) / n >= r, c - 1, c)
    c = np.where(c / n < r, c + 1, c)
    return c.astype(np.int64)
