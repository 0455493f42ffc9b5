"""KServe v2 over HTTP/REST through real servers on ephemeral ports: tritonclient.http
against tritonclient.grpc (bitwise), plain urllib JSON, the binary-tensor extension, error
statuses and bodies, start-up, queue and internal failures, tokens, TLS and metrics."""

from __future__ import annotations

import json
import ssl
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as tcg
import tritonclient.http as tch
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2
from tritonclient.utils import InferenceServerException

from cvscore.exporters.repository import list_models
from cvscore.metrics import registry
from cvscore.server.app import BackgroundServer, ServerConfig
from cvscore.server.core import ScoringCore
from cvscore.v1 import scoring_pb2 as pb
from cvscore.v1 import scoring_pb2_grpc as pb_grpc

from .conftest import TOKENS, Events, decode, sample, score_request

KSERVE = {"float32": "FP32", "float64": "FP64", "int64": "INT64", "int32": "INT32", "bool": "BOOL"}
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def http(server: BackgroundServer) -> Iterator[tch.InferenceServerClient]:
    client = tch.InferenceServerClient(server.http_address, network_timeout=120.0)
    yield client
    client.close()


@pytest.fixture(scope="module")
def triton(server: BackgroundServer) -> Iterator[tcg.InferenceServerClient]:
    client = tcg.InferenceServerClient(server.address)
    yield client
    client.close()


