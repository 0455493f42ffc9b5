"""Sharded evaluation: one dataset dealt across several servers, the results merged.

Batch ``i`` goes to server ``i % k``; every server folds its share into exact statistics
and, for a dataset metric, an aggregator state. Merging is exact for counts, minima and
maxima, and for aggregator states (their merge is associative); sums are added in float64.
"""

from __future__ import annotations

import functools
import math
import queue
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import grpc
import numpy as np

from ..metrics.states import load_state
from ..v1 import scoring_pb2 as pb
from .convert import batch_message, evaluate_options, evaluate_result, progress_bar
from .results import CvscoreError, EvaluateResult, Statistics, Timing

if TYPE_CHECKING:
    from .client import Client

_DONE = object()


def _put(q: queue.Queue[Any], item: object, worker: threading.Thread) -> None:
    """Hand ``item`` to a stream, unless that stream has already ended (failed)."""
    while worker.is_alive():
        try:
            q.put(item, timeout=0.1)
            return
        except queue.Full:
            continue


def evaluate_sharded(
    client: Client,
    metric: str,
    batches: Iterable[Mapping[str, Any]],
    runtime: str,
    return_scores: bool,
    progress: bool,
    timeout: float | None,
) -> EvaluateResult:
    options = evaluate_options(metric, runtime, return_scores)
    stubs = client._stubs
    queues: list[queue.Queue[Any]] = [queue.Queue(maxsize=4) for _ in stubs]
    responses: list[pb.EvaluateResponse | None] = [None] * len(stubs)
    errors: list[CvscoreError] = []

    def messages(q: queue.Queue[Any]) -> Iterable[pb.EvaluateRequest]:
        yield options
        while (batch := q.get()) is not _DONE:
            yield batch_message(batch)

    def stream(i: int) -> None:
        try:
            responses[i] = stubs[i].Evaluate(messages(queues[i]), timeout=timeout)
        except grpc.RpcError as error:
            errors.append(CvscoreError.from_rpc(error))

    workers = [threading.Thread(target=stream, args=(i,), daemon=True) for i in range(len(stubs))]
    for w in workers:
        w.start()
    rows: list[int] = []  # per batch, to put per-sample scores back in dataset order
    try:
        for i, batch in enumerate(progress_bar(batches, progress, metric)):
            if errors:
                break
            first = next(iter(batch.values()), None)
            rows.append(int(np.shape(first)[0]) if first is not None and np.ndim(first) else 0)
            _put(queues[i % len(stubs)], batch, workers[i % len(stubs)])
    finally:
        for q, w in zip(queues, workers, strict=True):
            _put(q, _DONE, w)
        for w in workers:
            w.join()
    if errors:
        raise errors[0]
    parts = [evaluate_result(r) for r in responses if r is not None]
    return merge_results(parts, rows=rows if return_scores else None)


def _merge_statistics(stats: Sequence[Statistics]) -> Statistics:
    count = sum(s.count for s in stats)
    total = functools.reduce(np.add, (np.asarray(s.sum, dtype=np.float64) for s in stats))
    nans = functools.reduce(np.add, (np.asarray(s.nan_count) for s in stats))
    present = [s for s in stats if s.count]
    if present:
        low = functools.reduce(np.fmin, (np.asarray(s.min) for s in present))
        high = functools.reduce(np.fmax, (np.asarray(s.max) for s in present))
    else:
        low = high = np.asarray(math.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / count if count else np.full_like(total, math.nan)

    def out(x: np.ndarray) -> Any:
        x = np.asarray(x)
        return x.item() if x.ndim == 0 else x

    if np.any(nans):  # NaN propagates to min and max, as on the server
        low = np.where(nans > 0, math.nan, low)
        high = np.where(nans > 0, math.nan, high)
    return Statistics(stats[0].name, count, out(nans), out(total), out(mean), out(low), out(high))


def merge_results(
    parts: Sequence[EvaluateResult], metric: str = "", rows: Sequence[int] | None = None
) -> EvaluateResult:
    """One result from several streams' results over disjoint parts of a dataset.

    ``metric``, when given, is the registered metric the states must belong to; ``rows``
    are the batch sizes in dataset order when per-sample scores were dealt round-robin. Dataset-metric states are merged by the kind their header names, with the
    numpy aggregators of ``cvscore.metrics.aggregators`` (no torch, no registry).
    """
    if not parts:
        raise ValueError("Expected at least one result to merge")
    names = list(parts[0].statistics)
    statistics = {n: _merge_statistics([p.statistics[n] for p in parts]) for n in names}
    first = statistics[names[0]] if names else None
    outputs: dict[str, np.ndarray] | None = None
    shard_outputs = [p.outputs for p in parts]
    if rows is not None and all(o is not None for o in shard_outputs):
        outputs = {}
        for name in shard_outputs[0] or {}:
            per_shard = [np.split(o[name], np.cumsum(rows[i :: len(parts)])[:-1])
                         for i, o in enumerate(shard_outputs) if o is not None]  # fmt: skip
            ordered = [per_shard[i % len(parts)][i // len(parts)] for i in range(len(rows))]
            outputs[name] = np.concatenate(ordered) if ordered else per_shard[0][0]
    figures: dict[str, float] = {}
    state = b""
    if any(p.aggregator_state for p in parts):
        states: list[Any] = [load_state(p.aggregator_state) for p in parts if p.aggregator_state]
        wrong = sorted({s.metric for s in states if metric and s.metric != metric})
        if wrong:
            raise ValueError(f"Expected `{metric}` aggregator states, got {wrong}")
        merged = functools.reduce(lambda a, b: a.merge(b), states)
        figures = {k: float(v) for k, v in merged.compute().items()}
        state = merged.to_bytes()
    return EvaluateResult(
        metric=parts[0].metric,
        runtime=parts[0].runtime,
        device=parts[0].device,
        batches=sum(p.batches for p in parts),
        count=first.count if first else 0,
        mean=first.mean if first else math.nan,
        sum=first.sum if first else 0.0,
        min=first.min if first else math.nan,
        max=first.max if first else math.nan,
        nan_count=first.nan_count if first else 0,
        statistics=statistics,
        scores=next(iter(outputs.values())) if outputs else None,
        outputs=outputs,
        timing=Timing(
            sum(p.timing.queue_us for p in parts),
            sum(p.timing.compute_us for p in parts),
            max(p.timing.total_us for p in parts),
            sum(p.timing.batch_requests for p in parts),
            sum(p.timing.batch_rows for p in parts),
        ),
        figures=figures,
        aggregator_state=state,
    )
