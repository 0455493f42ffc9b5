"""Python clients for ``cvscore.v1.Scoring``: :class:`Client` and :class:`AsyncClient`.

::

    from cvscore.client import Client

    with Client("127.0.0.1:8001") as client:
        result = client.score("giou", preds=boxes_a, target=boxes_b)   # numpy or torch
        result.value, result.scores, result.runtime, result.device
        summary = client.evaluate("giou", ({"preds": p, "target": t} for p, t in loader))
        summary.mean, summary.count

Several addresses are balanced round-robin, one channel each, rotating per call. A call
that fails with UNAVAILABLE is retried on the next address with exponential backoff, within
the call's deadline (``timeout``). Every failure the server reports raises
:class:`CvscoreError`, which carries the gRPC status code and the server's message.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import time
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Mapping, Sequence, Sized
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
import numpy as np

from ..v1 import scoring_pb2 as pb
from ..v1 import scoring_pb2_grpc as pb_grpc

T = TypeVar("T")

DTYPES: dict[np.dtype[Any], pb.DataType] = {
    np.dtype("float32"): pb.DATA_TYPE_FLOAT32,
    np.dtype("float64"): pb.DATA_TYPE_FLOAT64,
    np.dtype("float16"): pb.DATA_TYPE_FLOAT16,
    np.dtype("int32"): pb.DATA_TYPE_INT32,
    np.dtype("int64"): pb.DATA_TYPE_INT64,
    np.dtype("bool"): pb.DATA_TYPE_BOOL,
    np.dtype("uint8"): pb.DATA_TYPE_UINT8,
}
FROM_PB: dict[int, np.dtype[Any]] = {v: k for k, v in DTYPES.items()}
RUNTIMES: dict[str, pb.Runtime] = {
    "auto": pb.RUNTIME_AUTO,
    "torchscript": pb.RUNTIME_TORCHSCRIPT,
    "onnx": pb.RUNTIME_ONNX,
    "torch_export": pb.RUNTIME_TORCH_EXPORT,
}
RUNTIME_NAMES: dict[int, str] = {v: k for k, v in RUNTIMES.items()}
REDUCTIONS: dict[str, pb.Reduction] = {
    "none": pb.REDUCTION_NONE,
    "mean": pb.REDUCTION_MEAN,
    "sum": pb.REDUCTION_SUM,
}
REDUCTION_NAMES: dict[int, str] = {v: k for k, v in REDUCTIONS.items()}
# CANCELLED too: this client never cancels a call itself, so a CANCELLED status means the
# server reset the stream: grpc does that to calls it received but had not handed to the
# application when it shut down (a rolling restart), and those are safe to send again.
RETRY_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED})


class CvscoreError(Exception):
    """A call failed: ``code`` is the gRPC status, ``message`` the server's explanation."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message

    @classmethod
    def from_rpc(cls, error: grpc.RpcError) -> CvscoreError:
        code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
        details = error.details() if hasattr(error, "details") else str(error)
        return cls(code or grpc.StatusCode.UNKNOWN, details or "")


# -- results ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Timing:
    """Server-side time of one call, in microseconds (see ``cvscore.v1.Timing``)."""

    queue_us: int
    compute_us: int
    total_us: int
    batch_requests: int
    batch_rows: int


@dataclass(frozen=True)
class ScoreResult:
    metric: str
    scores: np.ndarray  # the first output: per-sample scores, batch axis first
    value: float | np.ndarray | None  # its reduction (a float for scalar scores); None for "none"
    reduction: str
    runtime: str
    device: str
    timing: Timing
    outputs: dict[str, np.ndarray]
    reduced: dict[str, np.ndarray]


@dataclass(frozen=True)
class Statistics:
    """Dataset statistics of one output: floats for scalar scores, arrays for vectors."""

    name: str
    count: int
    nan_count: int | np.ndarray
    sum: float | np.ndarray
    mean: float | np.ndarray
    min: float | np.ndarray
    max: float | np.ndarray


@dataclass(frozen=True)
class EvaluateResult:
    metric: str
    runtime: str
    device: str
    batches: int
    count: int
    mean: float | np.ndarray  # of the first output; the rest are in `statistics`
    sum: float | np.ndarray
    min: float | np.ndarray
    max: float | np.ndarray
    nan_count: int | np.ndarray
    statistics: dict[str, Statistics]
    scores: np.ndarray | None  # every per-sample score, when asked for
    outputs: dict[str, np.ndarray] | None
    timing: Timing
    # Dataset metrics: the figures, and the aggregator state they come from (mergeable with
    # other streams' states, see cvscore.client.sharding.merge_results).
    figures: dict[str, float] = field(default_factory=dict)
    aggregator_state: bytes = b""


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str
    shape: list[str]
    canonical_shape: list[str]
    doc: str


