"""COCO mAP (boxes, masks, keypoints), host half: greedy matching and the mergeable state.

numpy only (no torch), so a client can merge and compute COCO states without the metric
definitions; the tables, accumulate and summarize are in :mod:`.coco_summary`, the box
graph in :mod:`.coco`, whose docstring describes the split and the conventions copied from
pycocotools, the file parser and the batcher in :mod:`.coco_files`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .coco_summary import (  # noqa: F401 - the tables, re-exported
    IOU_THRESHOLDS,
    IOU_TYPES,
    PARAMS,
    RECALL_THRESHOLDS,
    CocoParams,
    accumulate,
    coco_params,
    summarize,
)
from .state_format import check_same_config, dump_npz, load_npz

# The box tables under their old names.
MAX_DETS = PARAMS["bbox"].max_dets
AREA_RANGES = PARAMS["bbox"].area_ranges
AREA_LABELS = PARAMS["bbox"].area_labels
STAT_NAMES = PARAMS["bbox"].stat_names
_SUMMARY = tuple(line[1:] for line in PARAMS["bbox"].summary)


# -- host: matching -------------------------------------------------------------------------
def _last_argmax(values: np.ndarray) -> np.ndarray:
    """Index of the last maximum along the last axis (pycocotools' ``>=`` scan)."""
    size = values.shape[-1]
    return size - 1 - np.argmax(values[..., ::-1], axis=-1)


def _area_ignored(area: np.ndarray, ranges: Sequence[tuple[float, float]] = AREA_RANGES):
    """``[..., A]``: area outside each COCO range (bounds inclusive)."""
    lo = np.array([r[0] for r in ranges])
    hi = np.array([r[1] for r in ranges])
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
    def empty(cls, areas: int) -> _Dets:
        ints = np.zeros(0, dtype=np.int64)
        flags = np.zeros((0, areas, len(IOU_THRESHOLDS)), dtype=bool)
        return cls(ints, ints, ints, np.zeros(0), flags, flags)

    @classmethod
    def concat(cls, parts: Sequence[_Dets]) -> _Dets:
        fields = ("category", "image", "rank", "score", "tp", "ignore")
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in fields))


def _array(inputs: Mapping[str, np.ndarray], key: str, dtype: Any, default: Any = None):
    if key not in inputs:
        if default is None:
            raise KeyError(key)
        return default
    return np.asarray(inputs[key], dtype=dtype)


