"""Semantic segmentation mean IoU: a per-sample confusion-matrix graph and its aggregator.

The graph returns each sample's confusion matrix ``[N, K, K]`` (rows: target class, columns:
predicted class), a scatter-add of ones into ``K * K`` bins, so it is exact, batch-independent
and ONNX-friendly (``ScatterElements`` with ``reduction="add"``). The aggregator sums the
matrices in int64 (exactly associative) and computes, from the summed matrix ``C``:

* per-class IoU ``C[c, c] / (Σ_j C[c, j] + Σ_i C[i, c] - C[c, c])``;
* mean IoU, the mean over classes whose union is non-empty: a class absent from both target
  and predictions has IoU NaN and is left out (the mmsegmentation / torchmetrics
  ``nanmean`` convention); a class predicted but absent from the target has IoU 0 and counts;
* pixel accuracy ``trace(C) / ΣC`` and mean class accuracy (nan-aware the same way).

Pixels whose target equals ``ignore_index`` (or lies outside ``[0, K)``) are skipped.
Long et al. 2015, FCN, https://arxiv.org/abs/1411.4038 (the mean IU / pixel accuracy figures).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ._utils import check_labels
from .aggregators import check_same_config, dump_npz, load_npz
from .registry import MetricSpec, ParamSpec, TensorSpec, register

FAMILY = "dataset"


def confusion_matrix(
    preds: Tensor,
    target: Tensor,
    num_classes: int,
    ignore_index: int = 255,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """Per-sample confusion matrices.

    preds (Tensor[N, *]) predicted class indices; target (Tensor[N, *]) true class indices.
    Returns ``Tensor[N, K, K]`` in ``dtype``: ``out[n, i, j]`` counts the pixels of sample
    ``n`` with target ``i`` and prediction ``j``. Counts are exact up to 2**24 per cell in
    float32 and 2**53 in float64.
    """
    k = num_classes
    n = preds.shape[0]
    p = preds.flatten(1) if preds.dim() > 1 else preds[:, None]
    t = target.flatten(1) if target.dim() > 1 else target[:, None]
    valid = (t != ignore_index) & (t >= 0) & (t < k) & (p >= 0) & (p < k)
    index = torch.where(valid, t * k + p, torch.full_like(t, k * k))
    ones = torch.ones(index.shape, dtype=dtype, device=preds.device)
    bins = torch.zeros((n, k * k + 1), dtype=dtype, device=preds.device)
    bins = torch.scatter_add(bins, 1, index, ones)
    return bins[:, : k * k].reshape(n, k, k)


class MeanIoU(nn.Module):
    """Confusion-matrix graph for mean IoU; counts come back in the module's dtype."""

    def __init__(self, num_classes: int = 21, ignore_index: int = 255) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"Expected `num_classes` to be positive, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        # Carries the output dtype: float32 by default, float64 after `.double()`.
        self.register_buffer("unit", torch.ones(()))

    def forward(self, preds: Tensor, target: Tensor) -> Tensor:
        return confusion_matrix(preds, target, self.num_classes, self.ignore_index, self.unit.dtype)  # type: ignore[arg-type]


