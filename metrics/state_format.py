"""The serialised state of an aggregator: ``.npz`` bytes with a JSON header naming its kind.

numpy only. Every aggregator writes its state with :func:`dump_npz` and reads it back
with :func:`load_npz`; :func:`state_kind` reads the header alone.
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


def check_same_config(kind: str, mine: Mapping[str, Any], theirs: Mapping[str, Any]) -> None:
    if dict(mine) != dict(theirs):
        raise ValueError(
            f"Cannot merge `{kind}` states with different parameters: {dict(mine)} vs {dict(theirs)}"
        )
