"""mean_iou: the confusion-matrix graph and its aggregator against a plain numpy reference."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from cvscore.metrics import aggregators, registry, segmentation
from cvscore.server import runtimes


def numpy_confusion(preds: np.ndarray, target: np.ndarray, k: int, ignore: int) -> np.ndarray:
    keep = target != ignore
    return np.bincount(target[keep] * k + preds[keep], minlength=k * k).reshape(k, k)


def numpy_figures(cm: np.ndarray) -> dict[str, float]:
    tp = np.diag(cm).astype(float)
    union = cm.sum(0) + cm.sum(1) - tp
    present = union > 0
    iou = tp[present] / union[present]
    return {"mean_iou": iou.mean(), "pixel_accuracy": tp.sum() / cm.sum()}


def _labels(seed: int, n: int, k: int, ignore: int, shape=(16, 20)):
    rng = np.random.default_rng(seed)
    target = rng.integers(0, k, (n, *shape))
    target[rng.random(target.shape) < 0.1] = ignore
    preds = np.where(
        rng.random(target.shape) < 0.6, np.clip(target, 0, k - 1), rng.integers(0, k, target.shape)
    )
    return preds, target


def _run(preds: np.ndarray, target: np.ndarray, k: int, ignore: int) -> np.ndarray:
    module = segmentation.MeanIoU(k, ignore)
    return module(torch.from_numpy(preds), torch.from_numpy(target)).numpy()


@pytest.mark.parametrize("ignore", [255, -1, 0])
def test_confusion_and_figures_match_numpy(ignore: int) -> None:
    k = 6
    preds, target = _labels(0, 5, k, ignore)
    out = _run(preds, target, k, ignore)
    assert out.shape == (5, k, k) and out.dtype == np.int64
    for n in range(5):
        np.testing.assert_array_equal(out[n], numpy_confusion(preds[n], target[n], k, ignore))
    agg = aggregators.create("mean_iou", num_classes=k, ignore_index=ignore)
    agg.update({"confusion": out}, {})
    cm = numpy_confusion(preds.ravel(), target.ravel(), k, ignore)
    np.testing.assert_array_equal(agg.confusion, cm)
    figures = agg.compute()
    for key, value in numpy_figures(cm).items():
        assert figures[key] == pytest.approx(value, rel=1e-12)


def test_absent_class_is_nan_and_left_out_of_the_mean() -> None:
    # Class 2 is in neither target nor predictions -> IoU NaN, excluded. Class 1 is predicted
    # once but never true -> IoU 0, included. Class 0: 2 of 3 pixels right -> 2/3.
    preds = np.array([[0, 0, 1]])
    target = np.array([[0, 0, 0]])
    agg = segmentation.SegmentationAggregator(num_classes=3, ignore_index=255)
    agg.update({"confusion": _run(preds, target, 3, 255)})
    figures = agg.compute()
    assert figures["iou_0"] == pytest.approx(2 / 3)
    assert figures["iou_1"] == 0.0
    assert math.isnan(figures["iou_2"])
    assert figures["mean_iou"] == pytest.approx(1 / 3)  # (2/3 + 0) / 2
    assert figures["pixel_accuracy"] == pytest.approx(2 / 3)


def test_perfect_prediction_and_all_ignored() -> None:
    preds, target = _labels(1, 2, 4, 255)
    clean = np.where(target == 255, 0, target)
    agg = segmentation.SegmentationAggregator(num_classes=4)
    agg.update({"confusion": _run(clean, clean, 4, 255)})
    assert agg.compute()["mean_iou"] == 1.0 and agg.compute()["pixel_accuracy"] == 1.0
    empty = segmentation.SegmentationAggregator(num_classes=4)
    empty.update({"confusion": _run(preds, np.full_like(target, 255), 4, 255)})
    assert empty.confusion.sum() == 0 and math.isnan(empty.compute()["mean_iou"])


def test_merge_associative_and_streams_equal_one_pass() -> None:
    k = 5
    preds, target = _labels(2, 12, k, 255)
    out = _run(preds, target, k, 255)
    one = segmentation.SegmentationAggregator(num_classes=k)
    one.update({"confusion": out})
    parts = []
    for i in range(3):
        part = segmentation.SegmentationAggregator(num_classes=k)
        for j in range(4 * i, 4 * i + 4):
            part.update({"confusion": out[j : j + 1]})
        parts.append(segmentation.SegmentationAggregator.from_bytes(part.to_bytes()))
    a, b, c = parts
    assert a.merge(b.merge(c)).to_bytes() == a.merge(b).merge(c).to_bytes() == one.to_bytes()
    assert a.merge(b).merge(c).compute() == one.compute()
    with pytest.raises(ValueError, match="different parameters"):
        a.merge(segmentation.SegmentationAggregator(num_classes=k + 1))


def test_labels_out_of_range_are_rejected_with_the_input_named() -> None:
    spec = registry.get("mean_iou")
    preds, target = _labels(3, 2, 21, 255)
    bad = preds.copy()
    bad[0, 0, 0] = 21
    with pytest.raises(ValueError, match="`preds`"):
        spec.check_inputs({"preds": torch.from_numpy(bad), "target": torch.from_numpy(target)})


@pytest.mark.parametrize("runtime", runtimes.RUNTIMES)
def test_counts_stay_exact_above_two_to_the_24(zoo_repo: Path, runtime: str) -> None:
    # One image of 2**24 + 7 pixels, all class 0 but 3 of class 1, one of which is predicted
    # as 1: C[0, 0] = 2**24 + 4. Counting in float32 stalls at 2**24 (2**24 + 1 rounds back
    # down), which gave 16,777,216 and a wrong pixel accuracy.
    size = (1 << 24) + 7
    target = np.zeros((1, size), dtype=np.int64)
    target[0, :3] = 1
    preds = np.zeros_like(target)
    preds[0, 2] = 1
    out = runtimes.load(zoo_repo, "mean_iou", runtime).run({"preds": preds, "target": target})
    confusion = out["confusion"]
    assert confusion.dtype == np.int64
    expected = np.array([[size - 3, 0], [2, 1]], dtype=np.int64)
    np.testing.assert_array_equal(confusion[0, :2, :2], expected)
    assert confusion[0].sum() == size
    agg = segmentation.SegmentationAggregator(num_classes=21)
    agg.update(out)
    assert agg.compute()["pixel_accuracy"] == (size - 2) / size