def call(
    url: str,
    body: bytes | dict | None = None,
    headers: dict[str, str] | None = None,
    method: str | None = None,
    context: ssl.SSLContext | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One request with nothing but the standard library: status, headers, body."""
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    request = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=60, context=context) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def error_of(status_headers_body: tuple[int, dict[str, str], bytes]) -> tuple[int, str]:
    """An error answer's status and message; the body must be exactly {"error": str}."""
    status, headers, body = status_headers_body
    assert headers["Content-Type"].startswith("application/json"), headers
    doc = json.loads(body)
    assert list(doc) == ["error"] and isinstance(doc["error"], str), doc
    return status, doc["error"]


def _arrays(metric: str, seed: int, n: int) -> dict[str, np.ndarray]:
    spec = registry.get(metric)
    return {k: v.numpy() for k, v in spec.canonical(sample(metric, seed=seed, N=n)).items()}


def _inputs(module: Any, arrays: dict[str, np.ndarray], binary: bool | None = None) -> list:
    items = []
    for name, array in arrays.items():
        item = module.InferInput(name, list(array.shape), KSERVE[str(array.dtype)])
        if binary is None:
            item.set_data_from_numpy(array)
        else:
            item.set_data_from_numpy(array, binary_data=binary)
        items.append(item)
    return items


# -- the same numbers as gRPC ----------------------------------------------------------------
def test_tritonclient_http_equals_grpc_bitwise_for_every_metric(
    server: BackgroundServer,
    http: tch.InferenceServerClient,
    triton: tcg.InferenceServerClient,
    zoo_repo: Path,
) -> None:
    names = sorted(server.core.models)
    assert names == list_models(zoo_repo)  # every metric of the default zoo
    for i, name in enumerate(names):
        arrays = _arrays(name, seed=40 + i, n=3)
        outputs = server.core.models[name].signature.output_names()
        by_grpc = triton.infer(
            name, _inputs(tcg, arrays), outputs=[tcg.InferRequestedOutput(o) for o in outputs]
        )
        for binary in (True, False):  # the binary extension, and JSON both ways
            by_http = http.infer(
                name,
                _inputs(tch, arrays, binary),
                outputs=[tch.InferRequestedOutput(o, binary_data=binary) for o in outputs],
            )
            for o in outputs:
                a, b = by_http.as_numpy(o), by_grpc.as_numpy(o)
                assert (a.dtype, a.shape) == (b.dtype, b.shape), (name, o)
                assert a.tobytes() == b.tobytes(), (name, o, binary)
            response = by_http.get_response()
            assert (response["model_name"], response["model_version"]) == (name, "1")
            assert response["parameters"]["runtime"] == "onnx"


def test_health_metadata_config_and_index_match_grpc(
    http: tch.InferenceServerClient, triton: tcg.InferenceServerClient, zoo_repo: Path
) -> None:
    assert http.is_server_live() and http.is_server_ready()
    assert http.is_model_ready("giou") and http.is_model_ready("giou", "1")
    meta = http.get_server_metadata()
    grpc_meta = triton.get_server_metadata(as_json=True)
    # system shared memory is served over gRPC only
    assert "system_shared_memory" in grpc_meta["extensions"]
    grpc_meta["extensions"].remove("system_shared_memory")
    assert meta == grpc_meta
    assert "binary_tensor_data" in meta["extensions"] and "model_repository" in meta["extensions"]
    ours = http.get_model_metadata("cross_entropy")
    theirs = triton.get_model_metadata("cross_entropy", as_json=True)
    assert ours["inputs"] == [
        {"name": "preds", "datatype": "FP32", "shape": [-1, -1, -1]},
        {"name": "target", "datatype": "INT64", "shape": [-1, -1]},
    ]
    for key in ("inputs", "outputs"):  # gRPC's JSON quotes 64-bit integers
        assert ours[key] == [{**t, "shape": [int(d) for d in t["shape"]]} for t in theirs[key]]
    assert (ours["name"], ours["versions"], ours["platform"]) == (
        "cross_entropy",
        ["1"],
        "onnxruntime_onnx",
    )
    config = json_format.ParseDict(
        http.get_model_config("cross_entropy"), model_config_pb2.ModelConfig()
    )
    assert config == triton.get_model_config("cross_entropy").config
    index = http.get_model_repository_index()
    assert sorted(m["name"] for m in index) == list_models(zoo_repo)
    assert {(m["version"], m["state"]) for m in index} == {("1", "READY")}


# -- plain JSON, by hand -----------------------------------------------------------------------
def test_plain_urllib_json_scores_like_cvscore(
    server: BackgroundServer, stub: pb_grpc.ScoringStub
) -> None:
    preds = np.arange(12, dtype=np.float32).reshape(3, 4) / 7
    target = preds + 0.5
    body = {
        "id": "request-1",
        "inputs": [
            {"name": "preds", "shape": [3, 4], "datatype": "FP32", "data": preds.tolist()},
            {
                "name": "target",
                "shape": [3, 4],
                "datatype": "FP32",
                "data": target.ravel().tolist(),
            },
        ],
    }
    url = f"http://{server.http_address}/v2/models/l1/infer"
    status, headers, data = call(url, body, JSON)
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    doc = json.loads(data)
    assert (doc["id"], doc["model_name"], doc["model_version"]) == ("request-1", "l1", "1")
    ((out),) = doc["outputs"]
    assert (out["name"], out["datatype"], out["shape"]) == ("score", "FP32", [3])
    scores = np.array(out["data"], np.float32)
    ours = stub.Score(
        score_request("l1", {"preds": preds, "target": target}, reduction=pb.REDUCTION_NONE)
    )
    assert scores.tobytes() == decode(ours.outputs[0]).tobytes()
    np.testing.assert_allclose(scores, 0.5, rtol=1e-6)  # |p - (p + 0.5)| = 0.5 everywhere
    # a runtime parameter, and a versioned route
    body["parameters"] = {"runtime": "torchscript"}
    status, _, data = call(url.replace("/infer", "/versions/1/infer"), body, JSON)
    assert status == 200 and json.loads(data)["parameters"]["runtime"] == "torchscript"
    # integer and boolean data: cross_entropy takes INT64 class indices
    arrays = _arrays("cross_entropy", seed=5, n=2)
    inputs = [
        {"name": k, "shape": list(v.shape), "datatype": KSERVE[str(v.dtype)], "data": v.tolist()}
        for k, v in arrays.items()
    ]
    status, _, data = call(
        f"http://{server.http_address}/v2/models/cross_entropy/infer", {"inputs": inputs}, JSON
    )
    assert status == 200
    ours = stub.Score(score_request("cross_entropy", arrays, reduction=pb.REDUCTION_NONE))
    got = np.array(json.loads(data)["outputs"][0]["data"], np.float32)
    assert got.tobytes() == decode(ours.outputs[0]).tobytes()


def test_the_binary_tensor_extension(server: BackgroundServer, stub: pb_grpc.ScoringStub) -> None:
    arrays = _arrays("giou", seed=9, n=5)
    preds, target = arrays["preds"], arrays["target"]
    header = {
        "inputs": [  # one input in binary, one in JSON
            {
                "name": "preds",
                "shape": list(preds.shape),
                "datatype": "FP32",
                "parameters": {"binary_data_size": preds.nbytes},
            },
            {
                "name": "target",
                "shape": list(target.shape),
                "datatype": "FP32",
                "data": target.tolist(),
            },
        ],
        "outputs": [{"name": "score", "parameters": {"binary_data": True}}],
    }
    head = json.dumps(header).encode()
    url = f"http://{server.http_address}/v2/models/giou/infer"
    headers = {"Inference-Header-Content-Length": str(len(head))}
    status, answer, data = call(url, head + preds.tobytes(), headers)
    assert status == 200 and answer["Content-Type"] == "application/octet-stream"
    n = int(answer["Inference-Header-Content-Length"])
    ((out),) = json.loads(data[:n])["outputs"]
    assert out["parameters"] == {"binary_data_size": 5 * 4} and "data" not in out
    expected = decode(
        stub.Score(score_request("giou", arrays, reduction=pb.REDUCTION_NONE)).outputs[0]
    )
    assert data[n:] == expected.tobytes()
    # binary_data_output: every output binary when none is named
    del header["outputs"]
    header["parameters"] = {"binary_data_output": True}
    head = json.dumps(header).encode()
    headers = {"Inference-Header-Content-Length": str(len(head))}
    status, answer, data = call(url, head + preds.tobytes(), headers)
    n = int(answer["Inference-Header-Content-Length"])
    assert status == 200 and data[n:] == expected.tobytes()


def test_large_requests_score_the_same_both_ways(
    http: tch.InferenceServerClient, triton: tcg.InferenceServerClient
) -> None:
    """Bodies over 1 MiB are parsed and encoded off the event loop; the numbers agree."""
    gen = np.random.default_rng(11)
    arrays = {k: gen.standard_normal((64, 8192)).astype(np.float32) for k in ("preds", "target")}
    expected = triton.infer("l1", _inputs(tcg, arrays)).as_numpy("score")
    for binary in (True, False):  # 4 MiB of binary tensors; about 10 MB of JSON
        got = http.infer(
            "l1",
            _inputs(tch, arrays, binary),
            outputs=[tch.InferRequestedOutput("score", binary_data=binary)],
        ).as_numpy("score")
        assert got.tobytes() == expected.tobytes()
    np.testing.assert_allclose(expected, np.abs(arrays["preds"] - arrays["target"]).mean(1), 1e-5)


# -- errors -------------------------------------------------------------------------------------
def _giou_body(**changes: Any) -> dict:
    arrays = _arrays("giou", seed=3, n=2)
    inputs = [
        {"name": k, "shape": list(v.shape), "datatype": "FP32", "data": v.ravel().tolist()}
        for k, v in arrays.items()
    ]
    for i, change in changes.items():
        inputs[int(i[1:])].update(change)
    return {"inputs": inputs}


ERRORS = [  # path, body, headers, method -> status, message (or its start)
    ("/v2/models/nope", None, {}, None, 404, "Unknown metric `nope`; known metrics: "),
    ("/v2/models/giou/versions/7", None, {}, None, 404,
     "Model `giou` has no version '7'; versions: ['1']"),
    ("/v2/models/nope/infer", {"inputs": []}, JSON, None, 404, "Unknown metric `nope`"),
    ("/v2/models/giou/infer", b"{not json", JSON, None, 400,
     "Expected the inference request to be JSON: Expecting property name enclosed in double "
     "quotes at byte 1"),
    ("/v2/models/giou/infer", b'["inputs"]', JSON, None, 400,
     "Expected the inference request to be a JSON object, got a list"),
    ("/v2/models/giou/infer", _giou_body(i0={"data": ["a"] * 8}), JSON, None, 400,
     "Expected the data of `preds` (FP32) to be a list of numbers, got strings"),
    ("/v2/models/giou/infer", _giou_body(i0={"data": [[1.0] * 4, [1.0] * 3]}), JSON, None, 400,
     "Expected the data of `preds` (FP32) to be a list of numbers (nested lists of equal "
     "lengths)"),
    ("/v2/models/giou/infer", _giou_body(i0={"data": [0.5] * 7}), JSON, None, 400,
     "Expected `preds` to carry 8 values (shape [2, 4]), got 7"),
    ("/v2/models/giou/infer", _giou_body(i0={"datatype": "INT64", "data": [1.5] * 8}), JSON,
     None, 400, "Expected the data of `preds` (INT64) to be a list of integers, got fractions"),
    ("/v2/models/giou/infer", _giou_body(i0={"datatype": "INT32", "data": [2**40] * 8}), JSON,
     None, 400, "Expected the data of `preds` (INT32) to be a list of integers within "
     "[-2147483648, 2147483647], got values in [1099511627776, 1099511627776]"),
    ("/v2/models/giou/infer", _giou_body(i0={"datatype": "BF16"}), JSON, None, 400,
     "Expected `preds` to have a datatype in ['BOOL', 'FP16', 'FP32', 'FP64', 'INT32', "
     "'INT64', 'UINT8'], got 'BF16'"),
    ("/v2/models/giou/infer", _giou_body(i1={"name": "preds"}), JSON, None, 400,
     "Input `preds` appears more than once"),
    ("/v2/models/giou/infer", _giou_body(i0={"parameters": {"binary_data_size": 32}}), JSON,
     None, 400, "Input `preds` has binary data and JSON `data`; send one or the other"),
    ("/v2/models/giou/infer", json.dumps(_giou_body()).encode(),
     {"Inference-Header-Content-Length": "99999"}, None, 400,
     "Expected Inference-Header-Content-Length to be a byte count between 0 and the body's "
     "length ("),
    ("/v2/models/giou/infer", {**_giou_body(), "outputs": [{"name": "loss"}]}, JSON, None, 400,
     "Model `giou` has no output ['loss']; outputs: ['score']"),
    ("/v2/models/giou/infer", {**_giou_body(), "parameters": {"runtime": "torch_export"}}, JSON,
     None, 400, "Model `giou` has no `torch_export` runtime on this server; available: "
     "['onnx', 'torchscript']"),
    ("/v3/models", None, {}, None, 404, "No route GET /v3/models"),
    ("/v2/models/giou/infer", None, {}, "GET", 405, "405: Method Not Allowed"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("path", "body", "headers", "method", "status", "message"),
    ERRORS,
    ids=[f"{i}-{e[4]}" for i, e in enumerate(ERRORS)],
)
def test_error_statuses_and_bodies(
    server: BackgroundServer,
    path: str,
    body: Any,
    headers: dict,
    method: str | None,
    status: int,
    message: str,
) -> None:
    got_status, got = error_of(call(f"http://{server.http_address}{path}", body, headers, method))
    assert got_status == status
    assert got.startswith(message), got
    assert call(f"http://{server.http_address}/v2/models/l1/ready")[0] == 200  # still serving


def test_binary_lengths_must_add_up(server: BackgroundServer) -> None:
    preds = np.zeros((2, 4), np.float32)
    header = {
        "inputs": [
            {"name": n, "shape": [2, 4], "datatype": "FP32", "parameters": {"binary_data_size": 32}}
            for n in ("preds", "target")
        ]
    }
    head = json.dumps(header).encode()
    url = f"http://{server.http_address}/v2/models/giou/infer"
    headers = {"Inference-Header-Content-Length": str(len(head))}
    short = error_of(call(url, head + preds.tobytes(), headers))
    assert short == (
        400,
        "Expected 32 bytes of binary data for `target` after the JSON header, 0 left",
    )
    extra = error_of(call(url, head + preds.tobytes() * 2 + b"\0" * 4, headers))
    assert extra == (
        400,
        "Expected 64 bytes of binary data after the JSON header (the inputs' "
        "binary_data_size), got 68",
    )


def test_the_same_fault_has_the_same_message_as_grpc(
    server: BackgroundServer, http: tch.InferenceServerClient, triton: tcg.InferenceServerClient
) -> None:
    bad = {"preds": np.zeros((2, 4), np.float64), "target": np.zeros((2, 4), np.float32)}
    with pytest.raises(InferenceServerException) as by_grpc:
        triton.infer("giou", _inputs(tcg, bad))
    with pytest.raises(InferenceServerException) as by_http:
        http.infer("giou", _inputs(tch, bad))
    assert by_http.value.status() == "400"
    assert by_http.value.message() == by_grpc.value.message()
    assert "FP64" in by_grpc.value.message() or "float64" in by_grpc.value.message()


def test_too_large_full_queue_and_internal_errors(small_server, events: Events) -> None:
    server = small_server(http_port=0, max_message_mb=1, max_queue_size=1, max_queue_delay_us=0)
    base = f"http://{server.http_address}"
    big = b" " * (1 << 20) + b"{}"  # one MiB and a little
    status, message = error_of(call(f"{base}/v2/models/l1/infer", big, JSON))
    assert status == 413 and message.startswith("Maximum request body size 1048576 exceeded")
    # a full queue: 503 with Retry-After
    server.call(lambda: server.core.add_hook(events))
    server.call(server.core.pause)
    body = _giou_body()
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(call, f"{base}/v2/models/giou/infer", body, JSON)
        events.wait_for(1, "queued")
        status, headers, data = call(f"{base}/v2/models/giou/infer", body, JSON)
        assert (status, headers["Retry-After"]) == (503, "1")
        assert json.loads(data) == {
            "error": "The queue of `giou/onnx` is full (1 requests waiting); retry later"
        }
        server.call(server.core.resume)
        assert waiting.result()[0] == 200

    # anything unexpected: 500 with an incident id and nothing else
    def broken(inputs: Any) -> Any:
        raise RuntimeError("secret detail: /srv/models/giou is corrupt")

    batcher = server.core.models["giou"].batchers["onnx"]
    batcher._run_fn = batcher._run_inline = broken  # large runs and runs on the loop
    status, message = error_of(call(f"{base}/v2/models/giou/infer", body, JSON))
    assert status == 500
    assert message.startswith("Internal error (incident ") and "secret" not in message
    assert call(f"{base}/v2/models/l1/ready")[0] == 200


class HeldCore(ScoringCore):
    """A core whose loading waits for ``release``: the server is listening, not ready."""

    release = threading.Event()

    def load(self, *args: Any, **kwargs: Any) -> None:
        assert self.release.wait(60)
        super().load(*args, **kwargs)


def test_not_ready_while_loading_is_503(small_repo: Path) -> None:
    config = ServerConfig(small_repo, port=0, http_port=0, runtime="onnx", models=("l1",))
    core = HeldCore(config.repository, config.core_options(), config.models)
    running = BackgroundServer(config, core).start(wait=False)
    try:
        base = f"http://{running.http_address}"
        assert call(f"{base}/v2/health/live")[0] == 200
        assert error_of(call(f"{base}/v2/health/ready")) == (
            503,
            "The server is not ready: loading models or shutting down",
        )
        assert error_of(call(f"{base}/v2/models/l1/infer", _giou_body(), JSON)) == (
            503,
            "Model `l1` is still loading",
        )
        HeldCore.release.set()
        running.wait_ready()
        assert call(f"{base}/v2/health/ready")[0] == 200
    finally:
        HeldCore.release.set()
        running.stop()


# -- tokens, TLS, metrics ---------------------------------------------------------------------------
def test_bearer_tokens_guard_everything_but_health(tiny_repo: Path, tokens_file: Path) -> None:
    config = ServerConfig(tiny_repo, port=0, http_port=0, auth_tokens_file=tokens_file)
    with BackgroundServer(config) as running:
        base = f"http://{running.http_address}"
        assert call(f"{base}/v2/health/live")[0] == 200
        assert call(f"{base}/v2/health/ready")[0] == 200
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKENS[0]}):
            status, answer, data = call(f"{base}/v2/models/l1", None, headers)
            assert (status, answer["WWW-Authenticate"]) == (401, "Bearer")
            assert json.loads(data) == {
                "error": "Missing or invalid credentials: send `Authorization: Bearer <token>`"
            }
        for token in TOKENS:
            assert (
                call(f"{base}/v2/models/l1", None, {"Authorization": f"Bearer {token}"})[0] == 200
            )
        client = tch.InferenceServerClient(running.http_address)
        arrays = {"preds": np.ones((2, 3), np.float32), "target": np.zeros((2, 3), np.float32)}
        with pytest.raises(InferenceServerException) as info:
            client.infer("l1", _inputs(tch, arrays))
        assert info.value.status() == "401"
        result = client.infer(
            "l1", _inputs(tch, arrays), headers={"Authorization": f"Bearer {TOKENS[1]}"}
        )
        np.testing.assert_array_equal(result.as_numpy("score"), [1.0, 1.0])  # |1 - 0| = 1
        client.close()


