"""cvscore.client.Client and AsyncClient against real servers."""

from __future__ import annotations

import asyncio
import math
import socket
import threading
from collections.abc import Callable, Iterator
from concurrent import futures

import grpc
import numpy as np
import pytest
import torch

from cvscore.client import AsyncClient, Client, CvscoreError
from cvscore.v1 import scoring_pb2 as pb
from cvscore.v1 import scoring_pb2_grpc as pb_grpc

from ..server.conftest import Events, sample


def _boxes(seed: int, n: int) -> dict[str, torch.Tensor]:
    return sample("giou", seed=seed, N=n)


def test_score_takes_numpy_or_torch_and_returns_a_result(address: str) -> None:
    inputs = _boxes(0, 5)
    with Client(address, timeout=30) as client:
        from_torch = client.score("giou", **inputs)
        from_numpy = client.score("giou", {k: v.numpy() for k, v in inputs.items()})
        total = client.score("giou", inputs, reduction="sum", runtime="torchscript")
        none = client.score("giou", inputs, reduction="none")
    assert from_torch.scores.tolist() == from_numpy.scores.tolist()
    assert from_torch.scores.shape == (5,) and from_torch.scores.dtype == np.float32
    assert isinstance(from_torch.value, float)
    assert from_torch.value == math.fsum(from_torch.scores.astype(np.float64).tolist()) / 5
    assert (from_torch.runtime, from_torch.device, from_torch.reduction) == ("onnx", "cpu", "mean")
    assert total.runtime == "torchscript" and total.reduction == "sum"
    assert total.value == pytest.approx(from_torch.value * 5, rel=1e-6)
    assert none.value is None and none.reduced == {}
    assert from_torch.timing.total_us >= from_torch.timing.compute_us >= 0


def test_inputs_given_twice_or_with_bad_options_fail_before_sending(address: str) -> None:
    inputs = _boxes(1, 2)
    with Client(address) as client:
        with pytest.raises(ValueError, match=r"Inputs \['preds'\] were given both"):
            client.score("giou", inputs, preds=inputs["preds"])
        with pytest.raises(ValueError, match=r"Expected `reduction` to be one of"):
            client.score("giou", inputs, reduction="median")
        with pytest.raises(TypeError, match=r"Expected `preds` to have a dtype in .*, got int16"):
            client.score("giou", preds=np.zeros((1, 4), np.int16), target=inputs["target"])


def test_server_errors_carry_code_and_message(address: str) -> None:
    with Client(address, timeout=30) as client:
        with pytest.raises(CvscoreError) as info:
            client.score("nope", **_boxes(2, 1))
        assert info.value.code == grpc.StatusCode.NOT_FOUND
        assert info.value.message.startswith("Unknown metric `nope`")
        with pytest.raises(CvscoreError) as info:
            client.score(
                "giou", preds=np.zeros((2, 4), np.float32), target=np.zeros((3, 4), np.float32)
            )
        assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert str(info.value) == (
            "INVALID_ARGUMENT: Expected axis N of `target` to equal axis N of `preds` (2), got 3"
        )


