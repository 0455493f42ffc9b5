"""A server that no request can hurt (issue 10): each finding on a real server, its status
code and message, and a good request still scored correctly afterwards."""

from __future__ import annotations

import logging
import shutil
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch
from tritonclient.grpc import service_pb2, service_pb2_grpc

from cvscore.metrics import registry
from cvscore.server.app import BackgroundServer, ServerConfig
from cvscore.server.runtimes import RUNTIMES
from cvscore.v1 import scoring_pb2 as pb
from cvscore.v1 import scoring_pb2_grpc as pb_grpc

from .conftest import Events, assert_serving, decode, rpc_error, sample, score_request, tensor

MAX_MESSAGE_BYTES = 1024  # the bar for a status message
HUGE = [0, 2**31 - 1, 2**31 - 1, 2**31 - 1]  # no element, but numpy cannot hold the shape
LONG = "m" * 10_000
A = np.arange(12, dtype=np.float32).reshape(3, 4)


def _raw(name: str, shape: list[int], data: bytes = b"") -> pb.Tensor:
    return pb.Tensor(name=name, dtype=pb.DATA_TYPE_FLOAT32, shape=shape, data=data)


def _infer(model: str, *inputs: tuple[str, np.ndarray], **fields) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name=model, **fields)
    for name, array in inputs:
        datatype = {"float32": "FP32", "float64": "FP64", "int64": "INT64"}[str(array.dtype)]
        request.inputs.add(name=name, datatype=datatype, shape=list(array.shape))
        request.raw_input_contents.append(array.tobytes())
    return request


def assert_kserve_serving(kserve: service_pb2_grpc.GRPCInferenceServiceStub) -> None:
    response = kserve.ModelInfer(_infer("l1", ("preds", A), ("target", A + 1)), timeout=30)
    scores = np.frombuffer(response.raw_output_contents[0], np.float32)
    np.testing.assert_array_equal(scores, np.ones(3, np.float32))


@pytest.fixture(scope="module")
def kserve(server: BackgroundServer):
    with grpc.insecure_channel(server.address) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


# -- 1. declared shapes -----------------------------------------------------------------------
def test_an_oversized_declared_shape_is_invalid_argument_on_every_api(
    stub: pb_grpc.ScoringStub, kserve
) -> None:
    shown = "got shape [0, 2147483647, 2147483647, 2147483647]"
    request = pb.ScoreRequest(metric="l1", inputs=[_raw("preds", HUGE), _raw("target", HUGE)])
    error = rpc_error(lambda: stub.Score(request, timeout=30))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "`preds`" in error.details() and shown in error.details()

    infer = service_pb2.ModelInferRequest(model_name="l1")
    for name in ("preds", "target"):
        infer.inputs.add(name=name, datatype="FP32", shape=HUGE)
        infer.raw_input_contents.append(b"")
    error = rpc_error(lambda: kserve.ModelInfer(infer, timeout=30))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "`preds`" in error.details() and shown in error.details()

    batch = pb.EvaluateRequest(metric="l1", inputs=request.inputs)
    error = rpc_error(lambda: stub.Evaluate(iter([batch]), timeout=30))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith("Batch 0: ") and shown in error.details()
    assert_serving(stub)
    assert_kserve_serving(kserve)


def test_a_byte_length_mismatch_names_the_input_on_kserve(kserve) -> None:
    infer = _infer("l1", ("preds", A), ("target", A))
    infer.raw_input_contents[1] = A.tobytes()[:-3]
    error = rpc_error(lambda: kserve.ModelInfer(infer, timeout=30))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == (
        "Expected `target` to carry 48 bytes (shape [3, 4] x 4 bytes of float32), got 45"
    )
    assert_kserve_serving(kserve)


# -- 2. the work budget -----------------------------------------------------------------------
def _coco(n: int, g: int) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in sample("coco_map", seed=3, N=n, G=g).items()}


