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

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from ._utils import check_labels
from .aggregators import SegmentationAggregator
from .registry import MetricSpec, ParamSpec, TensorSpec, register

FAMILY = "dataset"


def confusion_matrix(
    preds: Tensor,
    target: Tensor,
    num_classes: int,
    ignore_index: int = 255,
) -> Tensor:
    """Per-sample confusion matrices, counted in int64.

    preds (Tensor[N, *]) predicted class indices; target (Tensor[N, *]) true class indices.
    Returns ``Tensor[N, K, K]`` int64: ``out[n, i, j]`` counts the pixels of sample ``n``
    with target ``i`` and prediction ``j``, exactly (a float32 count stops at 2**24, one
    4096 x 4096 image of one class).
    """
    k = num_classes
    n = preds.shape[0]
    p = preds.flatten(1) if preds.dim() > 1 else preds[:, None]
    t = target.flatten(1) if target.dim() > 1 else target[:, None]
    valid = (t != ignore_index) & (t >= 0) & (t < k) & (p >= 0) & (p < k)
    index = torch.where(valid, t * k + p, torch.full_like(t, k * k))
    ones = torch.ones(index.shape, dtype=torch.int64, device=preds.device)
    bins = torch.zeros((n, k * k + 1), dtype=torch.int64, device=preds.device)
    bins = torch.scatter_add(bins, 1, index, ones)
    return bins[:, : k * k].reshape(n, k, k)


class MeanIoU(nn.Module):
    """Confusion-matrix graph for mean IoU; int64 counts."""

    def __init__(self, num_classes: int = 21, ignore_index: int = 255) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"Expected `num_classes` to be positive, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)

    def forward(self, preds: Tensor, target: Tensor) -> Tensor:
        return confusion_matrix(preds, target, self.num_classes, self.ignore_index)


def _sample(gen: torch.Generator, sizes: Mapping[str, int], dtype: torch.dtype):
    # The sampler cannot see the parameters, and exporting checks its example against them:
    # labels 0 and 1 are valid for any num_classes >= 2 and any ignore_index. The ignore
    # path is covered by tests/metrics/test_mean_iou.py and the CLI test (ONNX artifact).
    n, h, w = sizes["N"], sizes["H"], sizes["W"]
    target = torch.randint(0, 2, (n, h, w), generator=gen)
    preds = torch.randint(0, 2, (n, h, w), generator=gen)
    return {"preds": preds, "target": target}


# The regimes below draw for the default parameters (21 classes, ignore_index 255).
def _sample_extreme(gen: torch.Generator, sizes: Mapping[str, int], dtype: torch.dtype):
    """Large label maps (240k pixels): one dominant class, every class, ignored pixels."""
    n, h, w = sizes["N"], 400, 600
    target = torch.zeros(n, h, w, dtype=torch.int64)
    rare = torch.rand(n, h, w, generator=gen) < 0.01
    target = torch.where(rare, torch.randint(0, 21, (n, h, w), generator=gen), target)
    target[:, :3, :] = 255  # an ignored border
    flip = torch.rand(n, h, w, generator=gen) < 0.05
    preds = torch.where(flip, torch.randint(0, 21, (n, h, w), generator=gen), target % 255)
    return {"preds": preds, "target": target}


def _sample_degenerate(gen: torch.Generator, sizes: Mapping[str, int], dtype: torch.dtype):
    """Perfect predictions, every pixel ignored, or one class everywhere."""
    n, h, w = sizes["N"], sizes["H"], sizes["W"]
    target = torch.randint(0, 21, (n, h, w), generator=gen)
    kind = torch.randint(0, 3, (n, 1, 1), generator=gen)
    target = torch.where(kind == 1, torch.full_like(target, 255), target)
    target = torch.where(kind == 2, torch.full_like(target, 7), target)
    return {"preds": target % 255, "target": target}


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
        outputs=(TensorSpec("confusion", ("N", "K", "K"), "int64", "per-sample confusion matrix"),),
        params=(
            ParamSpec("num_classes", 21, "number of classes K"),
            ParamSpec("ignore_index", 255, "target value that is skipped"),
        ),
        higher_is_better=True,
        paper="Long et al. 2015, FCN, arXiv:1411.4038",
        oracle="numpy confusion matrix (np.bincount) reference",
        sample=_sample,
        regimes={"extreme": _sample_extreme, "degenerate": _sample_degenerate},
        summary="semantic segmentation confusion matrix -> per-class IoU, mIoU, pixel acc",
        differentiable=False,
        validate=_validate,
        example_sizes={"N": 3, "H": 5, "W": 6},
        work=_mean_iou_work,
        aggregator=SegmentationAggregator,
    )
)
