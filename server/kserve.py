"""The Open Inference Protocol (KServe v2) over gRPC: every metric is a model.

Why a private descriptor pool. A process may hold two copies of the ``inference.*``
messages: ours and tritonclient's (``tritonclient.grpc.service_pb2``), and protobuf refuses
a second definition of a symbol in its default pool ("duplicate symbol"). So cvscore never
generates Python modules for ``protos/inference/*.proto``: the build compiles them only into
the descriptor set ``cvscore/protos.pb``; here they are loaded into a private
``DescriptorPool``, message classes come from ``message_factory.GetMessageClass``, and the
service is registered with ``grpc.method_handlers_generic_handler`` using those classes'
``FromString`` / ``SerializeToString``. tritonclient's copy, in the default pool, never
meets ours, so a tritonclient can run in the same process as this server. On the wire both
are the same protocol: names and field numbers match.
"""

from __future__ import annotations

import functools
import importlib.resources
import logging
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from google.protobuf.message import Message

from ..wire import KSERVE_DTYPES, TO_KSERVE
from . import tensors
from .dataplane import DataPlane
from .errors import InvalidInputError, shown
from .rawinput import InferRequestParser, raw_contents
from .servicer import deadline_of
from .shm import Lease, tensor_ref, write_output
from .status import handle_errors

log = logging.getLogger(__name__)

SERVICE = "inference.GRPCInferenceService"
# The typed-contents field of each KServe v2 datatype.
CONTENTS = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
}


@functools.cache
def descriptor_set() -> descriptor_pb2.FileDescriptorSet:
    """Every proto under protos/, as compiled by the build into cvscore/protos.pb."""
    data = importlib.resources.files("cvscore").joinpath("protos.pb").read_bytes()
    return descriptor_pb2.FileDescriptorSet.FromString(data)


def private_pool() -> descriptor_pool.DescriptorPool:
    """A new pool with cvscore.v1, inference, grpc.health.v1 and reflection descriptors."""
    from grpc_health.v1 import health_pb2
    from grpc_reflection.v1alpha import reflection_pb2

    pool = descriptor_pool.DescriptorPool()
    names = set()
    for proto in descriptor_set().file:
        pool.Add(proto)
        names.add(proto.name)
    for module in (health_pb2, reflection_pb2):
        if module.DESCRIPTOR.name not in names:
            pool.AddSerializedFile(module.DESCRIPTOR.serialized_pb)
    return pool


class Messages:
    """The ``inference.*`` message classes, built from a private pool."""

    def __init__(self, pool: descriptor_pool.DescriptorPool) -> None:
        self.pool = pool
        self.service = pool.FindServiceByName(SERVICE)

    def get(self, name: str) -> type[Message]:
        return message_factory.GetMessageClass(self.pool.FindMessageTypeByName(name))

    def __getattr__(self, name: str) -> type[Message]:
        return self.get(f"inference.{name}")


