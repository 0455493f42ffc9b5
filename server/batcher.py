"""Dynamic batching for one (model, runtime): concatenate, run once, split back.

Requests that can share a run are those with the same *group key*: for an input with the
batch axis, its dtype and its non-batch axes (so images of different H, W never meet); for
an input without one (a shared centre matrix), its dtype and shape. The worker takes the
oldest request, waits until its group holds ``max_batch_size`` rows or the oldest has
waited ``max_delay`` seconds (a *lone* request, one that found nothing in flight and
came ``LONE_GAPS`` delays or more after the one before, has no company coming and does not
wait; requests queued with it in the same loop iteration still join its run), splits the group
into runs whose inputs without a batch axis are equal byte for byte, runs each once and
slices each request's outputs.

Alignment. The exported graphs give a row the same bits wherever it sits in a batch
(``exporters/invariance.py``; ``tests/test_invariance.py``), so requests are packed with no
padding. ``align > 1`` still starts every request at a multiple of ``align`` rows (copies of
its last row pad it), for artifacts made elsewhere. Runs whose work estimate is under
``inline_cost`` bytes compute on the loop: a thread hop costs more than they do; a request
of ``solo_cost`` or more starts its run at once. A request that cannot share a run (as many
rows as ``max_batch_size``) and would compute on the loop is computed by its own handler,
without the queue's future and wake-ups.

Transport-free: nothing here knows about gRPC; errors are :mod:`server.errors`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from typing import Any

import numpy as np

from .errors import DeadlineExceededError, NotReadyError, QueueFullError
from .grouping import BatchInfo, Request, RunInfo, concatenate, group_key, partition, split

log = logging.getLogger(__name__)

# Inputs smaller than this are checked, and runs whose work estimate is smaller computed, on
# the event loop (the hop to a thread costs more); a run of SOLO_BYTES does not wait for company.
INLINE_BYTES = 1 << 20
SOLO_BYTES = 16 << 20
LONE_GAPS = 10
RunFn = Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]
Hook = Callable[[str, "Request"], None]
# what a run gives one request: its outputs (or the error) and the run's BatchInfo
Outcome = tuple["Request", "dict[str, np.ndarray] | BaseException", "BatchInfo | None"]


class Batcher:
    """One queue and one worker task per (model, runtime); compute in ``executor``."""

    def __init__(
        self,
        label: str,
        run: RunFn,
        executor: Executor,
        batched: Mapping[str, bool],
        *,
        max_batch_size: int = 64,
        max_delay_s: float = 0.0005,
        max_queue_size: int = 256,
        align: int = 1,
        splittable: bool = True,
        max_cost: int = 0,
        inline_cost: int = INLINE_BYTES,
        solo_cost: int = SOLO_BYTES,
        run_inline: RunFn | None = None,
    ) -> None:
        self.label = label
        self._run_fn = run
        self._run_inline = run_inline or run  # what a run on the loop calls
        self._executor = executor
        self._batched = dict(batched)
        self._shared = [name for name, b in self._batched.items() if not b]
        self.max_batch_size = max(1, int(max_batch_size))
        self.max_delay_s = max(0.0, float(max_delay_s))
        self.max_queue_size = max(1, int(max_queue_size))
        self.align = max(1, int(align))
        self.splittable = splittable
        # requests whose work estimates sum past this never share a run (0: no bound)
        self.max_cost = max(0, int(max_cost))
        self.inline_cost = max(0, int(inline_cost))
        # a head request this costly runs at once: sharing its run saves nothing (0: waits)
        self.solo_cost = max(0, int(solo_cost))
        self.hooks: list[Hook] = []  # observers of "queued", "ran", "expired", "cancelled"
        self.run_hooks: list[Callable[[RunInfo], None]] = []  # after each run, in its thread
        self.runs = 0
        self.inflight = 0  # submitted and not yet answered, queued or running
        self._last_arrival = -float("inf")  # of the last submit
        self._queue: collections.deque[Request] = collections.deque()
        self._wake = asyncio.Event()
        self._open = asyncio.Event()  # cleared by pause(): a test hook to hold the queue
        self._open.set()
        self._draining = False
        self._closed = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._worker(), name=f"batcher {self.label}"
            )

    async def drain(self) -> None:
        """Run whatever is queued now without waiting for the delay; return when idle."""
        self._draining = True
        self._open.set()
        self._wake.set()
        while self._queue or not self._idle.is_set():
            self._wake.set()
            await self._idle.wait()
            await asyncio.sleep(0)

    async def close(self) -> None:
        """Stop the worker; what is still queued, or submitted later, is refused."""
        self._closed = True
        for request in list(self._queue):
            if not request.future.done():
                request.future.set_exception(NotReadyError(f"`{self.label}` was closed"))
        self._queue.clear()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def pause(self) -> None:
        """Hold every queued request (tests use it to fill the queue deterministically)."""
        self._open.clear()

    def resume(self) -> None:
        self._open.set()
        self._wake.set()

    @property
    def depth(self) -> int:
        return len(self._queue)

    # -- requests -----------------------------------------------------------------------
    async def submit(
        self,
        inputs: Mapping[str, np.ndarray],
        rows: int,
        deadline: float | None = None,
        cost: int = 0,
    ) -> tuple[dict[str, np.ndarray], BatchInfo]:
        """Queue one request; return its outputs and what its batch looked like.

        ``deadline`` is in ``time.monotonic()`` seconds. Raises QueueFullError at once when the
        queue is full, DeadlineExceededError when the deadline passes before the request's
        batch has run.
        """
        loop = asyncio.get_running_loop()
        if self._closed:  # unloaded (model control) or stopped: nothing would run it
            raise NotReadyError(f"`{self.label}` is closed (unloaded or stopping); retry")
        if len(self._queue) >= self.max_queue_size:
            raise QueueFullError(
                f"The queue of `{self.label}` is full ({self.max_queue_size} requests "
                "waiting); retry later"
            )
        now = time.monotonic()
        # lone: at the last arrival's pace, under one wait in LONE_GAPS would see company
        lone = self.inflight == 0 and now - self._last_arrival >= LONE_GAPS * self.max_delay_s
        self._last_arrival = now
        if self._runs_now(rows, cost):
            return self._run_now(inputs, rows, deadline, now)
        request = Request(
            inputs=inputs,
            rows=rows,
            key=group_key(inputs, self._batched) if self._batched else (),
            future=loop.create_future(),
            arrival=now,
            deadline=deadline,
            cost=cost,
            lone=lone,
        )
        self._queue.append(request)
        self.inflight += 1
        log.debug("%s: queued %d rows (%d waiting)", self.label, rows, len(self._queue))
        if self.hooks:
            self._notify("queued", request)
        self._wake.set()  # no wait_for / shield per request: a timer handle expires it
        timer = None if deadline is None else loop.call_later(deadline - now, self._expire, request)
        try:
            return await request.future
        except asyncio.CancelledError:
            self._drop(request, "cancelled")
            raise
        finally:
            self.inflight -= 1
            if timer is not None:
                timer.cancel()

    def _runs_now(self, rows: int, cost: int) -> bool:
        """Whether the worker would run it alone, at once, on the loop: then its handler
        computes it, without the queue's future and wake-ups."""
        return (
            cost < self.inline_cost
            and not self._queue
            and self._idle.is_set()  # the worker is not in a run (one off the loop)
            and self._open.is_set()
            and (not self.splittable or rows >= self.max_batch_size)  # it cannot share
        )

    def _run_now(
        self,
        inputs: Mapping[str, np.ndarray],
        rows: int,
        deadline: float | None,
        now: float,
    ) -> tuple[dict[str, np.ndarray], BatchInfo]:
        if deadline is not None and deadline <= now:
            raise DeadlineExceededError(f"The deadline passed before `{self.label}` ran it")
        loop = asyncio.get_running_loop()
        request = Request(inputs, rows, (), loop.create_future(), now)
        if self.hooks:
            self._notify("queued", request)
        queued = time.monotonic() - now  # microseconds: the hooks above
        [(_, result, info)] = self._compute([request], self._run_inline)
        if isinstance(result, BaseException):
            raise result
        assert info is not None
        answer = (result, BatchInfo(queued, info.compute_s, 1, info.rows))
        request.future.set_result(answer)  # what the hooks read, as for a queued request
        if self.hooks:
            self._notify("ran", request)
        return answer

    def _expire(self, request: Request) -> None:
        """The deadline passed before the request's run finished."""
        if request.future.done():
            return
        waited = (time.monotonic() - request.arrival) * 1e3
        request.future.set_exception(
            DeadlineExceededError(
                f"The deadline passed after {waited:.0f} ms waiting for `{self.label}`"
            )
        )
        self._drop(request, "expired")

    def _drop(self, request: Request, why: str) -> None:
        if not request.future.done():
            request.future.cancel()
        try:
            self._queue.remove(request)
        except ValueError:
            return  # already taken into a running batch; its slot is gone with it
        self._notify(why, request)

    def _notify(self, event: str, request: Request) -> None:
        for hook in self.hooks:
            try:
                hook(event, request)
            except Exception:  # an observer must not break the batcher
                log.exception("batcher hook failed")

    # -- worker -------------------------------------------------------------------------
    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                await self._step(loop)
            except asyncio.CancelledError:
                raise
            except Exception:  # never let one bad step stop the queue
                log.exception("%s: batcher step failed", self.label)

    async def _step(self, loop: asyncio.AbstractEventLoop) -> None:
        await self._open.wait()
        while self._queue and self._queue[0].future.done():
            self._queue.popleft()
        if not self._queue:
            self._idle.set()
            self._wake.clear()
            await self._wake.wait()
            return
        self._idle.clear()
        head = self._queue[0]
        due = head.arrival + self.max_delay_s
        while (
            not self._draining
            and self._open.is_set()
            and not head.future.done()
            and self.splittable
            and not head.lone  # no company is coming
            and sum(r.rows for r in self._queue if r.key == head.key) < self.max_batch_size
            and not (self.solo_cost and head.cost >= self.solo_cost)
            and time.monotonic() < due
        ):
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), due - time.monotonic())
            except TimeoutError:
                break
        if not self._open.is_set() or head.future.done():
            return
        batch = self._take(head.key, time.monotonic())
        if batch:
            await self._run(batch, loop)

    def _take(self, key: tuple[Any, ...], now: float) -> list[Request]:
        """Remove and return the queued requests of ``key`` that make the next run."""
        batch: list[Request] = []
        rows = cost = 0
        keep: collections.deque[Request] = collections.deque()
        for request in self._queue:
            if request.future.done():
                continue
            if request.deadline is not None and request.deadline <= now:
                waited = (now - request.arrival) * 1e3
                request.future.set_exception(
                    DeadlineExceededError(
                        f"The deadline passed after {waited:.0f} ms waiting for `{self.label}`"
                    )
                )
                self._notify("expired", request)
                continue
            fits = not batch or (
                self.splittable
                and rows + request.rows <= self.max_batch_size
                and (not self.max_cost or cost + request.cost <= self.max_cost)
            )
            if request.key == key and fits:
                batch.append(request)
                rows += request.rows
                cost += request.cost
            else:
                keep.append(request)
        self._queue = keep
        return batch

    async def _run(self, batch: list[Request], loop: asyncio.AbstractEventLoop) -> None:
        start = time.monotonic()
        try:
            if sum(r.cost for r in batch) < self.inline_cost:
                outcomes = self._compute(batch, self._run_inline)
            else:
                outcomes = await loop.run_in_executor(
                    self._executor, self._compute, batch, self._run_fn
                )
        except Exception as exc:  # a bug in partitioning: every request hears of it
            outcomes = [(r, exc, None) for r in batch]
        for request, result, info in outcomes:
            if not request.future.done():
                if isinstance(result, BaseException):
                    request.future.set_exception(result)
                else:
                    assert info is not None
                    queued = BatchInfo(
                        start - request.arrival, info.compute_s, info.requests, info.rows
                    )
                    request.future.set_result((result, queued))
            if self.hooks and not isinstance(result, BaseException):
                self._notify("ran", request)

    def _compute(self, batch: list[Request], fn: RunFn) -> list[Outcome]:
        """Split into runs by shared inputs, run each with ``fn``, slice the outputs."""
        outcomes: list[Outcome] = []
        for run in partition(batch, self._shared):
            outcomes.extend(self._run_one(run, fn))
        return outcomes

    def _run_one(self, run: list[Request], fn: RunFn) -> list[Outcome]:
        try:
            t0 = time.perf_counter()
            align = self.align if self.splittable else 1
            inputs, offsets, rows = concatenate(run, self._batched, align)
            t1 = time.perf_counter()
            outputs = fn(inputs)
            t2 = time.perf_counter()
            compute = t2 - t1
            self.runs += 1
            parts = (
                split(outputs, offsets, rows, self.label) if self.splittable else [dict(outputs)]
            )
        except Exception as exc:
            if len(run) > 1:
                # One bad request must not fail the others: run each on its own.
                log.warning(
                    "%s: a batch of %d failed (%s); retrying one by one", self.label, len(run), exc
                )
                return [o for request in run for o in self._run_one([request], fn)]
            return [(run[0], exc, None)]
        info = BatchInfo(0.0, compute, len(run), rows)
        if self.run_hooks:
            ran = RunInfo(
                sum(r.rows for r in run), len(run), t1 - t0, compute, time.perf_counter() - t2
            )
            for hook in self.run_hooks:
                hook(ran)
        return [(r, part, info) for r, part in zip(run, parts, strict=True)]
