"""Float64 references for the mask losses.

Soft Dice: nnU-Net's ``SoftDiceLoss`` (batch_dice=False, negated Dice, ``smooth`` in
numerator and denominator, denominator clipped at 1e-8). Combo: cross-entropy (the pixel
reference) plus that Dice. Distance Dice: Caliva et al.'s penalty ``Φ`` from
``scipy.ndimage.distance_transform_edt``, with the spec's documented value Φ = 0 for a mask
without a boundary. Masked L1: Si et al. 2018, each term over its own mask, 0 when empty.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.ndimage import distance_transform_edt
from scipy.special import softmax

from . import reference
from .pixel import cross_entropy


def _onehot(target: np.ndarray, c: int) -> np.ndarray:
    """[N, *] labels -> [N, C, P] float one-hot."""
    flat = target.reshape(target.shape[0], int(np.prod(target.shape[1:])))
    return (flat[:, None, :] == np.arange(c)[None, :, None]).astype(np.float64)


def _dice(logits: np.ndarray, target: np.ndarray, smooth: float, do_bg: bool) -> np.ndarray:
    n, c = logits.shape[:2]
    probs = softmax(logits, axis=1).reshape(n, c, -1) if n else np.zeros((0, c, 1))
    y = _onehot(target, c)
    tp = (probs * y).sum(2)
    fp = (probs * (1 - y)).sum(2)
    fn = ((1 - probs) * y).sum(2)
    dc = (2 * tp + smooth) / np.maximum(2 * tp + fp + fn + smooth, 1e-8)
    return -(dc if do_bg else dc[:, 1:]).mean(axis=1)


@reference("soft_dice")
def soft_dice(x: dict[str, np.ndarray], p: dict[str, Any]) -> np.ndarray:
    assert p["apply_softmax"], "the reference covers the default (softmax) form"
    return _dice(x["preds"], x["target"], p["smooth"], p["do_bg"])


@reference("combo")
def combo(x: dict[str, np.ndarray], p: dict[str, Any]) -> np.ndarray:
    ce_params = {"weight": None, "ignore_index": -100, "label_smoothing": 0.0}
    ce = cross_entropy(x, ce_params)
    return p["alpha"] * ce + (1 - p["alpha"]) * _dice(
        x["preds"], x["target"], p["smooth"], p["do_bg"]
    )


def _penalty(mask: np.ndarray) -> np.ndarray:
    """Φ of one binary [H, W] mask: inverted, normalised distance to the boundary."""
    fg = mask > 0.5
    out = np.zeros(mask.shape)
    if fg.all() or not fg.any():  # no boundary
        return out
    for region in (fg, ~fg):
        d = distance_transform_edt(region)  # distance of each region pixel to the other region
        top = d.max()
        out[region] = (top - d[region]) / top
    return out


@reference("distance_dice")
def distance_dice(x: dict[str, np.ndarray], p: dict[str, Any]) -> np.ndarray:
    logits, target = x["preds"], x["target"]
    n, c = logits.shape[:2]
    probs = softmax(logits, axis=1) if n else logits
    out = np.zeros(n)
    for i in range(n):
        dice = []
        for k in range(c):
            y = (target[i] == k).astype(np.float64)
            w = 1 + _penalty(y)
            inter = (w * probs[i, k] * y).sum()
            total = (w * probs[i, k]).sum() + (w * y).sum()
            dice.append((2 * inter + p["smooth"]) / (total + p["smooth"]))
        out[i] = 1 - np.mean(dice if p["do_bg"] else dice[1:])
    return out


@reference("masked_l1")
def masked_l1(x: dict[str, np.ndarray], p: dict[str, Any]) -> np.ndarray:
    d = np.abs(x["preds"] - x["target"])
    m = np.broadcast_to(x["mask"][:, None], d.shape)

    def term(weight: np.ndarray) -> np.ndarray:
        num = (d * weight).sum(axis=(1, 2, 3))
        den = weight.sum(axis=(1, 2, 3))
        return np.where(den > 0, num / np.where(den > 0, den, 1), 0.0)

    fg, bg = term(m), term(1 - m)
    return np.stack([p["alpha_fg"] * fg + p["beta_bg"] * bg, fg, bg], axis=1).reshape(len(d), 3)
