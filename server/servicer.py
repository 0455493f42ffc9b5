"""``cvscore.v1.Scoring`` over gRPC: converts messages and calls the transport-free core."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

import grpc
import numpy as np

from ..v1 import scoring_pb2 as pb
from ..v1 import scoring_pb2_grpc as pb_grpc
from ..wire import (
    DTYPE_TO_PB,
    PB_TO_DTYPE,
    PB_TO_REDUCTION,
    PB_TO_RUNTIME,
    REDUCTION_TO_PB,
    RUNTIME_TO_PB,
)
from . import tensors
from .core import EvaluateResult, Model, ScoreResult, ScoringCore, Timing
from .errors import InvalidInputError, shown
from .shm import Lease, SharedMemoryRegistry
from .status import handle_errors


# -- conversions --------------------------------------------------------------------------
def decode_inputs(
    messages: Iterable[pb.Tensor], lease: Lease | None = None
) -> dict[str, tensors.WireTensor]:
    """Wire tensors -> declarations; the core admits them before decoding (no copy).

    A tensor with ``shared_memory`` set is a view on that registered region (``lease``).
    """
    out: dict[str, tensors.WireTensor] = {}
    for t in messages:
        if t.name in out:
            raise InvalidInputError(f"Input `{shown(t.name)}` appears more than once")
        dtype = PB_TO_DTYPE.get(t.dtype)
        if dtype is None:
            got = pb.DataType.Name(t.dtype) if t.dtype in pb.DataType.values() else t.dtype
            raise InvalidInputError(
                f"Expected `{shown(t.name)}` to have a dtype in {sorted(DTYPE_TO_PB)}, got {got}"
            )
        data: bytes | memoryview = t.data
        if t.HasField("shared_memory"):
            if t.data or lease is None:
                raise InvalidInputError(
                    f"Input `{shown(t.name)}` has data and a shared memory region; send one"
                    if t.data
                    else f"Input `{shown(t.name)}`: shared memory is not served here"
                )
            ref = t.shared_memory
            data = lease.view(ref.region, ref.offset, ref.byte_size, f"Input `{shown(t.name)}`")
        out[t.name] = tensors.WireTensor(t.name, dtype, tuple(t.shape), data=data)
    return out


def encode_tensor(name: str, array: np.ndarray) -> pb.Tensor:
    return pb.Tensor(
        name=name,
        dtype=DTYPE_TO_PB[tensors.dtype_name(array.dtype)],
        shape=list(array.shape),
        data=tensors.to_bytes(array),
    )


def runtime_from_pb(value: int) -> str:
    try:
        return PB_TO_RUNTIME[value]
    except KeyError:
        raise InvalidInputError(
            f"Expected `runtime` to be one of {sorted(RUNTIME_TO_PB)}, got {value}"
        ) from None


def timing_to_pb(t: Timing) -> pb.Timing:
    return pb.Timing(
        queue_us=round(t.queue_s * 1e6),
        compute_us=round(t.compute_s * 1e6),
        total_us=round(t.total_s * 1e6),
        batch_requests=t.batch_requests,
        batch_rows=t.batch_rows,
    )


def metric_info(model: Model) -> pb.MetricInfo:
    s = model.signature

    def spec(t: Any) -> pb.TensorSpec:
        return pb.TensorSpec(
            name=t.name,
            dtype=DTYPE_TO_PB.get(t.dtype, pb.DATA_TYPE_UNSPECIFIED),
            shape=[str(d) for d in t.shape],
            canonical_shape=[str(d) for d in t.canonical],
            doc=t.doc,
        )

    return pb.MetricInfo(
        name=s.name,
        metric=s.metric,
        family=s.family,
        summary=s.summary,
        inputs=[spec(t) for t in s.inputs],
        outputs=[spec(t) for t in s.outputs],
        parameters=[
            pb.Parameter(
                name=p.name,
                type=p.type,
                value_json=json.dumps(p.value),
                default_json=json.dumps(p.default),
                doc=p.doc,
            )
            for p in s.param_info
        ],
        higher_is_better=s.higher_is_better,
        paper=s.paper,
        oracle=s.oracle,
        runtimes=[RUNTIME_TO_PB[k] for k in model.runtime_names()],
        default_runtime=RUNTIME_TO_PB.get(model.default_runtime, pb.RUNTIME_AUTO),
        device=model.device,
        identity=s.identity,
        version=s.version,
    )


def score_response(result: ScoreResult) -> pb.ScoreResponse:
    return pb.ScoreResponse(
        metric=result.metric,
        outputs=[encode_tensor(k, v) for k, v in result.outputs.items()],
        reduced=[encode_tensor(k, v) for k, v in result.reduced.items()],
        reduction=REDUCTION_TO_PB[result.reduction],
        runtime=RUNTIME_TO_PB[result.runtime],
        device=result.device,
        batch_size=result.batch_size,
        timing=timing_to_pb(result.timing),
    )


def evaluate_response(result: EvaluateResult) -> pb.EvaluateResponse:
    return pb.EvaluateResponse(
        metric=result.metric,
        runtime=RUNTIME_TO_PB[result.runtime],
        device=result.device,
        batches=result.batches,
        statistics=[
            pb.OutputStatistics(
                name=s.name,
                shape=list(s.shape),
                count=s.count,
                nan_count=s.nan_count,
                sum=s.sum,
                mean=s.mean,
                min=s.min,
                max=s.max,
            )
            for s in result.statistics
        ],
        scores=[encode_tensor(k, v) for k, v in (result.scores or {}).items()],
        timing=timing_to_pb(result.timing),
        aggregator_state=result.aggregator_state,
        figures=result.figures,
    )


def deadline_of(context: grpc.aio.ServicerContext) -> float | None:
    """The call's deadline in ``time.monotonic()`` seconds, if the client set one (the
    batcher's clock: uvloop's ``loop.time()`` moves in whole milliseconds)."""
    remaining = context.time_remaining()
    if remaining is None:
        return None
    return time.monotonic() + remaining


# -- the service --------------------------------------------------------------------------
class ScoringServicer(pb_grpc.ScoringServicer):
    def __init__(self, core: ScoringCore, shm: SharedMemoryRegistry | None = None) -> None:
        self.core = core
        self.shm = shm if shm is not None else SharedMemoryRegistry()

    @handle_errors
    async def ListMetrics(
        self, request: pb.ListMetricsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListMetricsResponse:
        models = [m for m in self.core.models.values() if m.ready]
        return pb.ListMetricsResponse(metrics=[metric_info(m) for m in models])

    @handle_errors
    async def DescribeMetric(
        self, request: pb.DescribeMetricRequest, context: grpc.aio.ServicerContext
    ) -> pb.DescribeMetricResponse:
        return pb.DescribeMetricResponse(metric=metric_info(self.core.model(request.name)))

    @handle_errors
    async def Score(
        self, request: pb.ScoreRequest, context: grpc.aio.ServicerContext
    ) -> pb.ScoreResponse:
        start = time.perf_counter()
        self.core.serving(request.metric)  # NOT_FOUND before any input complaint
        reduction = PB_TO_REDUCTION.get(request.reduction)
        if reduction is None:
            raise InvalidInputError(
                f"Expected `reduction` to be one of {sorted(REDUCTION_TO_PB)}, "
                f"got {request.reduction}"
            )
        with self.shm.lease() as lease:
            result = await self.core.score(
                request.metric,
                decode_inputs(request.inputs, lease),
                runtime=runtime_from_pb(request.runtime),
                reduction=reduction,
                deadline=deadline_of(context),
            )
        response = score_response(result)
        response.timing.total_us = round((time.perf_counter() - start) * 1e6)
        return response

    @handle_errors
    async def Evaluate(
        self,
        request_iterator: AsyncIterator[pb.EvaluateRequest],
        context: grpc.aio.ServicerContext,
    ) -> pb.EvaluateResponse:
        start = time.perf_counter()
        stream = request_iterator.__aiter__()
        try:
            first = await stream.__anext__()
        except StopAsyncIteration:
            raise InvalidInputError(
                "Evaluate needs at least one message, naming the metric"
            ) from None
        metric = first.metric
        if not metric:
            raise InvalidInputError("The first Evaluate message must name the metric")
        self.core.serving(metric)

        async def batches() -> AsyncIterator[dict[str, tensors.WireTensor]]:
            message: pb.EvaluateRequest | None = first
            index = 0
            while message is not None:
                if message.metric and message.metric != metric:
                    raise InvalidInputError(
                        f"Message {index} names metric `{shown(message.metric)}`, but this "
                        f"stream evaluates `{shown(metric)}`"
                    )
                if message.inputs:
                    yield decode_inputs(message.inputs, lease)
                index += 1
                try:
                    message = await stream.__anext__()
                except StopAsyncIteration:
                    message = None

        with self.shm.lease() as lease:  # regions named by any batch, for the stream
            result = await self.core.evaluate(
                metric,
                batches(),
                runtime=runtime_from_pb(first.runtime),
                return_scores=first.return_scores,
                deadline=deadline_of(context),
            )
        response = evaluate_response(result)
        response.timing.total_us = round((time.perf_counter() - start) * 1e6)
        return response

    # -- system shared memory (the registry KServe's SystemSharedMemory* calls use) ---------
    @handle_errors
    async def RegisterSharedMemory(
        self, request: pb.RegisterSharedMemoryRequest, context: grpc.aio.ServicerContext
    ) -> pb.RegisterSharedMemoryResponse:
        self.shm.register(request.name, request.key, request.offset, request.byte_size)
        return pb.RegisterSharedMemoryResponse()

    @handle_errors
    async def UnregisterSharedMemory(
        self, request: pb.UnregisterSharedMemoryRequest, context: grpc.aio.ServicerContext
    ) -> pb.UnregisterSharedMemoryResponse:
        self.shm.unregister(request.name)
        return pb.UnregisterSharedMemoryResponse()
