"""The Open Inference Protocol, proven with tritonclient.grpc running in the server's process.

tritonclient registers its own copy of the ``inference.*`` messages in protobuf's default
pool; the server keeps ours in a private pool, so both live here side by side.
"""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as tc
from google.protobuf import descriptor_pool, text_format
from tritonclient.grpc import model_config_pb2, service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from cvscore import __version__
from cvscore.exporters.repository import TRITON_MAX_BATCH, list_models
from cvscore.metrics import registry
from cvscore.server.app import BackgroundServer
from cvscore.server.kserve import Messages, private_pool
from cvscore.v1 import scoring_pb2 as pb
from cvscore.v1 import scoring_pb2_grpc as pb_grpc

from .conftest import decode, sample, score_request

KSERVE = {"float32": "FP32", "float64": "FP64", "int64": "INT64", "int32": "INT32", "bool": "BOOL"}


@pytest.fixture(scope="module")
def triton(server: BackgroundServer) -> tc.InferenceServerClient:
    client = tc.InferenceServerClient(server.address)
    yield client
    client.close()


def _infer_inputs(
    metric: str, seed: int, n: int
) -> tuple[dict[str, np.ndarray], list[tc.InferInput]]:
    spec = registry.get(metric)
    arrays = {k: v.numpy() for k, v in spec.canonical(sample(metric, seed=seed, N=n)).items()}
    items = []
    for name, array in arrays.items():
        item = tc.InferInput(name, list(array.shape), KSERVE[str(array.dtype)])
        item.set_data_from_numpy(array)
        items.append(item)
    return arrays, items


def test_the_two_inference_packages_live_side_by_side(server: BackgroundServer) -> None:
    ours = Messages(private_pool())
    theirs = descriptor_pool.Default().FindMessageTypeByName("inference.ModelInferRequest")
    assert theirs.file.name == "grpc_service.proto"  # tritonclient's copy, default pool
    assert ours.ModelInferRequest.DESCRIPTOR.file.name == "inference/grpc_service.proto"
    assert ours.ModelInferRequest is not service_pb2.ModelInferRequest


def _fields(descriptor) -> dict[str, tuple]:
    return {
        f.name: (
            f.number,
            f.type,
            f.is_repeated,
            f.message_type.full_name if f.message_type else "",
        )
        for f in descriptor.fields
    }


def test_our_protocol_matches_tritonclients_wire_format() -> None:
    """Every message and field we define has tritonclient's name, number and type."""
    pool = private_pool()
    for file_name in ("inference/grpc_service.proto", "inference/model_config.proto"):
        ours = pool.FindFileByName(file_name)
        stack = list(ours.message_types_by_name.values())
        while stack:
            message = stack.pop()
            stack.extend(message.nested_types)
            if message.GetOptions().map_entry:
                continue
            theirs = descriptor_pool.Default().FindMessageTypeByName(message.full_name)
            mine, reference = _fields(message), _fields(theirs)
            assert mine == {k: reference[k] for k in mine}, message.full_name
        for enum in ours.enum_types_by_name.values():
            reference = descriptor_pool.Default().FindEnumTypeByName(enum.full_name)
            assert {v.name: v.number for v in enum.values}.items() <= {
                v.name: v.number for v in reference.values
            }.items()
    service = pool.FindServiceByName("inference.GRPCInferenceService")
    reference = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    for method in service.methods:
        other = reference.methods_by_name[method.name]
        assert method.input_type.full_name == other.input_type.full_name
        assert method.output_type.full_name == other.output_type.full_name


def test_server_health_and_metadata(triton: tc.InferenceServerClient, zoo_repo: Path) -> None:
    assert triton.is_server_live()
    assert triton.is_server_ready()
    meta = triton.get_server_metadata()
    assert (meta.name, meta.version) == ("cvscore", __version__)
    index = triton.get_model_repository_index()
    assert sorted(m.name for m in index.models) == list_models(zoo_repo)
    assert {(m.version, m.state) for m in index.models} == {("1", "READY")}


def test_model_metadata_and_config(triton: tc.InferenceServerClient, zoo_repo: Path) -> None:
    assert triton.is_model_ready("cross_entropy")
    assert triton.is_model_ready("cross_entropy", "1")
    meta = triton.get_model_metadata("cross_entropy")
    assert meta.versions == ["1"]
    assert meta.platform == "onnxruntime_onnx"
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [
        ("preds", "FP32", [-1, -1, -1]),
        ("target", "INT64", [-1, -1]),
    ]
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.outputs] == [("score", "FP32", [-1])]
    config = triton.get_model_config("cross_entropy").config
    on_disk = text_format.Parse(
        (zoo_repo / "cross_entropy" / "config.pbtxt").read_text(), model_config_pb2.ModelConfig()
    )
    assert config.input == on_disk.input
    assert config.output == on_disk.output
    # every input and output carries the batch axis: Triton may batch it (dims without N)
    assert (config.name, config.backend, config.max_batch_size) == (
        "cross_entropy",
        "onnxruntime",
        TRITON_MAX_BATCH,
    )
    assert [list(t.dims) for t in config.input] == [[-1, -1], [-1]]
    assert config.parameters["cvscore.default_runtime"].string_value == "onnx"
    assert config.parameters["cvscore.device"].string_value == "cpu"


