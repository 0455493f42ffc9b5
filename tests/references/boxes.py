"""Float64 references for the box losses and the YOLO composite, written from the papers.

IoU family: torchvision's formulas (``eps`` added to the union and enclosing areas, which
the spec documents), Rezatofighi et al. 2019 (GIoU), Zheng et al. 2020 (DIoU, CIoU).
CIoU's aspect angle is ``atan2(w, h)``, the spec's documented deviation from torchvision's
``atan(w / h)`` (equal for h > 0; 0 for a point box instead of NaN).
YOLO: YOLOv5's ``ComputeLoss`` terms per matched prediction (``gr = 1``), BCE via logaddexp.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import reference


def _terms(p: np.ndarray, t: np.ndarray, eps: float) -> dict[str, np.ndarray]:
    px1, py1, px2, py2 = p.T
    tx1, ty1, tx2, ty2 = t.T
    iw = np.maximum(np.minimum(px2, tx2) - np.maximum(px1, tx1), 0)
    ih = np.maximum(np.minimum(py2, ty2) - np.maximum(py1, ty1), 0)
    inter = iw * ih
    union = (px2 - px1) * (py2 - py1) + (tx2 - tx1) * (ty2 - ty1) - inter
    iou = inter / (union + eps)
    cw = np.maximum(px2, tx2) - np.minimum(px1, tx1)
    ch = np.maximum(py2, ty2) - np.minimum(py1, ty1)
    rho2 = ((px1 + px2 - tx1 - tx2) / 2) ** 2 + ((py1 + py2 - ty1 - ty2) / 2) ** 2
    diou = 1 - iou + rho2 / (cw**2 + ch**2 + eps)

    def angle(w: np.ndarray, h: np.ndarray) -> np.ndarray:
        return np.arctan2(w, np.where((w == 0) & (h == 0), 1.0, h))

    v = 4 / np.pi**2 * (angle(tx2 - tx1, ty2 - ty1) - angle(px2 - px1, py2 - py1)) ** 2
    alpha = v / (1 - iou + v + eps)
    return {
        "iou": 1 - iou,
        "giou": 1 - (iou - (cw * ch - union) / (cw * ch + eps)),
        "diou": diou,
        "ciou": diou + alpha * v,
        "unitbox": np.log(union + eps) - np.log(inter + eps),
    }


def _box_reference(name: str):
    def ref(x: dict[str, np.ndarray], p: dict[str, Any]) -> np.ndarray:
        return _terms(x["preds"], x["target"], p["eps"])[name]

    return ref


for _name in ("iou", "giou", "diou", "ciou", "unitbox"):
    reference(_name)(_box_reference(_name))


def _bce(logits: np.ndarray, t: np.ndarray) -> np.ndarray:
    # -(t log σ(x) + (1 - t) log σ(-x)) = t softplus(-x) + (1 - t) softplus(x)
    return t * np.logaddexp(0.0, -logits) + (1 - t) * np.logaddexp(0.0, logits)


def _focal(logits: np.ndarray, t: np.ndarray, gamma: float, alpha: float) -> np.ndarray:
    loss = _bce(logits, t)
    if gamma > 0:
        prob = 1 / (1 + np.exp(-logits))
        p_t = t * prob + (1 - t) * (1 - prob)
        loss = loss * (t * alpha + (1 - t) * (1 - alpha)) * (1 - p_t) ** gamma
    return loss


@reference("yolo")
def yolo(x: dict[str, np.ndarray], p: dict[str, Any]) -> np.ndarray:
    pos = x["positive"]
    ciou_loss = _terms(x["preds"], x["target"], p["eps"])["ciou"]
    box = p["box_weight"] * pos * ciou_loss
    obj_target = pos * np.maximum(1 - ciou_loss, 0)
    obj = p["obj_weight"] * _focal(x["objectness"], obj_target, p["focal_gamma"], p["focal_alpha"])
    k = x["class_logits"].shape[1]
    onehot = (x["target_class"][:, None] == np.arange(k)[None, :]).astype(np.float64)
    cls_bce = _focal(x["class_logits"], onehot, p["focal_gamma"], p["focal_alpha"]).mean(axis=1)
    cls = p["cls_weight"] * pos * cls_bce
    return np.stack([box + obj + cls, box, obj, cls], axis=1).reshape(len(pos), 4)
