"""Servers on ephemeral ports for the server and client tests.

``server`` serves the whole zoo (the session's ``zoo_repo``) in every runtime, once per
session. ``small_server`` starts a server with its own configuration on a small repository
(a few zoo models plus ``centre_distance``, a test-only model with an input that has no
batch axis and a vector score), for tests that pause queues, fill them or break runtimes.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import torch
from torch import Tensor, nn

from cvscore.exporters import export_metric
from cvscore.metrics.registry import MetricSpec, TensorSpec
from cvscore.server.app import BackgroundServer, ServerConfig
from cvscore.server.batcher import Request
from cvscore.v1 import scoring_pb2 as pb
from cvscore.v1 import scoring_pb2_grpc as pb_grpc


# -- a test-only model: a shared input without the batch axis, a vector score ----------------
class CentreDistance(nn.Module):
    def forward(self, preds: Tensor, centres: Tensor) -> Tensor:
        return (preds.unsqueeze(1) - centres.unsqueeze(0)).square().sum(-1)


def _centre_distance(preds: Tensor, centres: Tensor) -> Tensor:
    return CentreDistance()(preds, centres)


def _sample_centres(
    gen: torch.Generator, sizes: Mapping[str, int], dtype: torch.dtype
) -> dict[str, Tensor]:
    return {
        "preds": torch.randn(sizes["N"], sizes["D"], generator=gen, dtype=dtype),
        "centres": torch.randn(sizes["K"], sizes["D"], generator=gen, dtype=dtype),
    }


CENTRE_SPEC = MetricSpec(
    name="centre_distance",
    family="test",
    module=CentreDistance,
    functional=_centre_distance,
    inputs=(
        TensorSpec("preds", ("N", "D"), "float32"),
        TensorSpec("centres", ("K", "D"), "float32", "shared by the batch"),
    ),
    outputs=(TensorSpec("distance", ("N", "K"), "float32"),),
    params=(),
    higher_is_better=False,
    paper="-",
    oracle="numpy",
    sample=_sample_centres,
    example_sizes={"N": 3, "K": 5, "D": 4},
)

SMALL_MODELS = ("l1", "giou", "cross_entropy")


@pytest.fixture(scope="session")
def small_repo(zoo_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("small")
    for name in SMALL_MODELS:
        shutil.copytree(zoo_repo / name, repo / name)
    export_metric(CENTRE_SPEC, repo, formats=("torchscript", "onnx"))
    return repo


# -- servers ----------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def server(zoo_repo: Path) -> Iterator[BackgroundServer]:
    """The whole zoo in ONNX Runtime and TorchScript, default batching, gRPC and HTTP.

    (torch.export programs take ~0.4 s each to load; the torch_export runtime is tested on
    ``small_server``.)
    """
    config = ServerConfig(zoo_repo, port=0, http_port=0, runtime="onnx,torchscript")
    with BackgroundServer(config) as running:
        yield running


@pytest.fixture(scope="session")
def stub(server: BackgroundServer) -> Iterator[pb_grpc.ScoringStub]:
    with grpc.insecure_channel(server.address) as channel:
        yield pb_grpc.ScoringStub(channel)


@pytest.fixture
def small_server(small_repo: Path) -> Iterator[Callable[..., BackgroundServer]]:
    """Factory: ``small_server(max_queue_size=2, ...)`` -> a started server on small_repo."""
    started: list[BackgroundServer] = []

    def start(**overrides: Any) -> BackgroundServer:
        options: dict[str, Any] = {"port": 0, "runtime": "onnx,torchscript"}
        options.update(overrides)
        running = BackgroundServer(ServerConfig(small_repo, **options)).start()
        started.append(running)
        return running

    yield start
    for running in started:
        running.call(running.core.resume)
        running.stop()


class Events:
    """Batcher events seen by a server, waitable without sleeping."""

    def __init__(self) -> None:
        self.lock = threading.Condition()
        self.seen: list[tuple[str, Request]] = []

    def __call__(self, event: str, request: Request) -> None:
        with self.lock:
            self.seen.append((event, request))
            self.lock.notify_all()

    def count(self, *events: str) -> int:
        with self.lock:
            return sum(e in events for e, _ in self.seen)

    def wait_for(self, n: int, *events: str, timeout: float = 30.0) -> None:
        with self.lock:
            if not self.lock.wait_for(lambda: self.count(*events) >= n, timeout):
                raise TimeoutError(f"saw {self.count(*events)} of {n} {events} events")


@pytest.fixture
def events() -> Events:
    return Events()


# -- requests ---------------------------------------------------------------------------------
DTYPES = {
    np.dtype("float32"): pb.DATA_TYPE_FLOAT32,
    np.dtype("float64"): pb.DATA_TYPE_FLOAT64,
    np.dtype("float16"): pb.DATA_TYPE_FLOAT16,
    np.dtype("int32"): pb.DATA_TYPE_INT32,
    np.dtype("int64"): pb.DATA_TYPE_INT64,
    np.dtype("bool"): pb.DATA_TYPE_BOOL,
    np.dtype("uint8"): pb.DATA_TYPE_UINT8,
}
FROM_PB = {v: k for k, v in DTYPES.items()}


def tensor(name: str, array: Any) -> pb.Tensor:
    array = np.ascontiguousarray(array.numpy() if isinstance(array, Tensor) else array)
    return pb.Tensor(
        name=name, dtype=DTYPES[array.dtype], shape=list(array.shape), data=array.tobytes()
    )


def score_request(metric: str, inputs: Mapping[str, Any], **fields: Any) -> pb.ScoreRequest:
    return pb.ScoreRequest(
        metric=metric, inputs=[tensor(k, v) for k, v in inputs.items()], **fields
    )


def decode(t: pb.Tensor) -> np.ndarray:
    return np.frombuffer(t.data, dtype=FROM_PB[t.dtype]).reshape(tuple(t.shape))


def sample(metric: str, seed: int = 0, **sizes: int) -> dict[str, Tensor]:
    """Fresh valid inputs for a registered metric."""
    from cvscore.metrics import registry

    spec = registry.get(metric)
    return spec.make_inputs(torch.Generator().manual_seed(seed), sizes)


def rpc_error(call: Callable[[], Any]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


def assert_serving(stub: pb_grpc.ScoringStub) -> None:
    """The server still answers a valid request correctly after an error."""
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    b = a + 1
    response = stub.Score(score_request("l1", {"preds": a, "target": b}), timeout=30)
    np.testing.assert_array_equal(decode(response.outputs[0]), np.ones(3, np.float32))


# -- a two-model repository of its own, for the security and observability tests -------------
TINY_MODELS = ("l1", "giou")


@pytest.fixture(scope="session")
def tiny_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """l1 and giou in ONNX and TorchScript, exported here (not copied from the whole zoo)."""
    from cvscore.exporters import export_many

    repo = tmp_path_factory.mktemp("tiny")
    export_many(list(TINY_MODELS), repo, formats=("onnx", "torchscript"), progress=False)
    return repo


# -- certificates and tokens, for the security tests of both transports ------------------
def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _key_and_csr(name: str, cwd: Path) -> None:
    _openssl(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN=cvscore-{name}",
        cwd=cwd,
    )  # fmt: skip


def _ca(name: str, cwd: Path) -> None:
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2",
        "-subj", f"/CN=cvscore-{name}", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=cwd,
    )  # fmt: skip


def _sign(name: str, ca: str, extensions: str, cwd: Path) -> None:
    _key_and_csr(name, cwd)
    (cwd / f"{name}.ext").write_text(extensions)
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
        "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext",
        cwd=cwd,
    )  # fmt: skip


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A CA, a server certificate for localhost/127.0.0.1, a client certificate, and a
    client certificate from another CA (which the server must not accept)."""
    d = tmp_path_factory.mktemp("pki")
    _ca("ca", d)
    _ca("rogue-ca", d)
    _sign("server", "ca", "subjectAltName=DNS:localhost,IP:127.0.0.1\n", d)
    _sign("client", "ca", "extendedKeyUsage=clientAuth\n", d)
    _sign("rogue", "rogue-ca", "extendedKeyUsage=clientAuth\n", d)
    names = ("ca", "rogue-ca", "server", "client", "rogue")
    files = {f"{n}.pem": str(d / f"{n}.pem") for n in names}
    files.update({f"{n}.key": str(d / f"{n}.key") for n in names})
    return files


TOKENS = ("s3cret-alpha-0123456789", "s3cret-beta-9876543210")


@pytest.fixture(scope="session")
def tokens_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("auth") / "tokens"
    path.write_text(f"# cvscore tokens\n{TOKENS[0]}\n\n  {TOKENS[1]}  \n")
    return path
