"""System shared memory, proven with tritonclient.grpc and tritonclient.utils.shared_memory
used unchanged, and through cvscore.v1's shared memory references.

The server runs in this process, so ``/proc/self/maps`` shows its mappings beside
tritonclient's: a region's object is mapped once by the client and once more while the
server has it registered.
"""

from __future__ import annotations

import gc
import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as tc
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import InferenceServerException

from cvscore.exporters import export_many
from cvscore.server.app import BackgroundServer, ServerConfig
from cvscore.v1 import scoring_pb2 as pb
from cvscore.v1 import scoring_pb2_grpc as pb_grpc

from .conftest import decode, score_request

MODELS = ("ssim", "l1")


@pytest.fixture(scope="module")
def shm_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("shm")
    export_many(list(MODELS), repo, formats=("onnx", "torchscript"), progress=False)
    return repo


@pytest.fixture(scope="module")
def served(shm_repo: Path) -> Iterator[BackgroundServer]:
    config = ServerConfig(shm_repo, port=0, runtime="onnx,torchscript")
    with BackgroundServer(config) as running:
        yield running


@pytest.fixture
def triton(served: BackgroundServer) -> Iterator[tc.InferenceServerClient]:
    client = tc.InferenceServerClient(served.address)
    yield client
    client.unregister_system_shared_memory()  # every region, whatever a test left
    client.close()


@pytest.fixture
def regions() -> Iterator[list[shm.SharedMemoryRegion]]:
    made: list[shm.SharedMemoryRegion] = []
    yield made
    for handle in made:
        shm.destroy_shared_memory_region(handle)


def _key() -> str:
    return f"/cvscore-test-{uuid.uuid4().hex[:12]}"


def mappings(key: str) -> int:
    """How many times this process maps /dev/shm/<key>."""
    path = f"/dev/shm/{key.lstrip('/')}"
    with open("/proc/self/maps") as maps:
        return sum(line.rstrip("\n").endswith(path) for line in maps)


def unmapped(key: str, left: int = 1, timeout: float = 10.0) -> bool:
    """Wait until only ``left`` mappings of the object remain. (A mapping an array still
    views is unmapped with that array, by the garbage collector: the server's handler may
    finish a moment after its client has the answer.)"""
    deadline = time.monotonic() + timeout
    while mappings(key) != left:
        if time.monotonic() > deadline:
            return False
        gc.collect()
        time.sleep(0.01)
    return True


def images(seed: int, n: int = 4, size: int = 32) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    preds = rng.random((n, 3, size, size), dtype=np.float32)
    noise = rng.normal(0, 0.05, preds.shape).astype(np.float32)
    return {"preds": preds, "target": np.clip(preds + noise, 0, 1).astype(np.float32)}


def plain_infer(client: tc.InferenceServerClient, model: str, arrays: dict) -> np.ndarray:
    items = []
    for name, array in arrays.items():
        item = tc.InferInput(name, list(array.shape), "FP32")
        item.set_data_from_numpy(array)
        items.append(item)
    return client.infer(model, items).as_numpy("score")


def in_region(
    client: tc.InferenceServerClient,
    regions: list,
    arrays: dict[str, np.ndarray],
    out_bytes: int,
    name: str = "inputs",
) -> tuple[list[tc.InferInput], shm.SharedMemoryRegion, str]:
    """Every array in one registered region, one after the other; room for the output."""
    total = sum(a.nbytes for a in arrays.values())
    key = _key()
    handle = shm.create_shared_memory_region(name, key, total + out_bytes)
    regions.append(handle)
    shm.set_shared_memory_region(handle, list(arrays.values()))
    client.register_system_shared_memory(name, key, total + out_bytes)
    items, offset = [], 0
    for tensor_name, array in arrays.items():
        item = tc.InferInput(tensor_name, list(array.shape), "FP32")
        item.set_shared_memory(name, array.nbytes, offset)
        items.append(item)
        offset += array.nbytes
    return items, handle, key


