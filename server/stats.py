"""Exact, split-independent reductions of per-sample scores.

Sums are kept as a short list of doubles whose exact sum is the exact sum of every value
seen (a floating-point expansion, renewed per batch with ``math.fsum``), so the result is
the correctly rounded sum of the whole dataset however it was split into batches and in
whatever order they came. NaN and infinities are data: they propagate as IEEE arithmetic
says (NaN, or +inf and -inf together, make the sum NaN) and NaNs are counted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def _expansion(values: list[float]) -> list[float]:
    """Finite doubles whose exact sum equals the exact sum of ``values`` (all finite)."""
    out: list[float] = []
    work = list(values)
    while True:
        head = math.fsum(work)  # correctly rounded: 0 only when the rest is exactly 0
        if head == 0.0:
            return out
        out.append(head)
        work.append(-head)


class ExactSum:
    """A running sum that is exact until it is read, then correctly rounded once."""

    def __init__(self) -> None:
        self._parts: list[float] = []
        self.nan = 0
        self._pos_inf = False
        self._neg_inf = False

    def add(self, values: np.ndarray) -> None:
        flat = np.asarray(values, dtype=np.float64).reshape(-1)
        finite = np.isfinite(flat)
        if not finite.all():
            self.nan += int(np.isnan(flat).sum())
            self._pos_inf |= bool(np.isposinf(flat).any())
            self._neg_inf |= bool(np.isneginf(flat).any())
            flat = flat[finite]
        if flat.size:
            self._parts = _expansion(self._parts + flat.tolist())

    def value(self) -> float:
        if self.nan or (self._pos_inf and self._neg_inf):
            return math.nan
        if self._pos_inf:
            return math.inf
        if self._neg_inf:
            return -math.inf
        return math.fsum(self._parts)


@dataclass(frozen=True)
class Summary:
    """Statistics of one output over every sample, per component (flattened, C order)."""

    name: str
    shape: tuple[int, ...]  # component shape: () for a scalar score per sample
    count: int
    nan_count: list[int]
    sum: list[float]
    mean: list[float]
    min: list[float]
    max: list[float]


class RunningStats:
    """Count, exact sum, mean, min and max of one per-sample output, batch after batch."""

    def __init__(self, name: str, shape: tuple[int, ...]) -> None:
        self.name = name
        self.shape = shape
        size = math.prod(shape)
        self.count = 0
        self._sums = [ExactSum() for _ in range(size)]
        self._min = np.full(size, np.inf)
        self._max = np.full(size, -np.inf)

    def update(self, values: np.ndarray) -> None:
        """Fold ``values`` of shape ``[n, *shape]``."""
        if tuple(values.shape[1:]) != self.shape:
            raise ValueError(
                f"Expected `{self.name}` batches with per-sample shape {list(self.shape)}, "
                f"got {list(values.shape[1:])}"
            )
        n = values.shape[0]
        if n == 0:
            return
        cols = np.asarray(values, dtype=np.float64).reshape(n, -1)
        self.count += n
        for j, acc in enumerate(self._sums):
            acc.add(cols[:, j])
        # np.minimum / np.maximum propagate NaN, as a whole-dataset min/max would.
        self._min = np.minimum(self._min, cols.min(axis=0))
        self._max = np.maximum(self._max, cols.max(axis=0))

    def summary(self) -> Summary:
        sums = [acc.value() for acc in self._sums]
        empty = self.count == 0
        return Summary(
            name=self.name,
            shape=self.shape,
            count=self.count,
            nan_count=[acc.nan for acc in self._sums],
            sum=sums,
            mean=[math.nan if empty else s / self.count for s in sums],
            min=[math.nan] * len(sums) if empty else self._min.tolist(),
            max=[math.nan] * len(sums) if empty else self._max.tolist(),
        )


def reduce(values: np.ndarray, reduction: str) -> np.ndarray:
    """``mean`` or ``sum`` over the batch axis, exact then rounded once, as float64."""
    stats = RunningStats("score", tuple(values.shape[1:]))
    stats.update(values)
    summary = stats.summary()
    picked = summary.sum if reduction == "sum" else summary.mean
    return np.asarray(picked, dtype=np.float64).reshape(values.shape[1:])
