"""cvscore.v1.Scoring through a real server: listing, describing, scoring, reductions."""

from __future__ import annotations

import json
import math
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch

from cvscore.exporters.repository import list_models
from cvscore.metrics import registry
from cvscore.server.app import BackgroundServer
from cvscore.v1 import scoring_pb2 as pb
from cvscore.v1 import scoring_pb2_grpc as pb_grpc

from ..conftest import tol
from .conftest import SMALL_MODELS, decode, rpc_error, sample, score_request

RUNTIMES = {
    "torchscript": pb.RUNTIME_TORCHSCRIPT,
    "onnx": pb.RUNTIME_ONNX,
    "torch_export": pb.RUNTIME_TORCH_EXPORT,
}
SERVED = [pb.RUNTIME_ONNX, pb.RUNTIME_TORCHSCRIPT]  # what the session server loads


def test_list_metrics_lists_every_model_of_the_repository(
    stub: pb_grpc.ScoringStub, zoo_repo: Path
) -> None:
    response = stub.ListMetrics(pb.ListMetricsRequest(), timeout=30)
    listed = {m.name: m for m in response.metrics}
    assert sorted(listed) == list_models(zoo_repo)
    for info in listed.values():
        assert list(info.runtimes) == SERVED
        assert info.default_runtime == pb.RUNTIME_ONNX  # auto on CPU
        assert info.device == "cpu"
        assert info.family and info.inputs and info.outputs


def test_describe_metric_shows_signature_params_and_runtimes(stub: pb_grpc.ScoringStub) -> None:
    info = stub.DescribeMetric(pb.DescribeMetricRequest(name="cross_entropy"), timeout=30).metric
    spec = registry.get("cross_entropy")
    assert info.name == info.metric == "cross_entropy"
    assert info.family == spec.family
    assert [(t.name, list(t.shape), list(t.canonical_shape), t.dtype) for t in info.inputs] == [
        ("preds", ["N", "C", "*"], ["N", "C", "S"], pb.DATA_TYPE_FLOAT32),
        ("target", ["N", "*"], ["N", "S"], pb.DATA_TYPE_INT64),
    ]
    assert [(t.name, list(t.shape)) for t in info.outputs] == [("score", ["N"])]
    params = {
        p.name: (json.loads(p.value_json), json.loads(p.default_json)) for p in info.parameters
    }
    assert params == {p.name: (p.default, p.default) for p in spec.params}
    assert info.higher_is_better == spec.higher_is_better
    assert info.paper == spec.paper
    assert list(info.runtimes) == SERVED


def test_describe_unknown_metric_is_not_found(stub: pb_grpc.ScoringStub) -> None:
    error = rpc_error(lambda: stub.DescribeMetric(pb.DescribeMetricRequest(name="nope")))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details().startswith("Unknown metric `nope`; known metrics: ")
    assert "giou" in error.details()


def _check_against_eager(stub: pb_grpc.ScoringStub, names: list[str], runtime: str) -> None:
    for name in names:
        spec = registry.get(name)
        inputs = sample(name, seed=3, N=5)
        expected = spec.build()(**inputs)
        response = stub.Score(
            score_request(name, inputs, runtime=RUNTIMES[runtime], reduction=pb.REDUCTION_NONE),
            timeout=60,
        )
        assert response.runtime == RUNTIMES[runtime]
        assert response.device == "cpu"
        assert response.batch_size == 5
        assert not response.reduced
        got = decode(response.outputs[0])
        assert got.shape == tuple(expected.shape), name
        torch.testing.assert_close(
            torch.from_numpy(got.copy()), expected, **tol(torch.float32), equal_nan=True, msg=name
        )


@pytest.mark.parametrize("runtime", ["onnx", "torchscript"])
def test_score_matches_the_eager_module_for_every_metric(
    stub: pb_grpc.ScoringStub, server: BackgroundServer, runtime: str
) -> None:
    _check_against_eager(stub, list(server.core.models), runtime)


def test_score_in_the_torch_export_runtime(small_server) -> None:
    server = small_server(runtime="torch_export")
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.ScoringStub(channel)
        _check_against_eager(stub, list(SMALL_MODELS), "torch_export")