@pytest.mark.parametrize("model", MODELS)
def test_inputs_and_outputs_in_shared_memory_equal_the_plain_path(
    triton: tc.InferenceServerClient, regions: list, model: str
) -> None:
    arrays = images(seed=1)
    if model == "l1":
        arrays = {k: v.reshape(4, -1) for k, v in arrays.items()}
    expected = plain_infer(triton, model, arrays)
    total = sum(a.nbytes for a in arrays.values())
    items, handle, _ = in_region(triton, regions, arrays, out_bytes=4 * 4)
    output = tc.InferRequestedOutput("score")
    output.set_shared_memory("inputs", 16, offset=total)
    result = triton.infer(model, items, outputs=[output])
    got = shm.get_contents_as_numpy(handle, np.float32, [4], offset=total)
    np.testing.assert_array_equal(got, expected)  # bit for bit
    assert result.get_output("score").shape == [4]
    assert not result.get_response().raw_output_contents  # nothing sent back inline
    # inputs in the region, output inline
    inline = triton.infer(model, items).as_numpy("score")
    np.testing.assert_array_equal(inline, expected)


def test_one_input_in_shared_memory_the_other_inline(
    triton: tc.InferenceServerClient, regions: list
) -> None:
    arrays = images(seed=2)
    expected = plain_infer(triton, "ssim", arrays)
    key = _key()
    handle = shm.create_shared_memory_region("preds", key, arrays["preds"].nbytes)
    regions.append(handle)
    shm.set_shared_memory_region(handle, [arrays["preds"]])
    triton.register_system_shared_memory("preds", key, arrays["preds"].nbytes)
    preds = tc.InferInput("preds", list(arrays["preds"].shape), "FP32")
    preds.set_shared_memory("preds", arrays["preds"].nbytes)
    target = tc.InferInput("target", list(arrays["target"].shape), "FP32")
    target.set_data_from_numpy(arrays["target"])
    got = triton.infer("ssim", [preds, target]).as_numpy("score")
    np.testing.assert_array_equal(got, expected)


def test_status_lists_regions_and_unregister_unmaps_them(
    triton: tc.InferenceServerClient, regions: list, served: BackgroundServer
) -> None:
    key_a, key_b = _key(), _key()
    for name, key in (("a", key_a), ("b", key_b)):
        regions.append(shm.create_shared_memory_region(name, key, 4096))
        assert mappings(key) == 1  # tritonclient's own
    triton.register_system_shared_memory("a", key_a, 1024, offset=512)
    triton.register_system_shared_memory("b", key_b, 4096)
    assert mappings(key_a) == 2 and mappings(key_b) == 2
    status = triton.get_system_shared_memory_status(as_json=True)["regions"]
    assert status["a"] == {"name": "a", "key": key_a, "offset": "512", "byte_size": "1024"}
    assert set(status) == {"a", "b"}
    only = triton.get_system_shared_memory_status("b", as_json=True)["regions"]
    assert list(only) == ["b"]
    triton.unregister_system_shared_memory("a")
    assert mappings(key_a) == 1 and mappings(key_b) == 2
    assert set(triton.get_system_shared_memory_status(as_json=True)["regions"]) == {"b"}
    triton.unregister_system_shared_memory()  # all
    assert mappings(key_b) == 1
    assert triton.get_system_shared_memory_status(as_json=True).get("regions", {}) == {}
    # the client removes its objects after unregistering: nothing left mapped anywhere
    for handle in regions:
        shm.destroy_shared_memory_region(handle)
    regions.clear()
    assert mappings(key_a) == 0 and mappings(key_b) == 0
    assert not Path(f"/dev/shm/{key_a[1:]}").exists()


def _refused(call, code: grpc.StatusCode, *words: str) -> None:
    with pytest.raises(InferenceServerException) as info:
        call()
    assert info.value.status() == str(code), info.value
    for word in words:
        assert word in info.value.message(), info.value.message()


