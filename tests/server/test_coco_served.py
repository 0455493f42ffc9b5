"""COCO keypoints served: the OKS graph on a server, its aggregator folded there or here."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from cvscore.client import Client
from cvscore.metrics import coco_files
from cvscore.metrics.coco_eval import PARAMS
from cvscore.server.app import BackgroundServer, ServerConfig

from ..metrics.coco_fixtures import keypoints_fixture, pycocotools_eval


@pytest.fixture(scope="module")
def server(zoo_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    repo = tmp_path_factory.mktemp("coco-served")
    shutil.copytree(zoo_repo / "coco_oks", repo / "coco_oks")
    running = BackgroundServer(ServerConfig(repo, port=0, runtime="onnx")).start()
    yield running.address
    running.stop()


def test_keypoints_stream_folds_on_the_server(server: str) -> None:
    gt, dt = keypoints_fixture(9)
    data = coco_files.parse_coco(gt, dt, iou_type="keypoints")
    # graph inputs and the aggregator's host-side inputs travel in one dict per batch
    batches = list(coco_files.coco_batches(data, max_pairs=60))
    assert len(batches) > 3
    with Client(server) as client:
        result = client.evaluate("coco_oks", batches, progress=False)
    expected = pycocotools_eval(gt, dt, "keypoints").stats
    names = PARAMS["keypoints"].stat_names
    assert set(result.figures) == set(names)
    actual = [result.figures[n] for n in names]
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-12)


def test_cli_evaluate_keypoints_through_a_server(server: str, tmp_path: Path) -> None:
    from cvscore.cli.main import main

    gt, dt = keypoints_fixture(10)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dt.json").write_text(json.dumps(dt))
    out = tmp_path / "stats.json"
    code = main(
        ["evaluate", "coco", "--gt", str(tmp_path / "gt.json"), "--dt", str(tmp_path / "dt.json"),
         "--iou-type", "keypoints", "--server", server, "--json", str(out), "--no-progress"]
    )  # fmt: skip
    assert code == 0
    doc = json.loads(out.read_text())
    assert doc["metric"] == "coco_oks"
    expected = pycocotools_eval(gt, dt, "keypoints").stats
    np.testing.assert_allclose(list(doc["stats"].values()), expected, rtol=0, atol=1e-12)
