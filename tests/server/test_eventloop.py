"""The server's event loop choice (server/eventloop.py) and the batcher's clock under it."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from cvscore.server import eventloop
from cvscore.server.batcher import Batcher
from cvscore.server.errors import DeadlineExceededError

uvloop = pytest.importorskip("uvloop")


def test_auto_picks_uvloop_and_the_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(eventloop.ENV, raising=False)
    assert eventloop.factory()[0] == "uvloop"
    monkeypatch.setenv(eventloop.ENV, "asyncio")
    assert eventloop.factory() == ("asyncio", None)
    monkeypatch.setenv(eventloop.ENV, "trio")
    with pytest.raises(ValueError, match="CVSCORE_EVENT_LOOP"):
        eventloop.factory()


def test_the_batcher_times_and_expires_in_microseconds_on_uvloop() -> None:
    """uvloop's loop.time() moves in whole milliseconds: the batcher keeps its own clock, so
    queue times are not rounded to 0 or 1 ms and a 30 ms deadline still expires a request."""

    def run(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        time.sleep(0.001)
        return {"y": inputs["x"][:, 0]}

    async def main() -> tuple[list[float], BaseException | None]:
        executor = ThreadPoolExecutor(1)
        batcher = Batcher("t", run, executor, {"x": True}, max_delay_s=300e-6, inline_cost=0)
        batcher.start()
        queued = []
        for _ in range(20):
            _, info = await batcher.submit({"x": np.ones((2, 1), np.float32)}, 2)
            queued.append(info.queue_s)
        batcher.pause()
        error = None
        try:
            await batcher.submit({"x": np.ones((2, 1), np.float32)}, 2, time.monotonic() + 0.03)
        except DeadlineExceededError as exc:
            error = exc
        await batcher.close()
        executor.shutdown()
        return queued, error

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        queued, error = runner.run(main())
    assert isinstance(error, DeadlineExceededError)
    # a whole-millisecond clock would give only 0.0 and multiples of 1e-3
    assert any(q > 0 and abs(q * 1e3 - round(q * 1e3)) > 1e-6 for q in queued), queued
