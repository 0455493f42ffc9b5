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
import itertools
import json
import time
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import grpc

from ..v1 import scoring_pb2 as pb
from ..v1 import scoring_pb2_grpc as pb_grpc
from .convert import (
    batch_message,
    evaluate_options,
    evaluate_result,
    merge_inputs,
    metric_info,
    progress_bar,
    score_request,
    score_result,
)
from .metadata import AsyncStreamMetadata, AsyncUnaryMetadata, SyncMetadata
from .results import CvscoreError, EvaluateResult, MetricInfo, ScoreResult
from .shm import THRESHOLD, SharedInputs, is_local, place, place_async
from .shm import close as close_regions
from .shm import close_async as close_regions_async
from .tls import channel_credentials

T = TypeVar("T")
# CANCELLED too: this client never cancels a call itself, so a CANCELLED status means the
# server reset the stream: grpc does that to calls it received but had not handed to the
# application when it shut down (a rolling restart), and those are safe to send again.
RETRY_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED})


# -- the clients --------------------------------------------------------------------------
class _Base:
    """Options shared by both clients.

    Security: ``tls_ca`` (PEM; or ``tls=True`` for the system roots) makes the channels TLS;
    ``tls_cert`` + ``tls_key`` add a client certificate for mutual TLS. ``token`` is sent as
    ``authorization: Bearer <token>`` on every call. ``request_id`` is sent as
    ``x-request-id`` (the server logs it and echoes it in the trailing metadata); it can be
    changed between calls (``client.request_id = ...``). A ``dns:///name:port`` address
    balances calls round-robin over every address the name resolves to (a headless
    Kubernetes service). ``shared_memory`` (default on): with one address on this machine,
    inputs of ``shared_memory_threshold`` bytes or more go to ``score`` through system
    shared memory (see ``client/shm.py``); ``False`` always sends bytes.
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
        shared_memory: bool = True,
        shared_memory_threshold: int = THRESHOLD,
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
            self._credentials = channel_credentials(tls_ca, tls_cert, tls_key)
        if token is not None and (not token or any(c.isspace() for c in token)):
            raise ValueError("Expected `token` to be a non-empty string without whitespace")
        self._token = token
        self.request_id = request_id
        self._turn = itertools.count()
        self._shared: SharedInputs | None = None
        if shared_memory and is_local(self.addresses):
            self._shared = SharedInputs(shared_memory_threshold)

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
        return grpc.intercept_channel(channel, SyncMetadata(self._metadata))

    def close(self) -> None:
        close_regions(self._shared, self._stubs[0])
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
        return [metric_info(m) for m in response.metrics]

    def describe(self, metric: str, timeout: float | None = None) -> MetricInfo:
        request = pb.DescribeMetricRequest(name=metric)
        response = self._call(lambda s, t: s.DescribeMetric(request, timeout=t), timeout)
        return metric_info(response.metric)

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
        merged = merge_inputs(inputs, named)
        region, placed = place(self._shared, self._stubs[0], merged, timeout or self.timeout)
        try:
            request = score_request(metric, merged, reduction, runtime, placed)
            return score_result(self._call(lambda s, t: s.Score(request, timeout=t), timeout))
        finally:
            if region is not None and self._shared is not None:
                self._shared.give(region)

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
        options = evaluate_options(metric, runtime, return_scores)

        def messages() -> Iterable[pb.EvaluateRequest]:
            yield options
            for batch in progress_bar(batches, progress, metric):
                yield batch_message(batch)

        response = self._call(
            lambda s, t: s.Evaluate(messages(), timeout=t),
            timeout,
            retry=isinstance(batches, Sequence),
        )
        return evaluate_result(response)

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
        interceptors = [AsyncUnaryMetadata(self._metadata), AsyncStreamMetadata(self._metadata)]
        if self._credentials is not None:
            return grpc.aio.secure_channel(
                address, self._credentials, options=self._options, interceptors=interceptors
            )
        return grpc.aio.insecure_channel(address, options=self._options, interceptors=interceptors)

    async def close(self) -> None:
        await close_regions_async(self._shared, self._stubs[0])
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
        return [metric_info(m) for m in response.metrics]

    async def describe(self, metric: str, timeout: float | None = None) -> MetricInfo:
        request = pb.DescribeMetricRequest(name=metric)
        response = await self._call(lambda s, t: s.DescribeMetric(request, timeout=t), timeout)
        return metric_info(response.metric)

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
        merged = merge_inputs(inputs, named)
        shared, stub = self._shared, self._stubs[0]
        region, placed = await place_async(shared, stub, merged, timeout or self.timeout)
        try:
            request = score_request(metric, merged, reduction, runtime, placed)
            response = await self._call(lambda s, t: s.Score(request, timeout=t), timeout)
        finally:
            if region is not None and shared is not None:
                shared.give(region)
        return score_result(response)

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
        options = evaluate_options(metric, runtime, return_scores)

        async def messages() -> Any:
            yield options
            if isinstance(batches, AsyncIterable):
                async for batch in batches:
                    yield batch_message(batch)
                return
            for batch in progress_bar(batches, progress, metric):
                yield batch_message(batch)

        response = await self._call(
            lambda s, t: s.Evaluate(messages(), timeout=t),
            timeout,
            retry=isinstance(batches, Sequence),
        )
        return evaluate_result(response)
