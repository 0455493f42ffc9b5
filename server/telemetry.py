"""Prometheus metrics, request ids and the access log of the gRPC services.

:class:`TelemetryLayer` wraps every call to ``cvscore.v1.Scoring`` and the KServe
service (health and reflection pass through untouched): it takes the client's
``x-request-id`` metadata (or makes one), keeps it in :data:`logs.request_id` while the call
runs and echoes it in the trailing metadata, counts the call by method, metric, runtime and
status code, observes its latency, tracks in-flight calls and writes one access-log line.

:class:`Telemetry` owns the metrics (a private registry, so several servers can share a
process) and the ``--metrics-port`` HTTP endpoint; :meth:`Telemetry.attach` hooks every
batcher of a started core for queue time and batch size.

Label values stay bounded: a metric name the server does not serve is counted as
``unknown``, a runtime name that is not one of the server's as ``other``; methods are the
registered ones. Client strings in the text access log have control characters escaped.
"""

from __future__ import annotations

import functools
import inspect
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import grpc
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from . import logs
from .calls import REQUEST_ID, Call, loggable, request_id_of, runtime_label
from .modelstats import StatisticsCollector

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from .batcher import Batcher, Request
    from .core import Model, ScoringCore

log = logging.getLogger("cvscore.access")

WORKER = "x-cvscore-worker"  # the worker of --workers N that answered (server/workers.py)
UNTRACKED_SERVICES = frozenset(
    {health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME}
)
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
QUEUE_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
)  # fmt: skip
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
# the prometheus-adapter rule in deploy/k8s/ and the HPA use this histogram
QUEUE_HISTOGRAM = "cvscore_queue_duration_seconds"