def test_bad_registrations_are_refused_by_name(
    triton: tc.InferenceServerClient, regions: list
) -> None:
    key = _key()
    regions.append(shm.create_shared_memory_region("r", key, 1000))
    triton.register_system_shared_memory("r", key, 1000)
    _refused(
        lambda: triton.register_system_shared_memory("r", key, 1000),
        grpc.StatusCode.ALREADY_EXISTS,
        "`r`",
        "already registered",
    )
    _refused(
        lambda: triton.register_system_shared_memory("s", key, 1000, offset=1),
        grpc.StatusCode.INVALID_ARGUMENT,
        "`s`",
        "1000 bytes",
        "offset 1 + byte_size 1000",
    )
    _refused(
        lambda: triton.register_system_shared_memory("t", "/cvscore-no-such-object", 8),
        grpc.StatusCode.INVALID_ARGUMENT,
        "/cvscore-no-such-object",
        "does not exist",
    )
    _refused(
        lambda: triton.register_system_shared_memory("u", "/../etc/passwd", 8),
        grpc.StatusCode.INVALID_ARGUMENT,
        "`key`",
    )
    _refused(
        lambda: triton.get_system_shared_memory_status("nope"),
        grpc.StatusCode.NOT_FOUND,
        "`nope`",
    )
    status = triton.get_system_shared_memory_status(as_json=True)["regions"]
    assert list(status) == ["r"]  # the refusals registered nothing


