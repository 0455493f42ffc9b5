"""What the scoring core returns: scores, dataset statistics and where the time went."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import stats
from .grouping import BatchInfo


@dataclass(frozen=True)
class Timing:
    queue_s: float = 0.0
    compute_s: float = 0.0
    total_s: float = 0.0
    batch_requests: int = 0
    batch_rows: int = 0

    @classmethod
    def of(cls, info: BatchInfo, total_s: float) -> Timing:
        return cls(info.queue_s, info.compute_s, total_s, info.requests, info.rows)


@dataclass(frozen=True)
class ScoreResult:
    metric: str
    outputs: dict[str, np.ndarray]  # per-sample, batch axis first
    reduced: dict[str, np.ndarray]  # float64, empty for reduction "none"
    reduction: str
    runtime: str
    device: str
    batch_size: int
    timing: Timing


@dataclass(frozen=True)
class EvaluateResult:
    metric: str
    runtime: str
    device: str
    batches: int
    statistics: list[stats.Summary]
    scores: dict[str, np.ndarray] | None
    timing: Timing
    aggregator_state: bytes = b""
    figures: dict[str, float] = field(default_factory=dict)
