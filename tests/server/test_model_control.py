"""Model control through real servers: a metric exported while the server runs is loaded
with RepositoryModelLoad (gRPC and HTTP) and scores; unloading drains the model's queue,
then it is not ready and NOT_FOUND / 404 while the others keep serving; poll mode picks up
new and removed entries; mode none and poll refuse explicit requests."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import torch
import tritonclient.grpc as tcg
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.utils import InferenceServerException

from cvscore.exporters import export_metric
from cvscore.exporters.naming import variant_name
from cvscore.metrics import registry
from cvscore.server.app import BackgroundServer, ServerConfig
from cvscore.server.startup import check_repository

from .conftest import Events, sample
from .test_http import JSON, call, error_of

FORMATS = ("onnx", "torchscript")


@pytest.fixture
def repo(small_repo: Path, tmp_path: Path) -> Path:
    """A repository of its own (l1, giou), so that tests can add and remove entries."""
    out = tmp_path / "repo"
    for name in ("l1", "giou"):
        shutil.copytree(small_repo / name, out / name)
    return out


@pytest.fixture
def start(repo: Path) -> Iterator[Callable[..., BackgroundServer]]:
    started: list[BackgroundServer] = []

    def run(**options: Any) -> BackgroundServer:
        config = ServerConfig(repo, port=0, http_port=0, runtime="onnx,torchscript", **options)
        running = BackgroundServer(config).start()
        started.append(running)
        return running

    yield run
    for running in started:
        running.call(running.core.resume)
        running.stop()


def _infer_grpc(client: tcg.InferenceServerClient, name: str, arrays: dict[str, np.ndarray]):
    items = []
    for key, array in arrays.items():
        item = tcg.InferInput(
            key, list(array.shape), "FP32" if array.dtype == np.float32 else "INT64"
        )
        item.set_data_from_numpy(array)
        items.append(item)
    return client.infer(name, items)


def _json_inputs(arrays: dict[str, np.ndarray]) -> dict:
    return {
        "inputs": [
            {
                "name": k,
                "shape": list(v.shape),
                "datatype": "FP32" if v.dtype == np.float32 else "INT64",
                "data": v.ravel().tolist(),
            }
            for k, v in arrays.items()
        ]
    }


def _arrays(metric: str, seed: int, n: int) -> dict[str, np.ndarray]:
    spec = registry.get(metric)
    return {k: v.numpy() for k, v in spec.canonical(sample(metric, seed=seed, N=n)).items()}


def _status(error: InferenceServerException) -> str:
    return str(error.status())


def test_a_metric_exported_while_serving_is_loaded_and_scores(
    start: Callable[..., BackgroundServer], repo: Path
) -> None:
    server = start(model_control="explicit")
    triton = tcg.InferenceServerClient(server.address)
    base = f"http://{server.http_address}"
    spec = registry.get("focal")
    name = variant_name(spec, {"gamma": 1.5})
    assert name.startswith("focal-")
    export_metric(spec, repo, {"gamma": 1.5}, FORMATS)  # while the server runs
    # in the repository, not loaded yet: listed, not ready, not servable
    index = {m.name: (m.state, m.reason) for m in triton.get_model_repository_index().models}
    assert index[name] == ("UNAVAILABLE", "unloaded")
    assert not triton.is_model_ready(name)
    arrays = _arrays("focal", seed=1, n=6)
    with pytest.raises(InferenceServerException) as info:
        _infer_grpc(triton, name, arrays)
    assert _status(info.value) == "StatusCode.NOT_FOUND"
    # RepositoryModelLoad over gRPC
    triton.load_model(name)
    assert triton.is_model_ready(name)
    scores = _infer_grpc(triton, name, arrays).as_numpy("score")
    torch_inputs = {k: torch.from_numpy(v) for k, v in arrays.items()}
    eager = spec.module(gamma=1.5)(**torch_inputs).double().numpy()
    np.testing.assert_allclose(scores, eager, rtol=1e-5, atol=1e-6)
    status, _, data = call(f"{base}/v2/models/{name}/infer", _json_inputs(arrays), JSON)
    assert status == 200  # and over HTTP, the same numbers
    got = np.array(json.loads(data)["outputs"][0]["data"], np.float32)
    assert got.tobytes() == scores.tobytes()
    # ... and over HTTP: mse, exported now, loaded with POST .../load
    export_metric(registry.get("mse"), repo, None, FORMATS)
    assert error_of(call(f"{base}/v2/models/mse/ready")) == (503, "Model `mse` is not ready")
    status, _, body = call(f"{base}/v2/repository/models/mse/load", b"")
    assert (status, body) == (200, b"")
    assert call(f"{base}/v2/models/mse/ready")[0] == 200
    preds = np.arange(8, dtype=np.float32).reshape(2, 4)
    arrays = {"preds": preds, "target": preds + 2}
    status, _, data = call(f"{base}/v2/models/mse/infer", _json_inputs(arrays), JSON)
    assert status == 200
    assert json.loads(data)["outputs"][0]["data"] == [4.0, 4.0]  # (p - (p + 2))^2 = 4
    status, _, data = call(f"{base}/v2/repository/index", {"ready": True}, JSON)
    assert sorted(m["name"] for m in json.loads(data)) == sorted(["l1", "giou", name, "mse"])
    triton.close()


def test_unloading_drains_the_queue_then_the_model_is_gone(
    start: Callable[..., BackgroundServer], events: Events
) -> None:
    server = start(model_control="explicit", max_queue_delay_us=0)
    server.call(lambda: server.core.add_hook(events))
    triton = tcg.InferenceServerClient(server.address)
    base = f"http://{server.http_address}"
    requests = [_arrays("giou", seed=i, n=2) for i in range(3)]
    expected = [_infer_grpc(triton, "giou", a).as_numpy("score") for a in requests]
    queued = events.count("queued")
    server.call(server.core.pause)
    with ThreadPoolExecutor(4) as pool:
        waiting = [pool.submit(_infer_grpc, triton, "giou", a) for a in requests]
        events.wait_for(queued + 3, "queued")
        unloading = pool.submit(call, f"{base}/v2/repository/models/giou/unload", b"")
        # what was queued before the unload runs, and gets its own scores
        for future, scores in zip(waiting, expected, strict=True):
            assert future.result().as_numpy("score").tobytes() == scores.tobytes()
        assert unloading.result()[0] == 200
    server.call(server.core.resume)
    assert "giou" not in server.core.models
    # not ready, and NOT_FOUND / 404 from now on
    assert not triton.is_model_ready("giou")
    assert error_of(call(f"{base}/v2/models/giou/ready")) == (503, "Model `giou` is not ready")
    with pytest.raises(InferenceServerException) as info:
        _infer_grpc(triton, "giou", requests[0])
    assert _status(info.value) == "StatusCode.NOT_FOUND"
    assert info.value.message() == "Unknown metric `giou`; known metrics: l1"
    status, message = error_of(
        call(f"{base}/v2/models/giou/infer", _json_inputs(requests[0]), JSON)
    )
    assert (status, message) == (404, "Unknown metric `giou`; known metrics: l1")
    with grpc.insecure_channel(server.address) as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="giou"), timeout=10
        )
    assert health.status == health_pb2.HealthCheckResponse.NOT_SERVING
    index = {m.name: (m.state, m.reason) for m in triton.get_model_repository_index().models}
    assert index == {"l1": ("READY", ""), "giou": ("UNAVAILABLE", "unloaded")}
    # the others keep serving, and the unloaded one comes back on request
    l1 = {"preds": np.ones((2, 3), np.float32), "target": np.zeros((2, 3), np.float32)}
    np.testing.assert_array_equal(_infer_grpc(triton, "l1", l1).as_numpy("score"), [1.0, 1.0])
    triton.unload_model("giou")  # unloading again is nothing to do
    triton.load_model("giou")
    again = _infer_grpc(triton, "giou", requests[0]).as_numpy("score")
    assert again.tobytes() == expected[0].tobytes()
    triton.close()


def test_load_errors(start: Callable[..., BackgroundServer], repo: Path) -> None:
    server = start(model_control="explicit")
    triton = tcg.InferenceServerClient(server.address)
    base = f"http://{server.http_address}"
    with pytest.raises(InferenceServerException) as info:
        triton.load_model("nope")
    assert (_status(info.value), info.value.message()) == (
        "StatusCode.NOT_FOUND",
        "No model `nope` in the repository",
    )
    assert error_of(call(f"{base}/v2/repository/models/nope/load", b"")) == (
        404,
        "No model `nope` in the repository",
    )
    assert error_of(call(f"{base}/v2/repository/models/nope/unload", b"")) == (
        404,
        "No model `nope` on this server",
    )
    with pytest.raises(InferenceServerException) as info:
        triton.load_model("l1", config='{"max_batch_size": 8}')  # Triton's config override
    assert _status(info.value) == "StatusCode.INVALID_ARGUMENT"
    assert info.value.message() == (
        "Expected no load parameters (cvscore serves the repository's entries as exported), "
        "got ['config']"
    )
    # an entry that cannot be served: refused with the reason, listed, the others serve
    (repo / "broken").mkdir()
    (repo / "broken" / "manifest.json").write_text("{}")
    status, message = error_of(call(f"{base}/v2/repository/models/broken/load", b""))
    assert status == 400 and message.startswith("Model `broken` cannot be loaded: ")
    index = {m.name: m.state for m in triton.get_model_repository_index().models}
    assert index == {"l1": "READY", "giou": "READY", "broken": "UNAVAILABLE"}
    assert not triton.is_model_ready("broken")
    assert call(f"{base}/v2/models/l1/ready")[0] == 200
    triton.close()


def test_without_explicit_control_requests_are_refused(
    start: Callable[..., BackgroundServer],
) -> None:
    server = start()  # --model-control none, the default
    triton = tcg.InferenceServerClient(server.address)
    message = (
        "Cannot load models on this server: model control is off (start the server with "
        "--model-control explicit)"
    )
    with pytest.raises(InferenceServerException) as info:
        triton.load_model("l1")
    assert (_status(info.value), info.value.message()) == (
        "StatusCode.FAILED_PRECONDITION",
        message,
    )
    base = f"http://{server.http_address}"
    assert error_of(call(f"{base}/v2/repository/models/l1/load", b"")) == (400, message)
    status, message = error_of(call(f"{base}/v2/repository/models/l1/unload", b""))
    assert status == 400 and message.startswith("Cannot unload models on this server")
    assert triton.is_model_ready("l1")
    triton.close()


def _wait_until(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the condition did not hold in time")
        time.sleep(0.05)


def test_poll_loads_new_entries_and_unloads_removed_ones(
    start: Callable[..., BackgroundServer], repo: Path
) -> None:
    server = start(model_control="poll", repository_poll_s=0.2)
    triton = tcg.InferenceServerClient(server.address)
    export_metric(registry.get("mse"), repo, None, FORMATS)
    _wait_until(lambda: "mse" in server.core.models)
    assert triton.is_model_ready("mse")
    preds = np.zeros((1, 4), np.float32)
    scores = _infer_grpc(triton, "mse", {"preds": preds, "target": preds + 3}).as_numpy("score")
    np.testing.assert_array_equal(scores, [9.0])  # (0 - 3)^2
    with pytest.raises(InferenceServerException) as info:
        triton.unload_model("mse")
    assert _status(info.value) == "StatusCode.FAILED_PRECONDITION"
    assert "polls its repository" in info.value.message()
    shutil.rmtree(repo / "giou")
    _wait_until(lambda: "giou" not in server.core.models)
    with pytest.raises(InferenceServerException) as info:
        triton.is_model_ready("giou")
    assert _status(info.value) == "StatusCode.NOT_FOUND"
    assert triton.is_model_ready("l1") and triton.is_model_ready("mse")
    triton.close()


def test_an_empty_repository_is_refused_only_without_model_control(tmp_path: Path) -> None:
    for mode in ("explicit", "poll"):
        check_repository(ServerConfig(tmp_path, model_control=mode), [], ["l1"])
    with pytest.raises(ValueError, match="holds no models"):
        check_repository(ServerConfig(tmp_path), [], ["l1"])
    with pytest.raises(ValueError, match="model_control"):
        ServerConfig(tmp_path, model_control="sometimes").validate()
