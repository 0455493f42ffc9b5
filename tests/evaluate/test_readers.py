"""The one place dataset files are read: every problem is one line naming the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cvscore.evaluate import drivers, readers
from cvscore.evaluate.errors import DataError

Image = pytest.importorskip("PIL.Image")


def _png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_label_pairs_are_checked(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=(4, 5)).astype(np.uint8)
    _png(tmp_path / "gt" / "a.png", labels)
    _png(tmp_path / "pred" / "a.png", labels)
    assert readers.label_pair_names(tmp_path / "pred", tmp_path / "gt") == ["a.png"]
    pred, target = readers.read_label_pair(tmp_path / "pred/a.png", tmp_path / "gt/a.png", 3, 255)
    assert pred.dtype == np.int64 and (pred == labels).all() and (target == labels).all()
    with pytest.raises(DataError, match=r"a\.png: label 2 outside \[0, 1\]"):
        readers.read_label_pair(tmp_path / "pred/a.png", tmp_path / "gt/a.png", 2, 255)
    _png(tmp_path / "gt" / "b.png", labels)
    with pytest.raises(DataError, match=r"pred/b\.png: no prediction for .*gt/b\.png"):
        readers.label_pair_names(tmp_path / "pred", tmp_path / "gt")
    _png(tmp_path / "rgb" / "a.png", np.zeros((4, 5, 3), np.uint8))
    with pytest.raises(DataError, match="expected a single-channel label map, got PNG mode RGB"):
        readers.read_label_png(tmp_path / "rgb" / "a.png")


def test_retrieval_files_are_checked(tmp_path: Path) -> None:
    emb = np.random.default_rng(1).random((6, 3)).astype(np.float32)
    np.save(tmp_path / "e.npy", emb)
    np.save(tmp_path / "l.npy", np.array([0, 0, 1, 1, 2, 2]))
    np.save(tmp_path / "short.npy", np.array([0, 1]))
    np.save(tmp_path / "nan.npy", np.full((6, 3), np.nan, np.float32))
    data = readers.read_retrieval(tmp_path / "e.npy", tmp_path / "l.npy")
    assert data.leave_one_out and (data.exclude == np.arange(6)).all()
    with pytest.raises(DataError, match=r"short\.npy: 2 labels for 6 embeddings"):
        readers.read_retrieval(tmp_path / "e.npy", tmp_path / "short.npy")
    with pytest.raises(DataError, match=r"nan\.npy: embeddings hold NaN or inf"):
        readers.read_retrieval(tmp_path / "nan.npy", tmp_path / "l.npy")
    with pytest.raises(DataError, match="together"):
        readers.read_retrieval(tmp_path / "e.npy", tmp_path / "l.npy", tmp_path / "e.npy")
    with pytest.raises(DataError, match=r"missing\.npy: no such file"):
        readers.read_retrieval(tmp_path / "missing.npy", tmp_path / "l.npy")


def test_image_pairs_batch_by_runs_of_equal_shape(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    for i, size in enumerate([(4, 4), (4, 4), (4, 4), (6, 5)]):
        for folder in ("pred", "target"):
            _png(tmp_path / folder / f"{i:03d}.png", rng.integers(0, 256, size, dtype=np.uint8))
    batches = drivers.image_batches(tmp_path / "pred", tmp_path / "target", batch_size=2)
    assert [b["preds"].shape for b in batches] == [(2, 1, 4, 4), (1, 1, 4, 4), (1, 1, 6, 5)]
    assert all(b["preds"].dtype == np.float32 and b["preds"].max() <= 1 for b in batches)
    (tmp_path / "target" / "003.png").unlink()
    with pytest.raises(DataError, match="do not pair up"):
        drivers.image_batches(tmp_path / "pred", tmp_path / "target", batch_size=2)


def test_reductions_are_exact_and_named() -> None:
    scores = np.array([1e16, 1.0, -1e16, 1.0])
    assert drivers.reduce_scores(scores, "mean") == 0.5  # fsum: no cancellation error
    assert drivers.reduce_scores(np.zeros(0), "min") != drivers.reduce_scores(np.zeros(0), "min")
    with pytest.raises(ValueError, match="mode"):
        drivers.reduce_scores(scores, "mode")