@dataclass(frozen=True)
class MetricInfo:
    name: str
    metric: str
    family: str
    summary: str
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    params: dict[str, Any]
    higher_is_better: bool
    runtimes: list[str]
    default_runtime: str
    device: str
    paper: str
    oracle: str


# -- conversions --------------------------------------------------------------------------
def as_numpy(value: Any, name: str = "input") -> np.ndarray:
    """numpy arrays as they are, torch tensors via ``.detach().cpu()``, anything else asarray."""
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def encode(name: str, value: Any) -> pb.Tensor:
    array = as_numpy(value, name)
    code = DTYPES.get(array.dtype.newbyteorder("="))
    if code is None:
        raise TypeError(
            f"Expected `{name}` to have a dtype in {sorted(str(d) for d in DTYPES)}, "
            f"got {array.dtype}"
        )
    wire = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    return pb.Tensor(name=name, dtype=code, shape=list(array.shape), data=wire.tobytes())


def decode(tensor: pb.Tensor) -> np.ndarray:
    dtype = FROM_PB[tensor.dtype].newbyteorder("<")
    array = np.frombuffer(tensor.data, dtype=dtype).reshape(tuple(tensor.shape))
    return array.astype(array.dtype.newbyteorder("="), copy=False)


def _timing(t: pb.Timing) -> Timing:
    return Timing(t.queue_us, t.compute_us, t.total_us, t.batch_requests, t.batch_rows)


def _scalar(values: Sequence[float], shape: Sequence[int], dtype: Any = np.float64) -> Any:
    array = np.asarray(list(values), dtype=dtype).reshape(tuple(shape))
    return array.item() if array.ndim == 0 else array


def _score_result(response: pb.ScoreResponse) -> ScoreResult:
    outputs = {t.name: decode(t) for t in response.outputs}
    reduced = {t.name: decode(t) for t in response.reduced}
    first = next(iter(outputs)) if outputs else ""
    value: float | np.ndarray | None = None
    if first in reduced:
        value = reduced[first].item() if reduced[first].ndim == 0 else reduced[first]
    return ScoreResult(
        metric=response.metric,
        scores=outputs.get(first, np.zeros(0, np.float32)),
        value=value,
        reduction=REDUCTION_NAMES.get(response.reduction, "mean"),
        runtime=RUNTIME_NAMES.get(response.runtime, "auto"),
        device=response.device,
        timing=_timing(response.timing),
        outputs=outputs,
        reduced=reduced,
    )


def _evaluate_result(response: pb.EvaluateResponse) -> EvaluateResult:
    stats = {}
    for s in response.statistics:
        stats[s.name] = Statistics(
            name=s.name,
            count=s.count,
            nan_count=_scalar(s.nan_count, s.shape, np.int64),
            sum=_scalar(s.sum, s.shape),
            mean=_scalar(s.mean, s.shape),
            min=_scalar(s.min, s.shape),
            max=_scalar(s.max, s.shape),
        )
    first = stats[response.statistics[0].name] if response.statistics else None
    outputs = {t.name: decode(t) for t in response.scores} if response.scores else None
    return EvaluateResult(
        metric=response.metric,
        runtime=RUNTIME_NAMES.get(response.runtime, "auto"),
        device=response.device,
        batches=response.batches,
        count=first.count if first else 0,
        mean=first.mean if first else float("nan"),
        sum=first.sum if first else 0.0,
        min=first.min if first else float("nan"),
        max=first.max if first else float("nan"),
        nan_count=first.nan_count if first else 0,
        statistics=stats,
        scores=next(iter(outputs.values())) if outputs else None,
        outputs=outputs,
        timing=_timing(response.timing),
        figures=dict(response.figures),
        aggregator_state=response.aggregator_state,
    )


def _metric_info(m: pb.MetricInfo) -> MetricInfo:
    def tensor(t: pb.TensorSpec) -> TensorInfo:
        dtype = str(FROM_PB[t.dtype]) if t.dtype in FROM_PB else "unknown"
        return TensorInfo(t.name, dtype, list(t.shape), list(t.canonical_shape), t.doc)

    return MetricInfo(
        name=m.name,
        metric=m.metric,
        family=m.family,
        summary=m.summary,
        inputs=[tensor(t) for t in m.inputs],
        outputs=[tensor(t) for t in m.outputs],
        params={p.name: json.loads(p.value_json or "null") for p in m.parameters},
        higher_is_better=m.higher_is_better,
        runtimes=[RUNTIME_NAMES.get(r, str(r)) for r in m.runtimes],
        default_runtime=RUNTIME_NAMES.get(m.default_runtime, "auto"),
        device=m.device,
        paper=m.paper,
        oracle=m.oracle,
    )


