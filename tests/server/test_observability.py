"""Observability through a real server: the Prometheus endpoint, request ids, JSON logs."""

from __future__ import annotations

import json
import logging
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from cvscore.cli.main import build_parser
from cvscore.client import Client, CvscoreError
from cvscore.server import logs
from cvscore.server.app import BackgroundServer, ServerConfig
from cvscore.v1 import scoring_pb2_grpc as pb_grpc

from .conftest import rpc_error, score_request

PREDS = np.arange(12, dtype=np.float32).reshape(3, 4)
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
def observed(tiny_repo: Path) -> Iterator[BackgroundServer]:
    config = ServerConfig(tiny_repo, port=0, runtime="onnx,torchscript", metrics_port=0)
    running = BackgroundServer(config).start()
    yield running
    running.stop()


def scrape(server: BackgroundServer) -> Samples:
    assert server.server is not None and server.server.metrics_port
    url = f"http://127.0.0.1:{server.server.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_metrics_count_requests_by_metric_runtime_and_code(observed: BackgroundServer) -> None:
    before = scrape(observed)
    ok = {"method": "Score", "metric": "l1", "runtime": "onnx", "code": "OK"}
    with Client(observed.address, timeout=30, retries=0) as client:
        for _ in range(3):
            client.score("l1", preds=PREDS, target=PREDS + 1)
        client.score("l1", preds=PREDS, target=PREDS, runtime="torchscript")
        with pytest.raises(CvscoreError):
            client.score("no-such-metric", preds=PREDS, target=PREDS)
        with pytest.raises(CvscoreError):
            client.score("l1", preds=PREDS, target=PREDS[:2])  # INVALID_ARGUMENT
    after = scrape(observed)
    total = "cvscore_requests_total"
    assert value(after, total, **ok) - value(before, total, **ok) == 3
    script = {**ok, "runtime": "torchscript"}
    assert value(after, total, **script) - value(before, total, **script) == 1
    # an unknown name is counted, but never becomes a label value of its own
    missing = {"method": "Score", "metric": "unknown", "runtime": "auto", "code": "NOT_FOUND"}
    assert value(after, total, **missing) - value(before, total, **missing) == 1
    assert not any(("metric", "no-such-metric") in labels for _, labels in after)
    bad = {**ok, "code": "INVALID_ARGUMENT"}
    assert value(after, total, **bad) - value(before, total, **bad) == 1

    latency = "cvscore_request_duration_seconds_count"
    assert (
        value(after, latency, method="Score", metric="l1")
        - value(before, latency, method="Score", metric="l1")
        == 5
    )
    queue = "cvscore_queue_duration_seconds_count"
    assert (
        value(after, queue, metric="l1", runtime="onnx")
        - value(before, queue, metric="l1", runtime="onnx")
        == 3
    )
    # the histogram's sum series is exported for the metric and runtime that were queued
    queue_sum = (
        "cvscore_queue_duration_seconds_sum",
        frozenset({("metric", "l1"), ("runtime", "onnx")}),
    )
    assert queue_sum in after
    runs = value(after, "cvscore_batch_size_count", metric="l1", runtime="onnx") - value(
        before, "cvscore_batch_size_count", metric="l1", runtime="onnx"
    )
    assert 1 <= runs <= 3  # one run per request, or fewer when they shared one
    rows = value(after, "cvscore_batch_size_sum", metric="l1", runtime="onnx") - value(
        before, "cvscore_batch_size_sum", metric="l1", runtime="onnx"
    )
    assert rows == 9  # 3 rows each, no padding
    assert value(after, "cvscore_inflight_requests", method="Score") == 0
    assert ("cvscore_inflight_requests", frozenset({("method", "Score")})) in after


@pytest.mark.cuda
def test_metrics_gpu_memory_gauge_only_with_a_gpu(observed: BackgroundServer) -> None:
    import torch

    names = {name for name, _ in scrape(observed)}
    assert ("cvscore_gpu_memory_allocated_bytes" in names) == torch.cuda.is_available()