def test_a_small_request_with_a_huge_graph_is_refused_before_it_runs(
    server: BackgroundServer, stub: pb_grpc.ScoringStub, events: Events
) -> None:
    server.core.add_hook(events)
    big = score_request("coco_map", _coco(8000, 8000), reduction=pb.REDUCTION_NONE)
    assert big.ByteSize() < 1 << 20  # under a megabyte on the wire, an 8000 x 8000 IoU matrix
    error = rpc_error(lambda: stub.Score(big, timeout=60))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error.details().startswith("Scoring `coco_map` with N=8000, G=8000 needs about ")
    assert "over this server's limit of 1,024 MiB (--max-work-mb)" in error.details()
    stream = pb.EvaluateRequest(metric="coco_map", inputs=big.inputs)
    error = rpc_error(lambda: stub.Evaluate(iter([stream]), timeout=60))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error.details().startswith("Batch 0: Scoring `coco_map` with N=8000")
    assert events.count("queued") == 0  # refused before anything was queued or computed

    small = _coco(5, 3)
    response = stub.Score(score_request("coco_map", small, reduction=pb.REDUCTION_NONE))
    spec = registry.get("coco_map")
    eager = spec.build()(**{k: torch.from_numpy(v) for k, v in small.items()}).numpy()
    np.testing.assert_allclose(decode(response.outputs[0]), eager, rtol=1e-12)


def test_the_request_and_work_limits_are_configurable(small_server) -> None:
    server = small_server(max_request_mb=1, max_work_mb=16)
    big = np.random.default_rng(0).random((2, 128, 1024), np.float32)  # 1 MiB per input
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.ScoringStub(channel)
        error = rpc_error(lambda: stub.Score(score_request("l1", {"preds": big, "target": big})))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error.details() == (
            "The inputs of `l1` take 2.0 MiB, over this server's limit of 1.0 MiB "
            "(--max-request-mb); split the request into smaller batches"
        )
        # 256 KiB of inputs, but the graph broadcasts them into an N x K x D array
        rng = np.random.default_rng(1)
        preds, centres = rng.random((512, 64), np.float32), rng.random((512, 64), np.float32)
        wide = score_request("centre_distance", {"preds": preds, "centres": centres})
        error = rpc_error(lambda: stub.Score(wide))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error.details().startswith(
            "Scoring `centre_distance` with N=512, D=64, K=512 needs about "
        )
        assert "over this server's limit of 16 MiB (--max-work-mb)" in error.details()
        ok = score_request(
            "centre_distance",
            {"preds": preds[:2], "centres": preds[:2]},
            reduction=pb.REDUCTION_NONE,
        )
        distance = decode(stub.Score(ok).outputs[0])
        expected = ((preds[:2, None] - preds[None, :2]) ** 2).sum(-1)
        np.testing.assert_allclose(distance, expected, rtol=1e-5)
        assert_serving(stub)


# -- 3. metric labels -------------------------------------------------------------------------
def test_prometheus_labels_come_from_a_closed_set(small_server) -> None:
    server = small_server(metrics_port=0)
    with grpc.insecure_channel(server.address) as channel:
        kserve = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        for i in range(12):
            request = _infer("l1", ("preds", A), ("target", A))
            request.parameters["runtime"].string_param = f"runtime-{i}"
            error = rpc_error(lambda r=request: kserve.ModelInfer(r, timeout=30))
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert error.details().endswith(f"got 'runtime-{i}'")
        assert_kserve_serving(kserve)
    port = server.server.metrics_port
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    runtimes = {
        line.split('runtime="')[1].split('"')[0]
        for line in text.splitlines()
        if line.startswith("cvscore_requests_total{")
    }
    assert "other" in runtimes and runtimes <= {*RUNTIMES, "auto", "other"}


