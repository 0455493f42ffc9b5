"""The scoring core: a model repository, loaded runtimes, batchers, and the scoring logic.

Transport-free: this module knows nothing of gRPC. The servicers decode messages into numpy
arrays, call :class:`ScoringCore`, and encode what it returns; every failure a client should
hear about is a :mod:`server.errors` exception carrying its status name.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ..exporters.repository import list_models
from ..wire import REDUCTIONS
from . import runtimes, stats
from .admission import Admission, Prepared, Tensorish, decode
from .batcher import INLINE_BYTES, Batcher, Hook
from .errors import (
    InvalidInputError,
    NotFoundError,
    NotReadyError,
    RuntimeUnavailableError,
    TooLargeError,
    shown,
)
from .grouping import BatchInfo
from .models import PREFERENCE, CoreOptions, Model, load_model
from .modelstats import ModelStatistics
from .results import EvaluateResult, ScoreResult, Timing

__all__ = ["PREFERENCE", "CoreOptions", "EvaluateResult", "Model", "ScoreResult", "ScoringCore"]

log = logging.getLogger(__name__)


class ScoringCore:
    """Loads a repository and scores requests through per-(model, runtime) batchers."""

    def __init__(
        self,
        repository: Path,
        options: CoreOptions | None = None,
        names: Sequence[str] | None = None,
    ) -> None:
        self.repository = Path(repository)
        self.options = options or CoreOptions()
        self.device = runtimes.resolve_device(self.options.device)
        self.models: dict[str, Model] = {}
        # what will be served: the given names, or every model of the repository
        self.expected: list[str] = list(names) if names else list_models(self.repository)
        self.ready = False
        self.closing = False
        self.stopping = False  # set from any thread: stop loading after the current model
        # entries of the repository that cannot be served at all, with the reason
        self.failed: dict[str, str] = {}
        self.statistics = ModelStatistics()  # ModelStatistics and the cvscore_model_* counters
        self._executor = ThreadPoolExecutor(
            max_workers=max(1, self.options.threads), thread_name_prefix="cvscore-compute"
        )
        self._hooks: list[Hook] = []
        self._loading: dict[tuple[str, str], asyncio.Lock] = {}

    # -- loading ------------------------------------------------------------------------
    def load(
        self,
        names: Sequence[str] | None = None,
        on_model: Callable[[Model], None] | None = None,
    ) -> None:
        """Load every model's runtimes once (blocking; run it off the event loop)."""
        if names:
            self.expected = list(names)
        for name in self.expected:
            if self.stopping:
                log.info(
                    "stopping: %d model(s) left unloaded", len(self.expected) - len(self.models)
                )
                return
            try:
                model = load_model(self.repository, name, self.options, self.device)
            except Exception as exc:  # one bad entry never stops the others from serving
                reason = str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
                log.error("model %s: cannot serve it: %s", shown(name, 128), reason)
                self.failed[name] = reason
                continue
            self.models[name] = model
            if on_model is not None:
                on_model(model)

    async def start(self) -> None:
        """Create the batchers on the running loop and report ready."""
        for model in self.models.values():
            self.start_model(model)
        self.ready = True

    def start_model(self, model: Model) -> None:
        """Create and start a batcher for each runtime the model has loaded (on the loop)."""
        for kind in model.runtimes:
            self._add_batcher(model, kind)

    def _add_batcher(self, model: Model, kind: str) -> Batcher:
        o = self.options
        runtime = model.runtimes[kind]
        batcher = Batcher(
            f"{model.name}/{kind}",
            runtime.run,
            self._executor,
            {t.name: t.batched for t in model.signature.inputs},
            max_batch_size=o.max_batch_size,
            max_delay_s=o.max_queue_delay_us / 1e6,
            max_queue_size=o.max_queue_size,
            align=o.align,
            splittable=model.signature.splittable,
            max_cost=o.limits.max_work_bytes,
            run_inline=getattr(runtime, "run_inline", None),
        )
        batcher.hooks.extend(self._hooks)
        batcher.run_hooks.append(self.statistics.run_hook(model.name, model.version))
        batcher.start()
        model.batchers[kind] = batcher
        return batcher

    async def _batcher(self, model: Model, kind: str) -> Batcher:
        """The batcher of a runtime, loading the runtime first when it was deferred."""
        batcher = model.batchers.get(kind)
        if batcher is not None:
            return batcher
        lock = self._loading.setdefault((model.name, kind), asyncio.Lock())
        async with lock:
            if kind in model.batchers:
                return model.batchers[kind]
            await asyncio.to_thread(model.load_deferred, kind)
            return self._add_batcher(model, kind)

    async def drain(self) -> None:
        """Stop taking requests and finish the queued ones without waiting for delays."""
        self.closing = True
        await asyncio.gather(*(b.drain() for b in self._batchers()))

    async def close(self) -> None:
        self.ready = False
        self.closing = True
        await asyncio.gather(*(b.close() for b in self._batchers()))
        self._executor.shutdown(wait=True, cancel_futures=True)

    def _batchers(self) -> list[Batcher]:
        return [b for m in self.models.values() for b in m.batchers.values()]

    # -- test and operations hooks --------------------------------------------------------
    def add_hook(self, hook: Hook) -> None:
        """Observe batcher events ("queued", "ran", "expired", "cancelled")."""
        self._hooks.append(hook)
        for batcher in self._batchers():
            batcher.hooks.append(hook)

    def pause(self) -> None:
        for batcher in self._batchers():
            batcher.pause()

    def resume(self) -> None:
        for batcher in self._batchers():
            batcher.resume()

    # -- queries ------------------------------------------------------------------------
    def model(self, name: str) -> Model:
        model = self.models.get(name)
        if model is None:
            if name in self.failed:
                raise RuntimeUnavailableError(
                    f"Model `{shown(name)}` could not be loaded on this server: {self.failed[name]}"
                )
            if name in self.expected and not self.ready:
                raise NotReadyError(f"Model `{shown(name)}` is still loading")
            known = ", ".join(sorted(self.models)) or "none"
            raise NotFoundError(f"Unknown metric `{shown(name)}`; known metrics: {known}")
        return model

    def serving(self, name: str) -> Model:
        """The model, ready to score, or the error that says why not.

        (While the server drains, calls it has already accepted are still served; the
        transport refuses new ones.)
        """
        model = self.model(name)
        if not self.ready:
            raise NotReadyError(
                f"The server is starting: {len(self.models)} of {len(self.expected)} models loaded"
            )
        if not model.ready:
            raise RuntimeUnavailableError(
                f"Model `{name}` could not be loaded on this server; see the server log"
            )
        return model

    # -- scoring ------------------------------------------------------------------------
    async def score(
        self,
        name: str,
        inputs: Mapping[str, Tensorish],
        runtime: str = "auto",
        reduction: str = "mean",
        deadline: float | None = None,
        exact_dtypes: bool = False,
    ) -> ScoreResult:
        """Score one batch. ``deadline`` is in ``time.monotonic()`` seconds.

        ``inputs`` are arrays or wire declarations; nothing is decoded before the admission
        check passes. ``exact_dtypes``: refuse a float input of another float dtype rather
        than cast it (the KServe API).
        """
        model = self.serving(name)
        with self.statistics.request(model.name, model.version) as timer:
            start = time.perf_counter()
            if reduction not in REDUCTIONS:
                raise InvalidInputError(
                    f"Expected `reduction` to be one of {list(REDUCTIONS)}, got {reduction!r}"
                )
            kind = model.pick(runtime)
            admission = model.plan.admit(inputs, exact_dtypes)
            prepared = await self._prepare(model, inputs, admission)
            timer.prepared()
            batcher = model.batchers.get(kind) or await self._batcher(model, kind)
            outputs, info = await batcher.submit(
                prepared.inputs, prepared.batch_size, deadline, cost=admission.work_bytes
            )
            timer.ran(info)
            reduced = {}
            if reduction != "none":
                reduced = await self._offload(
                    sum(v.nbytes for v in outputs.values()),
                    lambda: {k: stats.reduce(v, reduction) for k, v in outputs.items()},
                )
            return ScoreResult(
                metric=name,
                outputs=outputs,
                reduced=reduced,
                reduction=reduction,
                runtime=kind,
                device=model.runtimes[kind].device,
                batch_size=prepared.batch_size,
                timing=Timing.of(info, time.perf_counter() - start),
            )

    async def evaluate(
        self,
        name: str,
        batches: AsyncIterator[Mapping[str, Tensorish]],
        runtime: str = "auto",
        return_scores: bool = False,
        deadline: float | None = None,
        inflight: int = 4,
    ) -> EvaluateResult:
        """Fold every batch into exact dataset statistics (and, on request, the scores).

        Up to ``inflight`` batches of the stream are queued at once, so consecutive batches
        share runs; results are folded in stream order.
        """
        start = time.perf_counter()
        model = self.serving(name)
        kind = model.pick(runtime)
        batcher = await self._batcher(model, kind)
        output_names = [t.name for t in model.signature.outputs]
        folded: dict[str, stats.RunningStats] = {}  # made on the first batch
        spec = model.signature.spec
        graph_inputs = set(model.signature.input_names())
        # A dataset metric folds every batch into its aggregator too; inputs the graph does
        # not take are the aggregator's host-side inputs.
        aggregator = (
            spec.aggregator(**model.signature.params)
            if spec is not None and spec.aggregator is not None
            else None
        )
        folded_inputs: list[Mapping[str, np.ndarray]] = []
        scores: dict[str, list[np.ndarray]] = {k: [] for k in output_names}
        pending: list[asyncio.Task[tuple[dict[str, np.ndarray], BatchInfo]]] = []
        totals = {"queue": 0.0, "compute": 0.0, "requests": 0, "rows": 0, "folded": 0}
        count = 0

        def fold(outputs: dict[str, np.ndarray], info: BatchInfo) -> None:
            if aggregator is not None:
                index = totals["folded"]
                try:
                    aggregator.update(outputs, folded_inputs.pop(0))
                except (KeyError, ValueError) as exc:
                    raise InvalidInputError(
                        f"Batch {index}: the `{name}` aggregator cannot fold it: {exc}"
                    ) from None
            totals["folded"] += 1
            # A dataset metric's outputs are sufficient statistics (an IoU matrix, a
            # confusion matrix): its aggregator, not per-sample statistics, summarises them.
            for key, value in outputs.items() if aggregator is None else ():
                acc = folded.get(key)
                if acc is None:
                    acc = folded[key] = stats.RunningStats(key, tuple(value.shape[1:]))
                try:
                    acc.update(value)
                except ValueError as exc:
                    raise InvalidInputError(str(exc)) from None
                if return_scores:
                    scores[key].append(value)
            totals["queue"] += info.queue_s
            totals["compute"] += info.compute_s
            totals["requests"] += info.requests
            totals["rows"] += info.rows

        try:
            async for arrays in batches:
                side: Mapping[str, Tensorish] = {}
                if aggregator is not None:
                    side = {k: v for k, v in arrays.items() if k not in graph_inputs}
                    arrays = {k: v for k, v in arrays.items() if k in graph_inputs}
                try:
                    admission = model.plan.admit(arrays, extra=list(side.values()))
                    prepared = await self._prepare(model, arrays, admission)
                except (InvalidInputError, TooLargeError) as exc:
                    raise type(exc)(f"Batch {count}: {exc.message}") from None
                if aggregator is not None:
                    folded_inputs.append({**prepared.inputs, **decode(side)})
                count += 1
                pending.append(
                    asyncio.ensure_future(
                        batcher.submit(
                            prepared.inputs,
                            prepared.batch_size,
                            deadline,
                            cost=admission.work_bytes,
                        )
                    )
                )
                while len(pending) >= inflight:
                    await self._fold(fold, *await pending.pop(0))
            while pending:
                await self._fold(fold, *await pending.pop(0))
        finally:
            for task in pending:
                if task.done() and not task.cancelled():
                    task.exception()  # retrieved: the stream has already failed
                task.cancel()
        summaries = [
            (folded.get(key) or stats.RunningStats(key, ())).summary() for key in output_names
        ]
        joined = None
        if return_scores:
            dtypes = {t.name: t.dtype for t in model.signature.outputs}
            joined = {
                k: np.concatenate(v) if v else np.zeros((0,), dtypes[k]) for k, v in scores.items()
            }
        state, figures = b"", {}
        if aggregator is not None:
            state = aggregator.to_bytes()
            figures = await self._offload(len(state), aggregator.compute)
        return EvaluateResult(
            metric=name,
            runtime=kind,
            device=model.runtimes[kind].device,
            batches=count,
            statistics=summaries,
            scores=joined,
            aggregator_state=state,
            figures={k: float(v) for k, v in figures.items()},
            timing=Timing(
                totals["queue"],
                totals["compute"],
                time.perf_counter() - start,
                int(totals["requests"]),
                int(totals["rows"]),
            ),
        )

    async def _fold(
        self,
        fold: Callable[[dict[str, np.ndarray], BatchInfo], None],
        outputs: dict[str, np.ndarray],
        info: BatchInfo,
    ) -> None:
        await self._offload(sum(v.nbytes for v in outputs.values()), lambda: fold(outputs, info))

    async def _prepare(
        self, model: Model, inputs: Mapping[str, Tensorish], admission: Admission
    ) -> Prepared:
        """Decode admitted inputs and bring them into the artifact's form (domain checks)."""
        plan = model.plan
        if plan.cheap(admission):  # microseconds on the requests before: no thread hop
            return plan.prepare(inputs, admission)
        prepared: Prepared = await self._offload(
            admission.request_bytes, lambda: plan.prepare(inputs, admission)
        )
        return prepared

    async def _offload(self, nbytes: int, fn: Callable[[], Any]) -> Any:
        """Run work on small data inline; on large data (checks, reductions) off the loop."""
        if nbytes <= INLINE_BYTES:
            return fn()
        return await asyncio.get_running_loop().run_in_executor(None, fn)
