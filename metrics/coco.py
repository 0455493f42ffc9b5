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

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .aggregators import check_same_config, dump_npz, load_npz
from .registry import MetricSpec, TensorSpec, register

FAMILY = "dataset"
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


def _validate(params: Mapping[str, Any], inputs: Mapping[str, Tensor]) -> None:
    for name in ("preds", "target"):
        boxes = inputs[name]
        if boxes.numel() and bool((boxes[:, 2:] < 0).any()):
            raise ValueError(f"Expected `{name}` to hold (x, y, w, h) boxes with w, h >= 0")


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
        summary="COCO box mAP: IoU graph + greedy matching + accumulate (12 stats)",
        differentiable=False,
        validate=_validate,
        example_sizes={"N": 5, "G": 3},
        work=_coco_work,
        aggregator=CocoAggregator,
    )
)