# -- 4. echoed strings ------------------------------------------------------------------------
def test_long_client_strings_are_cut_in_status_messages(stub: pb_grpc.ScoringStub, kserve) -> None:
    cases = [
        (lambda: stub.Score(score_request(LONG, {"preds": A}), timeout=30), "NOT_FOUND"),
        (lambda: stub.Score(score_request("l1", {LONG: A, "target": A}), timeout=30), "INVALID"),
        (lambda: kserve.ModelInfer(_infer(LONG, ("preds", A)), timeout=30), "NOT_FOUND"),
        (
            lambda: kserve.ModelInfer(_infer("l1", ("preds", A), model_version=LONG), timeout=30),
            "NOT_FOUND",
        ),
        (
            lambda: kserve.ModelInfer(
                _infer("l1", ("preds", A), ("target", A), outputs=[{"name": LONG}]), timeout=30
            ),
            "INVALID",
        ),
    ]
    for call, code in cases:
        error = rpc_error(call)
        assert error.code().name.startswith(code), (error.code(), error.details()[:200])
        assert len(error.details().encode()) <= MAX_MESSAGE_BYTES
        assert "m" * 64 + "... (10000 chars)" in error.details()
    assert_serving(stub)
    assert_kserve_serving(kserve)


# -- 5. undecodable protobuf ------------------------------------------------------------------
GARBAGE = b"\xff\xff\xff\xff"


def test_undecodable_messages_are_invalid_argument_with_one_log_line(
    small_server, caplog: pytest.LogCaptureFixture
) -> None:
    server = small_server()
    methods = {
        "/cvscore.v1.Scoring/Score": "cvscore.v1.ScoreRequest",
        "/cvscore.v1.Scoring/ListMetrics": "cvscore.v1.ListMetricsRequest",
        "/inference.GRPCInferenceService/ModelInfer": "inference.ModelInferRequest",
        "/inference.GRPCInferenceService/ServerLive": "inference.ServerLiveRequest",
        "/grpc.health.v1.Health/Check": "grpc.health.v1.HealthCheckRequest",
    }
    with grpc.insecure_channel(server.address) as channel, caplog.at_level(logging.INFO):
        for _ in range(5):
            for method, type_name in methods.items():
                error = rpc_error(lambda m=method: channel.unary_unary(m)(GARBAGE, timeout=10))
                assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert error.details().startswith(
                    f"Cannot decode 4 bytes as a `{type_name}` message (DecodeError)"
                )
        evaluate = channel.stream_unary("/cvscore.v1.Scoring/Evaluate")
        first = pb.EvaluateRequest(metric="l1", inputs=[tensor("preds", A), tensor("target", A)])
        error = rpc_error(lambda: evaluate(iter([first.SerializeToString(), GARBAGE]), timeout=10))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error.details().startswith(
            "Message 1 of the stream: Cannot decode 4 bytes as a `cvscore.v1.EvaluateRequest`"
        )
        assert_serving(pb_grpc.ScoringStub(channel))
    warnings = [r for r in caplog.records if r.name == "cvscore.server.wire"]
    assert len(warnings) == 1 and "Cannot decode" in warnings[0].getMessage()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


