"""The server process: configuration, the gRPC server with every service, and lifecycle.

``cvscore serve`` builds a :class:`ServerConfig` from its flags and calls :func:`main`;
tests and notebooks run the same server on a thread with :class:`BackgroundServer`.

Lifecycle: prepare the repository (export the zoo when it is missing), bind, report
NOT_SERVING while models load, load every (model, runtime) once, report SERVING and print
``cvscore serving on HOST:PORT``. SIGTERM or SIGINT: report NOT_SERVING, stop accepting,
run what is queued without waiting for the batching delay, let in-flight calls finish
(up to ``grace_s``), exit 0.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from ..exporters.repository import check_model_name
from ..v1 import scoring_pb2, scoring_pb2_grpc
from . import security
from .admission import Limits
from .core import CoreOptions, ScoringCore
from .errors import shown
from .kserve import SERVICE as KSERVE_SERVICE
from .kserve import KServeServicer, Messages, private_pool
from .runtimes import RUNTIMES
from .servicer import ScoringServicer
from .startup import check_repository, prepare_repository
from .telemetry import Telemetry, TelemetryInterceptor
from .wire import DecodeGuardInterceptor

__all__ = [
    "BackgroundServer",
    "Server",
    "ServerConfig",
    "check_repository",
    "main",
    "prepare_repository",
    "serve",
]

log = logging.getLogger(__name__)

SCORING_SERVICE = scoring_pb2.DESCRIPTOR.services_by_name["Scoring"].full_name
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass(frozen=True)
class ServerConfig:
    """Everything ``cvscore serve`` can be told; built from flags in ``main()``."""

    repository: Path
    host: str = "127.0.0.1"
    port: int = 8001
    device: str = "auto"
    runtime: str = "auto"  # runtimes to load: "auto" (every artifact) or a comma list
    models: tuple[str, ...] = ()  # serve only these (default: every model)
    export_missing: bool = False  # export registered metrics missing from the repository
    max_batch_size: int = 64  # 1 turns dynamic batching off
    max_queue_delay_us: int = 500
    max_queue_size: int = 256
    max_message_mb: int = 256
    # the admission budget of one request (server/admission.py)
    max_request_mb: float = 256.0  # its inputs, decoded and cast
    max_work_mb: float = 1024.0  # what its graph allocates (an estimate), inputs included
    align: int = 16
    workers: int = 2
    grace_s: float = 30.0
    # security (see server/security.py)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None  # set: clients must present a certificate it signed
    auth_tokens_file: Path | None = None
    health_port: int | None = None  # a plaintext port serving only health (kubelet probes)
    # observability (see server/telemetry.py)
    metrics_port: int | None = None  # Prometheus /metrics; None: off, 0: a free port
    metrics_host: str = ""  # default: `host`

    def runtimes(self) -> tuple[str, ...]:
        if self.runtime in ("", "auto"):
            return ()
        chosen = tuple(r.strip() for r in self.runtime.split(",") if r.strip())
        unknown = [r for r in chosen if r not in RUNTIMES]
        if unknown:
            raise ValueError(
                f"Expected `runtime` to be auto or a comma list of {list(RUNTIMES)}, got {unknown}"
            )
        return chosen

    def core_options(self) -> CoreOptions:
        return CoreOptions(
            device=self.device,
            runtimes=self.runtimes(),
            max_batch_size=self.max_batch_size,
            max_queue_delay_us=self.max_queue_delay_us,
            max_queue_size=self.max_queue_size,
            align=self.align,
            workers=self.workers,
            limits=Limits.from_mb(self.max_request_mb, self.max_work_mb),
        )

    def validate(self) -> None:
        self.runtimes()
        for name in (
            "max_batch_size",
            "max_queue_size",
            "max_message_mb",
            "max_request_mb",
            "max_work_mb",
            "align",
            "workers",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"Expected `{name}` to be at least 1, got {getattr(self, name)}")
        if self.max_queue_delay_us < 0:
            raise ValueError(
                f"Expected `max_queue_delay_us` to be non-negative, got {self.max_queue_delay_us}"
            )
        for name in ("port", "health_port", "metrics_port"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 65535:
                raise ValueError(f"Expected `{name}` in [0, 65535], got {value}")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("Expected both `tls_cert` and `tls_key`, or neither")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("`tls_client_ca` (mutual TLS) needs `tls_cert` and `tls_key`")
        for name in self.models:
            check_model_name(name)


# -- the server -----------------------------------------------------------------------------
def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Server:
    """The gRPC server around one core: every service, health and reflection."""

    def __init__(self, config: ServerConfig, core: ScoringCore) -> None:
        self.config = config
        self.core = core
        limit = config.max_message_mb * 1024 * 1024
        self.telemetry = Telemetry() if config.metrics_port is not None else None
        self.metrics_port = 0
        interceptors: list[grpc.aio.ServerInterceptor] = [
            TelemetryInterceptor(self.telemetry, core)  # outermost: sees refusals too
        ]
        if config.auth_tokens_file is not None:
            tokens = security.load_tokens(config.auth_tokens_file)
            interceptors.append(security.TokenAuthInterceptor(tokens))
            log.info("bearer-token authentication on (%d token(s)); health is open", len(tokens))
        self.decode_guard = DecodeGuardInterceptor()  # innermost: sees decoded requests
        interceptors.append(self.decode_guard)
        self.grpc = grpc.aio.server(
            interceptors=interceptors,
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", limit),
                ("grpc.so_reuseport", 0),
            ],
        )
        self.health = health.aio.HealthServicer()
        pool = private_pool()
        settings = {
            "cvscore.max_batch_size": str(config.max_batch_size),
            "cvscore.max_queue_delay_us": str(config.max_queue_delay_us),
            "cvscore.align": str(config.align),
        }
        scoring_pb2_grpc.add_ScoringServicer_to_server(ScoringServicer(core), self.grpc)
        self.grpc.add_generic_rpc_handlers(
            [KServeServicer(core, Messages(pool), settings).handler()]
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.grpc)
        self.services = (SCORING_SERVICE, KSERVE_SERVICE, HEALTH_SERVICE, reflection.SERVICE_NAME)
        reflection.enable_server_reflection(self.services, self.grpc, pool=pool)
        credentials = None
        if config.tls_cert is not None and config.tls_key is not None:
            credentials = security.server_credentials(
                config.tls_cert, config.tls_key, config.tls_client_ca
            )
        self.port = _bind(self.grpc, config.host, config.port, credentials)
        self.address = format_address(config.host, self.port)
        self.tls = credentials is not None
        # kubelet's gRPC probes speak neither TLS nor tokens: health alone, in plaintext
        self.health_grpc: grpc.aio.Server | None = None
        self.health_port = 0
        if config.health_port is not None:
            self.health_grpc = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
            health_pb2_grpc.add_HealthServicer_to_server(self.health, self.health_grpc)
            self.health_port = _bind(self.health_grpc, config.host, config.health_port, None)

    async def listen(self) -> None:
        """Start answering, NOT_SERVING until :meth:`load` is done."""
        for service in ("", *self.services[:2]):
            await self.health.set(service, NOT_SERVING)
        await self.grpc.start()
        if self.health_grpc is not None:
            await self.health_grpc.start()
        if self.telemetry is not None and self.config.metrics_port is not None:
            host = self.config.metrics_host or self.config.host
            self.metrics_port = self.telemetry.start_http(host, self.config.metrics_port)
            log.info("metrics on http://%s/metrics", format_address(host, self.metrics_port))
        log.info(
            "listening on %s%s; loading models from %s",
            self.address,
            " (TLS)" if self.tls else "",
            self.core.repository,
        )

    async def load(self) -> None:
        """Load every (model, runtime) once, then report SERVING."""
        await asyncio.to_thread(self.core.load)
        if self.core.stopping:  # a stop signal arrived while loading: never report SERVING
            return
        await self.core.start()
        if self.telemetry is not None:
            self.telemetry.attach(self.core)
        for model in self.core.models.values():
            await self.health.set(model.name, SERVING if model.ready else NOT_SERVING)
        for name in self.core.failed:
            await self.health.set(name, NOT_SERVING)
        for service in ("", *self.services[:2]):
            await self.health.set(service, SERVING)
        ready = sum(m.ready for m in self.core.models.values())
        log.info("%d of %d models ready", ready, len(self.core.expected))
        if self.core.failed:
            log.warning(
                "not serving %d repository entr%s: %s (see the errors above)",
                len(self.core.failed),
                "y" if len(self.core.failed) == 1 else "ies",
                ", ".join(shown(n) for n in self.core.failed),
            )

    async def stop(self, grace: float | None = None) -> None:
        """Stop accepting, finish queued and in-flight requests, release everything."""
        grace = self.config.grace_s if grace is None else grace
        await self.health.enter_graceful_shutdown()
        stopping = asyncio.ensure_future(self.grpc.stop(grace))
        await self.core.drain()
        await stopping
        await self.core.close()
        if self.health_grpc is not None:
            await self.health_grpc.stop(0)
        if self.telemetry is not None:
            self.telemetry.stop_http()


def _bind(
    server: grpc.aio.Server, host: str, port: int, credentials: grpc.ServerCredentials | None
) -> int:
    wanted = format_address(host, port)
    try:
        if credentials is None:
            bound = server.add_insecure_port(wanted)
        else:
            bound = server.add_secure_port(wanted, credentials)
    except RuntimeError:
        bound = 0
    if bound == 0:
        raise OSError(f"cannot listen on {wanted}: address in use or not available")
    return bound


async def serve(
    config: ServerConfig,
    stop: asyncio.Event,
    on_ready: Callable[[Server], None] | None = None,
    core: ScoringCore | None = None,
    on_listening: Callable[[Server], None] | None = None,
) -> None:
    """Run a server until ``stop`` is set, then shut it down gracefully."""
    core = core or ScoringCore(config.repository, config.core_options(), config.models)
    server = Server(config, core)
    try:
        await server.listen()
        if on_listening is not None:
            on_listening(server)
        loading = asyncio.ensure_future(server.load())
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait({loading, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if not loading.done():
            # SIGTERM while loading: finish the model being loaded, skip the rest, exit.
            log.info("stopping while loading models")
            core.stopping = True
            await loading
            return
        stopped.cancel()
        await loading  # its errors, if any
        if on_ready is not None:
            on_ready(server)
        await stop.wait()
        log.info("stopping: draining in-flight requests (grace %.0f s)", config.grace_s)
    finally:
        await server.stop()
    log.info("stopped")


def main(config: ServerConfig, progress: bool = True) -> int:
    """``cvscore serve``: prepare the repository, serve until SIGTERM/SIGINT, exit 0."""
    config.validate()
    if config.tls_cert is not None and config.tls_key is not None:
        security.check_key_pair(config.tls_cert, config.tls_key)  # before any export
    prepare_repository(config, progress=progress)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)

        def announce(server: Server) -> None:
            print(f"cvscore serving on {server.address}", flush=True)

        await serve(config, stop, announce)

    asyncio.run(run())
    return 0


# -- in-process ------------------------------------------------------------------------------
class BackgroundServer:
    """The same server on its own event loop in a daemon thread (tests, notebooks).

    ``with BackgroundServer(config) as server:`` blocks until every model is loaded;
    ``server.address`` is where to connect, ``server.core`` the core, ``server.server``
    the :class:`Server` (``metrics_port``, ``health_port``), and
    :meth:`call` runs a function on the server's loop (to pause batchers, add hooks).
    """

    def __init__(self, config: ServerConfig, core: ScoringCore | None = None) -> None:
        self.config = config
        self.core = core or ScoringCore(config.repository, config.core_options(), config.models)
        self.address = ""
        self.server: Server | None = None  # once listening: ports (metrics, health), TLS
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._listening = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="cvscore-server", daemon=True)

    def _main(self) -> None:
        async def run() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()

            def listening(server: Server) -> None:
                self.address = server.address
                self.server = server
                self._listening.set()

            await serve(self.config, self._stop, lambda _: self._ready.set(), self.core, listening)

        try:
            asyncio.run(run())
        except BaseException as exc:
            self._error = exc
        finally:
            self._listening.set()
            self._ready.set()

    def start(self, timeout: float = 300.0, wait: bool = True) -> BackgroundServer:
        """Start the thread; return once listening, or (``wait``) once every model is loaded."""
        self._thread.start()
        event = self._ready if wait else self._listening
        if not event.wait(timeout):
            raise TimeoutError(f"the server did not start in {timeout:.0f} s")
        if self._error is not None:
            raise RuntimeError("the server failed to start") from self._error
        return self

    def wait_ready(self, timeout: float = 300.0) -> None:
        if not self._ready.wait(timeout):
            raise TimeoutError(f"the server did not become ready in {timeout:.0f} s")
        if self._error is not None:
            raise RuntimeError("the server failed to start") from self._error

    def call(self, fn: Callable[[], Any], timeout: float = 30.0) -> Any:
        """Run ``fn()`` on the server's event loop and return its result."""
        assert self._loop is not None

        async def run() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout)

    def stop(self, timeout: float = 60.0) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def parse_models(items: Sequence[str]) -> tuple[str, ...]:
    return tuple(n.strip() for item in items for n in item.split(",") if n.strip())