def _check_choice(name: str, value: str, choices: Mapping[str, Any]) -> Any:
    try:
        return choices[value]
    except KeyError:
        raise ValueError(
            f"Expected `{name}` to be one of {sorted(choices)}, got {value!r}"
        ) from None


def score_request(
    metric: str, inputs: Mapping[str, Any], reduction: str, runtime: str
) -> pb.ScoreRequest:
    return pb.ScoreRequest(
        metric=metric,
        runtime=_check_choice("runtime", runtime, RUNTIMES),
        reduction=_check_choice("reduction", reduction, REDUCTIONS),
        inputs=[encode(k, v) for k, v in inputs.items()],
    )


def _merge_inputs(inputs: Mapping[str, Any] | None, named: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(inputs or {})
    clash = sorted(set(merged) & set(named))
    if clash:
        raise ValueError(f"Inputs {clash} were given both in `inputs` and as keywords")
    merged.update(named)
    return merged


def _progress(batches: Any, progress: bool, metric: str) -> Any:
    from tqdm import tqdm

    total = len(batches) if isinstance(batches, Sized) else None
    return tqdm(batches, total=total, desc=f"evaluate {metric}", unit="batch", disable=not progress)


# -- call metadata (token, request id) -------------------------------------------------------
MetadataFn = Callable[[], list[tuple[str, str]]]


class _CallDetails(
    collections.namedtuple(
        "_CallDetails",
        ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression"),
    ),
    grpc.ClientCallDetails,
):
    pass


class _SyncMetadata(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds the client's metadata to every call of a blocking channel."""

    def __init__(self, extra: MetadataFn) -> None:
        self._extra = extra

    def _details(self, d: Any) -> _CallDetails:
        metadata = [*(d.metadata or ()), *self._extra()]
        return _CallDetails(
            d.method,
            d.timeout,
            metadata or None,
            d.credentials,
            getattr(d, "wait_for_ready", None),
            getattr(d, "compression", None),
        )

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)


def _aio_details(details: Any, extra: MetadataFn) -> Any:
    added = extra()
    if not added:
        return details
    metadata = grpc.aio.Metadata(*(details.metadata or ()), *added)
    return details._replace(metadata=metadata)


class _AsyncUnaryMetadata(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, extra: MetadataFn) -> None:
        self._extra = extra

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(_aio_details(details, self._extra), request)


class _AsyncStreamMetadata(grpc.aio.StreamUnaryClientInterceptor):
    def __init__(self, extra: MetadataFn) -> None:
        self._extra = extra

    async def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(_aio_details(details, self._extra), requests)


# -- the clients --------------------------------------------------------------------------
class _Base:
    """Options shared by both clients.

    Security: ``tls_ca`` (PEM; or ``tls=True`` for the system roots) makes the channels TLS;
    ``tls_cert`` + ``tls_key`` add a client certificate for mutual TLS. ``token`` is sent as
    ``authorization: Bearer <token>`` on every call. ``request_id`` is sent as
    ``x-request-id`` (the server logs it and echoes it in the trailing metadata); it can be
    changed between calls (``client.request_id = ...``). A ``dns:///name:port`` address
    balances calls round-robin over every address the name resolves to (a headless
    Kubernetes service).
    """

    def __init__(
        self,
        addresses: str | Sequence[str],
        *,
        timeout: float | None = None,
        retries: int = 3,
        backoff_s: float = 0.1,
        max_backoff_s: float = 2.0,
        max_message_mb: int = 256,
        tls: bool = False,
        tls_ca: str | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        token: str | None = None,
        request_id: str | None = None,
    ) -> None:
        self.addresses = [addresses] if isinstance(addresses, str) else list(addresses)
        if not self.addresses:
            raise ValueError("Expected at least one server address")
        self.timeout = timeout
        self.retries = max(0, int(retries))
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        limit = max_message_mb * 1024 * 1024
        self._options = [
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
            ("grpc.service_config", json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})),
        ]
        self._credentials: grpc.ChannelCredentials | None = None
        if tls or tls_ca or tls_cert or tls_key:
            from ..server.security import channel_credentials

            self._credentials = channel_credentials(tls_ca, tls_cert, tls_key)
        if token is not None and (not token or any(c.isspace() for c in token)):
            raise ValueError("Expected `token` to be a non-empty string without whitespace")
        self._token = token
        self.request_id = request_id
        self._turn = itertools.count()

    def _metadata(self) -> list[tuple[str, str]]:
        """What every call carries: the bearer token and the request id, when set."""
        extra = []
        if self._token:
            extra.append(("authorization", f"Bearer {self._token}"))
        if self.request_id:
            extra.append(("x-request-id", self.request_id))
        return extra

    def _deadline(self, timeout: float | None) -> float | None:
        timeout = self.timeout if timeout is None else timeout
        return None if timeout is None else time.monotonic() + timeout

    def _pause(self, attempt: int, deadline: float | None, error: grpc.RpcError) -> float:
        """Seconds to wait before the next attempt; raise when retrying is not allowed."""
        code = error.code() if hasattr(error, "code") else None
        if code not in RETRY_CODES or attempt >= self.retries:
            raise CvscoreError.from_rpc(error) from None
        pause = min(self.max_backoff_s, self.backoff_s * (2**attempt))
        if deadline is not None and time.monotonic() + pause >= deadline:
            raise CvscoreError.from_rpc(error) from None
        return pause

    @staticmethod
    def _remaining(deadline: float | None) -> float | None:
        return None if deadline is None else max(0.0, deadline - time.monotonic())


