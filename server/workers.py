"""``cvscore serve --workers N``: N server processes sharing one set of ports.

The parent binds nothing that serves. It checks the configuration, prepares the repository
once (so N processes never export into one directory at the same time), picks a real port
for every port given as 0, and starts N worker processes (multiprocessing, spawn). Each
worker is an ordinary server (:func:`server.app.serve`) that binds the same gRPC, HTTP and
health ports with ``SO_REUSEPORT``, so the kernel spreads new connections across them; each
loads the repository once. Worker ``i`` serves Prometheus metrics on ``--metrics-port + i``
(a free port of its own with ``--metrics-port 0``; the parent logs them all), and every
gRPC answer carries ``x-cvscore-worker: i`` in its trailing metadata. ModelStatistics,
health and metrics describe the worker that answers.

The parent prints ``cvscore serving on HOST:PORT`` once every worker is ready. SIGTERM or
SIGINT is forwarded to every worker, which drains as a single server does; the parent
exits 0 when they all exit 0. A worker that dies is logged and not restarted; the parent
exits 1 when one dies while starting or when none is left.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import multiprocessing
import multiprocessing.connection
import os
import queue
import signal
import socket
import threading
import time
from multiprocessing.process import BaseProcess
from typing import Any

from ..exporters.parallel import usable_cores
from .config import ServerConfig

log = logging.getLogger("cvscore.server.workers")

START_TIMEOUT_S = 900.0


def reserve_port(host: str, port: int) -> socket.socket:
    """A socket bound (not listening) to ``host:port`` with SO_REUSEPORT: it holds a port
    given as 0 for the workers, which bind it with SO_REUSEPORT too."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host or "0.0.0.0", port))
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    return sock


def _follow_parent(loop: Any, stop: Any) -> None:
    """Drain and exit when the parent dies (even by SIGKILL): no orphan keeps the port."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        multiprocessing.connection.wait([parent.sentinel])
        log.error("the parent process is gone; this worker drains and exits")
        loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=watch, name="cvscore-parent-watch", daemon=True).start()


def _worker(config: ServerConfig, logging_setup: tuple[str, str], ready: Any) -> None:
    """One worker process: an ordinary server that reports to the parent when ready."""
    import asyncio

    from . import allocator, eventloop
    from .app import Server, serve
    from .logs import configure_logging

    configure_logging(*logging_setup)
    allocator.tune()

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        _follow_parent(loop, stop)

        def announce(server: Server) -> None:
            ready.put((config.worker_index, os.getpid(), server.metrics_port))

        await serve(config, stop, announce)

    eventloop.run(run())


def main(
    config: ServerConfig, progress: bool = True, logging_setup: tuple[str, str] = ("info", "text")
) -> int:
    """Serve with ``config.workers`` processes until SIGTERM/SIGINT; the exit status."""
    from . import security
    from .app import format_address
    from .startup import prepare_repository

    config.validate()
    if config.tls_cert is not None and config.tls_key is not None:
        security.check_key_pair(config.tls_cert, config.tls_key)
    prepare_repository(config, progress=progress)  # once, before any worker starts
    held = []
    ports: dict[str, Any] = {}
    for name in ("port", "http_port", "health_port"):
        wanted = getattr(config, name)
        if wanted is None:
            ports[name] = None
            continue
        sock = reserve_port(config.host, wanted)
        held.append(sock)
        ports[name] = int(sock.getsockname()[1])
    workers: list[BaseProcess] = []
    stopping = False

    def on_signal(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True
        for p in workers:
            if p.is_alive() and p.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signal.SIGTERM)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        context = multiprocessing.get_context("spawn")
        ready = context.Queue()
        share = max(1, usable_cores() // config.workers)
        for index in range(config.workers):
            metrics = config.metrics_port
            worker_config = dataclasses.replace(
                config,
                **ports,
                metrics_port=metrics + index if metrics else metrics,
                export_missing=False,
                workers=1,
                worker_index=index,
                onnx_threads=config.onnx_threads or share,  # the cores, shared out
            )
            process = context.Process(
                target=_worker,
                args=(worker_config, logging_setup, ready),
                name=f"cvscore-worker-{index}",
            )
            process.start()
            workers.append(process)
        log.info("started %d workers: pids %s", len(workers), [p.pid for p in workers])
        if not _wait_ready(workers, ready, lambda: stopping):
            on_signal(signal.SIGTERM, None)
            _join(workers, config.grace_s)
            return 0 if stopping else 1
        for sock in held:
            sock.close()
        address = format_address(config.host, ports["port"] or 0)
        print(f"cvscore serving on {address}", flush=True)
        if ports["health_port"] is not None:
            log.info("health on port %d", ports["health_port"])
        if ports["http_port"] is not None:
            scheme = "https" if config.tls_cert is not None else "http"
            where = format_address(config.host, ports["http_port"])
            print(f"cvscore serving HTTP on {scheme}://{where}", flush=True)
        return _supervise(workers, lambda: stopping, config.grace_s)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for sock in held:
            sock.close()


def _wait_ready(workers: list[BaseProcess], ready: Any, stopping: Any) -> bool:
    """True once every worker reported ready; False when one died first or a stop came."""
    waiting = set(range(len(workers)))
    deadline = time.monotonic() + START_TIMEOUT_S
    while waiting:
        if stopping():
            return False
        try:
            index, pid, metrics_port = ready.get(timeout=0.2)
        except queue.Empty:
            dead = [i for i in waiting if workers[i].exitcode is not None]
            if dead:
                for i in dead:
                    log.error(
                        "worker %d exited with code %s while starting", i, workers[i].exitcode
                    )
                return False
            if time.monotonic() > deadline:
                log.error(
                    "workers %s did not become ready in %.0f s", sorted(waiting), START_TIMEOUT_S
                )
                return False
            continue
        waiting.discard(index)
        where = f"; metrics on port {metrics_port}" if metrics_port else ""
        log.info("worker %d (pid %d) ready%s", index, pid, where)
    return True


def _supervise(workers: list[BaseProcess], stopping: Any, grace_s: float) -> int:
    """Wait for the workers to end: 0 when stopped by a signal and all exited 0."""
    alive = {p.sentinel: (i, p) for i, p in enumerate(workers)}
    while alive:
        for sentinel in multiprocessing.connection.wait(list(alive), timeout=0.5):
            index, process = alive.pop(sentinel)  # type: ignore[arg-type]
            process.join()
            if not stopping() or process.exitcode != 0:
                log.error(
                    "worker %d (pid %s) exited with code %s; %d left",
                    index,
                    process.pid,
                    process.exitcode,
                    len(alive),
                )
        if stopping():
            _join([p for _, p in alive.values()], grace_s)
            break
    codes = [p.exitcode for p in workers]
    log.info("stopped (worker exit codes %s)", codes)
    return 0 if stopping() and all(c == 0 for c in codes) else 1


def _join(processes: list[BaseProcess], grace_s: float) -> None:
    deadline = time.monotonic() + grace_s + 30.0
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            log.error("worker pid %s did not stop in time; killing it", process.pid)
            process.kill()
            process.join()
