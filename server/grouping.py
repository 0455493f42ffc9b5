"""Which queued requests may share a run: group keys from headers, byte checks off the loop.

A request's *group key* comes from its headers alone (names, dtypes, non-batch shapes), so the
event loop never reads input bytes. An input without the batch axis (a shared centre matrix)
enters the key by its shape; :func:`partition`, called in the executor, then splits a group
into runs whose such inputs are equal byte for byte.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class BatchInfo:
    """What a request learns about the run it was part of."""

    queue_s: float
    compute_s: float
    requests: int
    rows: int


@dataclass(frozen=True)
class RunInfo:
    """What one successful run cost: the callers' rows (no padding), in seconds."""

    rows: int
    requests: int
    input_s: float  # concatenating the inputs
    infer_s: float  # the graph
    output_s: float  # splitting the outputs


@dataclass(eq=False)
class Request:
    inputs: Mapping[str, np.ndarray]
    rows: int
    key: tuple[Any, ...]
    future: asyncio.Future[tuple[dict[str, np.ndarray], BatchInfo]]
    arrival: float
    deadline: float | None = None
    cost: int = 0  # admission's work estimate in bytes
    lone: bool = False  # nothing in flight, and long after the request before (batcher.py)
    meta: dict[str, Any] = field(default_factory=dict)


def _raw(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array).reshape(-1).view(np.uint8)


def group_key(inputs: Mapping[str, np.ndarray], batched: Mapping[str, bool]) -> tuple[Any, ...]:
    """Requests with equal keys can be concatenated on the batch axis.

    Computed from headers alone (names, dtypes, shapes): an input without the batch axis
    enters it by its shape, and the executor compares its bytes (:func:`partition`) before
    two requests share a run.
    """
    parts: list[Any] = []
    for name in sorted(inputs):
        array = inputs[name]
        shape = array.shape[1:] if batched.get(name, True) else array.shape
        parts.append((name, array.dtype.str, shape))
    return tuple(parts)


def same_shared(a: Request, b: Request, shared: list[str]) -> bool:
    """Whether two requests' inputs without a batch axis are identical, byte for byte."""
    for name in shared:
        x, y = a.inputs[name], b.inputs[name]
        if x is not y and not np.array_equal(_raw(x), _raw(y)):
            return False
    return True


def partition(batch: list[Request], shared: list[str]) -> list[list[Request]]:
    """Split a group into runs whose shared inputs are equal (in the executor, not the loop)."""
    if not shared or len(batch) == 1:
        return [batch]
    runs: list[list[Request]] = []
    for request in batch:
        for run in runs:
            if same_shared(run[0], request, shared):
                run.append(request)
                break
        else:
            runs.append([request])
    return runs


def concatenate(
    batch: list[Request], batched: Mapping[str, bool], align: int = 1
) -> tuple[dict[str, np.ndarray], list[tuple[int, int]], int]:
    """Inputs of one run, each request's (offset, rows), and the rows computed: each request
    starts at a multiple of ``align`` rows, padded with copies of its last row."""
    offsets = []
    pos = 0
    for request in batch:
        offsets.append((pos, request.rows))
        pos += request.rows + (-request.rows) % align
    if len(batch) == 1 and pos == batch[0].rows:
        return dict(batch[0].inputs), offsets, pos
    inputs: dict[str, np.ndarray] = {}
    for name in batch[0].inputs:
        if not batched.get(name, True):
            inputs[name] = batch[0].inputs[name]
            continue
        pieces = []
        for request in batch:
            array = request.inputs[name]
            pieces.append(array)
            pad = (-request.rows) % align
            if pad and request.rows:
                pieces.append(np.repeat(array[-1:], pad, axis=0))  # copies of the last row
        inputs[name] = np.concatenate(pieces, axis=0)
    return inputs, offsets, pos


def split(
    outputs: Mapping[str, np.ndarray], offsets: list[tuple[int, int]], rows: int, label: str
) -> list[dict[str, np.ndarray]]:
    """Each request's rows of a run's outputs (views)."""
    for name, value in outputs.items():
        if value.ndim == 0 or value.shape[0] != rows:
            raise RuntimeError(
                f"{label}: output `{name}` has shape {list(value.shape)}, expected {rows} rows"
            )
    return [
        {name: value[start : start + n] for name, value in outputs.items()} for start, n in offsets
    ]
