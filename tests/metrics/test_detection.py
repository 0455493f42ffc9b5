"""The YOLO composite loss against YOLOv5's formulas written out with numpy and torch."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cvscore.metrics import boxes, detection, registry
from cvscore.server import runtimes

from ..conftest import tol

DTYPES = (torch.float32, torch.float64)


def _inputs(seed: int, n: int = 12, k: int = 5, dtype: torch.dtype = torch.float64):
    return registry.get("yolo").make_inputs(
        torch.Generator().manual_seed(seed), {"N": n, "K": k}, dtype
    )


def _ciou_yolov5_np(b1: np.ndarray, b2: np.ndarray, eps: float = 1e-7) -> np.ndarray:
    """``bbox_iou(box1, box2, xywh=False, CIoU=True)`` of YOLOv5's utils/metrics.py."""
    w1, h1 = b1[:, 2] - b1[:, 0], np.maximum(b1[:, 3] - b1[:, 1], eps)
    w2, h2 = b2[:, 2] - b2[:, 0], np.maximum(b2[:, 3] - b2[:, 1], eps)
    inter = np.clip(
        np.minimum(b1[:, 2], b2[:, 2]) - np.maximum(b1[:, 0], b2[:, 0]), 0, None
    ) * np.clip(np.minimum(b1[:, 3], b2[:, 3]) - np.maximum(b1[:, 1], b2[:, 1]), 0, None)
    union = w1 * h1 + w2 * h2 - inter + eps
    iou = inter / union
    cw = np.maximum(b1[:, 2], b2[:, 2]) - np.minimum(b1[:, 0], b2[:, 0])
    ch = np.maximum(b1[:, 3], b2[:, 3]) - np.minimum(b1[:, 1], b2[:, 1])
    c2 = cw**2 + ch**2 + eps
    rho2 = (
        (b2[:, 0] + b2[:, 2] - b1[:, 0] - b1[:, 2]) ** 2
        + (b2[:, 1] + b2[:, 3] - b1[:, 1] - b1[:, 3]) ** 2
    ) / 4
    v = (4 / math.pi**2) * (np.arctan(w2 / h2) - np.arctan(w1 / h1)) ** 2
    alpha = v / (v - iou + (1 + eps))
    return iou - (rho2 / c2 + v * alpha)


def _focal(loss: torch.Tensor, logits: torch.Tensor, t: torch.Tensor, gamma: float, alpha: float):
    """YOLOv5's ``FocalLoss`` around ``BCEWithLogitsLoss(reduction="none")``."""
    p = torch.sigmoid(logits)
    p_t = t * p + (1 - t) * (1 - p)
    return loss * (t * alpha + (1 - t) * (1 - alpha)) * (1.0 - p_t) ** gamma


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("gamma", [0.0, 1.5])
def test_yolo_matches_yolov5_terms(gamma: float, dtype: torch.dtype) -> None:
    x = _inputs(1, dtype=dtype)
    out = detection.YOLOLoss(focal_gamma=gamma)(**x)
    pos = x["positive"]
    ciou = torch.from_numpy(_ciou_yolov5_np(x["preds"].numpy(), x["target"].numpy())).to(dtype)
    tobj = pos * ciou.clamp(min=0)
    obj = F.binary_cross_entropy_with_logits(x["objectness"], tobj, reduction="none")
    onehot = F.one_hot(x["target_class"], 5).to(dtype)
    cls = F.binary_cross_entropy_with_logits(x["class_logits"], onehot, reduction="none")
    if gamma > 0:
        obj = _focal(obj, x["objectness"], tobj, gamma, 0.25)
        cls = _focal(cls, x["class_logits"], onehot, gamma, 0.25)
    box = 0.05 * pos * (1.0 - ciou)
    obj, cls = 1.0 * obj, 0.5 * pos * cls.mean(1)
    expected = torch.stack([box + obj + cls, box, obj, cls], 1)
    # YOLOv5 clamps h at eps where metrics.boxes uses atan2: equal to ~1e-7 on these boxes
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    assert (pos == 0).any() and (pos == 1).any()


def test_yolo_hand_worked() -> None:
    # a positive whose box is exact: CIoU 1, box term 0, objectness target 1;
    # objectness logit 0 -> BCE ln 2; class logits 0 -> BCE ln 2 each, cls = 0.5 ln 2.
    # A negative: box and cls terms 0, objectness target 0 -> BCE(2, 0) = softplus(2).
    box = torch.tensor([[0.0, 0.0, 2.0, 3.0], [1.0, 1.0, 2.0, 2.0]])
    out = detection.yolo(
        box,
        box.clone(),
        torch.tensor([0.0, 2.0]),
        torch.zeros(2, 3),
        torch.tensor([1, -1]),  # a negative's label is ignored
        torch.tensor([1.0, 0.0]),
    )
    ln2 = math.log(2)
    softplus2 = math.log1p(math.exp(2.0))
    np.testing.assert_allclose(
        out.numpy(),
        [[ln2 + 0.5 * ln2, 0.0, ln2, 0.5 * ln2], [softplus2, 0.0, softplus2, 0.0]],
        atol=1e-6,
    )


