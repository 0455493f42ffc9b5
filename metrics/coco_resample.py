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

Only the points after a detection that is a true positive at some IoU threshold are formed
(precision peaks at true positives); the detections that are false positives at every
threshold enter as weighted counts. Cost per category and area range: one weighted
cumulative sum over those false positives, ``[B, D_fp]``, and ``[B, T, D_tp]`` over the
rest; vectorised across resamples (chunks of them), no Python loop over them.
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

_CHUNK_ELEMENTS = 1 << 18  # resamples x thresholds x detections per chunk (cache-sized)


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
        for a in range(a_n):
            if not npig[:, k, a].any():  # left out of every resample's means
                continue
            tp, ignore = ev["tp"][lo:hi, a, :], ev["ignore"][lo:hi, a, :]
            fp = ~tp & ~ignore
            always_fp = fp.all(1)
            live = np.nonzero(~always_fp & ~ignore.all(1))[0]  # every true positive is here
            w_live = weights[:, image[live]].astype(np.float64)  # exact: small integers
            total = np.maximum(npig[:, k, a], 1)[:, None]
            for m, max_det in enumerate(MAX_DETS):
                sel = rank[live] < max_det
                recall[:, k, a, m] = (w_live[:, sel] @ tp[live[sel]].astype(np.float64)) / total
            ap_sum[:, k, a] = _precision_sums(
                weights, image, live, np.nonzero(always_fp)[0], tp, fp, npig[:, k, a]
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
    weights: np.ndarray,
    image: np.ndarray,
    live: np.ndarray,
    always_fp: np.ndarray,
    tp: np.ndarray,
    fp: np.ndarray,
    npig: np.ndarray,
) -> np.ndarray:
    """Sum over the 101 recall thresholds of interpolated precision, per resample and IoU
    threshold, for one category and area range.

    ``weights`` int[B, N]; ``image`` int[D] each detection's image; ``live`` the detections
    that are not a false positive (nor ignored) at every IoU threshold, ``always_fp`` those
    that are; ``tp`` / ``fp`` bool[D, T]; ``npig`` int[B]. Only the points after a live
    detection are formed: recall rises only at true positives, and precision, which falls
    between them, peaks at one, so the interpolated precision at each recall threshold is
    a maximum over those points. The always-false-positive detections enter as weighted
    counts before each live one.
    """
    b_n, t_n, p_n = len(weights), tp.shape[1], len(live)
    out = np.zeros((b_n, t_n))
    if p_n == 0:
        return out
    seg = np.searchsorted(live, always_fp)  # the live detection each false positive precedes
    always_fp, seg = always_fp[seg < p_n], seg[seg < p_n]
    ends = np.searchsorted(seg, np.arange(p_n), side="right")  # false positives before each
    tpi = tp[live].T.astype(np.int32)[None]  # [1, T, P]; counts stay far below 2**31
    fpi = fp[live].T.astype(np.int32)[None]
    need = _counts_reaching(npig)  # [B, R]: the least count that reaches each threshold
    # Search each distinct count once: with fewer ground truths than recall thresholds,
    # the counts 0..max(need), each weighted by how many thresholds need it.
    n_max = int(need.max(initial=0))
    if n_max + 1 < need.shape[1]:
        keys = np.broadcast_to(np.arange(n_max + 1, dtype=np.int64), (b_n, n_max + 1))
        flat = (need + (n_max + 1) * np.arange(b_n, dtype=np.int64)[:, None]).reshape(-1)
        mult = np.bincount(flat, minlength=b_n * (n_max + 1)).reshape(b_n, n_max + 1)
    else:
        keys, mult = need, np.ones_like(need)
    mult = mult.astype(np.float64)
    step = max(1, min(_CHUNK_ELEMENTS // (t_n * p_n), 2 * _CHUNK_ELEMENTS // max(len(seg), 1)))
    for b0 in range(0, b_n, step):
        wb = weights[b0 : b0 + step]
        before = np.zeros((len(wb), len(seg) + 1), dtype=np.int32)
        np.cumsum(wb[:, image[always_fp]], axis=1, out=before[:, 1:])
        wl = wb[:, image[live]].astype(np.int32)[:, None, :]  # [b, 1, P]
        tp_sum = np.cumsum(wl * tpi, axis=-1, dtype=np.int32)  # [b, T, P]
        fp_sum = np.cumsum(wl * fpi, axis=-1, dtype=np.int32)
        fp_sum += before[:, ends][:, None, :]
        tpf = tp_sum.astype(np.float64)
        pr = tpf / (fp_sum + tpf + np.spacing(1))
        env = np.maximum.accumulate(pr[:, :, ::-1], axis=-1)[:, :, ::-1]
        rows = len(wb) * t_n
        big = int(max(tp_sum[..., -1].max(initial=0), npig.max(initial=0))) + 1
        offsets = (np.arange(rows, dtype=np.int64) * big).reshape(-1, t_n, 1)
        queries = keys[b0 : b0 + step, None, :] + offsets  # [b, T, Q]
        inds = np.searchsorted((tp_sum + offsets).reshape(-1), queries.reshape(-1))  # int64
        starts = (np.arange(rows, dtype=np.int64) * p_n).reshape(-1, t_n, 1)
        inds = inds.reshape(queries.shape) - starts
        inside = inds < p_n
        q = np.where(inside, env.reshape(-1)[np.where(inside, inds, 0) + starts], 0.0)
        out[b0 : b0 + step] = np.einsum("btq,bq->bt", q, mult[b0 : b0 + step])
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
