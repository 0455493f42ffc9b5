"""COCO box mAP, host half: greedy matching, the mergeable state, accumulate and summarize.

numpy only (no torch), so a client can merge and compute COCO states without the metric
definitions; the graph, the file parser and the batcher are in :mod:`.coco`, whose
docstring describes the split and the conventions copied from pycocotools.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .state_format import check_same_config, dump_npz, load_npz

IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
RECALL_THRESHOLDS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
MAX_DETS = (1, 10, 100)
AREA_RANGES = ((0.0, 1e5**2), (0.0, 32.0**2), (32.0**2, 96.0**2), (96.0**2, 1e5**2))
AREA_LABELS = ("all", "small", "medium", "large")
STAT_NAMES = (
    "AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large",
    "AR1", "AR10", "AR100", "AR_small", "AR_medium", "AR_large",
)  # fmt: skip
# (is AP, IoU threshold or None, area label, maxDets): COCOeval.summarize's twelve lines.
_SUMMARY = (
    (True, None, "all", 100), (True, 0.5, "all", 100), (True, 0.75, "all", 100),
    (True, None, "small", 100), (True, None, "medium", 100), (True, None, "large", 100),
    (False, None, "all", 1), (False, None, "all", 10), (False, None, "all", 100),
    (False, None, "small", 100), (False, None, "medium", 100), (False, None, "large", 100),
)  # fmt: skip


# -- host: matching -------------------------------------------------------------------------
def _last_argmax(values: np.ndarray) -> np.ndarray:
    """Index of the last maximum along the last axis (pycocotools' ``>=`` scan)."""
    size = values.shape[-1]
    return size - 1 - np.argmax(values[..., ::-1], axis=-1)


def _area_ignored(area: np.ndarray) -> np.ndarray:
    """``[..., A]``: area outside each COCO range (bounds inclusive)."""
    lo = np.array([r[0] for r in AREA_RANGES])
    hi = np.array([r[1] for r in AREA_RANGES])
    return (area[..., None] < lo) | (area[..., None] > hi)


def match_groups(
    ious: np.ndarray, det_count: np.ndarray, gt_ignore: np.ndarray, gt_crowd: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """COCO greedy matching for P groups with the same number of ground truths G.

    ious (float64[P, D, G]) with detections in score order; det_count (int[P]) valid rows;
    gt_ignore (bool[P, A, G]); gt_crowd (bool[P, G]). Returns (matched, ignored_match),
    both bool[P, A, T, D]: the detection matched a ground truth, and that one is ignored.
    """
    num, depth, width = ious.shape
    areas, thresholds = gt_ignore.shape[1], len(IOU_THRESHOLDS)
    thr = np.minimum(IOU_THRESHOLDS, 1 - 1e-10)[None, None, :, None]
    gt_taken = np.zeros((num, areas, thresholds, width), dtype=bool)
    matched = np.zeros((num, areas, thresholds, depth), dtype=bool)
    ignored = np.zeros_like(matched)
    crowd = gt_crowd[:, None, None, :]
    ign = gt_ignore[:, :, None, :]
    for d in range(depth):
        live = np.nonzero(det_count > d)[0]
        row = ious[live, d][:, None, None, :]
        free = ~(gt_taken[live] & ~crowd[live])
        valid = free & (row >= thr)
        regular = valid & ~ign[live]
        pool = np.where(regular.any(-1, keepdims=True), regular, valid & ign[live])
        found = pool.any(-1)
        best = _last_argmax(np.where(pool, row, -1.0))
        p, a, t = np.nonzero(found)
        m = best[p, a, t]
        gt_taken[live[p], a, t, m] = True
        matched[live, :, :, d] = found
        ignored[live[p], a, t, d] = gt_ignore[live[p], a, m]
    return matched, ignored


@dataclass
class _Dets:
    category: np.ndarray  # int64[D]
    image: np.ndarray  # int64[D]
    rank: np.ndarray  # int64[D], position in its (image, category) list by score
    score: np.ndarray  # float64[D]
    tp: np.ndarray  # bool[D, A, T]
    ignore: np.ndarray  # bool[D, A, T]

    @classmethod
    def empty(cls) -> _Dets:
        a, t = len(AREA_RANGES), len(IOU_THRESHOLDS)
        ints = np.zeros(0, dtype=np.int64)
        flags = np.zeros((0, a, t), dtype=bool)
        return cls(ints, ints, ints, np.zeros(0), flags, flags)

    @classmethod
    def concat(cls, parts: Sequence[_Dets]) -> _Dets:
        fields = ("category", "image", "rank", "score", "tp", "ignore")
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in fields))


