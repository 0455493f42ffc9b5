"""``cvscore serve --workers 2`` as a real process: one port, two processes, one drain."""

from __future__ import annotations

import re
import signal
import socket
import time
import urllib.request
from collections import Counter
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from cvscore.v1 import scoring_pb2_grpc as pb_grpc

from .conftest import decode, score_request
from .test_lifecycle import Process, _serve

WORKER_READY = re.compile(r"worker (\d+) \(pid (\d+)\) ready; metrics on port (\d+)")


@pytest.fixture
def two_workers(tiny_repo: Path):
    process = Process(
        tiny_repo, "--workers", "2", "--models", "l1,giou", "--runtime", "onnx",
        "--metrics-port", "0", "--health-port", "0",
    )  # fmt: skip
    yield process
    if process.proc.poll() is None:
        process.proc.kill()
        process.proc.wait()


def _successes(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "cvscore_model_request_success_total"
    )


def test_two_workers_share_the_port_and_drain_on_sigterm(two_workers: Process) -> None:
    address = two_workers.address()
    # the parent logs this after every worker's ready line (one stream, in order)
    health_line = two_workers.wait_line(two_workers.lines, "health on port")
    ready = [WORKER_READY.search(line) for line in two_workers.lines]
    metrics_ports = {int(m.group(1)): int(m.group(3)) for m in ready if m}
    assert sorted(metrics_ports) == [0, 1]  # the parent printed its address after both
    assert len({m.group(2) for m in ready if m}) == 2  # two processes

    preds = np.arange(8, dtype=np.float32).reshape(2, 4)
    served: Counter[str] = Counter()
    calls = 24
    # a connection each (a local subchannel pool: grpc would otherwise reuse one TCP
    # connection across channels to one address), and the kernel spreads connections
    for _ in range(calls):
        with grpc.insecure_channel(address, [("grpc.use_local_subchannel_pool", 1)]) as channel:
            stub = pb_grpc.ScoringStub(channel)
            response, call = stub.Score.with_call(
                score_request("l1", {"preds": preds, "target": preds + 1}), timeout=30
            )
            np.testing.assert_array_equal(decode(response.outputs[0]), [1.0, 1.0])
            served[dict(call.trailing_metadata())["x-cvscore-worker"]] += 1
    assert set(served) == {"0", "1"}, served  # both workers answered some
    # each worker counts what it served on its own metrics port; together, every call
    assert {str(i): _successes(p) for i, p in metrics_ports.items()} == dict(served)

    health_port = int(health_line.rsplit(" ", 1)[1])
    with grpc.insecure_channel(f"127.0.0.1:{health_port}") as channel:
        check = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert check.status == health_pb2.HealthCheckResponse.SERVING

    two_workers.proc.send_signal(signal.SIGTERM)
    assert two_workers.proc.wait(60) == 0
    two_workers.wait_line(two_workers.lines, "stopped (worker exit codes [0, 0])")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--workers", "0"], "Expected `workers` to be at least 1, got 0"),
        (["--threads", "0"], "Expected `threads` to be at least 1, got 0"),
        (
            ["--workers", "2", "--model-control", "explicit"],
            "Expected `model_control` none or poll with `workers` > 1",
        ),
    ],
)
def test_bad_worker_flags_are_one_clear_line(
    tiny_repo: Path, flags: list[str], message: str
) -> None:
    out = _serve("--repository", str(tiny_repo), *flags)
    assert out.returncode == 2
    (line,) = out.stderr.splitlines()
    assert line.startswith("cvscore serve: error: " + message)


def test_workers_do_not_outlive_a_killed_parent(two_workers: Process) -> None:
    address = two_workers.address()
    two_workers.wait_line(two_workers.lines, "health on port")
    pids = [int(m.group(2)) for m in map(WORKER_READY.search, two_workers.lines) if m]
    assert len(pids) == 2
    two_workers.proc.kill()  # SIGKILL: the parent cannot forward anything
    two_workers.proc.wait(30)
    deadline = time.monotonic() + 60
    alive = pids
    while alive and time.monotonic() < deadline:
        alive = [p for p in pids if _running(p)]
        time.sleep(0.2)
    assert not alive, f"workers {alive} kept running after the parent was killed"
    host, port = address.rsplit(":", 1)
    with pytest.raises(ConnectionRefusedError):  # and nobody listens on the port any more
        socket.create_connection((host, int(port)), timeout=5).close()


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False


def test_onnx_sessions_take_the_threads_they_are_given(zoo_repo: Path) -> None:
    """`--workers N` shares the cores out: each worker's pooled ONNX sessions take
    ``onnx_threads`` intra-op threads (the parent sets cores / N), the inline one takes 1."""
    from cvscore.server import runtimes
    from cvscore.server.config import ServerConfig

    config = ServerConfig(repository=zoo_repo, onnx_threads=3)
    assert config.core_options().onnx_threads == 3
    assert ServerConfig(repository=zoo_repo).core_options().onnx_threads == 0
    model = runtimes.check(zoo_repo, "l1", "onnx", threads=3)("cpu")
    assert isinstance(model, runtimes.OnnxRuntime)
    assert model._session.get_session_options().intra_op_num_threads == 3
    x = np.ones((2, 4), np.float32)
    assert model.run_inline({"preds": x, "target": x})["score"].tolist() == [0.0, 0.0]
    assert model._single.get_session_options().intra_op_num_threads == 1