class Telemetry:
    """The server's Prometheus metrics and, once started, their HTTP endpoint."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "cvscore_requests",
            "Completed calls (gRPC; HTTP as method http/...) by method, metric, runtime and status code.",
            ["method", "metric", "runtime", "code"],
            registry=r,
        )
        self.latency = Histogram(
            "cvscore_request_duration_seconds",
            "Time from a call's arrival to its answer, by method and metric.",
            ["method", "metric"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.inflight = Gauge(
            "cvscore_inflight_requests",
            "Calls being served now, by method.",
            ["method"],
            registry=r,
        )
        self.queue = Histogram(
            QUEUE_HISTOGRAM,
            "Time a request waited in its dynamic batcher's queue before its run started.",
            ["metric", "runtime"],
            buckets=QUEUE_BUCKETS,
            registry=r,
        )
        self.batch_rows = Histogram(
            "cvscore_batch_size",
            "Rows computed per batcher run (alignment padding included).",
            ["metric", "runtime"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.batch_requests = Histogram(
            "cvscore_batch_requests",
            "Requests merged into one batcher run.",
            ["metric", "runtime"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self._gpu_gauges()
        self._http: WSGIServer | None = None
        # labelled children by label values: labels() validates and locks on every call
        self._finished: dict[tuple[str, str, str, str], tuple[Any, Any]] = {}
        self._inflight: dict[str, Any] = {}

    def finished(self, method: str, metric: str, runtime: str, code: str) -> tuple[Any, Any]:
        """The (requests counter, latency histogram) children of one call's labels."""
        key = (method, metric, runtime, code)
        children = self._finished.get(key)
        if children is None:
            children = (
                self.requests.labels(method, metric, runtime, code),
                self.latency.labels(method, metric),
            )
            self._finished[key] = children
        return children

    def inflight_of(self, method: str) -> Any:
        gauge = self._inflight.get(method)
        if gauge is None:
            gauge = self._inflight[method] = self.inflight.labels(method)
        return gauge

    def _gpu_gauges(self) -> None:
        import torch

        if not torch.cuda.is_available():
            return
        gauge = Gauge(
            "cvscore_gpu_memory_allocated_bytes",
            "GPU memory held by torch tensors in this process (torch.cuda.memory_allocated).",
            ["device"],
            registry=self.registry,
        )
        for index in range(torch.cuda.device_count()):
            gauge.labels(device=f"cuda:{index}").set_function(
                functools.partial(torch.cuda.memory_allocated, index)
            )

    # -- the HTTP endpoint -------------------------------------------------------------
    def start_http(self, host: str, port: int) -> int:
        """Serve ``/metrics`` on ``host:port`` (0: a free port); return the port."""
        self._http, _ = start_http_server(port, addr=host, registry=self.registry)
        return int(self._http.server_port)

    def stop_http(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None

    # -- batchers ----------------------------------------------------------------------
    def attach(self, core: ScoringCore) -> None:
        """Observe queue time and batch size on every batcher of a started core."""
        self.registry.register(StatisticsCollector(core.statistics))
        for model in core.models.values():
            self.attach_model(model)

    def attach_model(self, model: Model) -> None:
        """Observe one started model's batchers (a model loaded while the server runs)."""
        for kind, batcher in model.batchers.items():
            batcher.hooks.append(self._batch_hook(model.name, kind, batcher))

    def _batch_hook(self, metric: str, runtime: str, batcher: Batcher) -> Callable[..., None]:
        queue = self.queue.labels(metric, runtime)
        rows = self.batch_rows.labels(metric, runtime)
        requests = self.batch_requests.labels(metric, runtime)
        last_run = [batcher.runs]

        def hook(event: str, request: Request) -> None:
            future = request.future
            if event != "ran" or not future.done() or future.cancelled() or future.exception():
                return
            info = future.result()[1]
            queue.observe(info.queue_s)
            if batcher.runs != last_run[0]:  # the first request of a run reports the run
                last_run[0] = batcher.runs
                rows.observe(info.rows)
                requests.observe(info.requests)

        return hook


# -- the layer ---------------------------------------------------------------------------
class TelemetryLayer:
    """Request ids, metrics and the access log; ``telemetry`` None: ids and log only.

    A handler layer (``server/handlers.py``), the outermost: it sees every answer, the
    decode guard's and authentication's refusals included.
    """

    def __init__(
        self, telemetry: Telemetry | None, core: ScoringCore, worker: int | None = None
    ) -> None:
        self.telemetry = telemetry
        self.core = core
        self.worker = () if worker is None else ((WORKER, str(worker)),)

    def __call__(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        parts = method.split("/")
        if len(parts) < 3 or parts[1] in UNTRACKED_SERVICES:
            return handler
        name = parts[2]
        if handler.unary_unary is not None:
            return handler._replace(unary_unary=self._unary(handler.unary_unary, name))  # type: ignore[attr-defined, no-any-return]
        if handler.stream_unary is not None:
            return handler._replace(stream_unary=self._stream(handler.stream_unary, name))  # type: ignore[attr-defined, no-any-return]
        return handler  # no server-streaming methods are tracked

    def _unary(self, behaviour: Callable[..., Any], name: str) -> Any:
        async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> Any:
            call = Call(name, request_id_of(context.invocation_metadata()))
            call.saw_request(request)
            return await self._run(call, behaviour, request, context)

        return wrapper

    def _stream(self, behaviour: Callable[..., Any], name: str) -> Any:
        async def wrapper(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
            call = Call(name, request_id_of(context.invocation_metadata()))

            async def tap() -> AsyncIterator[Any]:
                async for message in requests:
                    call.saw_request(message)
                    yield message

            return await self._run(call, behaviour, tap(), context)

        return wrapper

    async def _run(
        self,
        call: Call,
        behaviour: Callable[..., Any],
        request: Any,
        context: grpc.aio.ServicerContext,
    ) -> Any:
        token = logs.request_id.set(call.request_id)
        context.set_trailing_metadata(((REQUEST_ID, call.request_id), *self.worker))
        inflight = self.telemetry.inflight_of(call.method) if self.telemetry else None
        if inflight is not None:
            inflight.inc()
        done = False

        def finish(code: grpc.StatusCode) -> None:
            nonlocal done
            if not done:  # once, and before the status leaves (abort sends it at once)
                done = True
                if inflight is not None:
                    inflight.dec()
                self._record(call, code)

        try:
            result = behaviour(request, _RecordingContext(context, finish))
            response = await result if inspect.isawaitable(result) else result
            call.saw_response(response)
            finish(_code(context) or grpc.StatusCode.OK)
            return response
        except grpc.aio.AbortError:
            finish(_code(context) or grpc.StatusCode.UNKNOWN)
            raise
        except BaseException as exc:
            cancelled = type(exc).__name__ == "CancelledError"
            finish(grpc.StatusCode.CANCELLED if cancelled else grpc.StatusCode.UNKNOWN)
            raise
        finally:
            logs.request_id.reset(token)

    def _record(self, call: Call, code: grpc.StatusCode) -> None:
        record(self.telemetry, self.core, call, code.name)


def record(telemetry: Telemetry | None, core: ScoringCore, call: Call, code: str) -> None:
    """Count one finished call (gRPC or HTTP) and write its access-log line.

    ``code`` is a gRPC status name for both transports, so that one query counts both.
    """
    elapsed = time.perf_counter() - call.start
    model = core.models.get(call.metric)
    metric = call.metric if model is not None else ("unknown" if call.metric else "")
    runtime = runtime_label(call.runtime)
    if runtime in ("", "auto") and model is not None and model.default_runtime:
        runtime = model.default_runtime
    if telemetry is not None:
        requests, latency = telemetry.finished(call.method, metric, runtime, code)
        requests.inc()
        latency.observe(elapsed)
    level = logging.DEBUG if code == "OK" else logging.INFO
    if not log.isEnabledFor(level):
        return
    log.log(
        level,
        "%s %s %s %.2f ms",
        call.method,
        loggable(call.metric),
        code,
        elapsed * 1e3,
        extra={
            "request_id": call.request_id,
            "method": call.method,
            "metric": call.metric[:1024],
            "runtime": runtime,
            "code": code,
            "duration_ms": round(elapsed * 1e3, 3),
        },
    )


class _RecordingContext:
    """The call's context, recording the status before ``abort`` sends it to the client."""

    def __init__(
        self, context: grpc.aio.ServicerContext, finish: Callable[[grpc.StatusCode], None]
    ) -> None:
        self._context = context
        self._finish = finish

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)

    async def abort(
        self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()
    ) -> Any:
        self._finish(code)
        return await self._context.abort(code, details, trailing_metadata)


def _code(context: grpc.aio.ServicerContext) -> grpc.StatusCode | None:
    try:
        code = context.code()
    except Exception:  # older grpcio: no code() on aio contexts
        return None
    if code is None or isinstance(code, grpc.StatusCode):
        return code
    for status in grpc.StatusCode:  # an int from the C core
        if status.value[0] == code:
            return status
    return None