def test_infer_equals_cvscore_score_for_every_metric(
    triton: tc.InferenceServerClient, stub: pb_grpc.ScoringStub, server: BackgroundServer
) -> None:
    for i, name in enumerate(server.core.models):
        arrays, items = _infer_inputs(name, seed=20 + i, n=3)
        spec = registry.get(name)
        output = spec.outputs[0].name
        result = triton.infer(name, items, outputs=[tc.InferRequestedOutput(output)])
        ours = stub.Score(score_request(name, arrays, reduction=pb.REDUCTION_NONE), timeout=60)
        np.testing.assert_array_equal(
            result.as_numpy(output), decode(ours.outputs[0]), err_msg=name
        )
        response = result.get_response()
        assert response.model_name == name and response.model_version == "1"
        assert response.parameters["runtime"].string_param == "onnx"


def test_infer_with_a_runtime_parameter(triton: tc.InferenceServerClient) -> None:
    _, items = _infer_inputs("giou", seed=1, n=4)
    for runtime in ("torchscript", "onnx", "auto"):
        result = triton.infer("giou", items, parameters={"runtime": runtime})
        used = result.get_response().parameters["runtime"].string_param
        assert used == ("onnx" if runtime == "auto" else runtime)
        assert result.as_numpy("score").shape == (4,)
    with pytest.raises(InferenceServerException) as info:
        triton.infer("giou", items, parameters={"runtime": "torch_export"})
    assert _status(info.value) == "StatusCode.FAILED_PRECONDITION"
    assert info.value.message() == (
        "Model `giou` has no `torch_export` runtime on this server; available: "
        "['onnx', 'torchscript']"
    )


def test_typed_contents_equal_raw_contents(server: BackgroundServer) -> None:
    arrays, _ = _infer_inputs("cross_entropy", seed=2, n=3)
    with grpc.insecure_channel(server.address) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        typed = service_pb2.ModelInferRequest(model_name="cross_entropy")
        raw = service_pb2.ModelInferRequest(model_name="cross_entropy")
        for name, array in arrays.items():
            datatype = KSERVE[str(array.dtype)]
            tensor = typed.inputs.add(name=name, datatype=datatype, shape=array.shape)
            field = "fp32_contents" if datatype == "FP32" else "int64_contents"
            getattr(tensor.contents, field).extend(array.reshape(-1).tolist())
            raw.inputs.add(name=name, datatype=datatype, shape=array.shape)
            raw.raw_input_contents.append(array.tobytes())
        a, b = stub.ModelInfer(typed, timeout=30), stub.ModelInfer(raw, timeout=30)
    assert a.raw_output_contents == b.raw_output_contents
    assert len(a.raw_output_contents[0]) == 3 * 4


def _status(error: InferenceServerException) -> str:
    return str(error.status())


def test_kserve_errors(triton: tc.InferenceServerClient) -> None:
    _, items = _infer_inputs("giou", seed=3, n=2)
    with pytest.raises(InferenceServerException) as info:
        triton.infer("nope", items)
    assert _status(info.value) == "StatusCode.NOT_FOUND"
    assert info.value.message().startswith("Unknown metric `nope`")
    with pytest.raises(InferenceServerException) as info:
        triton.infer("giou", items, model_version="7")
    assert _status(info.value) == "StatusCode.NOT_FOUND"
    assert info.value.message() == "Model `giou` has no version '7'; versions: ['1']"
    with pytest.raises(InferenceServerException) as info:
        triton.infer("giou", items, outputs=[tc.InferRequestedOutput("loss")])
    assert _status(info.value) == "StatusCode.INVALID_ARGUMENT"
    assert info.value.message() == "Model `giou` has no output ['loss']; outputs: ['score']"
    bad = tc.InferInput("preds", [2, 4], "FP64")
    bad.set_data_from_numpy(np.zeros((2, 4), np.float64))
    with pytest.raises(InferenceServerException) as info:
        triton.infer("giou", [items[1], bad, items[1]])
    assert _status(info.value) == "StatusCode.INVALID_ARGUMENT"
    assert info.value.message() == "Input `target` appears more than once"
    with pytest.raises(InferenceServerException) as info:
        triton.get_log_settings()  # not part of cvscore's protocol subset
    assert _status(info.value) == "StatusCode.UNIMPLEMENTED"
    assert triton.infer("giou", items).as_numpy("score").shape == (2,)  # still serving


def test_kserve_rejects_unknown_datatypes_and_partial_raw_contents(
    server: BackgroundServer,
) -> None:
    with grpc.insecure_channel(server.address) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        request = service_pb2.ModelInferRequest(model_name="giou")
        request.inputs.add(name="preds", datatype="BF16", shape=[1, 4])
        request.inputs.add(name="target", datatype="FP32", shape=[1, 4])
        request.raw_input_contents.append(b"\0" * 8)
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(request, timeout=30)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert info.value.details() == "Expected raw_input_contents for every input (2), got 1"
        request.raw_input_contents.append(b"\0" * 16)
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(request, timeout=30)
        assert info.value.details() == (
            "Expected `preds` to have a datatype in ['BOOL', 'FP16', 'FP32', 'FP64', 'INT32', "
            "'INT64', 'UINT8'], got 'BF16'"
        )
