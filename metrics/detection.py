"""Composite detection losses on matched predictions, per prediction.

Inputs are aligned after target assignment (which is the training loop's job): row ``i``
holds one prediction and what it was matched to. Boxes are ``(x1, y1, x2, y2)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from ._utils import (
    check_binary,
    check_finite,
    check_positive,
    check_range,
    log_sigmoid,
    power,
    sigmoid,
)
from .boxes import EPS, ciou, degenerate_pairs, extreme_pairs
from .registry import MetricSpec, ParamSpec, TensorSpec, register

FAMILY = "detection"


def _bce_logits(logits: Tensor, target: Tensor, gamma: float, alpha: float) -> Tensor:
    """Elementwise BCE with logits; with ``gamma > 0`` YOLOv5's ``FocalLoss`` wrapper.

    ``BCE = -(t log σ(x) + (1 - t) log σ(-x))``; focal: ``BCE · α_t (1 - p_t)^γ`` with
    ``p_t = t p + (1 - t)(1 - p)`` and ``α_t = t α + (1 - t)(1 - α)``.
    """
    # log_sigmoid, not F.logsigmoid: ONNX has no LogSigmoid and Log(Sigmoid(x)) overflows
    loss = -(target * log_sigmoid(logits) + (1.0 - target) * log_sigmoid(-logits))
    if gamma > 0:
        prob = sigmoid(logits)
        p_t = target * prob + (1.0 - target) * (1.0 - prob)
        alpha_t = target * alpha + (1.0 - target) * (1.0 - alpha)
        loss = loss * alpha_t * power(1.0 - p_t, gamma)
    return loss


def yolo(
    preds: Tensor,
    target: Tensor,
    objectness: Tensor,
    class_logits: Tensor,
    target_class: Tensor,
    positive: Tensor,
    box_weight: float = 0.05,
    obj_weight: float = 1.0,
    cls_weight: float = 0.5,
    focal_gamma: float = 0.0,
    focal_alpha: float = 0.25,
    eps: float = EPS,
) -> Tensor:
    """YOLOv5-style composite loss per prediction: ``[total, box, obj, cls]``.

    With ``pos`` the 0/1 positive flag and ``ciou_loss = 1 - CIoU(preds, target)``
    (:func:`metrics.boxes.ciou`):

    - ``box = box_weight · pos · ciou_loss``
    - ``obj = obj_weight · BCE(objectness, pos · clamp(1 - ciou_loss, min=0).detach())``:
      positives aim at their (detached, non-negative) CIoU, as YOLOv5 with ``gr = 1``;
      negatives at 0
    - ``cls = cls_weight · pos · mean_k BCE(class_logits_k, onehot(target_class)_k)``
    - ``total = box + obj + cls``

    BCE is on logits; ``focal_gamma > 0`` wraps both BCEs in YOLOv5's ``FocalLoss``.
    preds, target (Tensor[N, 4]) boxes; objectness (Tensor[N]) logits; class_logits
    (Tensor[N, K]); target_class (Tensor[N]) int64 in [0, K) on positives (ignored on
    negatives); positive (Tensor[N]) float 0/1. Returns Tensor[N, 4].
    Defaults are YOLOv5's ``hyp.scratch-low.yaml`` (box 0.05, obj 1.0, cls 0.5,
    fl_gamma 0). Reducing like YOLOv5: ``box.sum() / n_pos + obj.mean() + cls.sum() / n_pos``
    per detection layer (YOLOv5 also scales ``obj`` by a per-layer balance and the total by
    the batch size, and can smooth the class targets). Jocher et al., YOLOv5,
    https://github.com/ultralytics/yolov5; CIoU: Zheng et al. 2020, arXiv:1911.08287.
    """
    box_loss = ciou(preds, target, eps)
    iou = (1.0 - box_loss).detach().clamp(min=0.0)
    box = box_weight * positive * box_loss
    obj = obj_weight * _bce_logits(objectness, positive * iou, focal_gamma, focal_alpha)
    classes = torch.arange(class_logits.shape[1], device=class_logits.device).unsqueeze(0)
    onehot = (target_class.unsqueeze(1) == classes).to(class_logits.dtype)
    cls_bce = _bce_logits(class_logits, onehot, focal_gamma, focal_alpha).mean(1)
    cls = cls_weight * positive * cls_bce
    return torch.stack([box + obj + cls, box, obj, cls], dim=1)


class YOLOLoss(nn.Module):
    def __init__(
        self,
        box_weight: float = 0.05,
        obj_weight: float = 1.0,
        cls_weight: float = 0.5,
        focal_gamma: float = 0.0,
        focal_alpha: float = 0.25,
        eps: float = EPS,
    ) -> None:
        super().__init__()
        self.box_weight = float(box_weight)
        self.obj_weight = float(obj_weight)
        self.cls_weight = float(cls_weight)
        self.focal_gamma = float(focal_gamma)
        self.focal_alpha = float(focal_alpha)
        self.eps = float(eps)

    def forward(
        self,
        preds: Tensor,
        target: Tensor,
        objectness: Tensor,
        class_logits: Tensor,
        target_class: Tensor,
        positive: Tensor,
    ) -> Tensor:
        return yolo(
            preds,
            target,
            objectness,
            class_logits,
            target_class,
            positive,
            self.box_weight,
            self.obj_weight,
            self.cls_weight,
            self.focal_gamma,
            self.focal_alpha,
            self.eps,
        )


# -- sampler and domain checks ------------------------------------------------------------
def _sample(gen: torch.Generator, sizes: Mapping[str, int], dtype: torch.dtype):
    n, k = sizes["N"], sizes["K"]
    corner = torch.rand(n, 2, generator=gen, dtype=dtype) * 10
    wh = torch.rand(n, 2, generator=gen, dtype=dtype) * 4 + 0.5
    centre = corner + wh / 2 + torch.randn(n, 2, generator=gen, dtype=dtype) * wh * 0.3
    twh = wh * torch.exp(torch.randn(n, 2, generator=gen, dtype=dtype) * 0.3)
    return {
        "preds": torch.cat([corner, corner + wh], 1),
        "target": torch.cat([centre - twh / 2, centre + twh / 2], 1),
        "objectness": torch.randn(n, generator=gen, dtype=dtype) * 2,
        "class_logits": torch.randn(n, k, generator=gen, dtype=dtype) * 2,
        "target_class": torch.randint(0, k, (n,), generator=gen),
        "positive": (torch.rand(n, generator=gen, dtype=dtype) > 0.4).to(dtype),
    }


def _logits(gen: torch.Generator, shape: list[int], dtype: torch.dtype) -> Tensor:
    # confident logits, right and wrong: Log(Sigmoid(x)) overflows float32 from |x| ~ 17
    table = torch.tensor([-80.0, -40.0, -20.0, -15.0, -12.0, 0.3, 12.0, 15.0, 20.0, 40.0, 80.0])
    return table[torch.randint(0, len(table), shape, generator=gen)].to(dtype)


def _sample_extreme(gen: torch.Generator, sizes: Mapping[str, int], dtype: torch.dtype):
    """Boxes from 1e-3 to 1e4 px and confident objectness / class logits."""
    n, k = sizes["N"], sizes["K"]
    preds, target = extreme_pairs(gen, n, dtype)
    return {
        "preds": preds,
        "target": target,
        "objectness": _logits(gen, [n], dtype),
        "class_logits": _logits(gen, [n, k], dtype),
        "target_class": torch.randint(0, k, (n,), generator=gen),
        "positive": (torch.rand(n, generator=gen, dtype=dtype) > 0.5).to(dtype),
    }


def _sample_degenerate(gen: torch.Generator, sizes: Mapping[str, int], dtype: torch.dtype):
    """Identical, zero-area and touching boxes; zero logits; all-negative or all-positive."""
    n, k = sizes["N"], sizes["K"]
    preds, target = degenerate_pairs(gen, n, dtype)
    flag = float(torch.randint(0, 2, (1,), generator=gen))
    return {
        "preds": preds,
        "target": target,
        "objectness": torch.zeros(n, dtype=dtype),
        "class_logits": torch.zeros(n, k, dtype=dtype),
        "target_class": torch.zeros(n, dtype=torch.int64),
        "positive": torch.full((n,), flag, dtype=dtype),
    }


def _validate(params: Mapping[str, Any], inputs: Mapping[str, Tensor]) -> None:
    for name in ("box_weight", "obj_weight", "cls_weight", "focal_gamma"):
        check_positive(name, params[name], allow_zero=True)
    check_range("focal_alpha", params["focal_alpha"], 0.0, 1.0)
    check_positive("eps", params["eps"])
    for name in ("preds", "target", "objectness", "class_logits"):
        check_finite(name, inputs[name])
    positive = inputs["positive"]
    check_binary("positive", positive)
    pos = positive > 0.5
    for name in ("preds", "target"):
        boxes = inputs[name][pos]
        bad = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
        if bool(bad.any()):
            i = int(pos.nonzero()[bad.nonzero()[0, 0], 0])
            raise ValueError(
                f"Expected `{name}` boxes as (x1, y1, x2, y2) with x2 >= x1 and y2 >= y1 on "
                f"positives, got {inputs[name][i].tolist()} at index {i}"
            )
    labels = inputs["target_class"][pos]
    num_classes = inputs["class_logits"].shape[1]
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        bad_label = int(labels.min()) if int(labels.min()) < 0 else int(labels.max())
        raise ValueError(
            f"Expected `target_class` to hold class indices in [0, {num_classes - 1}] on "
            f"positives, got {bad_label}"
        )


# -- registry -----------------------------------------------------------------------------
register(
    MetricSpec(
        name="yolo",
        family=FAMILY,
        module=YOLOLoss,
        functional=yolo,
        inputs=(
            TensorSpec("preds", ("N", 4), "float32", "predicted boxes (x1, y1, x2, y2)"),
            TensorSpec("target", ("N", 4), "float32", "matched target boxes (x1, y1, x2, y2)"),
            TensorSpec("objectness", ("N",), "float32", "objectness logits"),
            TensorSpec("class_logits", ("N", "K"), "float32", "class logits"),
            TensorSpec("target_class", ("N",), "int64", "matched class index (positives)"),
            TensorSpec("positive", ("N",), "float32", "1 for positives, 0 for negatives"),
        ),
        outputs=(TensorSpec("score", ("N", 4), "float32", "per prediction: total, box, obj, cls"),),
        params=(
            ParamSpec("box_weight", 0.05, "gain of the CIoU box term (YOLOv5 hyp box)"),
            ParamSpec("obj_weight", 1.0, "gain of the objectness term (hyp obj)"),
            ParamSpec("cls_weight", 0.5, "gain of the class term (hyp cls)"),
            ParamSpec("focal_gamma", 0.0, "focal gamma for both BCEs; 0 = plain BCE"),
            ParamSpec("focal_alpha", 0.25, "focal alpha, used when focal_gamma > 0"),
            ParamSpec("eps", EPS, "CIoU eps, as metrics.boxes"),
        ),
        higher_is_better=False,
        paper="Jocher et al., YOLOv5 (github.com/ultralytics/yolov5); CIoU arXiv:1911.08287",
        oracle="numpy re-implementation of YOLOv5 ComputeLoss terms; "
        "torch.nn.functional.binary_cross_entropy_with_logits",
        sample=_sample,
        regimes={"extreme": _sample_extreme, "degenerate": _sample_degenerate},
        summary="YOLOv5 box (CIoU) + objectness + class loss per matched prediction",
        validate=_validate,
        example_sizes={"N": 3, "K": 4},
        min_sizes={"K": 1},
        # CIoU's alpha and the objectness target are detached, as in YOLOv5: the gradient
        # is a deliberate surrogate, checked against a frozen version in the tests.
        exact_gradient=False,
    )
)
