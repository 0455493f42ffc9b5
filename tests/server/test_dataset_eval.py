"""Dataset metrics served: one stream, many streams merged, and two servers merged agree.

The figures of `coco_map` and `mean_iou` come from aggregator states that merge
associatively, so how the dataset is split (one stream, several streams, several servers)
must not change a single figure.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from cvscore.client import Client
from cvscore.client.sharding import merge_results
from cvscore.metrics import coco, segmentation
from cvscore.server.app import BackgroundServer, ServerConfig

from ..metrics.test_coco import pycocotools_stats, synthetic_coco

MODELS = ("coco_map", "mean_iou", "l1")


@pytest.fixture(scope="module")
def servers(zoo_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    repo = tmp_path_factory.mktemp("dataset")
    for name in MODELS:
        shutil.copytree(zoo_repo / name, repo / name)
    running = [
        BackgroundServer(ServerConfig(repo, port=0, runtime="onnx")).start() for _ in range(2)
    ]
    yield [r.address for r in running]
    for r in running:
        r.stop()


@pytest.fixture(scope="module")
def coco_data() -> tuple[coco.CocoData, np.ndarray]:
    gt, dt = synthetic_coco(seed=11, images=40)
    return coco.parse_coco(gt, dt), pycocotools_stats(gt, dt)


def _coco_stats(figures: dict[str, float]) -> np.ndarray:
    reference = coco.evaluate(coco.parse_coco(*synthetic_coco(seed=11, images=2))).compute()
    return np.array([figures[k] for k in reference])


def test_coco_one_stream_many_streams_and_two_servers_agree(servers, coco_data) -> None:
    data, expected = coco_data
    batches = list(coco.coco_batches(data, max_pairs=400))
    assert len(batches) >= 6  # the split is real
    with Client(servers[0]) as client:
        one = client.evaluate("coco_map", batches, progress=False)
        parts = [client.evaluate("coco_map", batches[i::3], progress=False) for i in range(3)]
    many = merge_results(parts, "coco_map")
    with Client(servers) as both:
        sharded = both.evaluate("coco_map", batches, progress=False, shard=True)
    assert one.batches == many.batches == sharded.batches == len(batches)
    # pycocotools on the same files is the independent reference
    np.testing.assert_allclose(_coco_stats(one.figures), expected, rtol=0, atol=1e-12)
    assert one.figures == many.figures == sharded.figures


def test_mean_iou_streams_and_servers_agree(servers) -> None:
    rng = np.random.default_rng(5)
    k = 21  # the default num_classes frozen into the artifact
    batches = []
    for _ in range(5):
        target = rng.integers(0, 4, size=(3, 12, 13))
        preds = np.where(rng.random(target.shape) < 0.8, target, rng.integers(0, 4, target.shape))
        batches.append({"preds": preds.astype(np.int64), "target": target.astype(np.int64)})
    reference = segmentation.SegmentationAggregator(num_classes=k)
    for b in batches:  # a plain numpy confusion matrix, independent of the graph
        np.add.at(reference.confusion, (b["target"].ravel(), b["preds"].ravel()), 1)
    expected = reference.compute()
    with Client(servers[0]) as client:
        one = client.evaluate("mean_iou", batches, progress=False)
        halves = [client.evaluate("mean_iou", batches[:2], progress=False),
                  client.evaluate("mean_iou", batches[2:], progress=False)]  # fmt: skip
    with Client(servers) as both:
        sharded = both.evaluate("mean_iou", batches, progress=False, shard=True)
    merged = merge_results(halves, "mean_iou")
    for result in (one, merged, sharded):
        assert result.figures.keys() == expected.keys()
        for key, value in expected.items():
            assert result.figures[key] == pytest.approx(value, nan_ok=True, rel=0, abs=0)


def test_per_sample_metric_sharded_equals_one_stream(servers) -> None:
    rng = np.random.default_rng(9)
    batches = [
        {
            "preds": rng.random((16, 6), dtype=np.float32),
            "target": rng.random((16, 6), dtype=np.float32),
        }
        for _ in range(7)
    ]
    with Client(servers[0]) as client:
        one = client.evaluate("l1", batches, return_scores=True, progress=False)
    with Client(servers) as both:
        sharded = both.evaluate("l1", batches, return_scores=True, progress=False, shard=True)
    assert sharded.count == one.count == 7 * 16
    assert (sharded.min, sharded.max) == (one.min, one.max)
    assert sharded.sum == pytest.approx(one.sum, rel=1e-15)
    # per-sample scores come back in dataset order, bit for bit (a row's score does not
    # depend on the batch it ran in)
    np.testing.assert_array_equal(sharded.scores, one.scores)
    assert not one.figures and not one.aggregator_state  # a per-sample metric has none


def test_bad_aggregator_input_is_invalid_argument_and_server_keeps_serving(
    servers, coco_data
) -> None:
    from cvscore.client.client import CvscoreError

    data, _ = coco_data
    batch = dict(next(iter(coco.coco_batches(data))))
    del batch["pred_score"]  # the aggregator needs every detection's score
    with Client(servers[0]) as client:
        with pytest.raises(CvscoreError) as info:
            client.evaluate("coco_map", [batch], progress=False)
        assert info.value.code.name == "INVALID_ARGUMENT"
        assert "pred_score" in info.value.message
        assert client.health() == "SERVING"


def test_cli_evaluate_coco_through_two_servers(servers, tmp_path: Path, capsys) -> None:
    import json

    from cvscore.cli.main import main

    gt, dt = synthetic_coco(seed=12, images=25)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dt.json").write_text(json.dumps(dt))
    out = tmp_path / "stats.json"
    args = [
        "evaluate",
        "coco",
        "--gt",
        str(tmp_path / "gt.json"),
        "--dt",
        str(tmp_path / "dt.json"),
    ]
    code = main([*args, "--server", ",".join(servers), "--json", str(out), "--no-progress"])
    assert code == 0
    assert (
        "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ]"
        in capsys.readouterr().out
    )
    stats = json.loads(out.read_text())["stats"]
    np.testing.assert_allclose(list(stats.values()), pycocotools_stats(gt, dt), rtol=0, atol=1e-12)
    # an unreachable server is a one-line error and exit 2, not a traceback
    assert main([*args, "--server", "127.0.0.1:1", "--no-progress"]) == 2
    assert "error: server 127.0.0.1:1" in capsys.readouterr().err
