"""Float64 references for the metric-learning losses and similarities.

Each follows the paper and the library convention that the spec's docstring names:
torch's ``pairwise_distance`` (``||x1 - x2 + eps||_p``, eps inside the norm) for the
triplet and contrastive losses, ``F.normalize`` (``x / max(||x||, 1e-12)``) and
``scipy.special.logsumexp`` for CosFace, the paper's ``½ ||f - c||²`` for triplet-center
and ``<x, y> / (max(||x||, eps) max(||y||, eps))`` (torch's documented per-norm clamp) for
the cosine similarity. Norms are ``np.linalg.norm`` in float64: the square of any float32
value (at most 3.4e38, at least 1.4e-45) is a normal float64, so no norm over- or
underflows.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import logsumexp

from . import reference


def _distance(x1: np.ndarray, x2: np.ndarray, p: float, eps: float) -> np.ndarray:
    # torch.nn.functional.pairwise_distance: ||x1 - x2 + eps||_p over the last axis
    return np.linalg.norm(x1 - x2 + eps, ord=p, axis=-1)


@reference("triplet")
def triplet(x: dict[str, np.ndarray], p: dict[str, Any]) -> np.ndarray:
    # Schroff et al. 2015 with torch's triplet_margin_loss conventions (p-norm, margin 1)
    a, pos, neg = x["anchor"], x["positive"], x["negative"]
    d_pos = _distance(a, pos, p["p"], p["eps"])
    d_neg = _distance(a, neg, p["p"], p["eps"])
    if p["swap"]:  # Balntas et al. 2016
        d_neg = np.minimum(d_neg, _distance(pos, neg, p["p"], p["eps"]))
    return np.maximum(d_pos - d_neg + p["margin"], 0.0)


@reference("contrastive")
def contrastive(x: dict[str, np.ndarray], p: dict[str, Any]) -> np.ndarray:
    # Hadsell, Chopra & LeCun 2006, Eq. 4: (1 - Y) ½ D² + Y ½ max(0, m - D)², Y = 1 dissimilar
    d = _distance(x["x1"], x["x2"], 2.0, p["eps"])
    y = x["target"]
    return (1 - y) * 0.5 * d**2 + y * 0.5 * np.maximum(p["margin"] - d, 0.0) ** 2


def _normalize(v: np.ndarray, eps: float) -> np.ndarray:
    # torch.nn.functional.normalize: v / max(||v||_2, eps) along the last axis
    norm = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / np.maximum(norm, eps)


@reference("cosface")
def cosface(x: dict[str, np.ndarray], p: dict[str, Any]) -> np.ndarray:
    # Wang et al. 2018, Eq. 4: -log(e^{s(cos θ_y - m)} / (e^{s(cos θ_y - m)} + Σ_{j≠y} e^{s cos θ_j}))
    emb, y, w = x["preds"], x["target"], x["weight"]
    cos = _normalize(emb, 1e-12) @ _normalize(w, 1e-12).T  # [N, K]
    logits = p["s"] * cos
    rows = np.arange(len(y))
    logits[rows, y] -= p["s"] * p["m"]
    if len(y) == 0:
        return np.zeros(0)
    return logsumexp(logits, axis=1) - logits[rows, y]


@reference("triplet_center")
def triplet_center(x: dict[str, np.ndarray], p: dict[str, Any]) -> np.ndarray:
    # He et al. 2018, Eq. 3 with the paper's D(f, c) = ½ ||f - c||²
    f, y, c = x["preds"], x["target"], x["centers"]
    d = 0.5 * np.linalg.norm(f[:, None, :] - c[None, :, :], axis=-1) ** 2  # [N, K]
    rows = np.arange(len(y))
    d_pos = d[rows, y]
    d[rows, y] = np.inf
    if len(y) == 0:
        return np.zeros(0)
    return np.maximum(d_pos + p["margin"] - d.min(axis=1), 0.0)


@reference("cosine_similarity")
def cosine_similarity(x: dict[str, np.ndarray], p: dict[str, Any]) -> np.ndarray:
    # torch.nn.functional.cosine_similarity: <x, y> / (max(||x||, eps) max(||y||, eps))
    a, b, eps = x["preds"], x["target"], p["eps"]
    return (_normalize(a, eps) * _normalize(b, eps)).sum(axis=1)
