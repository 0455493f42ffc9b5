"""COCO mAP on resampled image sets, from per-image statistics, without re-matching.

numpy only. A bootstrap resample of a COCO dataset is a multiset of its images: image ``i``
taken ``w[i]`` times (multinomial counts). Greedy matching is per (image, category), so a
duplicated image matches exactly as the original did, and COCOeval on the resampled set
(each copy a distinct image id, the copies of an image consecutive in the original order)
differs from the original only in how often each image's detections and ground truths
count. :func:`resampled_stats` therefore needs only what the COCO aggregator keeps (per
detection: image, category, rank, score, true-positive and ignore flags per area range and
IoU threshold) plus each image's non-ignored ground-truth count per (category, area range)
(:func:`coco_evidence`).

Order. pycocotools sorts a category's detections with a stable mergesort on ``-score``
over the list built image by image (each image's in rank order), so equal scores keep
image order, then rank. The evidence is sorted the same way, by (-score, image, rank), and
a detection of weight ``w`` stands for ``w`` consecutive copies with the same flags. That
is exact except inside a *same-image tie* (two or more detections of one image and
category with the same score): pycocotools then takes copy 1's tied detections, then copy
2's, and so on. Such a run is unrolled here into ``max(w)`` repetitions of the tied
detections, repetition ``c`` weighted ``1`` where the resample draws the image more than
``c`` times, else ``0``, which is that order exactly (a weight-0 point repeats the point
before it and changes no interpolated precision).

Accumulate. Resamples are the inner, contiguous axis of every array (``[points, B]``), so
gathering a detection's weights is one row copy. Per category and area range, one weighted
cumulative sum over the counted detections (``[D, B]``); per IoU threshold, only the
points after that threshold's true positives are formed (precision peaks at them; a run of
``w`` copies of one never changes the envelope inside it), their precision's upper
envelope, and a table ``G[c]`` = how many recall thresholds a true-positive count ``c``
reaches (found on integer counts, so exact): the interpolated precision summed over the
101 thresholds is ``sum_p envelope[p] * (G[tp[p]] - G[tp[p - 1]])``. Chunks of resamples
bound the memory; there is no Python loop over resamples.
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

_CHUNK_ELEMENTS = 1 << 20  # detections x resamples per chunk (int32: 4 MiB)


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
    # float64 products are exact on these counts, and BLAS (integer matmul is not)
    npig = (weights.astype(np.float64) @ gt.reshape(len(gt), -1).astype(np.float64)).reshape(
        b_n, k_n, a_n
    )
    npig = npig.astype(np.int64)  # [B, K, A]
    ap_sum = np.zeros((k_n, a_n, t_n, b_n))  # sum over recall thresholds, maxDets 100
    recall = np.zeros((k_n, a_n, m_n, t_n, b_n))
    table, row, pick = unroll_ties(ev, weights)
    category = np.asarray(ev["category"])[pick]
    rank, tp_all, ig_all = (np.asarray(ev[f])[pick] for f in ("rank", "tp", "ignore"))
    bounds = np.searchsorted(category, np.arange(k_n + 1))
    for k in range(k_n):
        lo, hi = int(bounds[k]), int(bounds[k + 1])
        for a in range(a_n):
            n_ka = npig[:, k, a]
            if not n_ka.any():  # left out of every resample's means
                continue
            tp, ignore = tp_all[lo:hi, a, :], ig_all[lo:hi, a, :]
            counted = np.nonzero(~ignore.all(1))[0]
            if not tp[counted].any():  # no true positive: precision and recall 0
                continue
            tp, ignore = tp[counted], ignore[counted]
            rows, ranks = row[lo:hi][counted], rank[lo:hi][counted]
            step = max(1, _CHUNK_ELEMENTS // len(counted))
            for b0 in range(0, b_n, step):
                cols = slice(b0, b0 + step)
                w = table[rows, cols]  # [D, b]
                ap_sum[k, a, :, cols], recall[k, a, :, :, cols] = _accumulate(
                    w, tp, ignore, ranks, n_ka[cols]
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
        s = np.where(valid[:, :, a], ap_sum[:, a, ts].sum(1).T, 0.0).sum(1)
        count = valid[:, :, a].sum(1) * r_n * len(range(t_n)[ts])
        out[name] = _mean_or_minus_one(s, count)
    for name, a, m in (
        ("AR1", 0, 0), ("AR10", 0, 1), ("AR100", 0, 2),
        ("AR_small", 1, 2), ("AR_medium", 2, 2), ("AR_large", 3, 2),
    ):  # fmt: skip
        s = np.where(valid[:, :, a], recall[:, a, m].sum(1).T, 0.0).sum(1)
        out[name] = _mean_or_minus_one(s, valid[:, :, a].sum(1) * t_n)
    return {name: out[name] for name in STAT_NAMES}


def unroll_ties(
    ev: Mapping[str, Any], weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The detections in pycocotools' order on every resample, and their weights.

    Returns ``table`` int32[N + V, B] (row ``i < N``: how often each resample draws image
    ``i``; the ``V`` rows after it: ``1`` where it draws a tied image more than ``c``
    times), and per unrolled detection its row in ``table`` and its position in ``ev``.
    Without same-image ties: ``weights.T``, the images, and every detection once.
    """
    table = np.ascontiguousarray(weights.T, dtype=np.int32)
    cat, image, score = (np.asarray(ev[f]) for f in ("category", "image", "score"))
    d_n = len(cat)
    same = (cat[1:] == cat[:-1]) & (image[1:] == image[:-1]) & (score[1:] == score[:-1])
    if not same.any():
        return table, image, np.arange(d_n)
    first = np.concatenate([[True], ~same])
    block = np.cumsum(first) - 1  # each detection's run of equal (category, image, score)
    head = np.nonzero(first)[0]  # the first position of each run
    tied = np.bincount(block)[block] > 1
    tied_images = np.unique(image[tied])
    most = table[tied_images].max(1)  # the most copies of each tied image in any resample
    offset = len(table) + np.concatenate([[0], np.cumsum(most)[:-1]])
    copy_image = np.repeat(tied_images, most)
    copy = np.arange(len(copy_image)) - np.repeat(offset - len(table), most)
    extra = (table[copy_image] > copy[:, None]).astype(np.int32)
    where = np.searchsorted(tied_images, image)
    copies = np.where(tied, most[np.minimum(where, len(most) - 1)], 1)
    pick = np.repeat(np.arange(d_n), copies)
    c = np.arange(len(pick)) - np.repeat(np.cumsum(copies) - copies, copies)
    order = np.lexsort((pick, c, head[block[pick]]))  # by run, then repetition, then rank
    pick, c = pick[order], c[order]
    row = np.where(tied[pick], offset[np.minimum(where[pick], len(most) - 1)] + c, image[pick])
    return np.concatenate([table, extra]), row, pick


