"""Evaluate: streaming a dataset gives what scoring it all at once gives."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import grpc
import numpy as np
import pytest
import torch

from cvscore.v1 import scoring_pb2 as pb
from cvscore.v1 import scoring_pb2_grpc as pb_grpc

from .conftest import assert_serving, decode, rpc_error, sample, score_request, tensor


def _stream(
    metric: str, batches: Sequence[dict[str, Any]], **options: Any
) -> Iterator[pb.EvaluateRequest]:
    yield pb.EvaluateRequest(metric=metric, **options)
    for batch in batches:
        yield pb.EvaluateRequest(inputs=[tensor(k, v) for k, v in batch.items()])


def _split(inputs: dict[str, torch.Tensor], sizes: Sequence[int]) -> list[dict[str, Any]]:
    out, start = [], 0
    for n in sizes:
        out.append({k: v[start : start + n] for k, v in inputs.items()})
        start += n
    return out


def test_evaluate_equals_scoring_the_whole_dataset_at_once(stub: pb_grpc.ScoringStub) -> None:
    # A row's score does not depend on the batch it runs in (exporters/invariance.py), so
    # ragged batches give the whole-dataset run's scores bit for bit, with no padding.
    data = sample("cross_entropy", seed=11, N=96)
    whole = stub.Score(
        score_request("cross_entropy", data, reduction=pb.REDUCTION_NONE), timeout=60
    )
    mean = stub.Score(score_request("cross_entropy", data), timeout=60)
    total = stub.Score(score_request("cross_entropy", data, reduction=pb.REDUCTION_SUM), timeout=60)
    batches = _split(data, [7, 30, 1, 0, 58])
    result = stub.Evaluate(_stream("cross_entropy", batches, return_scores=True), timeout=60)
    assert result.batches == 5
    assert result.runtime == whole.runtime
    (stats,) = result.statistics
    assert (stats.name, list(stats.shape), stats.count) == ("score", [], 96)
    assert result.scores[0].data == whole.outputs[0].data
    assert list(stats.mean) == decode(mean.reduced[0]).reshape(-1).tolist()
    assert list(stats.sum) == decode(total.reduced[0]).reshape(-1).tolist()
    scores = decode(whole.outputs[0])
    assert list(stats.min) == [float(scores.min())]
    assert list(stats.max) == [float(scores.max())]
    assert list(stats.nan_count) == [0]


def test_statistics_are_exact_whatever_the_split(stub: pb_grpc.ScoringStub) -> None:
    data = sample("smooth_l1", seed=12, N=40)
    batches = _split(data, [7, 5, 13, 0, 3, 12])
    result = stub.Evaluate(_stream("smooth_l1", batches, return_scores=True), timeout=60)
    scores = decode(result.scores[0]).astype(np.float64)
    # each batch's scores are what scoring that batch alone gives
    start = 0
    for batch in batches:
        alone = stub.Score(score_request("smooth_l1", batch, reduction=pb.REDUCTION_NONE))
        n = len(batch["preds"])
        assert (
            decode(alone.outputs[0]).tolist()
            == decode(result.scores[0])[start : start + n].tolist()
        )
        start += n
    (stats,) = result.statistics
    assert stats.count == 40
    assert list(stats.sum) == [math.fsum(scores.tolist())]
    assert list(stats.mean) == [math.fsum(scores.tolist()) / 40]
    # the same batches in another order give the same statistics, bit for bit
    shuffled = stub.Evaluate(_stream("smooth_l1", batches[::-1]), timeout=60)
    assert shuffled.statistics[0] == stats


def test_nan_is_counted_and_propagates(stub: pb_grpc.ScoringStub) -> None:
    preds = np.zeros((4, 3), np.float32)
    target = np.ones((4, 3), np.float32)
    preds[2, 1] = np.nan
    batches = [
        {"preds": preds[:2], "target": target[:2]},
        {"preds": preds[2:], "target": target[2:]},
    ]
    (stats,) = stub.Evaluate(_stream("l1", batches), timeout=60).statistics
    assert stats.count == 4
    assert list(stats.nan_count) == [1]
    assert all(math.isnan(v) for v in (*stats.sum, *stats.mean, *stats.min, *stats.max))


def test_an_empty_stream_has_no_samples(stub: pb_grpc.ScoringStub) -> None:
    result = stub.Evaluate(_stream("giou", []), timeout=60)
    (stats,) = result.statistics
    assert (result.batches, stats.count, list(stats.sum)) == (0, 0, [0.0])
    assert math.isnan(stats.mean[0])


def test_vector_scores_get_per_component_statistics(small_server) -> None:
    server = small_server()
    rng = np.random.default_rng(3)
    centres = rng.standard_normal((3, 4)).astype(np.float32)
    batches = [
        {"preds": rng.standard_normal((n, 4)).astype(np.float32), "centres": centres}
        for n in (2, 5)
    ]
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.ScoringStub(channel)
        result = stub.Evaluate(_stream("centre_distance", batches), timeout=60)
    (stats,) = result.statistics
    assert (stats.name, list(stats.shape), stats.count) == ("distance", [3], 7)
    preds = np.concatenate([b["preds"] for b in batches])
    expected = ((preds[:, None, :] - centres[None]) ** 2).sum(-1)
    np.testing.assert_allclose(stats.mean, expected.mean(0), rtol=1e-5)
    np.testing.assert_allclose(stats.max, expected.max(0), rtol=1e-5)


BAD_STREAMS = {
    "no messages": (
        [],
        grpc.StatusCode.INVALID_ARGUMENT,
        "Evaluate needs at least one message, naming the metric",
    ),
    "no metric": (
        [pb.EvaluateRequest()],
        grpc.StatusCode.INVALID_ARGUMENT,
        "The first Evaluate message must name the metric",
    ),
    "another metric": (
        [pb.EvaluateRequest(metric="giou"), pb.EvaluateRequest(metric="iou")],
        grpc.StatusCode.INVALID_ARGUMENT,
        "Message 1 names metric `iou`, but this stream evaluates `giou`",
    ),
    "unknown metric": (
        [pb.EvaluateRequest(metric="nope")],
        grpc.StatusCode.NOT_FOUND,
        None,
    ),
    "bad batch": (
        list(
            _stream(
                "giou",
                [
                    {"preds": np.zeros((2, 4), np.float32), "target": np.zeros((2, 4), np.float32)},
                    {"preds": np.zeros((2, 4), np.float32), "target": np.zeros((3, 4), np.float32)},
                ],
            )
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "Batch 1: Expected axis N of `target` to equal axis N of `preds` (2), got 3",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_STREAMS))
def test_bad_streams(stub: pb_grpc.ScoringStub, case: str) -> None:
    messages, code, message = BAD_STREAMS[case]
    error = rpc_error(lambda: stub.Evaluate(iter(messages), timeout=60))
    assert error.code() == code
    if message is None:
        assert error.details().startswith("Unknown metric `nope`")
    else:
        assert error.details() == message
    assert_serving(stub)