def test_tls_and_mutual_tls(tiny_repo: Path, pki: dict[str, str]) -> None:
    trusting = ssl.create_default_context(cafile=pki["ca.pem"])
    config = ServerConfig(
        tiny_repo,
        port=0,
        http_port=0,
        tls_cert=Path(pki["server.pem"]),
        tls_key=Path(pki["server.key"]),
        tls_client_ca=Path(pki["ca.pem"]),
    )
    with BackgroundServer(config) as running:
        url = f"https://{running.http_address}/v2/health/ready"
        refused = (urllib.error.URLError, ssl.SSLError, ConnectionError)
        with pytest.raises(refused):  # no client certificate
            call(url, context=trusting)
        with pytest.raises(refused):  # a client from another CA
            rogue = ssl.create_default_context(cafile=pki["ca.pem"])
            rogue.load_cert_chain(pki["rogue.pem"], pki["rogue.key"])
            call(url, context=rogue)
        with pytest.raises(refused):  # plaintext
            call(url.replace("https", "http"))
        trusting.load_cert_chain(pki["client.pem"], pki["client.key"])
        assert call(url, context=trusting)[0] == 200
        untrusted = ssl.create_default_context()  # system roots only
        with pytest.raises(refused):
            call(url, context=untrusted)


def test_http_calls_are_counted_and_carry_request_ids(tiny_repo: Path) -> None:
    config = ServerConfig(tiny_repo, port=0, http_port=0, metrics_port=0)
    with BackgroundServer(config) as running:
        assert running.server is not None
        base = f"http://{running.http_address}"
        body = {
            "inputs": [
                {"name": n, "shape": [1, 2], "datatype": "FP32", "data": [1.0, 2.0]}
                for n in ("preds", "target")
            ]
        }
        status, headers, _ = call(f"{base}/v2/models/l1/infer", body, {"x-request-id": "abc-1"})
        assert (status, headers["x-request-id"]) == (200, "abc-1")
        status, headers, _ = call(f"{base}/v2/models/nope/infer", body)
        assert status == 404 and len(headers["x-request-id"]) == 32  # one the server made
        metrics = urllib.request.urlopen(
            f"http://127.0.0.1:{running.server.metrics_port}/metrics", timeout=30
        ).read()
        lines = set(metrics.decode().splitlines())
        assert (
            'cvscore_requests_total{code="OK",method="http/ModelInfer",metric="l1",'
            'runtime="onnx"} 1.0'
        ) in lines
        assert (
            'cvscore_requests_total{code="NOT_FOUND",method="http/ModelInfer",'
            'metric="unknown",runtime="auto"} 1.0'
        ) in lines
        assert any(
            line.startswith('cvscore_queue_duration_seconds_count{metric="l1"') for line in lines
        )


def test_cli_flags_reach_the_server_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import cvscore.server.app as app
    import cvscore.server.logs as server_logs
    from cvscore.cli.main import main as cli_main

    seen: list[ServerConfig] = []
    monkeypatch.setattr(app, "main", lambda config, progress=True: seen.append(config) or 0)
    monkeypatch.setattr(server_logs, "configure_logging", lambda level, fmt: None)
    argv = ["serve", "--repository", str(tmp_path), "--http-port", "8000",
            "--model-control", "poll", "--repository-poll-secs", "2.5"]  # fmt: skip
    assert cli_main(argv) == 0
    (config,) = seen
    assert (config.http_port, config.model_control, config.repository_poll_s) == (8000, "poll", 2.5)
    assert cli_main(["serve", "--repository", str(tmp_path)]) == 0
    assert (seen[1].http_port, seen[1].model_control) == (None, "none")  # off by default