class SegmentationAggregator:
    """Summed int64 confusion matrix; ``compute`` gives per-class IoU, mIoU, accuracies."""

    metric = "mean_iou"
    KIND = "mean_iou/1"

    def __init__(self, num_classes: int = 21, ignore_index: int = 255, **params: Any) -> None:
        self.config = {"num_classes": int(num_classes), "ignore_index": int(ignore_index)}
        self.confusion = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(
        self, outputs: Mapping[str, np.ndarray], inputs: Mapping[str, np.ndarray] | None = None
    ) -> None:
        counts = np.asarray(outputs["confusion"])
        k = self.config["num_classes"]
        if counts.shape[1:] != (k, k):
            raise ValueError(
                f"Expected `confusion` of shape [N, {k}, {k}], got {list(counts.shape)}"
            )
        self.confusion += np.rint(counts).astype(np.int64).sum(0)

    def merge(self, other: SegmentationAggregator) -> SegmentationAggregator:
        check_same_config(self.KIND, self.config, other.config)
        out = SegmentationAggregator(**self.config)
        out.confusion = self.confusion + other.confusion
        return out

    def to_bytes(self) -> bytes:
        return dump_npz(self.KIND, self.config, {"confusion": self.confusion})

    @classmethod
    def from_bytes(cls, data: bytes) -> SegmentationAggregator:
        config, arrays = load_npz(cls.KIND, data)
        out = cls(**config)
        out.confusion = arrays["confusion"].astype(np.int64)
        return out

    def per_class_iou(self) -> np.ndarray:
        return iou_from_confusion(self.confusion)

    def compute(self) -> dict[str, float]:
        c = self.confusion.astype(np.float64)
        iou = iou_from_confusion(self.confusion)
        support = c.sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            acc = np.where(support > 0, np.diag(c) / np.where(support > 0, support, 1), np.nan)
        total = c.sum()
        out = {
            "mean_iou": _nanmean(iou),
            "pixel_accuracy": float(np.trace(c) / total) if total else math.nan,
            "mean_accuracy": _nanmean(acc),
        }
        out.update({f"iou_{i}": float(v) for i, v in enumerate(iou)})
        return out


def iou_from_confusion(confusion: np.ndarray) -> np.ndarray:
    """Per-class IoU from a ``[K, K]`` confusion matrix; NaN where the union is empty."""
    c = confusion.astype(np.float64)
    tp = np.diag(c)
    union = c.sum(0) + c.sum(1) - tp
    return np.where(union > 0, tp / np.where(union > 0, union, 1), np.nan)


def _nanmean(values: np.ndarray) -> float:
    kept = values[~np.isnan(values)]
    return float(kept.mean()) if kept.size else math.nan


def _sample(gen: torch.Generator, sizes: Mapping[str, int], dtype: torch.dtype):
    # The sampler cannot see the parameters, and exporting checks its example against them:
    # labels 0 and 1 are valid for any num_classes >= 2 and any ignore_index. The ignore
    # path is covered by tests/metrics/test_mean_iou.py and the CLI test (ONNX artifact).
    n, h, w = sizes["N"], sizes["H"], sizes["W"]
    target = torch.randint(0, 2, (n, h, w), generator=gen)
    preds = torch.randint(0, 2, (n, h, w), generator=gen)
    return {"preds": preds, "target": target}


def _validate(params: Mapping[str, Any], inputs: Mapping[str, Tensor]) -> None:
    k = params["num_classes"]
    check_labels("preds", inputs["preds"], k)
    check_labels("target", inputs["target"], k, params["ignore_index"])


def _mean_iou_work(sizes: Mapping[str, int], params: Mapping[str, Any]) -> int:
    """Bytes at the peak: int64 bin indices, masks and float64 ones per pixel (measured ~57
    per pixel), and N float64 confusion matrices of K·K."""
    n, s = sizes.get("N", 0), sizes.get("S", 0)
    k = int(params.get("num_classes", 21))
    return 80 * n * s + 16 * n * (k * k + 1)


register(
    MetricSpec(
        name="mean_iou",
        family=FAMILY,
        module=MeanIoU,
        functional=confusion_matrix,
        inputs=(
            TensorSpec("preds", ("N", "*"), "int64", "predicted class indices"),
            TensorSpec("target", ("N", "*"), "int64", "true class indices or ignore_index"),
        ),
        outputs=(
            TensorSpec("confusion", ("N", "K", "K"), "float32", "per-sample confusion matrix"),
        ),
        params=(
            ParamSpec("num_classes", 21, "number of classes K"),
            ParamSpec("ignore_index", 255, "target value that is skipped"),
        ),
        higher_is_better=True,
        paper="Long et al. 2015, FCN, arXiv:1411.4038",
        oracle="numpy confusion matrix (np.bincount) reference",
        sample=_sample,
        summary="semantic segmentation confusion matrix -> per-class IoU, mIoU, pixel acc",
        differentiable=False,
        validate=_validate,
        example_sizes={"N": 3, "H": 5, "W": 6},
        work=_mean_iou_work,
        aggregator=SegmentationAggregator,
    )
)
