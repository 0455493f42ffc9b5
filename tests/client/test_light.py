"""The client library stays light: a TLS call and a sharded, merged dataset evaluation
through ``cvscore.client`` load neither torch, onnxruntime nor the server.

The servers run in this process; the client runs in a fresh interpreter, which reports
what it imported.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cvscore.server.app import BackgroundServer, ServerConfig

from ..server.conftest import _ca, _sign

CLIENT = r"""
import json, sys
import numpy as np
from cvscore.client import Client

tls_address, ca, first, second = sys.argv[1:5]
with Client(tls_address, tls_ca=ca, timeout=60) as client:
    score = client.score("l1", preds=np.ones((2, 3), np.float32), target=np.zeros((2, 3), np.float32))
rng = np.random.default_rng(3)
batches = []
for _ in range(5):
    target = rng.integers(0, 4, size=(2, 9, 7))
    preds = np.where(rng.random(target.shape) < 0.7, target, rng.integers(0, 4, target.shape))
    batches.append({"preds": preds.astype(np.int64), "target": target.astype(np.int64)})
with Client([first, second], timeout=60) as both:
    sharded = both.evaluate("mean_iou", batches, shard=True, progress=False)
with Client(first, timeout=60) as one:
    single = one.evaluate("mean_iou", batches, progress=False)
loaded = sorted(m for m in sys.modules if m.split(".")[0] in {"torch", "onnxruntime"}
                or m.startswith("cvscore.server") or m == "cvscore.metrics.registry")
print(json.dumps({
    "loaded": loaded,
    "l1": score.value,
    "sharded": sharded.figures,
    "single": single.figures,
    "batches": sharded.batches,
}))
"""


@pytest.fixture(scope="module")
def servers(zoo_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """A TLS server with l1 and two plain servers with mean_iou."""
    pki = tmp_path_factory.mktemp("pki")
    _ca("ca", pki)
    _sign("server", "ca", "subjectAltName=DNS:localhost,IP:127.0.0.1\n", pki)
    repo = tmp_path_factory.mktemp("light")
    for name in ("l1", "mean_iou"):
        shutil.copytree(zoo_repo / name, repo / name)
    tls = ServerConfig(
        repo,
        port=0,
        runtime="onnx",
        tls_cert=pki / "server.pem",
        tls_key=pki / "server.key",
    )
    running = [BackgroundServer(tls).start()]
    running += [BackgroundServer(ServerConfig(repo, port=0, runtime="onnx")).start() for _ in "ab"]
    yield [r.address for r in running] + [str(pki / "ca.pem")]
    for r in running:
        r.stop()


def test_tls_call_and_sharded_merge_leave_torch_out(servers: list[str]) -> None:
    tls_address, first, second, ca = servers
    result = subprocess.run(
        [sys.executable, "-c", CLIENT, tls_address, ca, first, second],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["loaded"] == []  # no torch, onnxruntime, server or registry
    assert report["l1"] == pytest.approx(1.0)
    # the states of both servers were merged: the figures of one stream, bit for bit
    assert report["batches"] == 5
    assert report["sharded"].keys() == report["single"].keys()
    assert json.dumps(report["sharded"], sort_keys=True) == json.dumps(
        report["single"], sort_keys=True
    )  # NaN (classes present nowhere) included
    assert 0 < report["sharded"]["mean_iou"] < 1
