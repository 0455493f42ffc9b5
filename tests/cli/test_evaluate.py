"""``cvscore evaluate``: files in, the familiar figures out, one-line errors."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import pytest

from cvscore.cli.main import main
from cvscore.metrics import coco

from ..metrics.coco_fixtures import keypoints_fixture, pycocotools_eval, segm_fixture
from ..metrics.test_coco import pycocotools_stats, synthetic_coco

Image = pytest.importorskip("PIL.Image")


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("evaluate-repo")


def _write_json(path: Path, value: object) -> str:
    path.write_text(json.dumps(value))
    return str(path)


def test_coco_prints_pycocotools_layout_and_writes_json(
    repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gt, dt = synthetic_coco(11)
    gt_file = _write_json(tmp_path / "instances.json", gt)
    dt_file = _write_json(tmp_path / "dets.json", dt)
    out = tmp_path / "out.json"
    code = main(
        ["evaluate", "coco", "--gt", gt_file, "--dt", dt_file, "--json", str(out),
         "--repository", str(repo), "--no-progress"]
    )  # fmt: skip
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == (
        " Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = "
        f"{pycocotools_stats(gt, dt)[0]:0.3f}"
    )
    assert lines[8].startswith(
        " Average Recall     (AR) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ]"
    )
    doc = json.loads(out.read_text())
    actual = [doc["stats"][name] for name in coco.STAT_NAMES]
    np.testing.assert_allclose(actual, pycocotools_stats(gt, dt), atol=1e-6)


@pytest.mark.parametrize("iou_type", ["segm", "keypoints"])
def test_coco_iou_types_and_per_category_table(
    iou_type: str, repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gt, dt = (segm_fixture if iou_type == "segm" else keypoints_fixture)(21)
    gt_file = _write_json(tmp_path / "instances.json", gt)
    dt_file = _write_json(tmp_path / "dets.json", dt)
    out = tmp_path / "out.json"
    code = main(
        ["evaluate", "coco", "--gt", gt_file, "--dt", dt_file, "--iou-type", iou_type,
         "--per-category", "--json", str(out), "--repository", str(repo), "--no-progress"]
    )  # fmt: skip
    assert code == 0
    e = pycocotools_eval(gt, dt, iou_type)
    lines = capsys.readouterr().out.splitlines()
    max_dets = 20 if iou_type == "keypoints" else 100
    assert lines[0] == (
        f" Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets={max_dets:>3d} ] = "
        f"{e.stats[0]:0.3f}"
    )
    doc = json.loads(out.read_text())
    assert doc["iou_type"] == iou_type and len(doc["stats"]) == len(e.stats)
    np.testing.assert_allclose(list(doc["stats"].values()), e.stats, atol=1e-12)
    # per category: pycocotools' precision[:, :, k, 0, -1] mean is each category's AP
    by_id = {row["id"]: row for row in doc["per_category"]}
    for k, cat in enumerate(e.params.catIds):
        p = e.eval["precision"][:, :, k, 0, -1]
        ap = float(np.mean(p[p > -1])) if (p > -1).any() else -1.0
        assert by_id[cat]["AP"] == pytest.approx(ap, abs=1e-12)
        assert by_id[cat]["name"] == f"thing{cat}"
    table = [line for line in lines if line.startswith("| thing")]
    assert len(table) == len(gt["categories"])
    assert table[-1].split("|")[2].strip() == "nan"  # the category with nothing at all


@pytest.mark.parametrize(
    ("break_it", "message"),
    [
        (lambda gt, dt: gt["annotations"][2].pop("category_id"), r"instances.json: annotations\[2\]: missing key 'category_id'"),
        (lambda gt, dt: dt[4].update(bbox=[1, 2, 3]), r"dets.json\[4\]: bad box \[1, 2, 3\]"),
        (lambda gt, dt: dt[0].update(image_id=-5), r"dets.json\[0\]: unknown image id -5"),
    ],
)  # fmt: skip
def test_coco_malformed_file_is_one_line(
    repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], break_it, message: str
) -> None:
    gt, dt = synthetic_coco(12)
    break_it(gt, dt)
    gt_file = _write_json(tmp_path / "instances.json", gt)
    dt_file = _write_json(tmp_path / "dets.json", dt)
    code = main(["evaluate", "coco", "--gt", gt_file, "--dt", dt_file, "--repository", str(repo)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("cvscore evaluate: error:")
    assert __import__("re").search(message, err), err


def test_coco_unreadable_json_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "broken.json"
    bad.write_text("{not json")
    code = main(["evaluate", "coco", "--gt", str(bad), "--dt", str(bad)])
    assert code == 2
    assert f"{bad}: not valid JSON" in capsys.readouterr().err


def _png(path: Path, labels: np.ndarray) -> None:
    Image.fromarray(labels.astype(np.uint8), mode="L").save(path)


def test_segmentation_matches_numpy(
    repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(zlib.crc32(b"seg"))
    k = 4
    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    pred_dir.mkdir()
    gt_dir.mkdir()
    total = np.zeros((k, k), dtype=np.int64)
    for i, shape in enumerate([(12, 17), (9, 9), (20, 5)]):
        target = rng.integers(0, k, shape)
        target[rng.random(shape) < 0.1] = 255
        pred = np.where(
            rng.random(shape) < 0.7, np.clip(target, 0, k - 1), rng.integers(0, k, shape)
        )
        _png(gt_dir / f"{i}.png", target)
        _png(pred_dir / f"{i}.png", pred)
        keep = target != 255
        total += np.bincount(target[keep] * k + pred[keep], minlength=k * k).reshape(k, k)
    out = tmp_path / "seg.json"
    code = main(
        ["evaluate", "segmentation", "--pred", str(pred_dir), "--gt", str(gt_dir),
         "--num-classes", str(k), "--json", str(out), "--repository", str(repo), "--no-progress"]
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    tp = np.diag(total)
    iou = tp / (total.sum(0) + total.sum(1) - tp)
    assert f"mean_iou        {iou.mean():0.4f}" in printed
    doc = json.loads(out.read_text())
    assert doc["results"]["mean_iou"] == pytest.approx(iou.mean(), rel=1e-12)
    assert doc["results"]["pixel_accuracy"] == pytest.approx(tp.sum() / total.sum(), rel=1e-12)


def test_segmentation_missing_prediction_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "gt").mkdir()
    (tmp_path / "pred").mkdir()
    _png(tmp_path / "gt" / "a.png", np.zeros((3, 3)))
    code = main(
        ["evaluate", "segmentation", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"),
         "--num-classes", "3"]
    )  # fmt: skip
    assert code == 2
    assert f"{tmp_path / 'pred' / 'a.png'}: no prediction" in capsys.readouterr().err


def test_retrieval_leave_one_out_and_gallery(
    repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 4, 50)
    emb = (np.eye(8)[labels] + rng.normal(scale=0.8, size=(50, 8))).astype(np.float32)
    np.save(tmp_path / "e.npy", emb)
    np.save(tmp_path / "l.npy", labels)
    out = tmp_path / "r.json"
    args = ["evaluate", "retrieval", "--embeddings", str(tmp_path / "e.npy"),
            "--labels", str(tmp_path / "l.npy"), "--k", "1", "5", "--repository", str(repo),
            "--batch-size", "16", "--no-progress"]  # fmt: skip
    assert main([*args, "--json", str(out)]) == 0
    loo = json.loads(out.read_text())["results"]
    # brute-force leave-one-out hit rate@1 by cosine similarity
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    sim = unit @ unit.T
    np.fill_diagonal(sim, -np.inf)
    assert loo["hit_rate@1"] == pytest.approx(np.mean(labels[sim.argmax(1)] == labels))
    assert main([*args, "--gallery", str(tmp_path / "e.npy"),
                 "--gallery-labels", str(tmp_path / "l.npy"), "--json", str(out)]) == 0  # fmt: skip
    assert json.loads(out.read_text())["results"]["hit_rate@1"] == 1.0  # each finds itself
    capsys.readouterr()
    np.save(tmp_path / "bad.npy", labels[:10])
    assert main([*args[:5], str(tmp_path / "bad.npy")]) == 2
    assert "bad.npy: 10 labels for 50 embeddings" in capsys.readouterr().err
