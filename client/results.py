"""What the client returns: results, metric descriptions and the one error type."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np


class CvscoreError(Exception):
    """A call failed: ``code`` is the gRPC status, ``message`` the server's explanation."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message

    @classmethod
    def from_rpc(cls, error: grpc.RpcError) -> CvscoreError:
        code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
        details = error.details() if hasattr(error, "details") else str(error)
        return cls(code or grpc.StatusCode.UNKNOWN, details or "")


@dataclass(frozen=True)
class Timing:
    """Server-side time of one call, in microseconds (see ``cvscore.v1.Timing``)."""

    queue_us: int
    compute_us: int
    total_us: int
    batch_requests: int
    batch_rows: int


@dataclass(frozen=True)
class ScoreResult:
    metric: str
    scores: np.ndarray  # the first output: per-sample scores, batch axis first
    value: float | np.ndarray | None  # its reduction (a float for scalar scores); None for "none"
    reduction: str
    runtime: str
    device: str
    timing: Timing
    outputs: dict[str, np.ndarray]
    reduced: dict[str, np.ndarray]


@dataclass(frozen=True)
class Statistics:
    """Dataset statistics of one output: floats for scalar scores, arrays for vectors."""

    name: str
    count: int
    nan_count: int | np.ndarray
    sum: float | np.ndarray
    mean: float | np.ndarray
    min: float | np.ndarray
    max: float | np.ndarray


@dataclass(frozen=True)
class EvaluateResult:
    metric: str
    runtime: str
    device: str
    batches: int
    count: int
    mean: float | np.ndarray  # of the first output; the rest are in `statistics`
    sum: float | np.ndarray
    min: float | np.ndarray
    max: float | np.ndarray
    nan_count: int | np.ndarray
    statistics: dict[str, Statistics]
    scores: np.ndarray | None  # every per-sample score, when asked for
    outputs: dict[str, np.ndarray] | None
    timing: Timing
    # Dataset metrics: the figures, and the aggregator state they come from (mergeable with
    # other streams' states, see cvscore.client.sharding.merge_results).
    figures: dict[str, float] = field(default_factory=dict)
    aggregator_state: bytes = b""


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str
    shape: list[str]
    canonical_shape: list[str]
    doc: str


@dataclass(frozen=True)
class MetricInfo:
    name: str
    metric: str
    family: str
    summary: str
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    params: dict[str, Any]
    higher_is_better: bool
    runtimes: list[str]
    default_runtime: str
    device: str
    paper: str
    oracle: str