def test_bad_references_are_refused_and_the_server_keeps_serving(
    triton: tc.InferenceServerClient, regions: list
) -> None:
    arrays = images(seed=3)
    expected = plain_infer(triton, "ssim", arrays)
    items, _, _ = in_region(triton, regions, arrays, out_bytes=16)
    nbytes = arrays["preds"].nbytes
    region_size = 2 * nbytes + 16

    def with_preds(region: str, byte_size: int, offset: int) -> list[tc.InferInput]:
        preds = tc.InferInput("preds", list(arrays["preds"].shape), "FP32")
        preds.set_shared_memory(region, byte_size, offset)
        return [preds, items[1]]

    cases = [
        (with_preds("missing", nbytes, 0), ("`preds`", "`missing`", "not registered")),
        (with_preds("inputs", nbytes, nbytes + 32), ("`preds`", f"{region_size} bytes")),
        (with_preds("inputs", nbytes - 4, 0), ("`preds`", f"{nbytes} bytes", f"{nbytes - 4}")),
    ]
    for request, words in cases:
        _refused(
            lambda r=request: triton.infer("ssim", r), grpc.StatusCode.INVALID_ARGUMENT, *words
        )
        np.testing.assert_array_equal(triton.infer("ssim", items).as_numpy("score"), expected)
    small = tc.InferRequestedOutput("score")
    small.set_shared_memory("inputs", 8, offset=2 * nbytes)  # 4 scores need 16 bytes
    _refused(
        lambda: triton.infer("ssim", items, outputs=[small]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "`score`",
        "16 bytes",
        "byte_size 8",
    )
    np.testing.assert_array_equal(plain_infer(triton, "ssim", arrays), expected)


def test_an_object_truncated_after_registration_is_refused_not_read(
    triton: tc.InferenceServerClient, regions: list
) -> None:
    """Reading a mapping past its object's end is SIGBUS: the server checks the size first."""
    arrays = images(seed=8)
    expected = plain_infer(triton, "ssim", arrays)
    items, _, key = in_region(triton, regions, arrays, out_bytes=0)
    np.testing.assert_array_equal(triton.infer("ssim", items).as_numpy("score"), expected)
    os.truncate(f"/dev/shm/{key.lstrip('/')}", 4096)
    _refused(
        lambda: triton.infer("ssim", items),
        grpc.StatusCode.INVALID_ARGUMENT,
        "`inputs`",
        "smaller than the region",
    )
    np.testing.assert_array_equal(plain_infer(triton, "ssim", arrays), expected)


def test_a_region_unregistered_while_a_request_waits_stays_mapped_until_it_is_answered(
    triton: tc.InferenceServerClient, regions: list, served: BackgroundServer
) -> None:
    arrays = images(seed=4)
    expected = plain_infer(triton, "ssim", arrays)
    items, _, key = in_region(triton, regions, arrays, out_bytes=0)
    batchers = served.core.models["ssim"].batchers.values()
    served.call(served.core.pause)
    answered = threading.Event()
    done: list = []

    def callback(result: object, error: object) -> None:
        done.append((result, error))
        answered.set()

    try:
        triton.async_infer("ssim", items, callback=callback)
        deadline = time.monotonic() + 60
        while not served.call(lambda: sum(b.depth for b in batchers)):  # queued: it holds
            assert time.monotonic() < deadline  # views on the region
            time.sleep(0.01)
        triton.unregister_system_shared_memory("inputs")
        assert mappings(key) == 2  # still mapped for the queued request
        _refused(lambda: triton.infer("ssim", items), grpc.StatusCode.INVALID_ARGUMENT, "`inputs`")
    finally:
        served.call(served.core.resume)
    assert answered.wait(60)
    result, error = done[0]
    assert error is None, error
    np.testing.assert_array_equal(result.as_numpy("score"), expected)
    assert unmapped(key)  # once answered


def test_server_metadata_names_the_extension(triton: tc.InferenceServerClient) -> None:
    assert "system_shared_memory" in triton.get_server_metadata().extensions


def test_cuda_shared_memory_is_unimplemented(triton: tc.InferenceServerClient) -> None:
    _refused(lambda: triton.get_cuda_shared_memory_status(), grpc.StatusCode.UNIMPLEMENTED)


def test_cvscore_v1_tensors_name_regions(served: BackgroundServer, regions: list) -> None:
    arrays = images(seed=5)
    total = sum(a.nbytes for a in arrays.values())
    key = _key()
    # the region starts 4096 bytes into its object: offsets count from the region's start
    handle = shm.create_shared_memory_region("v1", key, 4096 + total)
    regions.append(handle)
    shm.set_shared_memory_region(handle, list(arrays.values()), offset=4096)
    with grpc.insecure_channel(served.address) as channel:
        stub = pb_grpc.ScoringStub(channel)
        plain = stub.Score(score_request("ssim", arrays, reduction=pb.REDUCTION_NONE))
        stub.RegisterSharedMemory(
            pb.RegisterSharedMemoryRequest(name="v1", key=key, offset=4096, byte_size=total)
        )
        tensors, offset = [], 0
        for name, array in arrays.items():
            ref = pb.SharedMemoryRef(region="v1", offset=offset, byte_size=array.nbytes)
            tensors.append(
                pb.Tensor(
                    name=name, dtype=pb.DATA_TYPE_FLOAT32, shape=array.shape, shared_memory=ref
                )
            )
            offset += array.nbytes
        request = pb.ScoreRequest(metric="ssim", reduction=pb.REDUCTION_NONE, inputs=tensors)
        got = stub.Score(request)
        np.testing.assert_array_equal(decode(got.outputs[0]), decode(plain.outputs[0]))
        # both data and a region: refused, naming the input
        tensors[0].data = arrays["preds"].tobytes()
        with pytest.raises(grpc.RpcError) as info:
            stub.Score(pb.ScoreRequest(metric="ssim", inputs=tensors))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "`preds`" in info.value.details()
        stub.UnregisterSharedMemory(pb.UnregisterSharedMemoryRequest(name="v1"))
    assert unmapped(key)


def test_shutdown_unmaps_every_region(shm_repo: Path, regions: list) -> None:
    key = _key()
    regions.append(shm.create_shared_memory_region("kept", key, 4096))
    config = ServerConfig(shm_repo, port=0, runtime="onnx")
    with BackgroundServer(config) as running:
        client = tc.InferenceServerClient(running.address)
        client.register_system_shared_memory("kept", key, 4096)
        assert mappings(key) == 2
        client.close()
    assert mappings(key) == 1  # only tritonclient's own is left