def _accumulate(
    w: np.ndarray, tp: np.ndarray, ignore: np.ndarray, rank: np.ndarray, npig: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """For one category and area range: per IoU threshold, the interpolated precision summed
    over the recall thresholds (float64[T, b]) and the recall at each maxDets
    (float64[M, T, b]).

    ``w`` int32[D, b]: each counted detection's weight in each resample (score order);
    ``tp`` / ``ignore`` bool[D, T]; ``rank`` int[D]; ``npig`` int[b], the weighted number of
    non-ignored ground truths. (No BLAS: many small products thrash its threads.)
    """
    t_n, b_n = tp.shape[1], w.shape[1]
    total = np.cumsum(w, axis=0, dtype=np.int32)  # detections so far, ignored ones included
    reach, column = _thresholds_reached(npig)
    n = np.maximum(npig, 1).astype(np.float64)
    ap = np.zeros((t_n, b_n))
    recall = np.zeros((len(MAX_DETS), t_n, b_n))
    for t in range(t_n):
        points = np.nonzero(tp[:, t])[0]
        if len(points) == 0:
            continue
        tp_sum = np.cumsum(w[points], axis=0, dtype=np.int32)  # [P, b]
        seen = total[points]
        ignored = np.nonzero(ignore[:, t])[0]
        if len(ignored):  # take the ignored detections so far back out of the count
            ig_sum = np.zeros((len(ignored) + 1, b_n), dtype=np.int32)
            np.cumsum(w[ignored], axis=0, out=ig_sum[1:])
            seen -= ig_sum[np.searchsorted(ignored, points, side="right")]
        pr = tp_sum / (seen + np.spacing(1))
        env = np.maximum.accumulate(pr[::-1], axis=0)[::-1]
        g = reach.reshape(-1)[np.minimum(tp_sum, len(reach) - 1) * reach.shape[1] + column]
        g[1:] -= g[:-1].copy()
        ap[t] = np.einsum("pb,pb->b", env, g)
        recall[-1, t] = tp_sum[-1] / n
        for m, max_det in enumerate(MAX_DETS[:-1]):
            recall[m, t] = w[points[rank[points] < max_det]].sum(0) / n
    return ap, recall


def _mean_or_minus_one(total: np.ndarray, count: np.ndarray) -> np.ndarray:
    return np.where(count > 0, total / np.maximum(count, 1), -1.0)


def _thresholds_reached(npig: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """How many recall thresholds ``r`` a true-positive count ``c`` reaches, ``c / npig >= r``
    in float64 as pycocotools' ``searchsorted`` on its recall decides: ``table[c, j]`` for
    ``c`` up to ``max(npig)`` and the ``j``-th distinct count, and each resample's ``j``."""
    counts, column = np.unique(np.maximum(npig, 1), return_inverse=True)
    recall = np.arange(int(counts[-1]) + 1)[:, None] / counts[None, :].astype(np.float64)
    table = np.searchsorted(RECALL_THRESHOLDS, recall, side="right").astype(np.int32)
    return table, column.reshape(-1)
