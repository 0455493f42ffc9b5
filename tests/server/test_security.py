"""Security through real servers: TLS, mutual TLS, bearer tokens, tampered artifacts,
model names that try to leave the repository. Certificates are made here with openssl."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from cvscore.cli.main import main as cli_main
from cvscore.client import Client, CvscoreError
from cvscore.exporters.repository import check_model_name
from cvscore.server import probe
from cvscore.server.app import BackgroundServer, ServerConfig
from cvscore.server.core import ScoringCore
from cvscore.v1 import scoring_pb2 as pb
from cvscore.v1 import scoring_pb2_grpc as pb_grpc

from .conftest import TOKENS, assert_serving, decode, rpc_error, score_request

BOXES = np.array([[0, 0, 2, 2], [1, 1, 3, 4]], np.float32)
PREDS = np.arange(12, dtype=np.float32).reshape(3, 4)


def _start(repo: Path, **options: Any) -> BackgroundServer:
    config = ServerConfig(repo, port=0, runtime="onnx,torchscript", **options)
    return BackgroundServer(config).start()


@pytest.fixture(scope="module")
def tls_server(tiny_repo: Path, pki: dict[str, str]) -> Iterator[BackgroundServer]:
    running = _start(tiny_repo, tls_cert=Path(pki["server.pem"]), tls_key=Path(pki["server.key"]))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def mtls_server(tiny_repo: Path, pki: dict[str, str]) -> Iterator[BackgroundServer]:
    running = _start(
        tiny_repo,
        tls_cert=Path(pki["server.pem"]),
        tls_key=Path(pki["server.key"]),
        tls_client_ca=Path(pki["ca.pem"]),
    )
    yield running
    running.stop()


@pytest.fixture(scope="module")
def token_server(tiny_repo: Path, tokens_file: Path) -> Iterator[BackgroundServer]:
    running = _start(tiny_repo, auth_tokens_file=tokens_file, health_port=0)
    yield running
    running.stop()


# -- TLS ------------------------------------------------------------------------------------
def test_tls_serves_clients_that_trust_its_ca(tls_server: BackgroundServer, pki: dict) -> None:
    with Client(tls_server.address, tls_ca=pki["ca.pem"], timeout=30) as client:
        result = client.score("l1", preds=PREDS, target=PREDS + 1)
        np.testing.assert_array_equal(result.scores, np.ones(3, np.float32))
        assert client.health() == "SERVING"


def test_tls_refuses_plaintext_and_untrusted_ca(tls_server: BackgroundServer, pki: dict) -> None:
    with Client(tls_server.address, timeout=5, retries=0) as plain:
        with pytest.raises(CvscoreError) as info:
            plain.score("l1", preds=PREDS, target=PREDS)
        assert info.value.code == grpc.StatusCode.UNAVAILABLE
    with Client(tls_server.address, tls_ca=pki["rogue-ca.pem"], timeout=5, retries=0) as wrong:
        with pytest.raises(CvscoreError) as info:
            wrong.score("l1", preds=PREDS, target=PREDS)
        assert info.value.code == grpc.StatusCode.UNAVAILABLE


def test_mtls_requires_a_client_certificate_from_its_ca(
    mtls_server: BackgroundServer, pki: dict
) -> None:
    good = {"tls_ca": pki["ca.pem"], "tls_cert": pki["client.pem"], "tls_key": pki["client.key"]}
    with Client(mtls_server.address, timeout=30, **good) as client:
        assert client.score("giou", preds=BOXES, target=BOXES).value == pytest.approx(0.0)
    refused = [
        {"tls_ca": pki["ca.pem"]},  # no client certificate
        {"tls_ca": pki["ca.pem"], "tls_cert": pki["rogue.pem"], "tls_key": pki["rogue.key"]},
    ]
    for options in refused:
        with Client(mtls_server.address, timeout=5, retries=0, **options) as client:
            with pytest.raises(CvscoreError) as info:
                client.score("giou", preds=BOXES, target=BOXES)
            assert info.value.code == grpc.StatusCode.UNAVAILABLE


def test_half_configured_tls_is_refused(tiny_repo: Path, pki: dict) -> None:
    with pytest.raises(ValueError, match="tls_cert"):
        ServerConfig(tiny_repo, tls_cert=Path(pki["server.pem"])).validate()
    with pytest.raises(ValueError, match="tls_client_ca"):
        ServerConfig(tiny_repo, tls_client_ca=Path(pki["ca.pem"])).validate()
    with pytest.raises(ValueError, match="tls_cert"):
        Client("127.0.0.1:1", tls_cert=pki["client.pem"])


# -- bearer tokens --------------------------------------------------------------------------
def test_tokens_unauthenticated_without_a_valid_one(
    token_server: BackgroundServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    bad = [None, "wrong-token", TOKENS[0] + "x", TOKENS[0][:-1]]
    for token in bad:
        with Client(token_server.address, token=token, timeout=10, retries=0) as client:
            with pytest.raises(CvscoreError) as info:
                client.score("l1", preds=PREDS, target=PREDS)
            assert info.value.code == grpc.StatusCode.UNAUTHENTICATED
            assert "Bearer" in info.value.message
    with grpc.insecure_channel(token_server.address) as channel:
        stub = pb_grpc.ScoringStub(channel)
        metadata = [("authorization", f"Basic {TOKENS[0]}")]  # not a bearer token
        error = rpc_error(lambda: stub.ListMetrics(pb.ListMetricsRequest(), metadata=metadata))
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        # reflection describes the API, so it needs a token too
        reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
        ask = reflection_pb2.ServerReflectionRequest(list_services="")
        with pytest.raises(grpc.RpcError) as info:
            list(reflect.ServerReflectionInfo(iter([ask]), timeout=10))
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        # KServe too
        kserve = channel.unary_unary("/inference.GRPCInferenceService/ServerLive")
        error = rpc_error(lambda: kserve(b"", timeout=10))
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "unauthenticated call to /cvscore.v1.Scoring/Score refused" in logged
    for token in TOKENS:  # tokens, right or wrong, never reach the log
        assert token[:12] not in logged
    assert "wrong-token" not in logged


def test_tokens_every_configured_token_is_accepted(token_server: BackgroundServer) -> None:
    for token in TOKENS:
        with Client(token_server.address, token=token, timeout=30) as client:
            result = client.score("l1", preds=PREDS, target=PREDS + 2)
            np.testing.assert_array_equal(result.scores, np.full(3, 2, np.float32))
    with grpc.insecure_channel(token_server.address) as channel:
        stub = pb_grpc.ScoringStub(channel)
        request = score_request("l1", {"preds": PREDS, "target": PREDS + 1})
        response = stub.Score(
            request, metadata=[("authorization", f"bearer {TOKENS[1]}")], timeout=30
        )
        np.testing.assert_array_equal(decode(response.outputs[0]), np.ones(3, np.float32))


def test_tokens_leave_health_open_for_probes(token_server: BackgroundServer) -> None:
    with grpc.insecure_channel(token_server.address) as channel:
        response = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="l1"), timeout=10
        )
        assert response.status == health_pb2.HealthCheckResponse.SERVING
    assert probe.main([token_server.address]) == 0
    # the plaintext health-only port (kubelet's gRPC probes): health, and nothing else
    assert token_server.server is not None
    health_address = f"127.0.0.1:{token_server.server.health_port}"
    assert probe.main([health_address, "--service", "giou"]) == 0
    assert probe.main([health_address, "--service", "no-such-metric"]) == 1
    with grpc.insecure_channel(health_address) as channel:
        stub = pb_grpc.ScoringStub(channel)
        error = rpc_error(lambda: stub.Score(score_request("l1", {}), timeout=10))
        assert error.code() == grpc.StatusCode.UNIMPLEMENTED


def test_token_file_validation(tmp_path: Path) -> None:
    from cvscore.server.security import load_tokens

    empty = tmp_path / "empty"
    empty.write_text("# nothing\n\n")
    with pytest.raises(ValueError, match="at least one token"):
        load_tokens(empty)
    spaced = tmp_path / "spaced"
    spaced.write_text("two words\n")
    with pytest.raises(ValueError, match="without whitespace") as info:
        load_tokens(spaced)
    assert "two words" not in str(info.value)
    with pytest.raises(ValueError, match="Cannot read"):
        load_tokens(tmp_path / "missing")


def test_cli_score_over_mtls_with_a_token(
    tiny_repo: Path,
    pki: dict,
    tokens_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    running = _start(
        tiny_repo,
        tls_cert=Path(pki["server.pem"]),
        tls_key=Path(pki["server.key"]),
        tls_client_ca=Path(pki["ca.pem"]),
        auth_tokens_file=tokens_file,
    )
    try:
        np.save(tmp_path / "p.npy", BOXES)
        np.save(tmp_path / "t.npy", BOXES + 1)
        token = tmp_path / "token"
        token.write_text(TOKENS[1] + "\n")
        base = [
            "score", "giou", "--input", f"preds={tmp_path / 'p.npy'}",
            "--input", f"target={tmp_path / 't.npy'}", "--server", running.address,
            "--tls-ca", pki["ca.pem"], "--tls-cert", pki["client.pem"],
            "--tls-key", pki["client.key"], "--json", "--timeout", "30",
        ]  # fmt: skip
        assert cli_main([*base, "--token-file", str(token)]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["metric"] == "giou" and len(out["scores"]) == 2
        assert cli_main(base) == 2  # no token
        assert "UNAUTHENTICATED" in capsys.readouterr().err
    finally:
        running.stop()


# -- tampered artifacts ---------------------------------------------------------------------
def test_tampered_and_truncated_artifacts_are_refused(
    tiny_repo: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(tiny_repo, repo)
    onnx_file = repo / "giou" / "1" / "model.onnx"
    data = bytearray(onnx_file.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte, same size
    onnx_file.write_bytes(bytes(data))
    script = repo / "giou" / "1" / "model.pt"
    script.write_bytes(script.read_bytes()[:100])  # truncated
    l1_onnx = repo / "l1" / "1" / "model.onnx"
    l1_onnx.write_bytes(l1_onnx.read_bytes()[:-1])
    caplog.set_level(logging.ERROR, logger="cvscore.server.core")
    running = _start(repo)
    try:
        refusals = [r.getMessage() for r in caplog.records if "refusing" in r.getMessage()]
        assert len(refusals) == 3, refusals
        assert any("model giou: refusing the onnx artifact" in m for m in refusals)
        assert any("model giou: refusing the torchscript artifact" in m for m in refusals)
        assert all("does not match its manifest" in m for m in refusals)
        with grpc.insecure_channel(running.address) as channel:
            stub = pb_grpc.ScoringStub(channel)
            request = score_request("giou", {"preds": BOXES, "target": BOXES})
            error = rpc_error(lambda: stub.Score(request, timeout=10))
            assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "could not be loaded" in error.details()
            # l1 lost only its ONNX artifact: asking for it is refused, the rest serves
            request = score_request(
                "l1", {"preds": PREDS, "target": PREDS}, runtime=pb.RUNTIME_ONNX
            )
            error = rpc_error(lambda: stub.Score(request, timeout=10))
            assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "onnx" in error.details()
            assert_serving(stub)
            health = health_pb2_grpc.HealthStub(channel)
            status = health.Check(health_pb2.HealthCheckRequest(service="giou"), timeout=10)
            assert status.status == health_pb2.HealthCheckResponse.NOT_SERVING
    finally:
        running.stop()


# -- model names that could leave the repository ----------------------------------------------
ESCAPES = ["..", "../l1", "l1/../giou", "/etc/passwd", "l1/1", "..\\l1", "./l1", ".hidden/.."]


@pytest.mark.parametrize("name", ESCAPES)
def test_check_model_name_refuses_escapes(name: str) -> None:
    with pytest.raises(ValueError, match="model name"):
        check_model_name(name)


def test_escaping_names_never_reach_the_repository(
    token_server: BackgroundServer, tiny_repo: Path
) -> None:
    auth = [("authorization", f"Bearer {TOKENS[0]}")]
    with grpc.insecure_channel(token_server.address) as channel:
        stub = pb_grpc.ScoringStub(channel)
        kserve = channel.unary_unary("/inference.GRPCInferenceService/ModelMetadata")
        for name in ESCAPES:
            request = score_request(name, {"preds": PREDS, "target": PREDS})
            error = rpc_error(lambda r=request: stub.Score(r, metadata=auth, timeout=10))
            assert error.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT)
            # KServe ModelMetadataRequest: field 1 is the model name
            raw = b"\x0a" + bytes([len(name)]) + name.encode()
            error = rpc_error(lambda r=raw: kserve(r, metadata=auth, timeout=10))
            assert error.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT)
        assert_serving_with(stub, auth)
    with pytest.raises(ValueError, match="model name"):
        ServerConfig(tiny_repo, models=("../l1",)).validate()
    core = ScoringCore(tiny_repo, names=["../tiny/l1", "l1"])
    core.load()  # the escaping name is refused, reported, and never stops the others
    assert "model name" in core.failed["../tiny/l1"]
    assert list(core.models) == ["l1"]


def assert_serving_with(stub: pb_grpc.ScoringStub, metadata: list[tuple[str, str]]) -> None:
    request = score_request("l1", {"preds": PREDS, "target": PREDS + 1})
    response = stub.Score(request, metadata=metadata, timeout=30)
    np.testing.assert_array_equal(decode(response.outputs[0]), np.ones(3, np.float32))


def test_cli_serve_flags_reach_the_server_config(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import cvscore.server.app as app
    import cvscore.server.logs as server_logs

    seen: list[ServerConfig] = []
    monkeypatch.setattr(app, "main", lambda config, progress=True: seen.append(config) or 0)
    monkeypatch.setattr(server_logs, "configure_logging", lambda level, fmt: None)
    argv = [
        "serve", "--repository", str(tmp_path), "--tls-cert", "c.pem", "--tls-key", "k.pem",
        "--tls-client-ca", "ca.pem", "--auth-tokens-file", "tokens", "--health-port", "8003",
        "--metrics-port", "8002", "--metrics-host", "0.0.0.0", "--log-format", "json",
    ]  # fmt: skip
    assert cli_main(argv) == 0
    (config,) = seen
    assert (config.tls_cert, config.tls_key, config.tls_client_ca) == (
        Path("c.pem"),
        Path("k.pem"),
        Path("ca.pem"),
    )
    assert config.auth_tokens_file == Path("tokens")
    assert (config.health_port, config.metrics_port, config.metrics_host) == (8003, 8002, "0.0.0.0")