class Client(_Base):
    """Blocking client. Thread-safe; use as a context manager or call :meth:`close`."""

    def __init__(self, addresses: str | Sequence[str], **options: Any) -> None:
        super().__init__(addresses, **options)
        self._channels = [self._channel(a) for a in self.addresses]
        self._stubs = [pb_grpc.ScoringStub(c) for c in self._channels]

    def _channel(self, address: str) -> grpc.Channel:
        if self._credentials is not None:
            channel = grpc.secure_channel(address, self._credentials, options=self._options)
        else:
            channel = grpc.insecure_channel(address, options=self._options)
        return grpc.intercept_channel(channel, _SyncMetadata(self._metadata))

    def close(self) -> None:
        for channel in self._channels:
            channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(
        self,
        fn: Callable[[pb_grpc.ScoringStub, float | None], T],
        timeout: float | None,
        retry: bool = True,
    ) -> T:
        deadline = self._deadline(timeout)
        attempt = 0
        while True:
            stub = self._stubs[next(self._turn) % len(self._stubs)]
            try:
                return fn(stub, self._remaining(deadline))
            except grpc.RpcError as error:
                if not retry:
                    raise CvscoreError.from_rpc(error) from None
                time.sleep(self._pause(attempt, deadline, error))
                attempt += 1

    def list_metrics(self, timeout: float | None = None) -> list[MetricInfo]:
        response = self._call(
            lambda s, t: s.ListMetrics(pb.ListMetricsRequest(), timeout=t), timeout
        )
        return [_metric_info(m) for m in response.metrics]

    def describe(self, metric: str, timeout: float | None = None) -> MetricInfo:
        request = pb.DescribeMetricRequest(name=metric)
        response = self._call(lambda s, t: s.DescribeMetric(request, timeout=t), timeout)
        return _metric_info(response.metric)

    def score(
        self,
        metric: str,
        /,
        inputs: Mapping[str, Any] | None = None,
        *,
        reduction: str = "mean",
        runtime: str = "auto",
        timeout: float | None = None,
        **named: Any,
    ) -> ScoreResult:
        """Score one batch; inputs by keyword (``preds=..., target=...``) or as a mapping."""
        request = score_request(metric, _merge_inputs(inputs, named), reduction, runtime)
        return _score_result(self._call(lambda s, t: s.Score(request, timeout=t), timeout))

    def evaluate(
        self,
        metric: str,
        batches: Iterable[Mapping[str, Any]],
        *,
        runtime: str = "auto",
        return_scores: bool = False,
        progress: bool = True,
        timeout: float | None = None,
        shard: bool = False,
    ) -> EvaluateResult:
        """Stream every batch to the server; get the statistics of the whole dataset.

        Retried on UNAVAILABLE only when ``batches`` can be iterated again (a Sequence).
        With ``shard`` and several addresses, the batches are dealt round-robin to one
        stream per server at once and the results merged (aggregator states included).
        """
        if shard and len(self.addresses) > 1:
            from .sharding import evaluate_sharded

            return evaluate_sharded(
                self, metric, batches, runtime, return_scores, progress, timeout
            )
        options = pb.EvaluateRequest(
            metric=metric,
            runtime=_check_choice("runtime", runtime, RUNTIMES),
            return_scores=return_scores,
        )

        def messages() -> Iterable[pb.EvaluateRequest]:
            yield options
            for batch in _progress(batches, progress, metric):
                yield pb.EvaluateRequest(inputs=[encode(k, v) for k, v in batch.items()])

        response = self._call(
            lambda s, t: s.Evaluate(messages(), timeout=t),
            timeout,
            retry=isinstance(batches, Sequence),
        )
        return _evaluate_result(response)

    def health(self, service: str = "", timeout: float | None = 5.0) -> str:
        """The standard health status of the server ("") or of one metric: "SERVING", ..."""
        return self._health(
            self._channels[next(self._turn) % len(self._channels)], service, timeout
        )

    @staticmethod
    def _health(channel: grpc.Channel, service: str, timeout: float | None) -> str:
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
        except grpc.RpcError as error:
            raise CvscoreError.from_rpc(error) from None
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Block until every address reports SERVING (models loaded), or raise TimeoutError."""
        end = time.monotonic() + timeout
        for channel in self._channels:
            while True:
                try:
                    left = max(0.1, end - time.monotonic())
                    if self._health(channel, "", left) == "SERVING":
                        break
                except CvscoreError:
                    pass
                if time.monotonic() >= end:
                    raise TimeoutError(f"{self.addresses} not ready after {timeout:.0f} s")
                time.sleep(0.05)


class AsyncClient(_Base):
    """asyncio client with the same API as :class:`Client`; create it inside a running loop."""

    def __init__(self, addresses: str | Sequence[str], **options: Any) -> None:
        super().__init__(addresses, **options)
        self._channels = [self._channel(a) for a in self.addresses]
        self._stubs = [pb_grpc.ScoringStub(c) for c in self._channels]

    def _channel(self, address: str) -> grpc.aio.Channel:
        interceptors = [_AsyncUnaryMetadata(self._metadata), _AsyncStreamMetadata(self._metadata)]
        if self._credentials is not None:
            return grpc.aio.secure_channel(
                address, self._credentials, options=self._options, interceptors=interceptors
            )
        return grpc.aio.insecure_channel(address, options=self._options, interceptors=interceptors)

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self._channels))

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _call(
        self,
        fn: Callable[[pb_grpc.ScoringStub, float | None], Awaitable[T]],
        timeout: float | None,
        retry: bool = True,
    ) -> T:
        deadline = self._deadline(timeout)
        attempt = 0
        while True:
            stub = self._stubs[next(self._turn) % len(self._stubs)]
            try:
                return await fn(stub, self._remaining(deadline))
            except grpc.RpcError as error:
                if not retry:
                    raise CvscoreError.from_rpc(error) from None
                await asyncio.sleep(self._pause(attempt, deadline, error))
                attempt += 1

    async def list_metrics(self, timeout: float | None = None) -> list[MetricInfo]:
        response = await self._call(
            lambda s, t: s.ListMetrics(pb.ListMetricsRequest(), timeout=t), timeout
        )
        return [_metric_info(m) for m in response.metrics]

    async def describe(self, metric: str, timeout: float | None = None) -> MetricInfo:
        request = pb.DescribeMetricRequest(name=metric)
        response = await self._call(lambda s, t: s.DescribeMetric(request, timeout=t), timeout)
        return _metric_info(response.metric)

    async def score(
        self,
        metric: str,
        /,
        inputs: Mapping[str, Any] | None = None,
        *,
        reduction: str = "mean",
        runtime: str = "auto",
        timeout: float | None = None,
        **named: Any,
    ) -> ScoreResult:
        request = score_request(metric, _merge_inputs(inputs, named), reduction, runtime)
        response = await self._call(lambda s, t: s.Score(request, timeout=t), timeout)
        return _score_result(response)

    async def evaluate(
        self,
        metric: str,
        batches: Iterable[Mapping[str, Any]] | AsyncIterable[Mapping[str, Any]],
        *,
        runtime: str = "auto",
        return_scores: bool = False,
        progress: bool = True,
        timeout: float | None = None,
    ) -> EvaluateResult:
        options = pb.EvaluateRequest(
            metric=metric,
            runtime=_check_choice("runtime", runtime, RUNTIMES),
            return_scores=return_scores,
        )

        async def messages() -> Any:
            yield options
            if isinstance(batches, AsyncIterable):
                async for batch in batches:
                    yield pb.EvaluateRequest(inputs=[encode(k, v) for k, v in batch.items()])
                return
            for batch in _progress(batches, progress, metric):
                yield pb.EvaluateRequest(inputs=[encode(k, v) for k, v in batch.items()])

        response = await self._call(
            lambda s, t: s.Evaluate(messages(), timeout=t),
            timeout,
            retry=isinstance(batches, Sequence),
        )
        return _evaluate_result(response)