class KServeServicer:
    """Handlers for ``inference.GRPCInferenceService``: messages in and out of the data plane."""

    def __init__(self, plane: DataPlane, messages: Messages) -> None:
        self.plane = plane
        self.m = messages
        self._infer_response = messages.ModelInferResponse  # built once: used per request

    # -- registration -------------------------------------------------------------------
    def handler(self) -> grpc.GenericRpcHandler:
        handlers: dict[str, grpc.RpcMethodHandler] = {}
        for method in self.m.service.methods:
            behaviour: Callable[..., Any] = getattr(self, method.name)
            request = message_factory.GetMessageClass(method.input_type)
            response = message_factory.GetMessageClass(method.output_type)
            parse = request.FromString
            if method.name == "ModelInfer":  # large tensors stay in the received bytes
                parse = InferRequestParser(request).parse
            handlers[method.name] = grpc.unary_unary_rpc_method_handler(
                behaviour,
                request_deserializer=parse,
                response_serializer=response.SerializeToString,
            )
        return grpc.method_handlers_generic_handler(SERVICE, handlers)

    # -- helpers ------------------------------------------------------------------------
    def _decode(self, request: Any, lease: Lease) -> dict[str, tensors.WireTensor]:
        """Inputs as declarations: the core admits them before anything is decoded.

        As Triton does: data travels in a shared memory region (the input's
        ``shared_memory_*`` parameters), in ``raw_input_contents`` (one entry per input not
        in shared memory, in order) or in each input's typed ``contents``, never two of them.
        """
        raw = raw_contents(request)
        refs = [tensor_ref(t.parameters, "Input", t.name) for t in request.inputs]
        plain = sum(ref is None for ref in refs)
        if raw and len(raw) != plain:
            which = "input" if plain == len(refs) else "input not in shared memory"
            raise InvalidInputError(
                f"Expected raw_input_contents for every {which} ({plain}), got {len(raw)}"
            )
        declared: dict[str, tensors.WireTensor] = {}
        pending = iter(raw)
        for t, ref in zip(request.inputs, refs, strict=True):
            if t.name in declared:
                raise InvalidInputError(f"Input `{shown(t.name)}` appears more than once")
            dtype = KSERVE_DTYPES.get(t.datatype)
            if dtype is None:
                raise InvalidInputError(
                    f"Expected `{shown(t.name)}` to have a datatype in {sorted(KSERVE_DTYPES)}, "
                    f"got {shown(t.datatype)!r}"
                )
            typed = [f.name for f, _ in t.contents.ListFields()] if t.HasField("contents") else []
            if ref is not None or raw:
                if typed:
                    where = "shared memory" if ref is not None else "raw_input_contents"
                    raise InvalidInputError(
                        f"Input `{shown(t.name)}` has data in {where} and in contents "
                        f"({', '.join(typed)}); send one or the other"
                    )
                data: bytes | memoryview
                if ref is not None:
                    region, offset, size = ref
                    data = lease.view(region, offset, size, f"Input `{shown(t.name)}`")
                else:
                    data = next(pending)
                declared[t.name] = tensors.WireTensor(t.name, dtype, tuple(t.shape), data)
                continue
            field = CONTENTS.get(t.datatype)
            if field is None:
                raise InvalidInputError(
                    f"Expected `{shown(t.name)}` ({t.datatype}) in raw_input_contents: "
                    "it has no typed contents field"
                )
            others = [f for f in typed if f != field]
            if others:
                raise InvalidInputError(
                    f"Expected the data of `{shown(t.name)}` ({t.datatype}) in contents.{field}, "
                    f"got {', '.join(others)}"
                )
            values = getattr(t.contents, field)
            declared[t.name] = tensors.WireTensor(t.name, dtype, tuple(t.shape), values=values)
        return declared

    # -- health and metadata ------------------------------------------------------------
    @handle_errors
    async def ServerLive(self, request: Any, context: grpc.aio.ServicerContext) -> Message:
        return self.m.ServerLiveResponse(live=self.plane.live())

    @handle_errors
    async def ServerReady(self, request: Any, context: grpc.aio.ServicerContext) -> Message:
        return self.m.ServerReadyResponse(ready=self.plane.ready())

    @handle_errors
    async def ModelReady(self, request: Any, context: grpc.aio.ServicerContext) -> Message:
        return self.m.ModelReadyResponse(
            ready=self.plane.model_ready(request.name, request.version)
        )

    @handle_errors
    async def ServerMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Message:
        return self.m.ServerMetadataResponse(**self.plane.server_metadata())

    @handle_errors
    async def ModelMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Message:
        meta = self.plane.model_metadata(request.name, request.version)
        tensor = self.m.get("inference.ModelMetadataResponse.TensorMetadata")
        for key in ("inputs", "outputs"):
            meta[key] = [tensor(**t) for t in meta[key]]
        return self.m.ModelMetadataResponse(**meta)

    @handle_errors
    async def ModelConfig(self, request: Any, context: grpc.aio.ServicerContext) -> Message:
        config = self.plane.model_config(request.name, request.version)
        return self.m.ModelConfigResponse(config=config)

    @handle_errors
    async def ModelStatistics(self, request: Any, context: grpc.aio.ServicerContext) -> Message:
        docs = self.plane.statistics(request.name, request.version)
        return json_format.ParseDict({"model_stats": docs}, self.m.ModelStatisticsResponse())

    @handle_errors
    async def RepositoryIndex(self, request: Any, context: grpc.aio.ServicerContext) -> Message:
        index = self.m.get("inference.RepositoryIndexResponse.ModelIndex")
        models = [index(**m) for m in self.plane.index(ready_only=request.ready)]
        return self.m.RepositoryIndexResponse(models=models)

    # -- model control --------------------------------------------------------------------
    @handle_errors
    async def RepositoryModelLoad(self, request: Any, context: grpc.aio.ServicerContext) -> Message:
        await self.plane.load(request.model_name, list(request.parameters))
        return self.m.RepositoryModelLoadResponse()

    @handle_errors
    async def RepositoryModelUnload(
        self, request: Any, context: grpc.aio.ServicerContext
    ) -> Message:
        await self.plane.unload(request.model_name, list(request.parameters))
        return self.m.RepositoryModelUnloadResponse()

    # -- inference ------------------------------------------------------------------------
    @handle_errors
    async def ModelInfer(self, request: Any, context: grpc.aio.ServicerContext) -> Message:
        runtime = "auto"
        if "runtime" in request.parameters:
            runtime = request.parameters["runtime"].string_param
        model = self.plane.serving(request.model_name, request.model_version)
        with self.plane.shm.lease() as lease:
            placed = {}  # outputs asked for in shared memory: their regions are checked first
            for o in request.outputs:
                ref = tensor_ref(o.parameters, "Output", o.name)
                if ref is not None:
                    lease.view(*ref, what=f"Output `{shown(o.name)}`")
                    placed[o.name] = ref
            done = await self.plane.infer(
                model,
                self._decode(request, lease),
                [o.name for o in request.outputs],
                runtime=runtime,
                deadline=deadline_of(context),
            )
            response = self._infer_response(
                model_name=done.model.name, model_version=done.version, id=request.id
            )
            inline = len(placed) < len(done.outputs)
            for name in done.outputs:
                array = done.result.outputs[name]
                response.outputs.add(
                    name=name,
                    datatype=TO_KSERVE[tensors.dtype_name(array.dtype)],
                    shape=array.shape,
                )
                if name in placed:
                    write_output(lease, name, array, *placed[name])
                    if inline:  # raw_output_contents stays aligned with outputs
                        response.raw_output_contents.append(b"")
                else:
                    response.raw_output_contents.append(tensors.to_bytes(array))
        response.parameters["runtime"].string_param = done.result.runtime
        response.parameters["device"].string_param = done.result.device
        return response

    # -- system shared memory -------------------------------------------------------------
    @handle_errors
    async def SystemSharedMemoryRegister(
        self, request: Any, context: grpc.aio.ServicerContext
    ) -> Message:
        self.plane.shm.register(request.name, request.key, request.offset, request.byte_size)
        return self.m.SystemSharedMemoryRegisterResponse()

    @handle_errors
    async def SystemSharedMemoryStatus(
        self, request: Any, context: grpc.aio.ServicerContext
    ) -> Message:
        response = self.m.SystemSharedMemoryStatusResponse()
        for region in self.plane.shm.status(request.name):
            response.regions[region["name"]].CopyFrom(
                self.m.get("inference.SystemSharedMemoryStatusResponse.RegionStatus")(**region)
            )
        return response

    @handle_errors
    async def SystemSharedMemoryUnregister(
        self, request: Any, context: grpc.aio.ServicerContext
    ) -> Message:
        self.plane.shm.unregister(request.name)
        return self.m.SystemSharedMemoryUnregisterResponse()
