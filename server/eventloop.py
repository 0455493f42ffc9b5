"""The event loop of a server process: uvloop when installed, else asyncio's own.

Measured on this project's 2-core machine, giou 1000 pairs from 8 tritonclient callers: a
minimal grpc.aio scoring server spent 720 µs of CPU per request on asyncio's loop and 655 µs
on uvloop's; ``cvscore serve`` answered 5-8 % more requests per second on uvloop (grpc.aio's
per-call plumbing, futures and wake-ups, is much of what a loop runs here).

uvloop's ``loop.time()`` moves in whole milliseconds, so nothing that measures or compares
sub-millisecond times reads it: the batcher's arrivals, queue times and deadlines are in
``time.monotonic()`` seconds (what asyncio's ``loop.time()`` returns). ``CVSCORE_EVENT_LOOP=
asyncio`` keeps asyncio's loop; the in-process :class:`~cvscore.server.app.BackgroundServer`
of tests and notebooks always runs on it.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Coroutine
from typing import Any

log = logging.getLogger(__name__)

ENV = "CVSCORE_EVENT_LOOP"
CHOICES = ("auto", "uvloop", "asyncio")


def factory() -> tuple[str, Callable[[], asyncio.AbstractEventLoop] | None]:
    """(name, loop factory) as ``$CVSCORE_EVENT_LOOP`` asks (default auto: uvloop if present)."""
    choice = os.environ.get(ENV, "auto").strip().lower() or "auto"
    if choice not in CHOICES:
        raise ValueError(f"Expected ${ENV} to be one of {list(CHOICES)}, got {choice!r}")
    if choice != "asyncio":
        try:
            import uvloop
        except ImportError:
            if choice == "uvloop":
                raise ValueError(f"${ENV}=uvloop, but uvloop is not installed") from None
        else:
            return "uvloop", uvloop.new_event_loop
    return "asyncio", None


def run(main: Coroutine[Any, Any, None]) -> None:
    """Run a server's main coroutine to the end on the chosen loop."""
    name, make = factory()
    log.debug("event loop: %s", name)
    with asyncio.Runner(loop_factory=make) as runner:
        runner.run(main)
