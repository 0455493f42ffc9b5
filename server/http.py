"""KServe v2 over HTTP/REST (``cvscore serve --http-port``): a second thin transport.

It runs on the gRPC server's event loop (aiohttp) and answers from the same
:class:`~server.dataplane.DataPlane`, so a score is computed by the same core, admission
check and batcher whichever transport carried it. Routes (``/versions/{v}`` forms too):

    GET  /v2/health/live, /v2/health/ready            200, or 503 when not ready
    GET  /v2                                          server metadata
    GET  /v2/models/{m}, /v2/models/{m}/ready, /v2/models/{m}/config
    GET  /v2/models/{m}/stats, /v2/models/stats       ModelStatistics (server/modelstats.py)
    POST /v2/models/{m}/infer                         JSON or binary tensors (server/rest.py)
    POST /v2/repository/index                         {"ready": true} lists ready ones only
    POST /v2/repository/models/{m}/load|unload        model control (server/control.py)

Errors are ``{"error": "..."}`` with the status a core error maps to (:data:`HTTP_STATUS`);
anything unexpected is 500 with an incident id, the traceback in the log. The same bearer
tokens as gRPC guard every route but the two health ones (load balancers probe them
without a secret); the same TLS, message size limit and Prometheus metrics (methods
``http/<KServe method>``, codes the gRPC status names) apply.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import web

from . import logs, rest
from .calls import REQUEST_ID, Call, request_id_of
from .core import INLINE_BYTES, ScoringCore
from .dataplane import DataPlane
from .errors import QueueFullError, ScoringError, TooLargeError, clip, shown
from .security import TokenAuthInterceptor
from .status import to_status
from .telemetry import Telemetry, record

log = logging.getLogger(__name__)

# The HTTP status of each core error code (QueueFullError and TooLargeError aside).
HTTP_STATUS = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "UNAUTHENTICATED": 401,
    "NOT_FOUND": 404,
    "RESOURCE_EXHAUSTED": 413,
    "INTERNAL": 500,
    "UNIMPLEMENTED": 501,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}
# aiohttp's own refusals (no route, wrong method, body too large) as status names
FROM_HTTP = {
    400: "INVALID_ARGUMENT",
    404: "NOT_FOUND",
    405: "UNIMPLEMENTED",
    413: "RESOURCE_EXHAUSTED",
}
RUNTIME = web.RequestKey("cvscore.runtime", str)  # what _observe labels the call with
OPEN_PATHS = frozenset({"/v2/health/live", "/v2/health/ready"})
T = TypeVar("T")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def _offload(nbytes: int, fn: Callable[[], T]) -> T:
    """Parse or encode small bodies inline, large ones (JSON is slow) off the event loop."""
    if nbytes <= INLINE_BYTES:
        return fn()
    return await asyncio.get_running_loop().run_in_executor(None, fn)


def status_of(exc: ScoringError) -> int:
    if isinstance(exc, QueueFullError):
        return 503  # overloaded: retry later (Retry-After)
    if isinstance(exc, TooLargeError):
        return 413
    return HTTP_STATUS.get(exc.code, 500)


def _json(doc: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=json.dumps(doc, separators=(",", ":")).encode(),
        status=status,
        headers=headers,
        content_type="application/json",
    )


def _error(status: int, message: str, **headers: str) -> web.Response:
    return _json({"error": clip(message)}, status, headers or None)


class HttpFrontEnd:
    """The aiohttp application over one data plane, and its listening socket."""

    def __init__(
        self,
        plane: DataPlane,
        core: ScoringCore,
        telemetry: Telemetry | None = None,
        auth: TokenAuthInterceptor | None = None,
        max_body_bytes: int = 256 << 20,
        grace_s: float = 30.0,
    ) -> None:
        self.plane = plane
        self.core = core
        self.telemetry = telemetry
        self.auth = auth
        self.app = web.Application(
            client_max_size=max_body_bytes, middlewares=[self._observe, self._guard]
        )
        self._routes()
        self.grace_s = grace_s
        self.port = 0
        self._runner: web.AppRunner | None = None

    # -- routes ---------------------------------------------------------------------------
    def _routes(self) -> None:
        r = self.app.router
        r.add_get("/v2/health/live", self.live, name="ServerLive")
        r.add_get("/v2/health/ready", self.ready, name="ServerReady")
        r.add_get("/v2", self.server_metadata, name="ServerMetadata")
        r.add_post("/v2/repository/index", self.index, name="RepositoryIndex")
        r.add_get("/v2/models/stats", self.model_statistics, name="ModelStatistics:all")
        r.add_post("/v2/repository/models/{model}/load", self.load, name="RepositoryModelLoad")
        r.add_post(
            "/v2/repository/models/{model}/unload", self.unload, name="RepositoryModelUnload"
        )
        for prefix, tag in (
            ("/v2/models/{model}", ""),
            ("/v2/models/{model}/versions/{version}", ":v"),
        ):
            r.add_get(prefix, self.model_metadata, name=f"ModelMetadata{tag}")
            r.add_get(prefix + "/ready", self.model_ready, name=f"ModelReady{tag}")
            r.add_get(prefix + "/config", self.model_config, name=f"ModelConfig{tag}")
            r.add_get(prefix + "/stats", self.model_statistics, name=f"ModelStatistics{tag}")
            r.add_post(prefix + "/infer", self.infer, name=f"ModelInfer{tag}")

    @staticmethod
    def _model(request: web.Request) -> tuple[str, str]:
        return request.match_info["model"], request.match_info.get("version", "")

    async def live(self, request: web.Request) -> web.Response:
        return _json({"live": True}) if self.plane.live() else _error(503, "Not live")

    async def ready(self, request: web.Request) -> web.Response:
        if self.plane.ready():
            return _json({"ready": True})
        return _error(503, "The server is not ready: loading models or shutting down")

    async def server_metadata(self, request: web.Request) -> web.Response:
        return _json(self.plane.server_metadata(transport="http"))

    async def model_metadata(self, request: web.Request) -> web.Response:
        return _json(self.plane.model_metadata(*self._model(request)))

    async def model_ready(self, request: web.Request) -> web.Response:
        name, version = self._model(request)
        if self.plane.model_ready(name, version):
            return _json({"name": name, "ready": True})
        return _error(503, f"Model `{name}` is not ready")

    async def model_config(self, request: web.Request) -> web.Response:
        return _json(rest.message_dict(self.plane.model_config(*self._model(request))))

    async def model_statistics(self, request: web.Request) -> web.Response:
        info = request.match_info
        docs = self.plane.statistics(info.get("model", ""), info.get("version", ""))
        return _json({"model_stats": docs})

    async def index(self, request: web.Request) -> web.Response:
        body = await request.read()
        doc = rest.json_body(body, "the index request") if body.strip() else {}
        ready = doc.get("ready", False) if isinstance(doc, dict) else False
        return _json(self.plane.index(ready_only=ready is True))

    async def _control_parameters(self, request: web.Request) -> list[str]:
        body = await request.read()
        doc = rest.json_body(body, "the request") if body.strip() else {}
        params = doc.get("parameters", {}) if isinstance(doc, dict) else {}
        return list(params) if isinstance(params, dict) else ["parameters"]

    async def load(self, request: web.Request) -> web.Response:
        params = await self._control_parameters(request)
        await self.plane.load(request.match_info["model"], params)
        return web.Response(status=200)

    async def unload(self, request: web.Request) -> web.Response:
        params = await self._control_parameters(request)
        await self.plane.unload(request.match_info["model"], params)
        return web.Response(status=200)

    async def infer(self, request: web.Request) -> web.Response:
        model = self.plane.serving(*self._model(request))  # 404 / 503 before the body is read
        body = await request.read()
        length = request.headers.get(rest.HEADER_LENGTH)
        parsed = await _offload(len(body), lambda: rest.parse_infer(body, length))
        request[RUNTIME] = parsed.runtime
        done = await self.plane.infer(model, parsed.inputs, parsed.outputs, parsed.runtime)
        request[RUNTIME] = done.result.runtime
        nbytes = sum(a.nbytes for a in done.result.outputs.values())
        payload, header_length = await _offload(nbytes, lambda: rest.encode_infer(done, parsed))
        if header_length is None:
            return web.Response(body=payload, content_type="application/json")
        return web.Response(
            body=payload,
            content_type="application/octet-stream",
            headers={rest.HEADER_LENGTH: str(header_length)},
        )

    # -- middlewares ----------------------------------------------------------------------
    @web.middleware
    async def _observe(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Request ids, metrics and the access log, as for gRPC calls."""
        route = request.match_info.route.name or ""
        method = "http/" + (route.split(":")[0] if route else "unrouted")
        call = Call(method, request_id_of(((REQUEST_ID, request.headers.get(REQUEST_ID, "")),)))
        call.metric = request.match_info.get("model", "")
        token = logs.request_id.set(call.request_id)
        inflight = self.telemetry.inflight.labels(method) if self.telemetry else None
        if inflight is not None:
            inflight.inc()
        code = "UNKNOWN"
        try:
            response = await handler(request)
            code = response.headers.get("X-Cvscore-Status", "OK")
            response.headers.popall("X-Cvscore-Status", None)
            response.headers[REQUEST_ID] = call.request_id
            return response
        except asyncio.CancelledError:
            code = "CANCELLED"  # the client went away
            raise
        finally:
            call.runtime = request.get(RUNTIME)
            if inflight is not None:
                inflight.dec()
            record(self.telemetry, self.core, call, code)
            logs.request_id.reset(token)

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Tokens, shutdown, and every error as ``{"error": ...}`` with its status."""
        if request.path not in OPEN_PATHS:
            if self.auth is not None and not self.auth.authorized(
                (("authorization", request.headers.get("Authorization", "")),)
            ):
                log.warning("unauthenticated HTTP request to %s refused", shown(request.path, 128))
                return self._refusal(
                    401,
                    "UNAUTHENTICATED",
                    "Missing or invalid credentials: send `Authorization: Bearer <token>`",
                    {"WWW-Authenticate": "Bearer"},
                )
            if self.core.closing:
                return self._refusal(503, "UNAVAILABLE", "The server is shutting down", {})
        try:
            return await handler(request)
        except ScoringError as exc:
            status = status_of(exc)
            headers = {"Retry-After": "1"} if status == 503 else {}
            return self._refusal(status, exc.code, exc.message, headers)
        except web.HTTPException as exc:  # aiohttp's: no route, wrong method, body too large
            code = FROM_HTTP.get(exc.status, "INVALID_ARGUMENT" if exc.status < 500 else "INTERNAL")
            route = f"No route {shown(request.method)} {shown(request.path, 256)}"
            message = exc.text if exc.status != 404 else route
            return self._refusal(exc.status, code, message or exc.reason, {})
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            _, message = to_status(exc)  # logs the traceback under an incident id
            return self._refusal(500, "INTERNAL", message, {})

    @staticmethod
    def _refusal(status: int, code: str, message: str, headers: dict[str, str]) -> web.Response:
        response = _error(status, message, **headers)
        response.headers["X-Cvscore-Status"] = code  # for _observe; removed before sending
        if code != "INTERNAL":
            log.debug("HTTP %d %s: %s", status, code, message[:256])
        return response

    # -- lifecycle ------------------------------------------------------------------------
    async def start(
        self,
        host: str,
        port: int,
        ssl_context: ssl.SSLContext | None = None,
        reuse_port: bool = False,
    ) -> int:
        """Listen on ``host:port`` (0: a free port); return the port. ``reuse_port``: share
        it with the other processes of ``--workers N`` (SO_REUSEPORT)."""
        runner = web.AppRunner(
            self.app, access_log=None, handle_signals=False, shutdown_timeout=self.grace_s
        )
        await runner.setup()
        site = web.TCPSite(
            runner, host or None, port, ssl_context=ssl_context, reuse_port=reuse_port
        )
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise OSError(
                f"cannot listen on {host}:{port} (HTTP): address in use or not available"
            ) from None
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        return self.port

    async def stop(self) -> None:
        """Stop accepting, let in-flight requests finish (up to ``grace_s``), close."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
