"""Dynamic batching: concurrent requests share runs, and nobody's scores change for it."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import numpy as np
import pytest

from cvscore.server.app import BackgroundServer
from cvscore.server.batcher import Batcher
from cvscore.server.errors import DeadlineExceededError, QueueFullError
from cvscore.v1 import scoring_pb2 as pb
from cvscore.v1 import scoring_pb2_grpc as pb_grpc

from .conftest import Events, assert_serving, decode, rpc_error, sample, score_request

RUNTIMES = {"onnx": pb.RUNTIME_ONNX, "torchscript": pb.RUNTIME_TORCHSCRIPT}


def _requests() -> list[tuple[str, dict[str, Any]]]:
    """Ragged batch sizes, two image sizes for one metric, an empty batch."""
    out: list[tuple[str, dict[str, Any]]] = []
    for i, n in enumerate([1, 3, 5, 2, 7, 1, 0, 4]):
        out.append(("l1", sample("l1", seed=i, N=n, H=5, W=6)))
        out.append(("l1", sample("l1", seed=100 + i, N=n, H=7, W=3)))
        out.append(("cross_entropy", sample("cross_entropy", seed=200 + i, N=n)))
        out.append(("giou", sample("giou", seed=300 + i, N=n)))
    return out


def _concurrently(
    server: BackgroundServer, events: Events, requests: list[pb.ScoreRequest]
) -> list[pb.ScoreResponse]:
    """Queue every request while the batchers are held, then let them run together."""
    server.call(server.core.pause)
    before = events.count("queued")
    with (
        grpc.insecure_channel(server.address) as channel,
        ThreadPoolExecutor(len(requests)) as pool,
    ):
        stub = pb_grpc.ScoringStub(channel)
        futures = [pool.submit(stub.Score, r, timeout=60) for r in requests]
        events.wait_for(before + len(requests), "queued")
        server.call(server.core.resume)
        return [f.result() for f in futures]


@pytest.mark.parametrize("runtime", sorted(RUNTIMES))
def test_batched_results_equal_unbatched_ones_element_for_element(
    small_server, events: Events, runtime: str
) -> None:
    server = small_server(max_batch_size=64, max_queue_delay_us=0)
    server.call(lambda: server.core.add_hook(events))
    requests = [
        score_request(m, inputs, runtime=RUNTIMES[runtime], reduction=pb.REDUCTION_NONE)
        for m, inputs in _requests()
    ]
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.ScoringStub(channel)
        alone = [stub.Score(r, timeout=60) for r in requests]  # one at a time
    assert all(r.timing.batch_requests == 1 for r in alone)
    together = _concurrently(server, events, requests)
    # they did share runs: 8 requests per (metric, shape) group, 4 groups
    assert max(r.timing.batch_requests for r in together) == 8
    for request, a, b in zip(requests, alone, together, strict=True):
        assert list(b.outputs[0].shape) == list(a.outputs[0].shape)
        got, want = decode(b.outputs[0]), decode(a.outputs[0])
        np.testing.assert_array_equal(got, want, err_msg=request.metric)  # bit for bit


def test_requests_of_different_shapes_or_shared_inputs_never_share_a_run(
    small_server, events: Events
) -> None:
    server = small_server(max_batch_size=1000, max_queue_delay_us=0)
    server.call(lambda: server.core.add_hook(events))
    rng = np.random.default_rng(1)
    centres = [rng.standard_normal((3, 4)).astype(np.float32) for _ in range(2)]
    requests = []
    for i in range(12):
        preds = rng.standard_normal((i % 3 + 1, 4)).astype(np.float32)
        shared = centres[i % 2].copy()  # equal bytes, distinct buffers
        requests.append(score_request("centre_distance", {"preds": preds, "centres": shared}))
    for i in range(6):
        requests.append(score_request("l1", sample("l1", seed=i, N=2, H=2 + i % 2, W=3)))
    responses = _concurrently(server, events, requests)
    assert [r.timing.batch_requests for r in responses[:12]] == [6] * 12
    assert [r.timing.batch_requests for r in responses[12:]] == [3] * 6
    for request, response in zip(requests[:12], responses[:12], strict=True):
        preds, shared = decode(request.inputs[0]), decode(request.inputs[1])
        expected = ((preds[:, None, :] - shared[None]) ** 2).sum(-1)
        np.testing.assert_allclose(decode(response.outputs[0]), expected, rtol=1e-5)


def test_max_batch_size_caps_the_rows_of_a_run(small_server, events: Events) -> None:
    server = small_server(max_batch_size=4, max_queue_delay_us=0, align=1)
    server.call(lambda: server.core.add_hook(events))
    requests = [score_request("giou", sample("giou", seed=i, N=1)) for i in range(10)]
    responses = _concurrently(server, events, requests)
    assert sorted(r.timing.batch_rows for r in responses) == [2] * 2 + [4] * 8


def test_a_full_queue_is_resource_exhausted(small_server, events: Events) -> None:
    server = small_server(max_queue_size=2, max_queue_delay_us=0)
    server.call(lambda: server.core.add_hook(events))
    server.call(server.core.pause)
    request = score_request("giou", sample("giou", N=2))
    with grpc.insecure_channel(server.address) as channel, ThreadPoolExecutor(2) as pool:
        stub = pb_grpc.ScoringStub(channel)
        waiting = [pool.submit(stub.Score, request, timeout=60) for _ in range(2)]
        events.wait_for(2, "queued")
        error = rpc_error(lambda: stub.Score(request, timeout=60))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error.details() == (
            "The queue of `giou/onnx` is full (2 requests waiting); retry later"
        )
        server.call(server.core.resume)
        for future in waiting:
            assert future.result().batch_size == 2
        assert_serving(stub)


def test_a_request_whose_deadline_passes_in_the_queue_is_dropped(
    small_server, events: Events
) -> None:
    server = small_server(max_queue_delay_us=0)
    server.call(lambda: server.core.add_hook(events))
    server.call(server.core.pause)
    batcher = server.core.models["giou"].batchers["onnx"]
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.ScoringStub(channel)
        request = score_request("giou", sample("giou", N=2))
        error = rpc_error(lambda: stub.Score(request, timeout=0.3))
        assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        events.wait_for(1, "expired", "cancelled")
        assert server.call(lambda: batcher.depth) == 0  # its slot is free
        server.call(server.core.resume)
        assert events.count("ran") == 0  # it was never computed
        assert_serving(stub)


# -- the batcher on its own -------------------------------------------------------------------
def _double(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    if np.isnan(inputs["x"]).any():
        raise ValueError("poisoned batch")
    return {"y": inputs["x"] * 2}


def test_batcher_deadline_message() -> None:
    async def main() -> None:
        with ThreadPoolExecutor(1) as pool:
            batcher = Batcher("m/onnx", _double, pool, {"x": True}, max_delay_s=10)
            batcher.start()
            batcher.pause()
            loop = asyncio.get_running_loop()
            with pytest.raises(
                DeadlineExceededError,
                match=r"^The deadline passed after \d+ ms waiting for `m/onnx`$",
            ):
                await batcher.submit({"x": np.ones((2, 1))}, 2, loop.time() + 0.05)
            assert batcher.depth == 0
            await batcher.close()

    asyncio.run(main())


def test_batcher_queue_full_and_failure_isolation() -> None:
    async def main() -> None:
        with ThreadPoolExecutor(1) as pool:
            batcher = Batcher("m/onnx", _double, pool, {"x": True}, max_queue_size=3, max_delay_s=0)
            batcher.start()
            batcher.pause()
            good = [
                asyncio.ensure_future(batcher.submit({"x": np.full((1, 1), float(i))}, 1))
                for i in range(2)
            ]
            bad = asyncio.ensure_future(batcher.submit({"x": np.full((1, 1), np.nan)}, 1))
            await asyncio.sleep(0)
            with pytest.raises(QueueFullError):
                await batcher.submit({"x": np.ones((1, 1))}, 1)
            batcher.resume()
            for i, task in enumerate(good):
                outputs, _info = await task
                assert outputs["y"].tolist() == [[2.0 * i]]
            with pytest.raises(ValueError, match="poisoned"):
                await bad  # the batch of three failed; each was retried alone
            assert batcher.runs == 2
            await batcher.drain()
            await batcher.close()

    asyncio.run(main())


@pytest.mark.parametrize(("cost", "runs"), [(30, 2), (60, 4), (0, 1)])
def test_requests_never_share_a_run_past_the_work_budget(cost: int, runs: int) -> None:
    async def main() -> None:
        with ThreadPoolExecutor(1) as pool:
            batcher = Batcher("m/onnx", _double, pool, {"x": True}, max_delay_s=0, max_cost=100)
            batcher.start()
            batcher.pause()
            tasks = [
                asyncio.ensure_future(
                    batcher.submit({"x": np.full((1, 1), float(i))}, 1, cost=cost)
                )
                for i in range(4)
            ]
            await asyncio.sleep(0)
            batcher.resume()
            results = [await task for task in tasks]
            assert [r[0]["y"].tolist() for r in results] == [[[2.0 * i]] for i in range(4)]
            # 4 x 30 > 100: three share a run, the fourth runs next; 60 + 60 > 100: alone
            assert batcher.runs == runs
            await batcher.close()

    asyncio.run(main())


def test_a_lone_request_does_not_wait_for_company_and_concurrent_ones_share_a_run() -> None:
    """``max_delay`` is spent only when company may come: a request that finds nothing in
    flight and follows the one before by ``LONE_GAPS`` delays runs at once; requests in
    flight together share a run; one close behind another waits for company as before."""

    async def main() -> None:
        with ThreadPoolExecutor(1) as pool:
            batcher = Batcher("m/onnx", _double, pool, {"x": True}, max_delay_s=60.0)
            batcher.start()
            for i in range(2):  # one caller, ten minutes apart (as if): no 60 s waits
                batcher._last_arrival -= 600.0
                outputs, info = await asyncio.wait_for(
                    batcher.submit({"x": np.full((1, 1), float(i))}, 1), 0.8
                )
                assert outputs["y"].tolist() == [[2.0 * i]] and info.requests == 1
            assert batcher.runs == 2 and batcher.inflight == 0
            batcher.max_delay_s = 0.05
            batcher._last_arrival -= 600.0
            together = [batcher.submit({"x": np.full((1, 1), float(i))}, 1) for i in range(4)]
            results = await asyncio.wait_for(asyncio.gather(*together), 10.0)
            assert [r[0]["y"].tolist() for r in results] == [[[2.0 * i]] for i in range(4)]
            assert {r[1].requests for r in results} == {4}  # one run for the four
            assert batcher.runs == 3 and batcher.inflight == 0
            close_behind = batcher.submit({"x": np.ones((1, 1))}, 1)  # within 10 x 50 ms
            _, info = await asyncio.wait_for(close_behind, 10.0)
            assert info.queue_s >= 0.05  # it waited out max_delay for company
            await batcher.close()

    asyncio.run(main())