class CocoAggregator:
    """Merge-able COCO evaluation state; ``compute`` gives COCOeval's statistics.

    ``iou_type`` is pycocotools' ``iouType``: ``bbox`` and ``segm`` give twelve statistics
    (maxDets 1/10/100, areas all/small/medium/large), ``keypoints`` ten (maxDets 20, areas
    all/medium/large). ``update(outputs, inputs)`` takes the graph's pairwise similarity
    (``iou [N, G]`` of ``coco_map`` or the host's mask IoU; ``oks [P]`` of ``coco_oks`` for
    the pairs ``pair_pred``, ``pair_target`` (int64[P], indices into the batch's
    detections and ground truths), -1 elsewhere) and a batch as
    built by ``coco_files.coco_batches``: the graph inputs plus ``pred_score`` (float64[N]),
    ``pred_area`` (float64[N]; for boxes ``w * h`` of ``preds`` when absent),
    ``target_area`` (float64[G]; ``gt_area`` with a pairwise graph, whose ``target_area``
    is per pair), ``group_image`` and ``group_category`` (int64, indexed by
    group id), ``categories`` (every category id of the ground-truth file), and optionally
    ``lone_group``, ``lone_score``, ``lone_area``: detections in groups with no ground truth,
    which need no similarity. Every image must go to exactly one update (of one aggregator,
    before merging).
    """

    metric = "coco_map"
    KIND = "coco_map/1"

    def __init__(self, iou_type: str = "bbox", **params: Any) -> None:
        self.params = coco_params(iou_type)
        self.metric = "coco_oks" if iou_type == "keypoints" else "coco_map"
        self.config: dict[str, Any] = {
            "max_dets": list(self.params.max_dets),
            "iou_type": iou_type,
        }
        self._parts: list[_Dets] = []
        self._gt: dict[int, np.ndarray] = {}  # category id -> int64[A] non-ignored gt count

    # -- folding ----------------------------------------------------------------------------
    def update(self, outputs: Mapping[str, np.ndarray], inputs: Mapping[str, np.ndarray]) -> None:
        ranges = self.params.area_ranges
        num_areas = len(ranges)
        sim_key = next((k for k in ("iou", "oks") if k in outputs), "iou")
        iou = np.asarray(outputs[sim_key], dtype=np.float64)
        det_group = _array(inputs, "pred_group", np.int64)
        gt_group = _array(inputs, "target_group", np.int64)
        if "pair_pred" in inputs:  # a pairwise graph (coco_oks): one value per pair
            rows, cols = (
                _array(inputs, "pair_pred", np.int64),
                _array(inputs, "pair_target", np.int64),
            )
            if iou.shape != rows.shape or rows.shape != cols.shape:
                raise ValueError(
                    f"Expected `{sim_key}` of shape [{len(rows)}] (one per pair), "
                    f"got {list(iou.shape)}"
                )
            if len(rows) and (rows.max() >= len(det_group) or cols.max() >= len(gt_group)):
                raise ValueError("`pair_pred` / `pair_target` index past the batch")
            dense = -np.ones((len(det_group), len(gt_group)))
            dense[rows, cols] = iou
            iou = dense
        crowd = _array(inputs, "target_crowd", np.int64) != 0
        # pairwise graphs take `target_area` per pair; the ground truths' areas are `gt_area`
        area_key = "gt_area" if "gt_area" in inputs else "target_area"
        gt_area = _array(inputs, area_key, np.float64)
        group_image = _array(inputs, "group_image", np.int64)
        group_category = _array(inputs, "group_category", np.int64)
        num_graph = len(det_group)
        if "pred_area" in inputs:
            det_area = _array(inputs, "pred_area", np.float64)
        else:
            boxes = _array(inputs, "preds", np.float64).reshape(-1, 4)
            det_area = boxes[:, 2] * boxes[:, 3]
        no_ints = np.zeros(0, dtype=np.int64)
        det_group = np.concatenate([det_group, _array(inputs, "lone_group", np.int64, no_ints)])
        score = np.concatenate(
            [
                _array(inputs, "pred_score", np.float64),
                _array(inputs, "lone_score", np.float64, np.zeros(0)),
            ]
        )
        det_area = np.concatenate([det_area, _array(inputs, "lone_area", np.float64, np.zeros(0))])
        for cat in np.asarray(inputs.get("categories", []), dtype=np.int64).tolist():
            self._gt.setdefault(int(cat), np.zeros(num_areas, dtype=np.int64))
        num_groups = len(group_image)
        if iou.shape != (num_graph, len(gt_group)):
            raise ValueError(
                f"Expected `{sim_key}` of shape [{num_graph}, {len(gt_group)}], "
                f"got {list(iou.shape)}"
            )
        if not (len(score) == len(det_area) == len(det_group)):
            raise ValueError("Expected one score and one area per detection")

        gt_ignore = crowd[:, None] | _area_ignored(gt_area, ranges)  # [G, A]
        if "target_ignore" in inputs:  # keypoints: no labelled keypoint
            gt_ignore |= (_array(inputs, "target_ignore", np.int64) != 0)[:, None]
        counts = np.zeros((num_groups, num_areas), dtype=np.int64)
        np.add.at(counts, gt_group, ~gt_ignore)
        for cat in np.unique(group_category).tolist():
            total = counts[group_category == cat].sum(0)
            self._gt[cat] = self._gt.get(cat, np.zeros_like(total)) + total

        # Detections by group, then score (stable: batch order breaks ties), top maxDets.
        order = np.lexsort((np.arange(len(score)), -score, det_group))
        grp = det_group[order]
        starts = np.searchsorted(grp, np.arange(num_groups))
        rank = np.arange(len(order)) - starts[grp] if len(order) else grp
        keep = rank < self.params.max_dets[-1]
        order, grp, rank = order[keep], grp[keep], rank[keep]
        det_count = np.bincount(grp, minlength=num_groups)
        det_starts = np.concatenate([[0], np.cumsum(det_count)[:-1]])

        matched = np.zeros((len(order), num_areas, len(IOU_THRESHOLDS)), dtype=bool)
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
            rows = order[d_idx]
            if (rows >= num_graph).any():
                raise ValueError("a lone detection's group has ground truths")
            g_idx = gt_order[gt_starts[groups][:, None] + np.arange(width)]
            sub = iou[rows[:, :, None], g_idx[:, None, :]]
            m, ig = match_groups(
                sub, det_count[groups], gt_ignore[g_idx].transpose(0, 2, 1), crowd[g_idx]
            )
            p, d = np.nonzero(d_ok)
            matched[d_idx[p, d]] = m[p, :, :, d]
            ignored[d_idx[p, d]] = ig[p, :, :, d]

        # Unmatched detections outside an area range are ignored for that range.
        ignored |= ~matched & _area_ignored(det_area[order], ranges)[:, :, None]
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
            empty = _Dets.empty(len(self.params.area_ranges))
            self._parts = [_Dets.concat([empty, *self._parts])]
        return self._parts[0]

    def merge(self, other: CocoAggregator) -> CocoAggregator:
        check_same_config(self.KIND, self.config, other.config)
        out = CocoAggregator(self.params.iou_type)
        out._parts = [self._dets(), other._dets()]
        out._gt = {c: v.copy() for c, v in self._gt.items()}
        for cat, count in other._gt.items():
            out._gt[cat] = out._gt.get(cat, np.zeros_like(count)) + count
        return out

    def to_bytes(self) -> bytes:
        dets = self._dets()
        cats = np.array(sorted(self._gt), dtype=np.int64)
        counts = np.array([self._gt[c] for c in cats.tolist()], dtype=np.int64).reshape(
            len(cats), len(self.params.area_ranges)
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
        config.setdefault("iou_type", "bbox")  # states written before iou_type existed
        if config["iou_type"] not in PARAMS:
            raise ValueError(f"Unknown COCO iou_type {config['iou_type']!r} in the state")
        out = cls(config["iou_type"])
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
        return accumulate(self._dets(), self._gt, self.params.max_dets)

    def compute(self) -> dict[str, float]:
        """The COCO statistics (``-1`` where nothing is defined), by name."""
        precision, recall, _ = self.accumulate()
        return dict(
            zip(self.params.stat_names, summarize(precision, recall, self.params), strict=True)
        )

    def per_category(self) -> dict[int, dict[str, float]]:
        """Every statistic of :meth:`compute`, per category id (-1 without ground truth)."""
        precision, recall, cats = self.accumulate()
        names = self.params.stat_names
        return {
            cat: dict(
                zip(
                    names,
                    summarize(precision[:, :, [k]], recall[:, [k]], self.params),
                    strict=True,
                )
            )
            for k, cat in enumerate(cats)
        }

    def per_category_ap(self) -> dict[int, float]:
        """AP@[.50:.95] (all areas, most detections) per category id; -1 without ground truth."""
        return {cat: stats["AP"] for cat, stats in self.per_category().items()}