def test_metrics_are_off_unless_asked_for(tiny_repo: Path) -> None:
    running = BackgroundServer(ServerConfig(tiny_repo, port=0, runtime="onnx")).start()
    try:
        assert running.server is not None
        assert running.server.telemetry is None and running.server.metrics_port == 0
    finally:
        running.stop()


def test_request_id_is_echoed_and_logged(
    observed: BackgroundServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="cvscore.access")
    request = score_request("l1", {"preds": PREDS, "target": PREDS})
    with grpc.insecure_channel(observed.address) as channel:
        stub = pb_grpc.ScoringStub(channel)
        _, call = stub.Score.with_call(
            request, metadata=[("x-request-id", "job-42.batch-7")], timeout=30
        )
        assert ("x-request-id", "job-42.batch-7") in call.trailing_metadata()
        # none given (or one that is not a plain token): the server makes one
        for metadata in (
            [],
            [("x-request-id", "bad id with spaces")],
            [("x-request-id", "a" * 200)],
        ):
            _, call = stub.Score.with_call(request, metadata=metadata, timeout=30)
            made = dict(call.trailing_metadata())["x-request-id"]
            assert re.fullmatch(r"[0-9a-f]{32}", made)
        # errors carry it too
        missing = score_request("nope", {"preds": PREDS})
        error = rpc_error(
            lambda: stub.Score(missing, metadata=[("x-request-id", "req-err")], timeout=30)
        )
        assert error.code() == grpc.StatusCode.NOT_FOUND
        assert ("x-request-id", "req-err") in error.trailing_metadata()
    with Client(observed.address, request_id="from-client-1", timeout=30) as client:
        client.score("l1", preds=PREDS, target=PREDS)
        client.request_id = "from-client-2"
        client.score("giou", preds=np.array([[0, 0, 1, 1]], np.float32), target=np.ones((1, 4)))
    access = [r for r in caplog.records if r.name == "cvscore.access"]
    by_id = {getattr(r, "request_id", ""): r for r in access}
    assert {"job-42.batch-7", "req-err", "from-client-1", "from-client-2"} <= set(by_id)
    assert by_id["req-err"].code == "NOT_FOUND"
    assert by_id["req-err"].levelno == logging.INFO  # errors at INFO, successes at DEBUG
    assert by_id["from-client-1"].levelno == logging.DEBUG
    assert by_id["from-client-1"].metric == "l1"
    assert by_id["from-client-1"].runtime == "onnx"
    assert by_id["from-client-2"].metric == "giou"


def test_json_log_lines_carry_the_request_id() -> None:
    formatter = logs.JsonFormatter()
    filt = logs.RequestIdFilter()
    token = logs.request_id.set("abc-123")
    try:
        record = logging.LogRecord(
            "cvscore.access", logging.INFO, __file__, 1, "%s done", ("x",), None
        )
        record.code = "OK"
        filt.filter(record)
    finally:
        logs.request_id.reset(token)
    doc = json.loads(formatter.format(record))
    assert doc["message"] == "x done"
    assert doc["request_id"] == "abc-123"
    assert doc["code"] == "OK" and doc["level"] == "INFO" and doc["logger"] == "cvscore.access"
    assert "request_tag" not in doc
    args = build_parser().parse_args(["serve", "--log-format", "json", "--metrics-port", "0"])
    assert args.log_format == "json" and args.metrics_port == 0
    with pytest.raises(ValueError, match="log_format"):
        logs.configure_logging("info", "xml")


def test_kserve_calls_are_counted_too(observed: BackgroundServer) -> None:
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    before = scrape(observed)
    with grpc.insecure_channel(observed.address) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        stub.ModelMetadata(service_pb2.ModelMetadataRequest(name="giou"), timeout=30)
    after = scrape(observed)
    labels = {"method": "ModelMetadata", "metric": "giou", "runtime": "onnx", "code": "OK"}
    total = "cvscore_requests_total"
    assert value(after, total, **labels) - value(before, total, **labels) == 1
