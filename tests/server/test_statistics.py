"""ModelStatistics (gRPC and HTTP) through tritonclient, and the Prometheus counters beside it.

The expected counts are the requests this test sends; tritonclient's own message classes
and JSON parsing read the answers, so a field with a wrong name or number shows up here.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as tc
import tritonclient.http as th
from tritonclient.utils import InferenceServerException

from cvscore.client import Client
from cvscore.server.app import BackgroundServer, ServerConfig

from .test_observability import scrape, value

PHASES = ("queue", "compute_input", "compute_infer", "compute_output")


@pytest.fixture(scope="module")
def counted(tiny_repo: Path) -> Iterator[BackgroundServer]:
    config = ServerConfig(tiny_repo, port=0, http_port=0, metrics_port=0, runtime="onnx")
    running = BackgroundServer(config).start()
    yield running
    running.stop()


def _inputs(rows: int, dtype: str = "FP32", cols: int = 3) -> list[tc.InferInput]:
    rng = np.random.default_rng(rows)
    items = []
    for name in ("preds", "target"):
        array = rng.normal(size=(rows, cols)).astype(np.float64 if dtype == "FP64" else np.float32)
        item = tc.InferInput(name, list(array.shape), dtype)
        item.set_data_from_numpy(array)
        items.append(item)
    return items


def _grpc_stats(client: tc.InferenceServerClient, name: str) -> object:
    (stats,) = client.get_inference_statistics(name).model_stats
    return stats


def test_counts_durations_and_batches_match_what_was_sent(counted: BackgroundServer) -> None:
    rows = [1, 2, 3, 5, 8]
    before_ms = int(time.time() * 1000)
    with tc.InferenceServerClient(counted.address) as client:
        for n in rows:
            client.infer("l1", _inputs(n))
        failures = [
            _inputs(2, "FP64"),  # the artifact takes FP32; KServe inputs are never cast
            _inputs(2)[:1],  # target missing
            [_inputs(2)[0], _inputs(3)[1]],  # 2 rows against 3
        ]
        for bad in failures:
            with pytest.raises(InferenceServerException, match="INVALID_ARGUMENT"):
                client.infer("l1", bad)
        stats = _grpc_stats(client, "l1")
    after_ms = int(time.time() * 1000)
    s = stats.inference_stats
    assert (stats.name, stats.version) == ("l1", "1")
    assert s.success.count == len(rows) and s.fail.count == len(failures)
    assert stats.inference_count == sum(rows)
    assert stats.execution_count == len(rows)  # one request at a time: one run each
    assert before_ms <= stats.last_inference <= after_ms
    for phase in PHASES:
        assert getattr(s, phase).count == len(rows), phase
        assert getattr(s, phase).ns > 0, phase
    assert s.success.ns > 0 and s.fail.ns > 0
    # the phases are disjoint parts of each request's time
    assert sum(getattr(s, phase).ns for phase in PHASES) <= s.success.ns
    batches = {b.batch_size: b for b in stats.batch_stats}
    assert sorted(batches) == rows and {b.compute_infer.count for b in batches.values()} == {1}
    for b in batches.values():
        assert b.compute_input.ns > 0 and b.compute_infer.ns > 0 and b.compute_output.ns > 0


def test_concurrent_requests_share_runs_and_still_add_up(counted: BackgroundServer) -> None:
    with tc.InferenceServerClient(counted.address) as client:
        start = _grpc_stats(client, "giou")
        boxes = np.array([[0, 0, 2, 2], [1, 1, 3, 4]], np.float32)
        items = []
        for name in ("preds", "target"):
            item = tc.InferInput(name, [2, 4], "FP32")
            item.set_data_from_numpy(boxes)
            items.append(item)
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda _: client.infer("giou", items), range(32)))
        with Client(counted.address, timeout=30, retries=0) as ours:  # cvscore.v1 counts too
            ours.score("giou", preds=boxes, target=boxes)
        end = _grpc_stats(client, "giou")
    assert end.inference_stats.success.count - start.inference_stats.success.count == 33
    assert end.inference_count - start.inference_count == 66
    runs = end.execution_count - start.execution_count
    assert 1 <= runs <= 33
    assert sum(b.compute_infer.count for b in end.batch_stats) == end.execution_count
    assert sum(b.batch_size * b.compute_infer.count for b in end.batch_stats) == (
        end.inference_count
    )


def test_every_model_unknown_names_and_the_http_form(counted: BackgroundServer) -> None:
    with tc.InferenceServerClient(counted.address) as client:
        client.infer("l1", _inputs(4))
        every = client.get_inference_statistics("")  # empty name: every loaded model
        assert sorted(m.name for m in every.model_stats) == ["giou", "l1"]
        for name, version in (("nope", ""), ("l1", "7")):
            with pytest.raises(InferenceServerException, match="NOT_FOUND") as caught:
                client.get_inference_statistics(name, version)
            assert "nope" in str(caught.value) or "version" in str(caught.value)
        grpc_l1 = _grpc_stats(client, "l1")
        assert client.is_server_ready()  # still serving after the refusals
    http = th.InferenceServerClient(counted.http_address)
    try:
        doc = http.get_inference_statistics("l1", "1")
        (l1,) = doc["model_stats"]
        assert l1["inference_count"] == grpc_l1.inference_count
        assert l1["inference_stats"]["success"] == {
            "count": grpc_l1.inference_stats.success.count,
            "ns": grpc_l1.inference_stats.success.ns,
        }
        assert l1["inference_stats"]["fail"]["count"] == grpc_l1.inference_stats.fail.count
        assert [b["batch_size"] for b in l1["batch_stats"]] == [
            b.batch_size for b in grpc_l1.batch_stats
        ]
        assert sorted(m["name"] for m in http.get_inference_statistics()["model_stats"]) == [
            "giou",
            "l1",
        ]
        with pytest.raises(InferenceServerException, match="Unknown metric `nope`"):
            http.get_inference_statistics("nope")
    finally:
        http.close()


def test_prometheus_reads_the_same_counts(counted: BackgroundServer) -> None:
    with tc.InferenceServerClient(counted.address) as client:
        client.infer("l1", _inputs(3))
        stats = _grpc_stats(client, "l1")
    samples = scrape(counted)
    labels = {"model": "l1", "version": "1"}
    s = stats.inference_stats
    assert value(samples, "cvscore_model_request_success_total", **labels) == s.success.count
    assert value(samples, "cvscore_model_request_failure_total", **labels) == s.fail.count
    assert value(samples, "cvscore_model_inference_total", **labels) == stats.inference_count
    assert value(samples, "cvscore_model_execution_total", **labels) == stats.execution_count
    queue = value(samples, "cvscore_model_request_duration_seconds_total", phase="queue", **labels)
    assert queue == pytest.approx(s.queue.ns / 1e9)
