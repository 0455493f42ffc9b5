"""numpy arrays (or tensors) <-> ``cvscore.v1`` messages, and responses -> result objects."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence, Sized
from typing import Any

import numpy as np

from ..v1 import scoring_pb2 as pb
from ..wire import (
    DTYPE_TO_PB,
    NUMPY_DTYPES,
    PB_TO_DTYPE,
    PB_TO_REDUCTION,
    PB_TO_RUNTIME,
    REDUCTION_TO_PB,
    RUNTIME_TO_PB,
    dtype_name,
)
from .results import (
    EvaluateResult,
    MetricInfo,
    ScoreResult,
    Statistics,
    TensorInfo,
    Timing,
)


def as_numpy(value: Any, name: str = "input") -> np.ndarray:
    """numpy arrays as they are, torch tensors via ``.detach().cpu()``, anything else asarray."""
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def wire_array(name: str, value: Any) -> tuple[pb.DataType, np.ndarray]:
    """The dtype code and the little-endian C-order array of an input."""
    array = as_numpy(value, name)
    code = DTYPE_TO_PB.get(dtype_name(array.dtype.newbyteorder("=")))
    if code is None:
        raise TypeError(
            f"Expected `{name}` to have a dtype in {sorted(DTYPE_TO_PB)}, got {array.dtype}"
        )
    return code, np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))


def encode(name: str, value: Any) -> pb.Tensor:
    code, wire = wire_array(name, value)
    return pb.Tensor(name=name, dtype=code, shape=list(wire.shape), data=wire.tobytes())


def decode(tensor: pb.Tensor) -> np.ndarray:
    dtype = NUMPY_DTYPES[PB_TO_DTYPE[tensor.dtype]]
    array = np.frombuffer(tensor.data, dtype=dtype).reshape(tuple(tensor.shape))
    return array.astype(array.dtype.newbyteorder("="), copy=False)


def timing(t: pb.Timing) -> Timing:
    return Timing(t.queue_us, t.compute_us, t.total_us, t.batch_requests, t.batch_rows)


def _scalar(values: Sequence[float], shape: Sequence[int], dtype: Any = np.float64) -> Any:
    array = np.asarray(list(values), dtype=dtype).reshape(tuple(shape))
    return array.item() if array.ndim == 0 else array


def score_result(response: pb.ScoreResponse) -> ScoreResult:
    outputs = {t.name: decode(t) for t in response.outputs}
    reduced = {t.name: decode(t) for t in response.reduced}
    first = next(iter(outputs)) if outputs else ""
    value: float | np.ndarray | None = None
    if first in reduced:
        value = reduced[first].item() if reduced[first].ndim == 0 else reduced[first]
    return ScoreResult(
        metric=response.metric,
        scores=outputs.get(first, np.zeros(0, np.float32)),
        value=value,
        reduction=PB_TO_REDUCTION.get(response.reduction, "mean"),
        runtime=PB_TO_RUNTIME.get(response.runtime, "auto"),
        device=response.device,
        timing=timing(response.timing),
        outputs=outputs,
        reduced=reduced,
    )


def evaluate_result(response: pb.EvaluateResponse) -> EvaluateResult:
    stats = {}
    for s in response.statistics:
        stats[s.name] = Statistics(
            name=s.name,
            count=s.count,
            nan_count=_scalar(s.nan_count, s.shape, np.int64),
            sum=_scalar(s.sum, s.shape),
            mean=_scalar(s.mean, s.shape),
            min=_scalar(s.min, s.shape),
            max=_scalar(s.max, s.shape),
        )
    first = stats[response.statistics[0].name] if response.statistics else None
    outputs = {t.name: decode(t) for t in response.scores} if response.scores else None
    return EvaluateResult(
        metric=response.metric,
        runtime=PB_TO_RUNTIME.get(response.runtime, "auto"),
        device=response.device,
        batches=response.batches,
        count=first.count if first else 0,
        mean=first.mean if first else float("nan"),
        sum=first.sum if first else 0.0,
        min=first.min if first else float("nan"),
        max=first.max if first else float("nan"),
        nan_count=first.nan_count if first else 0,
        statistics=stats,
        scores=next(iter(outputs.values())) if outputs else None,
        outputs=outputs,
        timing=timing(response.timing),
        figures=dict(response.figures),
        aggregator_state=response.aggregator_state,
    )


def metric_info(m: pb.MetricInfo) -> MetricInfo:
    def tensor(t: pb.TensorSpec) -> TensorInfo:
        dtype = PB_TO_DTYPE.get(t.dtype, "unknown")
        return TensorInfo(t.name, dtype, list(t.shape), list(t.canonical_shape), t.doc)

    return MetricInfo(
        name=m.name,
        metric=m.metric,
        family=m.family,
        summary=m.summary,
        inputs=[tensor(t) for t in m.inputs],
        outputs=[tensor(t) for t in m.outputs],
        params={p.name: json.loads(p.value_json or "null") for p in m.parameters},
        higher_is_better=m.higher_is_better,
        runtimes=[PB_TO_RUNTIME.get(r, str(r)) for r in m.runtimes],
        default_runtime=PB_TO_RUNTIME.get(m.default_runtime, "auto"),
        device=m.device,
        paper=m.paper,
        oracle=m.oracle,
    )


def check_choice(name: str, value: str, choices: Mapping[str, Any]) -> Any:
    try:
        return choices[value]
    except KeyError:
        raise ValueError(
            f"Expected `{name}` to be one of {sorted(choices)}, got {value!r}"
        ) from None


def score_request(
    metric: str,
    inputs: Mapping[str, Any],
    reduction: str,
    runtime: str,
    placed: Mapping[str, pb.Tensor] | None = None,
) -> pb.ScoreRequest:
    """``placed``: messages of inputs already in shared memory (see client/shm.py)."""
    placed = placed or {}
    return pb.ScoreRequest(
        metric=metric,
        runtime=check_choice("runtime", runtime, RUNTIME_TO_PB),
        reduction=check_choice("reduction", reduction, REDUCTION_TO_PB),
        inputs=[placed[k] if k in placed else encode(k, v) for k, v in inputs.items()],
    )


def merge_inputs(inputs: Mapping[str, Any] | None, named: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(inputs or {})
    clash = sorted(set(merged) & set(named))
    if clash:
        raise ValueError(f"Inputs {clash} were given both in `inputs` and as keywords")
    merged.update(named)
    return merged


def progress_bar(batches: Any, progress: bool, metric: str) -> Any:
    from tqdm import tqdm

    total = len(batches) if isinstance(batches, Sized) else None
    return tqdm(batches, total=total, desc=f"evaluate {metric}", unit="batch", disable=not progress)


def evaluate_options(metric: str, runtime: str, return_scores: bool) -> pb.EvaluateRequest:
    """The first message of an Evaluate stream."""
    return pb.EvaluateRequest(
        metric=metric,
        runtime=check_choice("runtime", runtime, RUNTIME_TO_PB),
        return_scores=return_scores,
    )


def batch_message(batch: Mapping[str, Any]) -> pb.EvaluateRequest:
    """One batch of an Evaluate stream."""
    return pb.EvaluateRequest(inputs=[encode(k, v) for k, v in batch.items()])