class CocoAggregator:
    """Merge-able COCO evaluation state; ``compute`` gives COCOeval's twelve statistics.

    ``update(outputs, inputs)`` takes the ``coco_map`` graph's output ``iou`` and a batch as
    built by :func:`coco_batches`: the graph inputs plus ``pred_score`` (float64[N]),
    ``target_area`` (float64[G]), ``group_image`` and ``group_category`` (int64, indexed by
    group id) and ``categories`` (every category id of the ground-truth file). Every image
    must go to exactly one update (of one aggregator, before merging).
    """

    metric = "coco_map"
    KIND = "coco_map/1"

    def __init__(self, **params: Any) -> None:
        self.config: dict[str, Any] = {"max_dets": list(MAX_DETS)}
        self._parts: list[_Dets] = []
        self._gt: dict[int, np.ndarray] = {}  # category id -> int64[A] non-ignored gt count

    # -- folding ----------------------------------------------------------------------------
    def update(self, outputs: Mapping[str, np.ndarray], inputs: Mapping[str, np.ndarray]) -> None:
        iou = np.asarray(outputs["iou"], dtype=np.float64)
        score = np.asarray(inputs["pred_score"], dtype=np.float64)
        det_group = np.asarray(inputs["pred_group"], dtype=np.int64)
        gt_group = np.asarray(inputs["target_group"], dtype=np.int64)
        crowd = np.asarray(inputs["target_crowd"]) != 0
        gt_area = np.asarray(inputs["target_area"], dtype=np.float64)
        boxes = np.asarray(inputs["preds"], dtype=np.float64)
        group_image = np.asarray(inputs["group_image"], dtype=np.int64)
        group_category = np.asarray(inputs["group_category"], dtype=np.int64)
        for cat in np.asarray(inputs.get("categories", []), dtype=np.int64).tolist():
            self._gt.setdefault(int(cat), np.zeros(len(AREA_RANGES), dtype=np.int64))
        num_groups = len(group_image)
        if iou.shape != (len(det_group), len(gt_group)):
            raise ValueError(
                f"Expected `iou` of shape [{len(det_group)}, {len(gt_group)}], got {list(iou.shape)}"
            )

        gt_ignore = crowd[:, None] | _area_ignored(gt_area)  # [G, A]
        counts = np.zeros((num_groups, len(AREA_RANGES)), dtype=np.int64)
        np.add.at(counts, gt_group, ~gt_ignore)
        for cat in np.unique(group_category).tolist():
            total = counts[group_category == cat].sum(0)
            self._gt[cat] = self._gt.get(cat, np.zeros_like(total)) + total

        # Detections by group, then score (stable: file order breaks ties), top maxDets.
        order = np.lexsort((np.arange(len(score)), -score, det_group))
        grp = det_group[order]
        starts = np.searchsorted(grp, np.arange(num_groups))
        rank = np.arange(len(order)) - starts[grp] if len(order) else grp
        keep = rank < MAX_DETS[-1]
        order, grp, rank = order[keep], grp[keep], rank[keep]
        det_count = np.bincount(grp, minlength=num_groups)
        det_starts = np.concatenate([[0], np.cumsum(det_count)[:-1]])

        areas, thresholds = len(AREA_RANGES), len(IOU_THRESHOLDS)
        matched = np.zeros((len(order), areas, thresholds), dtype=bool)
        ignored = np.zeros_like(matched)
        gt_order = np.argsort(gt_group, kind="stable")
        gt_count = np.bincount(gt_group, minlength=num_groups)
        gt_starts = np.concatenate([[0], np.cumsum(gt_count)[:-1]])
        both = (det_count > 0) & (gt_count > 0)
        for width in np.unique(gt_count[both]).tolist():
            groups = np.nonzero(both & (gt_count == width))[0]
            depth = int(det_count[groups].max())
            d_idx = det_starts[groups][:, None] + np.arange(depth)  # positions in `order`
            d_ok = np.arange(depth)[None, :] < det_count[groups][:, None]
            d_idx = np.where(d_ok, d_idx, det_starts[groups][:, None])
            g_idx = gt_order[gt_starts[groups][:, None] + np.arange(width)]
            sub = iou[order[d_idx][:, :, None], g_idx[:, None, :]]
            m, ig = match_groups(
                sub, det_count[groups], gt_ignore[g_idx].transpose(0, 2, 1), crowd[g_idx]
            )
            p, d = np.nonzero(d_ok)
            matched[d_idx[p, d]] = m[p, :, :, d]
            ignored[d_idx[p, d]] = ig[p, :, :, d]

        # Unmatched detections outside an area range are ignored for that range.
        det_area = boxes[order, 2] * boxes[order, 3]
        ignored |= ~matched & _area_ignored(det_area)[:, :, None]
        self._parts.append(
            _Dets(
                category=group_category[grp],
                image=group_image[grp],
                rank=rank.astype(np.int64),
                score=score[order],
                tp=matched & ~ignored,
                ignore=ignored,
            )
        )

    # -- state ------------------------------------------------------------------------------
    def _dets(self) -> _Dets:
        if len(self._parts) != 1:
            self._parts = [_Dets.concat([_Dets.empty(), *self._parts])]
        return self._parts[0]

    def merge(self, other: CocoAggregator) -> CocoAggregator:
        check_same_config(self.KIND, self.config, other.config)
        out = CocoAggregator()
        out._parts = [self._dets(), other._dets()]
        out._gt = {c: v.copy() for c, v in self._gt.items()}
        for cat, count in other._gt.items():
            out._gt[cat] = out._gt.get(cat, np.zeros_like(count)) + count
        return out

    def to_bytes(self) -> bytes:
        dets = self._dets()
        cats = np.array(sorted(self._gt), dtype=np.int64)
        counts = np.array([self._gt[c] for c in cats.tolist()], dtype=np.int64).reshape(
            len(cats), len(AREA_RANGES)
        )
        arrays = {
            "category": dets.category, "image": dets.image, "rank": dets.rank,
            "score": dets.score, "tp": dets.tp, "ignore": dets.ignore,
            "gt_categories": cats, "gt_counts": counts,
        }  # fmt: skip
        return dump_npz(self.KIND, self.config, arrays)

    @classmethod
    def from_bytes(cls, data: bytes) -> CocoAggregator:
        config, arrays = load_npz(cls.KIND, data)
        out = cls()
        check_same_config(cls.KIND, out.config, config)
        out._parts = [
            _Dets(*(arrays[k] for k in ("category", "image", "rank", "score", "tp", "ignore")))
        ]
        out._gt = dict(zip(arrays["gt_categories"].tolist(), arrays["gt_counts"], strict=True))
        return out

    def detections(self) -> dict[str, np.ndarray]:
        """Every kept detection: category, image, rank, score, tp and ignore flags
        (``bool[D, A, T]``), in the order the updates folded them."""
        dets = self._dets()
        return {f: getattr(dets, f) for f in ("category", "image", "rank", "score", "tp", "ignore")}

    # -- figures ----------------------------------------------------------------------------
    def accumulate(self) -> tuple[np.ndarray, np.ndarray, list[int]]:
        """``precision[T, R, K, A, M]`` and ``recall[T, K, A, M]`` as ``COCOeval.eval``."""
        dets = self._dets()
        cats = sorted(self._gt)
        t_n, r_n, a_n, m_n = (
            len(IOU_THRESHOLDS), len(RECALL_THRESHOLDS), len(AREA_RANGES), len(MAX_DETS)
        )  # fmt: skip
        precision = -np.ones((t_n, r_n, len(cats), a_n, m_n))
        recall = -np.ones((t_n, len(cats), a_n, m_n))
        by_cat = np.argsort(dets.category, kind="stable")
        sorted_cats = dets.category[by_cat]
        for k, cat in enumerate(cats):
            npig_all = self._gt[cat]
            if not (npig_all > 0).any():
                continue
            lo, hi = np.searchsorted(sorted_cats, [cat, cat + 1])
            idx = by_cat[lo:hi]
            idx = idx[np.lexsort((dets.rank[idx], dets.image[idx], -dets.score[idx]))]
            for m, max_det in enumerate(MAX_DETS):
                sel = idx[dets.rank[idx] < max_det]
                for a in range(a_n):
                    npig = int(npig_all[a])
                    if npig == 0:
                        continue
                    tps = dets.tp[sel, a, :].T
                    fps = ~tps & ~dets.ignore[sel, a, :].T
                    tp_sum = np.cumsum(tps, axis=1).astype(dtype=float)
                    fp_sum = np.cumsum(fps, axis=1).astype(dtype=float)
                    nd = tp_sum.shape[1]
                    rc = tp_sum / npig
                    pr = tp_sum / (fp_sum + tp_sum + np.spacing(1))
                    recall[:, k, a, m] = rc[:, -1] if nd else 0
                    if nd == 0:
                        precision[:, :, k, a, m] = 0
                        continue
                    pr = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]
                    for t in range(t_n):
                        inds = np.searchsorted(rc[t], RECALL_THRESHOLDS, side="left")
                        inside = inds < nd
                        q = np.zeros(r_n)
                        q[inside] = pr[t, inds[inside]]
                        precision[t, :, k, a, m] = q
        return precision, recall, cats

    def compute(self) -> dict[str, float]:
        """The twelve COCO statistics (``-1`` where nothing is defined), by name."""
        precision, recall, _ = self.accumulate()
        return dict(zip(STAT_NAMES, summarize(precision, recall), strict=True))

    def per_category_ap(self) -> dict[int, float]:
        """AP@[.50:.95] (all areas, 100 dets) per category id; -1 without ground truth."""
        precision, _, cats = self.accumulate()
        out = {}
        for k, cat in enumerate(cats):
            s = precision[:, :, k, 0, -1]
            out[cat] = float(np.mean(s[s > -1])) if (s > -1).any() else -1.0
        return out


def summarize(precision: np.ndarray, recall: np.ndarray) -> list[float]:
    """``COCOeval.summarize``'s twelve numbers from accumulated precision and recall."""
    stats = []
    for is_ap, iou_thr, area, max_det in _SUMMARY:
        a = AREA_LABELS.index(area)
        m = MAX_DETS.index(max_det)
        s = precision if is_ap else recall
        if iou_thr is not None:
            s = s[np.where(iou_thr == IOU_THRESHOLDS)[0]]
        s = s[:, :, :, a, m] if is_ap else s[:, :, a, m]
        stats.append(float(np.mean(s[s > -1])) if (s > -1).any() else -1.0)
    return stats
