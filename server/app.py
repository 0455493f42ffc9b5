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
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc

from ..v1 import scoring_pb2, scoring_pb2_grpc
from . import allocator, eventloop, security
from .config import ServerConfig
from .control import ModelControl
from .core import Model, ScoringCore
from .dataplane import DataPlane
from .errors import shown
from .handlers import Registrar, compose
from .http import HttpFrontEnd
from .kserve import SERVICE as KSERVE_SERVICE
from .kserve import KServeServicer, Messages, private_pool
from .servicer import ScoringServicer
from .startup import check_repository, prepare_repository
from .telemetry import Telemetry, TelemetryLayer
from .wire import DecodeGuard

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
        worker = config.worker_index  # one of --workers N: share the ports (SO_REUSEPORT)
        reuse = int(worker is not None)
        # Telemetry (outermost: it sees every refusal) and the decode guard (innermost: it
        # sees requests as decoded) are handler layers, applied once per method; only
        # authentication, which refuses before a request is decoded, is an interceptor.
        self.decode_guard = DecodeGuard()
        layer = compose([TelemetryLayer(self.telemetry, core, worker), self.decode_guard])
        interceptors: list[grpc.aio.ServerInterceptor] = []
        auth = None
        if config.auth_tokens_file is not None:
            tokens = security.load_tokens(config.auth_tokens_file)
            auth = security.TokenAuthInterceptor(tokens, layer=layer)
            interceptors.append(auth)
            log.info("bearer-token authentication on (%d token(s)); health is open", len(tokens))
        self.grpc = grpc.aio.server(
            interceptors=interceptors,
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", limit),
                ("grpc.so_reuseport", reuse),
            ],
        )
        services = Registrar(self.grpc, layer)  # where services register: layers applied
        self.health = health.aio.HealthServicer()
        pool = private_pool()
        settings = {
            "cvscore.max_batch_size": str(config.max_batch_size),
            "cvscore.max_queue_delay_us": str(config.max_queue_delay_us),
            "cvscore.align": str(config.align),
        }
        self.control = ModelControl(
            core, config.model_control, config.repository_poll_s, config.models
        )
        self.control.listeners.append(self._model_changed)
        messages = Messages(pool)
        plane = DataPlane(core, self.control, messages, settings)
        self.plane = plane
        scoring_pb2_grpc.add_ScoringServicer_to_server(ScoringServicer(core, plane.shm), services)
        services.add_generic_rpc_handlers([KServeServicer(plane, messages).handler()])
        # KServe v2 over HTTP on the same loop, over the same data plane
        self.http: HttpFrontEnd | None = None
        self.http_port = 0
        if config.http_port is not None:
            self.http = HttpFrontEnd(plane, core, self.telemetry, auth, limit, config.grace_s)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, services)
        self.services = (SCORING_SERVICE, KSERVE_SERVICE, HEALTH_SERVICE, reflection.SERVICE_NAME)
        # (what enable_server_reflection does for a grpc.aio.Server, through the registrar)
        reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
            reflection.aio.ReflectionServicer(self.services, pool=pool), services
        )
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
            self.health_grpc = grpc.aio.server(options=[("grpc.so_reuseport", reuse)])
            health_pb2_grpc.add_HealthServicer_to_server(self.health, self.health_grpc)
            self.health_port = _bind(self.health_grpc, config.host, config.health_port, None)

    async def listen(self) -> None:
        """Start answering, NOT_SERVING until :meth:`load` is done."""
        for service in ("", *self.services[:2]):
            await self.health.set(service, NOT_SERVING)
        await self.grpc.start()
        if self.health_grpc is not None:
            await self.health_grpc.start()
        if self.http is not None and self.config.http_port is not None:
            context = None
            if self.config.tls_cert is not None and self.config.tls_key is not None:
                context = security.server_ssl_context(
                    self.config.tls_cert, self.config.tls_key, self.config.tls_client_ca
                )
            self.http_port = await self.http.start(
                self.config.host,
                self.config.http_port,
                context,
                self.config.worker_index is not None,
            )
            scheme = "https" if context is not None else "http"
            log.info(
                "KServe v2 HTTP on %s://%s",
                scheme,
                format_address(self.config.host, self.http_port),
            )
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
        await asyncio.to_thread(self.control.snapshot)  # what polling compares with
        await asyncio.to_thread(self.core.load)
        if self.core.stopping:  # a stop signal arrived while loading: never report SERVING
            return
        await self.core.start()
        if self.telemetry is not None:
            self.telemetry.attach(self.core)
        self.control.start()
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

    async def _model_changed(self, name: str, model: Model | None) -> None:
        """Model control loaded, reloaded or unloaded ``name``: health and metrics follow."""
        if model is not None and self.telemetry is not None:
            self.telemetry.attach_model(model)
        ready = model is not None and model.ready
        await self.health.set(name, SERVING if ready else NOT_SERVING)

    async def stop(self, grace: float | None = None) -> None:
        """Stop accepting, finish queued and in-flight requests, release everything."""
        grace = self.config.grace_s if grace is None else grace
        await self.control.stop()
        await self.health.enter_graceful_shutdown()
        stopping = [asyncio.ensure_future(self.grpc.stop(grace))]
        if self.http is not None:  # in-flight HTTP requests get config.grace_s
            stopping.append(asyncio.ensure_future(self.http.stop()))
        await self.core.drain()
        await asyncio.gather(*stopping)
        await self.core.close()
        self.plane.shm.close()  # nothing is in flight any more: unmap every region
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
    allocator.tune()  # large requests reuse freed heap blocks (server/allocator.py)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)

        def announce(server: Server) -> None:
            print(f"cvscore serving on {server.address}", flush=True)
            if server.http is not None:  # a line of its own: tools read the one above
                scheme = "https" if server.tls else "http"
                where = format_address(config.host, server.http_port)
                print(f"cvscore serving HTTP on {scheme}://{where}", flush=True)

        await serve(config, stop, announce)

    eventloop.run(run())
    return 0


# -- in-process ------------------------------------------------------------------------------
class BackgroundServer:
    """The same server on its own event loop in a daemon thread (tests, notebooks).

    ``with BackgroundServer(config) as server:`` blocks until every model is loaded;
    ``server.address`` is where to connect (``server.http_address`` for HTTP),
    ``server.core`` the core, ``server.server`` the :class:`Server` (``metrics_port``,
    ``health_port``, ``http_port``, ``control``), and
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

    @property
    def http_address(self) -> str:
        """``host:port`` of the KServe HTTP front end (empty when it is off)."""
        if self.server is None or self.server.http is None:
            return ""
        return format_address(self.config.host, self.server.http_port)

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