# -- 6. one bad repository entry --------------------------------------------------------------
def test_bad_repository_entries_are_reported_and_the_others_serve(
    small_repo: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    repo = tmp_path / "repo"
    for name in ("l1", "cross_entropy"):
        shutil.copytree(small_repo / name, repo / name)
    shutil.copytree(small_repo / "giou", repo / "giou copy")
    manifest = repo / "cross_entropy" / "manifest.json"
    manifest.write_bytes(manifest.read_bytes()[:100])  # truncated
    with (
        caplog.at_level(logging.ERROR, logger="cvscore.server.core"),
        BackgroundServer(ServerConfig(repo, port=0, runtime="onnx")) as server,
        grpc.insecure_channel(server.address) as channel,
    ):
        stub = pb_grpc.ScoringStub(channel)
        assert_serving(stub)
        error = rpc_error(lambda: stub.Score(score_request("cross_entropy", {"preds": A})))
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert error.details().startswith("Model `cross_entropy` could not be loaded")
        kserve = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        ready = service_pb2.ModelReadyRequest(name="cross_entropy")
        assert kserve.ModelReady(ready, timeout=10).ready is False
        index = kserve.RepositoryIndex(service_pb2.RepositoryIndexRequest(), timeout=10)
        states = {m.name: (m.state, m.reason) for m in index.models}
    assert states["l1"] == ("READY", "")
    assert states["cross_entropy"][0] == "UNAVAILABLE"
    assert states["cross_entropy"][1].startswith("its manifest.json is not valid JSON")
    assert states["giou copy"][0] == "UNAVAILABLE"
    assert "Expected a model name of letters" in states["giou copy"][1]
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "model cross_entropy: cannot serve it" in logged
    assert "model giou copy: cannot serve it" in logged


# -- 7. log injection -------------------------------------------------------------------------
def test_control_characters_in_names_are_escaped_in_the_access_log(
    small_server, caplog: pytest.LogCaptureFixture
) -> None:
    server = small_server()
    forged = "giou\n2026-01-01 00:00:00 INFO cvscore.access: Score giou OK 0.1 ms"
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.ScoringStub(channel)
        with caplog.at_level(logging.INFO, logger="cvscore.access"):
            error = rpc_error(lambda: stub.Score(score_request(forged, {"preds": A}), timeout=10))
        assert error.code() == grpc.StatusCode.NOT_FOUND
        assert_serving(stub)
    (line,) = [r.getMessage() for r in caplog.records if "NOT_FOUND" in r.getMessage()]
    assert "\n" not in line and line.startswith("Score giou\\n2026-01-01")


# -- 8. KServe strictness ---------------------------------------------------------------------
def test_kserve_refuses_data_in_two_places_and_other_float_dtypes(kserve) -> None:
    both = _infer("l1", ("preds", A), ("target", A))
    both.inputs[0].contents.fp32_contents.extend(A.ravel().tolist())
    error = rpc_error(lambda: kserve.ModelInfer(both, timeout=30))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == (
        "Input `preds` has data in raw_input_contents and in contents (fp32_contents); "
        "send one or the other"
    )
    fp64 = _infer("l1", ("preds", A.astype(np.float64)), ("target", A))
    error = rpc_error(lambda: kserve.ModelInfer(fp64, timeout=30))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == (
        "Expected `preds` to have dtype float32, got float64 "
        "(this API does not convert between dtypes)"
    )
    assert_kserve_serving(kserve)


def test_the_cvscore_api_still_casts_between_floats(stub: pb_grpc.ScoringStub) -> None:
    request = score_request("l1", {"preds": A.astype(np.float64), "target": A + 3})
    np.testing.assert_array_equal(decode(stub.Score(request, timeout=30).outputs[0]), [3.0] * 3)


# -- 10. shutting down ------------------------------------------------------------------------
def test_calls_racing_a_shutdown_end_unavailable_never_cancelled(small_repo: Path) -> None:
    """grpc resets (CANCELLED) calls it received but had not handed to the server when it
    stops; the cvscore client, which never cancels a call itself, sends those again."""
    import threading

    from cvscore.client import Client, CvscoreError

    seen: list[str] = []
    ok = 0
    for _ in range(3):
        server = BackgroundServer(ServerConfig(small_repo, port=0, runtime="onnx", models=("l1",)))
        server.start()
        stop = threading.Event()

        def hammer(address: str = server.address, stop: threading.Event = stop) -> None:
            nonlocal ok
            with Client(address, timeout=10, retries=3, backoff_s=0.01) as client:
                while not stop.is_set():
                    try:
                        result = client.score("l1", preds=A, target=A + 1, reduction="none")
                        assert result.scores.tolist() == [1.0] * 3
                        ok += 1
                    except CvscoreError as exc:
                        seen.append(exc.code.name)

        threads = [threading.Thread(target=hammer) for _ in range(8)]
        for t in threads:
            t.start()
        while ok < 50:
            threading.Event().wait(0.01)
        server.stop()
        stop.set()
        for t in threads:
            t.join(30)
    assert seen and set(seen) == {"UNAVAILABLE"}
