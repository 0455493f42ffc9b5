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
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
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
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (ValueError, OSError) as exc:
        raise ValueError(f"Expected an aggregator state (.npz bytes), got {exc}") from None
    if FORMAT_KEY not in arrays:
        raise ValueError("Expected an aggregator state, got an .npz without a header")
    header = json.loads(arrays.pop(FORMAT_KEY).tobytes().decode())
    if header.get("kind") != kind:
        raise ValueError(f"Expected a `{kind}` aggregator state, got `{header.get('kind')}`")
    return header["config"], arrays


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