def test_focal_gamma_zero_is_plain_bce() -> None:
    x = _inputs(2)
    plain = detection.YOLOLoss()(**x)
    weighted = detection.YOLOLoss(focal_gamma=0.0, focal_alpha=0.9)(**x)  # alpha unused at γ = 0
    torch.testing.assert_close(plain, weighted, **tol(torch.float64))


def test_gradients_follow_yolov5_stop_gradients() -> None:
    x = _inputs(3, n=6, k=3)
    module = detection.YOLOLoss().double()

    # logits: the loss is a plain function of them, so gradcheck applies
    def of_logits(obj: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
        return module(**{**x, "objectness": obj, "class_logits": cls})

    leaves = (x["objectness"].clone().requires_grad_(), x["class_logits"].clone().requires_grad_())
    assert torch.autograd.gradcheck(of_logits, leaves)
    # boxes: the objectness target is detached, so the only path is box_weight · pos · CIoU loss
    preds = x["preds"].clone().requires_grad_()
    (got,) = torch.autograd.grad(module(**{**x, "preds": preds})[:, 0].sum(), preds)
    preds2 = x["preds"].clone().requires_grad_()
    ref = (0.05 * x["positive"] * boxes.ciou(preds2, x["target"])).sum()
    (want,) = torch.autograd.grad(ref, preds2)
    torch.testing.assert_close(got, want)
    assert (got[x["positive"] == 0] == 0).all()


@pytest.mark.parametrize("n", [0, 1])
def test_small_batches(n: int) -> None:
    spec = registry.get("yolo")
    x = _inputs(4, n=n, dtype=torch.float32)
    spec.check_inputs(x)
    assert spec.build()(**x).shape == (n, 4)


def test_domain_errors_name_the_input() -> None:
    spec = registry.get("yolo")
    x = _inputs(5, n=4, k=3, dtype=torch.float32)
    x["positive"] = torch.tensor([1.0, 0.0, 1.0, 0.0])
    spec.check_inputs({**x, "target_class": torch.tensor([0, 7, 2, -1])})  # negatives: ignored
    with pytest.raises(
        ValueError, match=r"`target_class` to hold class indices in \[0, 2\] on positives, got 3"
    ):
        spec.check_inputs({**x, "target_class": torch.tensor([3, 0, 0, 0])})
    with pytest.raises(ValueError, match=r"`positive` to hold only 0 and 1, got 0\.5"):
        spec.check_inputs({**x, "positive": torch.tensor([1.0, 0.5, 0.0, 0.0])})
    flipped = x["preds"].clone()
    flipped[2] = torch.tensor([5.0, 5.0, 1.0, 6.0])
    with pytest.raises(ValueError, match=r"`preds` boxes as \(x1, y1, x2, y2\).*index 2"):
        spec.check_inputs({**x, "preds": flipped})
    flipped[2] = x["preds"][2]
    flipped[1] = torch.tensor([5.0, 5.0, 1.0, 6.0])  # a negative's box is not scored
    spec.check_inputs({**x, "preds": flipped})
    with pytest.raises(ValueError, match="`class_logits` to hold finite values"):
        spec.check_inputs({**x, "class_logits": torch.full((4, 3), float("nan"))})
    with pytest.raises(ValueError, match=r"`focal_alpha` to be in \[0.0, 1.0\], got 2"):
        spec.check_inputs(x, {"focal_alpha": 2.0})
    with pytest.raises(ValueError, match="`box_weight` to be non-negative"):
        spec.check_inputs(x, {"box_weight": -0.05})
    with pytest.raises(ValueError, match="axis K of `class_logits` to be at least 1"):
        spec.check_inputs({**x, "class_logits": torch.zeros(4, 0)})


@pytest.mark.parametrize("runtime", runtimes.RUNTIMES)
def test_yolo_artifacts_survive_confident_objectness(zoo_repo: Path, runtime: str) -> None:
    # Negative anchors (positive = 0): box = cls = 0 and obj = BCE(x, 0) = softplus(x), so
    # objectness 12, 15, 20 gives 12.000006, 15.0000003, 20.000000002 (ONNX's
    # Log(Sigmoid(-x)) gave 12.0057, 14.84, inf) and 40, 80 give 40 and 80.
    logits = np.array([12.0, 15.0, 20.0, 40.0, 80.0, -80.0], dtype=np.float32)
    n = len(logits)
    box = np.tile(np.array([[0.0, 0.0, 2.0, 2.0]], dtype=np.float32), (n, 1))
    inputs = {
        "preds": box,
        "target": box,
        "objectness": logits,
        "class_logits": np.full((n, 3), 80.0, dtype=np.float32),
        "target_class": np.zeros(n, dtype=np.int64),
        "positive": np.zeros(n, dtype=np.float32),
    }
    out = runtimes.load(zoo_repo, "yolo", runtime).run(inputs)["score"]
    assert np.isfinite(out).all()
    expected_obj = np.logaddexp(0.0, logits.astype(np.float64))
    np.testing.assert_allclose(out[:, 2], expected_obj, rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(out[:, 0], expected_obj, rtol=1e-6, atol=1e-12)
    assert (out[:, 1] == 0).all() and (out[:, 3] == 0).all()
