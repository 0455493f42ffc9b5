"""Standard services: health per metric and overall, reflection, readiness while loading."""

from __future__ import annotations

import threading
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from cvscore.server.app import BackgroundServer, ServerConfig
from cvscore.server.core import ScoringCore
from cvscore.v1 import scoring_pb2 as pb
from cvscore.v1 import scoring_pb2_grpc as pb_grpc

from .conftest import rpc_error, sample, score_request

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _check(channel: grpc.Channel, service: str) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status


def test_health_overall_per_service_and_per_metric(server: BackgroundServer) -> None:
    with grpc.insecure_channel(server.address) as channel:
        for service in ("", "cvscore.v1.Scoring", "inference.GRPCInferenceService"):
            assert _check(channel, service) == SERVING
        for name in server.core.models:
            assert _check(channel, name) == SERVING
        error = rpc_error(lambda: _check(channel, "nope"))
        assert error.code() == grpc.StatusCode.NOT_FOUND


def test_reflection_lists_and_describes_the_services(server: BackgroundServer) -> None:
    with grpc.insecure_channel(server.address) as channel:
        db = ProtoReflectionDescriptorDatabase(channel)
        assert set(db.get_services()) == {
            "cvscore.v1.Scoring",
            "inference.GRPCInferenceService",
            "grpc.health.v1.Health",
            "grpc.reflection.v1alpha.ServerReflection",
        }
        pool = descriptor_pool.DescriptorPool(db)
        service = pool.FindServiceByName("inference.GRPCInferenceService")
        infer = service.methods_by_name["ModelInfer"]
        assert infer.input_type.fields_by_name["raw_input_contents"].number == 7
        score = pool.FindMessageTypeByName("cvscore.v1.ScoreRequest")
        assert [f.name for f in score.fields] == ["metric", "runtime", "reduction", "inputs"]
        assert pool.FindServiceByName("grpc.health.v1.Health").methods_by_name["Check"]


class SlowCore(ScoringCore):
    """Loads only when told to, so a test can look at the server while it loads."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.release = threading.Event()

    def load(self, names=None, on_model=None) -> None:
        assert self.release.wait(60)
        super().load(names, on_model)


def test_readiness_is_reported_only_once_every_model_is_loaded(small_repo: Path) -> None:
    config = ServerConfig(small_repo, port=0, runtime="onnx", models=("giou",))
    core = SlowCore(small_repo, config.core_options(), config.models)
    server = BackgroundServer(config, core).start(wait=False)
    try:
        with grpc.insecure_channel(server.address) as channel:
            assert _check(channel, "") == NOT_SERVING
            stub = pb_grpc.ScoringStub(channel)
            request = score_request("giou", sample("giou", N=1))
            error = rpc_error(lambda: stub.Score(request, timeout=10))
            assert error.code() == grpc.StatusCode.UNAVAILABLE
            assert error.details() == "Model `giou` is still loading"
            core.release.set()
            server.wait_ready()
            assert _check(channel, "") == SERVING
            assert _check(channel, "giou") == SERVING
            assert stub.Score(request, timeout=10).batch_size == 1
            assert [m.name for m in stub.ListMetrics(pb.ListMetricsRequest()).metrics] == ["giou"]
    finally:
        core.release.set()
        server.stop()


@pytest.mark.cuda
def test_cuda_device(small_repo: Path) -> None:
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="Expected a CUDA device for `--device cuda`"):
            ScoringCore(small_repo, ServerConfig(small_repo, device="cuda").core_options())
        pytest.skip("CUDA is not available: checked that --device cuda is refused")
    config = ServerConfig(small_repo, port=0, device="cuda", models=("giou",))
    with BackgroundServer(config) as server, grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.ScoringStub(channel)
        inputs = sample("giou", N=5)
        for runtime in (pb.RUNTIME_TORCHSCRIPT, pb.RUNTIME_AUTO):
            response = stub.Score(score_request("giou", inputs, runtime=runtime), timeout=60)
            assert response.device == "cuda"
