"""Large ModelInfer requests parsed without copying their tensors (server/rawinput.py).

The walk must agree with protobuf's parser on every message: the same fields, the same
raw contents in the same order, and a failure exactly where protobuf fails.
"""

from __future__ import annotations

import numpy as np
import pytest
from google.protobuf.message import DecodeError
from tritonclient.grpc import service_pb2

from cvscore.server import rawinput
from cvscore.server.kserve import Messages, private_pool

OURS = Messages(private_pool()).ModelInferRequest
PARSER = rawinput.InferRequestParser(OURS)


def _request(rng: np.random.Generator) -> bytes:
    """A tritonclient-built request: a few inputs, parameters, outputs, raw payloads."""
    request = service_pb2.ModelInferRequest(model_name="m", id=str(rng.integers(1000)))
    request.parameters["runtime"].string_param = "onnx"
    for i in range(int(rng.integers(1, 4))):
        n = int(rng.integers(0, 40_000))
        request.inputs.add(name=f"x{i}", datatype="FP32", shape=[n])
        request.raw_input_contents.append(rng.random(n, dtype=np.float32).tobytes())
    request.outputs.add(name="score")
    if rng.random() < 0.3:
        request.parameters["late"].int64_param = 7  # a field after the raw contents
    return request.SerializeToString()


def _same(data: bytes) -> None:
    try:
        expected = OURS.FromString(data)
    except DecodeError:
        with pytest.raises(DecodeError):
            PARSER.parse(data)
        return
    got = PARSER.parse(data)
    raw = [bytes(r) for r in rawinput.raw_contents(got)]
    assert raw == list(expected.raw_input_contents)
    if isinstance(got, rawinput.InferRequest):
        assert not got.message.raw_input_contents  # every entry became a view
        got = got.message
    del expected.raw_input_contents[:], got.raw_input_contents[:]
    assert got == expected


def test_the_walk_agrees_with_protobuf_on_valid_requests() -> None:
    rng = np.random.default_rng(3)
    walked = 0
    for _ in range(40):
        data = _request(rng)
        walked += isinstance(PARSER.parse(data), rawinput.InferRequest)
        _same(data)
    assert walked > 20  # most are over rawinput.LARGE: the walk was taken


def test_the_walk_fails_where_protobuf_fails() -> None:
    rng = np.random.default_rng(4)
    data = _request(rng)
    while len(data) < rawinput.LARGE:
        data = _request(rng)
    for _ in range(60):
        cut = bytearray(data[: int(rng.integers(rawinput.LARGE, len(data) + 1))])
        for _ in range(int(rng.integers(0, 3))):  # and a few flipped bytes
            cut[int(rng.integers(len(cut)))] ^= 1 << int(rng.integers(8))
        _same(bytes(cut))


def test_raw_contents_are_views_and_arrays_over_them_are_aligned() -> None:
    from cvscore.server.tensors import from_bytes

    values = np.arange(30_000, dtype=np.float32)
    request = service_pb2.ModelInferRequest(model_name="m")
    request.inputs.add(name="x", datatype="FP32", shape=[values.size])
    request.raw_input_contents.append(values.tobytes())
    parsed = PARSER.parse(request.SerializeToString())
    assert isinstance(parsed, rawinput.InferRequest)
    assert isinstance(parsed.raw[0], memoryview)  # no copy of the payload
    array = from_bytes("x", "float32", (values.size,), parsed.raw[0])
    assert array.flags.aligned  # copied once when the view starts off the float boundary
    np.testing.assert_array_equal(array, values)


def test_a_served_request_over_the_threshold_scores_as_the_scoring_api_does(server, stub) -> None:
    """tritonclient sends a request of a few hundred kilobytes (the walk) and one of a few
    kilobytes (protobuf's parser) to ModelInfer: both equal the cvscore.v1 Score answer."""
    import tritonclient.grpc as tc

    from cvscore.metrics import registry
    from cvscore.v1 import scoring_pb2 as pb

    from .conftest import decode, sample, score_request

    spec = registry.get("ssim")
    client = tc.InferenceServerClient(server.address)
    try:
        for n, size in ((4, 64), (1, 16)):
            arrays = {
                k: v.numpy()
                for k, v in spec.canonical(sample("ssim", seed=n, N=n, H=size, W=size)).items()
            }
            items = []
            for name, array in arrays.items():
                item = tc.InferInput(name, list(array.shape), "FP32")
                item.set_data_from_numpy(array)
                items.append(item)
            big = sum(a.nbytes for a in arrays.values()) >= rawinput.LARGE
            assert big == (n == 4)
            result = client.infer("ssim", items)
            ours = stub.Score(
                score_request("ssim", arrays, reduction=pb.REDUCTION_NONE), timeout=60
            )
            np.testing.assert_array_equal(result.as_numpy("score"), decode(ours.outputs[0]))
    finally:
        client.close()
