"""Per-model request and execution statistics: KServe's ModelStatistics and their counters.

One :class:`ModelStatistics` per core is the only place these numbers are kept: the
``ModelStatistics`` RPC, ``GET /v2/models/{m}/stats`` and the ``cvscore_model_*``
Prometheus counters (:class:`StatisticsCollector`) all read it, so they cannot disagree.

What is counted, per (model, version), in Triton's terms:

- a *request* is one ``Score`` or ``ModelInfer`` call that reached a loaded model. It
  ends in ``success`` or ``fail`` (any error: a refused input, a full queue, a deadline,
  a failed run, a cancelled call); each duration runs from the core taking it to the
  answer. A successful request also adds its ``queue`` time (waiting in the dynamic
  batcher), ``compute_input`` (admission check and decoding), ``compute_infer`` (the run
  of the graph that held it) and ``compute_output`` (slicing and the reduction). These
  are disjoint parts of its ``success`` time, so their sum never exceeds it.
- an *execution* is one run of a graph by a batcher (``cvscore.v1`` Evaluate streams
  included). ``execution_count`` counts them, ``inference_count`` the rows they computed
  for callers (alignment padding excluded), and ``batch_stats`` groups them by those rows,
  with the time spent concatenating inputs, running the graph and splitting outputs.
- ``last_inference``: milliseconds since the epoch of the last successful request.

Executions are reported from compute threads and requests from the event loop: every
update and every read holds one lock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from .grouping import BatchInfo, RunInfo

REQUEST_PHASES = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output")
RUN_PHASES = ("compute_input", "compute_infer", "compute_output")


@dataclass
class Duration:
    """Triton's StatisticDuration: how many, and their total nanoseconds."""

    count: int = 0
    ns: int = 0

    def add(self, seconds: float) -> None:
        self.count += 1
        self.ns += max(0, round(seconds * 1e9))

    def as_dict(self) -> dict[str, int]:
        return {"count": self.count, "ns": self.ns}


def _durations(names: tuple[str, ...]) -> dict[str, Duration]:
    return {name: Duration() for name in names}


@dataclass
class Entry:
    """Everything counted for one (model, version)."""

    name: str
    version: str
    last_inference_ms: int = 0
    inference_count: int = 0
    execution_count: int = 0
    requests: dict[str, Duration] = field(default_factory=lambda: _durations(REQUEST_PHASES))
    batches: dict[int, dict[str, Duration]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """Triton's ModelStatistics as its HTTP API writes it (numbers, zeros included)."""
        return {
            "name": self.name,
            "version": self.version,
            "last_inference": self.last_inference_ms,
            "inference_count": self.inference_count,
            "execution_count": self.execution_count,
            "inference_stats": {k: d.as_dict() for k, d in self.requests.items()},
            "batch_stats": [
                {"batch_size": size, **{k: d.as_dict() for k, d in phases.items()}}
                for size, phases in sorted(self.batches.items())
            ],
        }


class RequestTimer:
    """Times one request; ``with`` records its success or failure on exit."""

    def __init__(self, stats: ModelStatistics, name: str, version: str) -> None:
        self._stats = stats
        self._key = (name, version)
        self._start = self._prepared = self._ran = 0.0
        self._info: BatchInfo | None = None

    def __enter__(self) -> RequestTimer:
        self._start = time.perf_counter()
        return self

    def prepared(self) -> None:
        """The inputs are admitted and decoded."""
        self._prepared = time.perf_counter()

    def ran(self, info: BatchInfo) -> None:
        """The batcher answered (``info``: its queue and compute times)."""
        self._ran = time.perf_counter()
        self._info = info

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> None:
        end = time.perf_counter()
        info = self._info
        with self._stats.lock:
            entry = self._stats.entry(*self._key)
            r = entry.requests
            if kind is not None or info is None:
                r["fail"].add(end - self._start)
                return
            r["success"].add(end - self._start)
            r["queue"].add(info.queue_s)
            r["compute_input"].add(self._prepared - self._start)
            r["compute_infer"].add(info.compute_s)
            r["compute_output"].add(end - self._ran)
            entry.last_inference_ms = int(time.time() * 1000)


class ModelStatistics:
    """Every model's counters, kept for as long as the core runs."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._entries: dict[tuple[str, str], Entry] = {}

    def entry(self, name: str, version: str) -> Entry:
        """The entry of (name, version), made on first use (hold :attr:`lock`)."""
        key = (name, version)
        found = self._entries.get(key)
        if found is None:
            found = self._entries[key] = Entry(name, version)
        return found

    def request(self, name: str, version: str) -> RequestTimer:
        return RequestTimer(self, name, version)

    def run_hook(self, name: str, version: str) -> Callable[[RunInfo], None]:
        """What a batcher of (name, version) calls after each successful run."""

        def ran(run: RunInfo) -> None:
            with self.lock:
                entry = self.entry(name, version)
                entry.execution_count += 1
                entry.inference_count += run.rows
                phases = entry.batches.get(run.rows)
                if phases is None:
                    phases = entry.batches[run.rows] = _durations(RUN_PHASES)
                phases["compute_input"].add(run.input_s)
                phases["compute_infer"].add(run.infer_s)
                phases["compute_output"].add(run.output_s)

        return ran

    def report(self, name: str, version: str) -> dict[str, Any]:
        """One model's statistics, as :meth:`Entry.as_dict` (zeros for an idle model)."""
        with self.lock:
            return self.entry(name, version).as_dict()

    def reports(self) -> list[dict[str, Any]]:
        with self.lock:
            return [e.as_dict() for _, e in sorted(self._entries.items())]


class StatisticsCollector(Collector):
    """The same numbers as Prometheus counters, read at scrape time."""

    def __init__(self, stats: ModelStatistics) -> None:
        self.stats = stats

    def collect(self) -> Iterator[CounterMetricFamily]:
        labels = ["model", "version"]
        counts = {
            "success": CounterMetricFamily(
                "cvscore_model_request_success", "Successful requests per model.", labels=labels
            ),
            "fail": CounterMetricFamily(
                "cvscore_model_request_failure", "Failed requests per model.", labels=labels
            ),
        }
        rows = CounterMetricFamily(
            "cvscore_model_inference", "Rows computed for callers per model.", labels=labels
        )
        runs = CounterMetricFamily(
            "cvscore_model_execution", "Graph runs per model.", labels=labels
        )
        seconds = CounterMetricFamily(
            "cvscore_model_request_duration_seconds",
            "Cumulative request time per model and phase (ModelStatistics' inference_stats).",
            labels=[*labels, "phase"],
        )
        for doc in self.stats.reports():
            key = [doc["name"], doc["version"]]
            for phase, family in counts.items():
                family.add_metric(key, doc["inference_stats"][phase]["count"])
            rows.add_metric(key, doc["inference_count"])
            runs.add_metric(key, doc["execution_count"])
            for phase in REQUEST_PHASES:
                seconds.add_metric([*key, phase], doc["inference_stats"][phase]["ns"] / 1e9)
        yield from (*counts.values(), rows, runs, seconds)