def test_evaluate_streams_any_iterable_with_a_progress_bar(
    address: str, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _boxes(3, 64)
    batches = ({k: v[i : i + 16] for k, v in data.items()} for i in range(0, 64, 16))
    with Client(address, timeout=60) as client:
        whole = client.score("giou", data)
        result = client.evaluate("giou", batches, return_scores=True)
    assert (result.count, result.batches, result.runtime) == (64, 4, "onnx")
    assert result.mean == whole.value
    assert result.sum == math.fsum(whole.scores.astype(np.float64).tolist())
    assert result.scores is not None and result.scores.tolist() == whole.scores.tolist()
    assert (result.min, result.max) == (float(whole.scores.min()), float(whole.scores.max()))
    assert result.nan_count == 0
    assert "evaluate giou" in capsys.readouterr().err


def test_list_describe_and_health(address: str) -> None:
    with Client(address) as client:
        names = {m.name for m in client.list_metrics()}
        info = client.describe("cross_entropy")
        assert client.health() == "SERVING"
        assert client.health("giou") == "SERVING"
    assert {"l1", "giou", "cross_entropy", "centre_distance"} <= names
    assert [t.shape for t in info.inputs] == [["N", "C", "*"], ["N", "*"]]
    assert info.params == {"weight": None, "ignore_index": -100, "label_smoothing": 0.0}
    assert (info.runtimes, info.default_runtime) == (["onnx", "torchscript"], "onnx")


def test_async_client(address: str) -> None:
    data = _boxes(4, 32)

    async def batches() -> object:
        for i in range(0, 32, 16):
            yield {k: v[i : i + 16] for k, v in data.items()}

    async def main() -> None:
        async with AsyncClient(address, timeout=30) as client:
            results = await asyncio.gather(
                *(
                    client.score("giou", {k: v[i : i + 1] for k, v in data.items()})
                    for i in range(8)
                )
            )
            whole = await client.score("giou", data, reduction="none")
            assert [r.scores[0] for r in results] == whole.scores[:8].tolist()
            summary = await client.evaluate("giou", batches())
            assert summary.count == 32
            assert summary.sum == math.fsum(whole.scores.astype(np.float64).tolist())
            assert (await client.describe("giou")).name == "giou"
            with pytest.raises(CvscoreError) as info:
                await client.score("nope", data)
            assert info.value.code == grpc.StatusCode.NOT_FOUND

    asyncio.run(main())


def test_deadline(small_server, events: Events) -> None:
    server = small_server(models=("giou",))
    server.call(lambda: server.core.add_hook(events))
    server.call(server.core.pause)
    with Client(server.address, timeout=0.3) as client, pytest.raises(CvscoreError) as info:
        client.score("giou", **_boxes(5, 1))
    assert info.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    events.wait_for(1, "expired", "cancelled")  # the server dropped it from the queue
    assert server.call(lambda: server.core.models["giou"].batchers["onnx"].depth) == 0


def test_round_robin_over_several_servers(small_server) -> None:
    servers = [small_server(models=("giou",), runtime="onnx") for _ in range(2)]
    counts = [Events() for _ in servers]
    for server, seen in zip(servers, counts, strict=True):
        server.call(lambda s=server, e=seen: s.core.add_hook(e))
    with Client([s.address for s in servers], timeout=30) as client:
        for i in range(6):
            client.score("giou", **_boxes(i, 1))
    assert [c.count("queued") for c in counts] == [3, 3]


# -- retries, against a scripted server ----------------------------------------------------------
class Flaky(pb_grpc.ScoringServicer):
    """Answers UNAVAILABLE (or another code) for the first calls, then a canned result."""

    def __init__(self, failures: int, code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE) -> None:
        self.failures, self.code, self.calls = failures, code, 0
        self.lock = threading.Lock()

    def Score(self, request: pb.ScoreRequest, context: grpc.ServicerContext) -> pb.ScoreResponse:
        with self.lock:
            self.calls += 1
            fail = self.calls <= self.failures
        if fail:
            context.abort(self.code, "try again")
        return pb.ScoreResponse(metric=request.metric)


@pytest.fixture
def flaky() -> Iterator[Callable[..., tuple[str, Flaky]]]:
    servers = []

    def start(
        failures: int, code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE
    ) -> tuple[str, Flaky]:
        server = grpc.server(futures.ThreadPoolExecutor(2))
        servicer = Flaky(failures, code)
        pb_grpc.add_ScoringServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append(server)
        return f"127.0.0.1:{port}", servicer

    yield start
    for server in servers:
        server.stop(None)


def test_unavailable_is_retried_with_backoff(flaky) -> None:
    address, servicer = flaky(2)
    with Client(address, retries=3, backoff_s=0.001) as client:
        assert client.score("giou", preds=np.zeros((1, 4), np.float32)).metric == "giou"
    assert servicer.calls == 3


def test_the_async_client_retries_too(flaky) -> None:
    address, servicer = flaky(2)

    async def main() -> str:
        async with AsyncClient(address, retries=3, backoff_s=0.001) as client:
            return (await client.score("giou", preds=np.zeros((1, 4), np.float32))).metric

    assert asyncio.run(main()) == "giou"
    assert servicer.calls == 3


def test_retries_give_up(flaky) -> None:
    address, servicer = flaky(5)
    with Client(address, retries=1, backoff_s=0.001) as client, pytest.raises(CvscoreError) as info:
        client.score("giou", preds=np.zeros((1, 4), np.float32))
    assert (info.value.code, info.value.message) == (grpc.StatusCode.UNAVAILABLE, "try again")
    assert servicer.calls == 2


def test_other_errors_are_not_retried(flaky) -> None:
    address, servicer = flaky(5, grpc.StatusCode.INVALID_ARGUMENT)
    with Client(address, retries=3, backoff_s=0.001) as client, pytest.raises(CvscoreError):
        client.score("giou", preds=np.zeros((1, 4), np.float32))
    assert servicer.calls == 1


def test_a_dead_address_is_skipped_by_retrying_on_the_next(flaky) -> None:
    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"
    live, servicer = flaky(0)
    with Client([dead, live], retries=2, backoff_s=0.001, timeout=10) as client:
        for _ in range(4):
            client.score("giou", preds=np.zeros((1, 4), np.float32))
    assert servicer.calls == 4
