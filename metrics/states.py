"""The host halves of mean IoU and recall@k, and :func:`load_state` for every kind.

numpy only (no torch, no registry): ``cvscore.client`` merges the states several servers
return with these. The COCO state is in :mod:`.coco_eval`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .state_format import Aggregator, check_same_config, dump_npz, load_npz, state_kind


def load_state(data: bytes) -> Aggregator:
    """The aggregator a state's bytes hold, whatever its kind; numpy only (no registry)."""
    kind = state_kind(data)
    if kind == SegmentationAggregator.KIND:
        return SegmentationAggregator.from_bytes(data)
    if kind == RetrievalAggregator.KIND:
        return RetrievalAggregator.from_bytes(data)
    from .coco_eval import CocoAggregator

    if kind == CocoAggregator.KIND:
        return CocoAggregator.from_bytes(data)
    raise ValueError(f"Unknown aggregator state kind `{kind}`")


def check_ks(ks: Sequence[float]) -> list[int]:
    out = [int(k) for k in ks]
    if not out or any(k < 1 or k != v for k, v in zip(out, ks, strict=True)):
        raise ValueError(f"Expected `ks` to be positive integers, got {list(ks)}")
    return out


class SegmentationAggregator:
    """Summed int64 confusion matrix; ``compute`` gives per-class IoU, mIoU, accuracies."""

    metric = "mean_iou"
    KIND = "mean_iou/1"

    def __init__(self, num_classes: int = 21, ignore_index: int = 255, **params: Any) -> None:
        self.config = {"num_classes": int(num_classes), "ignore_index": int(ignore_index)}
        self.confusion = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(
        self, outputs: Mapping[str, np.ndarray], inputs: Mapping[str, np.ndarray] | None = None
    ) -> None:
        counts = np.asarray(outputs["confusion"])
        k = self.config["num_classes"]
        if counts.shape[1:] != (k, k):
            raise ValueError(
                f"Expected `confusion` of shape [N, {k}, {k}], got {list(counts.shape)}"
            )
        if counts.dtype.kind not in "iu":
            raise ValueError(f"Expected `confusion` to hold integer counts, got {counts.dtype}")
        self.confusion += counts.astype(np.int64).sum(0)

    def merge(self, other: SegmentationAggregator) -> SegmentationAggregator:
        check_same_config(self.KIND, self.config, other.config)
        out = SegmentationAggregator(**self.config)
        out.confusion = self.confusion + other.confusion
        return out

    def to_bytes(self) -> bytes:
        return dump_npz(self.KIND, self.config, {"confusion": self.confusion})

    @classmethod
    def from_bytes(cls, data: bytes) -> SegmentationAggregator:
        config, arrays = load_npz(cls.KIND, data)
        out = cls(**config)
        out.confusion = arrays["confusion"].astype(np.int64)
        return out

    def per_class_iou(self) -> np.ndarray:
        return iou_from_confusion(self.confusion)

    def compute(self) -> dict[str, float]:
        c = self.confusion.astype(np.float64)
        iou = iou_from_confusion(self.confusion)
        support = c.sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            acc = np.where(support > 0, np.diag(c) / np.where(support > 0, support, 1), np.nan)
        total = c.sum()
        out = {
            "mean_iou": _nanmean(iou),
            "pixel_accuracy": float(np.trace(c) / total) if total else math.nan,
            "mean_accuracy": _nanmean(acc),
        }
        out.update({f"iou_{i}": float(v) for i, v in enumerate(iou)})
        return out


def iou_from_confusion(confusion: np.ndarray) -> np.ndarray:
    """Per-class IoU from a ``[K, K]`` confusion matrix; NaN where the union is empty."""
    c = confusion.astype(np.float64)
    tp = np.diag(c)
    union = c.sum(0) + c.sum(1) - tp
    return np.where(union > 0, tp / np.where(union > 0, union, 1), np.nan)


def _nanmean(values: np.ndarray) -> float:
    kept = values[~np.isnan(values)]
    return float(kept.mean()) if kept.size else math.nan


class RetrievalAggregator:
    """Per-query (hits, relevant) counts; merging concatenates, so it is exact."""

    metric = "recall_at_k"
    KIND = "recall_at_k/1"

    def __init__(
        self, ks: Sequence[float] = (1.0, 5.0, 10.0), metric: str = "cosine", **params: Any
    ) -> None:
        self.config: dict[str, Any] = {"ks": check_ks(ks), "metric": metric}
        self.hits = np.zeros((0, len(self.config["ks"])), dtype=np.int64)
        self.relevant = np.zeros(0, dtype=np.int64)

    def update(
        self, outputs: Mapping[str, np.ndarray], inputs: Mapping[str, np.ndarray] | None = None
    ) -> None:
        counts = np.rint(np.asarray(outputs["counts"])).astype(np.int64)
        width = self.hits.shape[1] + 1
        if counts.ndim != 2 or counts.shape[1] != width:
            raise ValueError(f"Expected `counts` of shape [N, {width}], got {list(counts.shape)}")
        hits, relevant = counts[:, :-1], counts[:, -1]
        self.hits = np.concatenate([self.hits, hits])
        self.relevant = np.concatenate([self.relevant, relevant])

    def merge(self, other: RetrievalAggregator) -> RetrievalAggregator:
        check_same_config(self.KIND, self.config, other.config)
        out = RetrievalAggregator(**self.config)
        out.hits = np.concatenate([self.hits, other.hits])
        out.relevant = np.concatenate([self.relevant, other.relevant])
        return out

    def to_bytes(self) -> bytes:
        return dump_npz(self.KIND, self.config, {"hits": self.hits, "relevant": self.relevant})

    @classmethod
    def from_bytes(cls, data: bytes) -> RetrievalAggregator:
        config, arrays = load_npz(cls.KIND, data)
        out = cls(**config)
        out.hits, out.relevant = arrays["hits"], arrays["relevant"]
        return out

    def compute(self) -> dict[str, float]:
        keep = self.relevant > 0
        n = int(keep.sum())
        out: dict[str, float] = {
            "queries": float(len(self.relevant)),
            "queries_without_relevant": float(len(self.relevant) - n),
        }
        for j, k in enumerate(self.config["ks"]):
            hits = self.hits[keep, j]
            # fsum is exactly rounded, so the figure does not depend on the merge order.
            frac = math.fsum((hits / self.relevant[keep]).tolist())
            out[f"hit_rate@{k}"] = float((hits > 0).sum() / n) if n else math.nan
            out[f"recall@{k}"] = frac / n if n else math.nan
        return out
