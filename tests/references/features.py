"""Float64 references for the VGG feature losses.

The VGG forward is written out here from torchvision's layout (``torchvision.models.vgg``
``cfgs`` D and E: 3x3 convolutions with padding 1, each followed by a ReLU, 2x2 max-pools),
in float64 with ``torch.nn.functional.conv2d / relu / max_pool2d`` on the weights read from
the state-dict file (``features.<i>.weight/bias``); taps are the paper names over
torchvision's indices (``conv<b>_<l>`` before the ReLU, ``relu<b>_<l>`` after, ``pool<b>``).
Images are standardised with the ImageNet mean and std when ``normalize`` is set. The losses
are numpy: squared errors (Johnson et al. 2016), Gram matrices ``F Fᵀ`` with Johnson's
``1/(C H W)`` and Gatys et al.'s ``1/(4 N² M²)`` normalisations, and BCE with each log
clamped at -100 (``F.binary_cross_entropy``) plus μ times the VGG19 feature loss on the
masks repeated to three channels (Mosinska et al. 2018).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from . import reference

ENV_WEIGHTS = "CVSCORE_VGG_WEIGHTS"  # where the metrics read the weights when none is given
MEAN = np.array([0.485, 0.456, 0.406]).reshape(1, 3, 1, 1)
STD = np.array([0.229, 0.224, 0.225]).reshape(1, 3, 1, 1)
# torchvision cfgs "D" (VGG16) and "E" (VGG19): convolutions per block
BLOCKS = {"vgg16": (2, 2, 3, 3, 3), "vgg19": (2, 2, 4, 4, 4)}


def _layout(arch: str) -> list[tuple[str, str]]:
    """``[(kind, name), ...]`` in torchvision's ``features`` order: one entry per index."""
    out: list[tuple[str, str]] = []
    for b, convs in enumerate(BLOCKS[arch], start=1):
        for c in range(1, convs + 1):
            out += [("conv", f"conv{b}_{c}"), ("relu", f"relu{b}_{c}")]
        out.append(("pool", f"pool{b}"))
    return out


def _load(p: dict[str, Any]) -> tuple[str, dict[str, torch.Tensor]]:
    path = p.get("weights") or os.environ[ENV_WEIGHTS]
    state = torch.load(path, map_location="cpu", weights_only=True)
    convs = sorted(int(k.split(".")[1]) for k in state if k.endswith(".weight"))
    for arch in BLOCKS:
        if convs == [i for i, (kind, _) in enumerate(_layout(arch)) if kind == "conv"]:
            return arch, state
    raise ValueError(f"not a torchvision VGG16/VGG19 state dict: {path}")


def vgg_taps(x: np.ndarray, p: dict[str, Any], normalize: bool) -> list[np.ndarray]:
    """The VGG maps at ``p["layers"]`` (in that order) of ``x`` [N, 3, H, W], float64."""
    arch, state = _load(p)
    layout = _layout(arch)
    names = {name: i for i, (_, name) in enumerate(layout)}
    wanted = [int(t) if t.strip().isdigit() else names[t.strip()] for t in p["layers"].split(",")]
    if normalize:
        x = (x - MEAN) / STD
    h = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))
    out: dict[int, np.ndarray] = {}
    for i, (kind, _) in enumerate(layout[: max(wanted) + 1]):
        if kind == "conv":
            w = state[f"features.{i}.weight"].double()
            b = state[f"features.{i}.bias"].double()
            h = F.conv2d(h, w, b, padding=1)
        elif kind == "relu":
            h = F.relu(h)
        else:
            h = F.max_pool2d(h, 2, 2)
        out[i] = h.numpy()
    return [out[i] for i in wanted]


def _pair(x: dict[str, np.ndarray], p: dict[str, Any], normalize: bool):
    return vgg_taps(x["preds"], p, normalize), vgg_taps(x["target"], p, normalize)


def _gram(f: np.ndarray) -> np.ndarray:
    flat = f.reshape(f.shape[0], f.shape[1], f.shape[2] * f.shape[3])
    return np.einsum("nik,njk->nij", flat, flat)


def _mse(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = (a - b).reshape(a.shape[0], -1) if a.shape[0] else np.zeros((0, 1))
    return (d**2).mean(axis=1)


@reference("perceptual")
def perceptual(x: dict[str, np.ndarray], p: dict[str, Any]) -> np.ndarray:
    fp, ft = _pair(x, p, p["normalize"])
    return sum((_mse(a, b) for a, b in zip(fp, ft, strict=True)), np.zeros(len(x["preds"])))


@reference("style")
def style(x: dict[str, np.ndarray], p: dict[str, Any]) -> np.ndarray:
    # Johnson: Σ_j ||G_j(ŷ) - G_j(y)||²_F with G = F Fᵀ / (C H W)
    fp, ft = _pair(x, p, p["normalize"])
    total = np.zeros(len(x["preds"]))
    for a, b in zip(fp, ft, strict=True):
        size = a.shape[1] * a.shape[2] * a.shape[3]
        total = total + (((_gram(a) - _gram(b)) / size) ** 2).sum(axis=(1, 2))
    return total


@reference("texture")
def texture(x: dict[str, np.ndarray], p: dict[str, Any]) -> np.ndarray:
    # Gatys: Σ_l w_l Σ_ij (G_ij - A_ij)² / (4 N_l² M_l²), w_l = 1/L unless given
    fp, ft = _pair(x, p, p["normalize"])
    weights = p["layer_weights"] or [1.0 / len(fp)] * len(fp)
    total = np.zeros(len(x["preds"]))
    for w, a, b in zip(weights, fp, ft, strict=True):
        n_l, m_l = a.shape[1], a.shape[2] * a.shape[3]
        total = total + w * ((_gram(a) - _gram(b)) ** 2).sum(axis=(1, 2)) / (4.0 * n_l**2 * m_l**2)
    return total


@reference("topology")
def topology(x: dict[str, np.ndarray], p: dict[str, Any]) -> np.ndarray:
    prob, t = x["preds"], x["target"]
    with np.errstate(divide="ignore"):
        log_p = np.maximum(np.log(prob), -100.0)
        log_1mp = np.maximum(np.log1p(-prob), -100.0)
    bce = -(t * log_p + (1 - t) * log_1mp)
    bce = bce.reshape(len(prob), -1).mean(axis=1) if len(prob) else np.zeros(0)
    rgb = {k: np.repeat(v[:, None], 3, axis=1) for k, v in x.items()}
    fp, ft = _pair(rgb, p, p["normalize"])
    feature = sum((_mse(a, b) for a, b in zip(fp, ft, strict=True)), np.zeros(len(prob)))
    return bce + p["mu"] * feature
