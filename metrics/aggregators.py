"""Aggregators: the host-side half of a dataset-level metric.

A dataset metric (COCO mAP, mean IoU, recall@k) is split in two, as in a distributed
all-reduce. The exported per-batch graph emits sufficient statistics with the batch axis
first; an aggregator folds them into a state that merges associatively,

    merge(a, merge(b, c)) == merge(merge(a, b), c)

so batches, streams and several servers combine exactly, and ``compute`` turns the state
into the final figures. States serialise to ``.npz`` bytes (never pickle), so a server can
ship its partial state to a client or to another server.

Usage, whatever the metric::

    agg = aggregators.create("mean_iou", num_classes=21)
    for batch in batches:
        agg.update(runtime.run(batch), batch)
    total = agg.merge(type(agg).from_bytes(other_server_state))
    figures = total.compute()          # dict[str, float]

This module and :mod:`.coco_eval` import numpy only, never torch: a state's header names
its kind, and :func:`load_state` rebuilds the aggregator from the bytes alone, which is how
``cvscore.client`` merges the states of several servers without the metric definitions.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, Self, runtime_checkable

import numpy as np

FORMAT_KEY = "__aggregator__"


@runtime_checkable
class Aggregator(Protocol):
    """The state of one dataset metric: updated per batch, merged, serialised, computed."""

    metric: str

    def update(self, outputs: Mapping[str, np.ndarray], inputs: Mapping[str, np.ndarray]) -> None:
        """Fold one batch: the graph's ``outputs`` and the ``inputs`` it was run on."""
        ...

    def merge(self, other: Self) -> Self:
        """A new state holding both; neither operand is modified."""
        ...

    def to_bytes(self) -> bytes: ...

    @classmethod
    def from_bytes(cls, data: bytes) -> Self: ...

    def compute(self) -> dict[str, float]: ...


def dump_npz(kind: str, config: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> bytes:
    """Deterministic ``.npz`` bytes: a JSON header (kind, config) plus named arrays."""
    header = json.dumps({"kind": kind, "config": dict(config)}, sort_keys=True)
    buf = io.BytesIO()
    named: dict[str, Any] = {FORMAT_KEY: np.frombuffer(header.encode(), dtype=np.uint8)}
    named.update(arrays)
    np.savez(buf, **named)
    return buf.getvalue()


def load_npz(kind: str, data: bytes) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Inverse of :func:`dump_npz`; refuses another aggregator's state."""
    found, config, arrays = _read_npz(data)
    if found != kind:
        raise ValueError(f"Expected a `{kind}` aggregator state, got `{found}`")
    return config, arrays


def _read_npz(data: bytes) -> tuple[str, dict[str, Any], dict[str, np.ndarray]]:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (ValueError, OSError) as exc:
        raise ValueError(f"Expected an aggregator state (.npz bytes), got {exc}") from None
    if FORMAT_KEY not in arrays:
        raise ValueError("Expected an aggregator state, got an .npz without a header")
    header = json.loads(arrays.pop(FORMAT_KEY).tobytes().decode())
    return str(header.get("kind")), header.get("config", {}), arrays


def state_kind(data: bytes) -> str:
    """The kind a state's header names (``"mean_iou/1"``, ...)."""
    return _read_npz(data)[0]


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


def check_same_config(kind: str, mine: Mapping[str, Any], theirs: Mapping[str, Any]) -> None:
    if dict(mine) != dict(theirs):
        raise ValueError(
            f"Cannot merge `{kind}` states with different parameters: {dict(mine)} vs {dict(theirs)}"
        )


def create(metric: str, **params: Any) -> Aggregator:
    """An empty aggregator for a registered dataset metric, with the metric's parameters."""
    from . import registry

    spec = registry.get(metric)
    factory = spec.aggregator
    if factory is None:
        raise ValueError(f"Metric `{metric}` has no aggregator; reduce its scores directly")
    return factory(**spec.resolve_params(params))


# -- the states of the dataset metrics whose host half is small ---------------------------
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
        self.confusion += np.rint(counts).astype(np.int64).sum(0)

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