def test_original_and_canonical_shapes_score_the_same(stub: pb_grpc.ScoringStub) -> None:
    inputs = sample("cross_entropy", seed=4, N=3, C=4, H=5, W=6)
    canonical = registry.get("cross_entropy").canonical(inputs)
    assert canonical["preds"].shape == (3, 4, 30)
    original = stub.Score(score_request("cross_entropy", inputs), timeout=30)
    flat = stub.Score(score_request("cross_entropy", canonical), timeout=30)
    assert original.outputs[0].data == flat.outputs[0].data
    assert original.reduced[0].data == flat.reduced[0].data


def test_reductions_are_exact_float64_mean_and_sum(stub: pb_grpc.ScoringStub) -> None:
    inputs = sample("mse", seed=5, N=37)
    results = {
        r: stub.Score(score_request("mse", inputs, reduction=r), timeout=30)
        for r in (pb.REDUCTION_UNSPECIFIED, pb.REDUCTION_MEAN, pb.REDUCTION_SUM)
    }
    scores = decode(results[pb.REDUCTION_SUM].outputs[0]).astype(np.float64)
    exact = math.fsum(scores.tolist())
    assert results[pb.REDUCTION_UNSPECIFIED].reduction == pb.REDUCTION_MEAN
    for r in (pb.REDUCTION_UNSPECIFIED, pb.REDUCTION_MEAN):
        (value,) = decode(results[r].reduced[0]).reshape(-1)
        assert decode(results[r].reduced[0]).dtype == np.float64
        assert value == exact / 37
    assert decode(results[pb.REDUCTION_SUM].reduced[0]).item() == exact


def test_vector_scores_reduce_per_component(small_server) -> None:
    server = small_server()
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.ScoringStub(channel)
        rng = np.random.default_rng(0)
        preds = rng.standard_normal((6, 4)).astype(np.float32)
        centres = rng.standard_normal((3, 4)).astype(np.float32)
        response = stub.Score(
            score_request("centre_distance", {"preds": preds, "centres": centres}), timeout=30
        )
    distance = decode(response.outputs[0])
    expected = ((preds[:, None, :] - centres[None]) ** 2).sum(-1)
    np.testing.assert_allclose(distance, expected, rtol=1e-5)
    mean = decode(response.reduced[0])
    assert mean.shape == (3,)
    np.testing.assert_array_equal(
        mean, [math.fsum(distance[:, k].astype(np.float64).tolist()) / 6 for k in range(3)]
    )


def test_nan_and_inf_are_data_and_propagate(stub: pb_grpc.ScoringStub) -> None:
    preds = np.zeros((3, 4), np.float32)
    target = np.ones((3, 4), np.float32)
    preds[1, 2] = np.nan
    preds[2, 0] = np.inf
    response = stub.Score(score_request("l1", {"preds": preds, "target": target}), timeout=30)
    scores = decode(response.outputs[0])
    assert scores[0] == 1.0
    assert np.isnan(scores[1])
    assert np.isposinf(scores[2])
    assert np.isnan(decode(response.reduced[0]).item())


@pytest.mark.parametrize("name", ["l1", "giou", "cross_entropy"])
def test_an_empty_batch_scores_to_an_empty_result(stub: pb_grpc.ScoringStub, name: str) -> None:
    inputs = sample(name, seed=6, N=0)
    mean = stub.Score(score_request(name, inputs), timeout=30)
    assert list(mean.outputs[0].shape) == [0]
    assert mean.outputs[0].data == b""
    assert mean.batch_size == 0
    assert np.isnan(decode(mean.reduced[0]).item())  # the mean of nothing
    total = stub.Score(score_request(name, inputs, reduction=pb.REDUCTION_SUM), timeout=30)
    assert decode(total.reduced[0]).item() == 0.0


def test_float64_inputs_are_accepted_for_float32_metrics(stub: pb_grpc.ScoringStub) -> None:
    inputs = sample("giou", seed=7, N=4)
    as32 = stub.Score(score_request("giou", inputs), timeout=30)
    as64 = stub.Score(score_request("giou", {k: v.double() for k, v in inputs.items()}), timeout=30)
    assert as32.outputs[0].data == as64.outputs[0].data


def test_timing_is_reported(stub: pb_grpc.ScoringStub) -> None:
    response = stub.Score(score_request("giou", sample("giou", N=2)), timeout=30)
    t = response.timing
    assert t.total_us >= t.compute_us >= 0
    assert t.queue_us >= 0
    assert t.batch_requests >= 1
    assert t.batch_rows == 2  # alone, and no padding
