"""Float64 references for the pixel-wise and classification losses.

The logistic family is written with ``np.logaddexp`` (log σ(x) = -logaddexp(0, -x)) and
``scipy.special.expit``, from Lin et al. 2017 and the torch.nn.functional conventions each
spec names; cross-entropy with ``scipy.special.logsumexp``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import expit, logsumexp, xlogy

from . import reference


def _mean(x: np.ndarray) -> np.ndarray:
    return x.reshape(x.shape[0], int(np.prod(x.shape[1:]))).mean(axis=1)


def _log_sigmoid(x: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -x)


@reference("l1")
def l1(x: dict[str, np.ndarray], p: dict[str, Any]) -> np.ndarray:
    return _mean(np.abs(x["preds"] - x["target"]))


@reference("mse")
def mse(x: dict[str, np.ndarray], p: dict[str, Any]) -> np.ndarray:
    return _mean((x["preds"] - x["target"]) ** 2)


@reference("smooth_l1")
def smooth_l1(x: dict[str, np.ndarray], p: dict[str, Any]) -> np.ndarray:
    d = np.abs(x["preds"] - x["target"])
    beta = p["beta"]
    if beta == 0:
        return _mean(d)
    return _mean(np.where(d < beta, 0.5 * d**2 / beta, d - 0.5 * beta))


@reference("cross_entropy")
def cross_entropy(x: dict[str, np.ndarray], p: dict[str, Any]) -> np.ndarray:
    logits, target = x["preds"], x["target"]
    n, c = logits.shape[:2]
    logp = logits - logsumexp(logits, axis=1, keepdims=True)
    positions = int(np.prod(target.shape[1:]))
    logp = logp.reshape(n, c, positions)  # [N, C, P]
    target = target.reshape(n, positions)  # [N, P]
    weight = np.ones(c) if p["weight"] is None else np.asarray(p["weight"], dtype=np.float64)
    valid = target != p["ignore_index"]
    safe = np.where(valid, target, 0)
    nll = -np.take_along_axis(logp, safe[:, None, :], axis=1)[:, 0, :] * weight[safe]
    smooth = -(logp * weight[None, :, None]).sum(axis=1) / c
    eps = p["label_smoothing"]
    loss = np.where(valid, (1 - eps) * nll + eps * smooth, 0.0)
    return loss.sum(axis=1) / np.maximum(valid.sum(axis=1), 1)


@reference("binary_cross_entropy")
def binary_cross_entropy(x: dict[str, np.ndarray], p: dict[str, Any]) -> np.ndarray:
    # torch clamps each log at -100, so p = 0 or 1 gives 100 rather than inf
    prob, t = x["preds"], x["target"]
    with np.errstate(divide="ignore"):
        log_p = np.maximum(np.log(prob), -100.0)
        log_1mp = np.maximum(np.log1p(-prob), -100.0)
    return _mean(-(t * log_p + (1 - t) * log_1mp))


def _bce(logits: np.ndarray, t: np.ndarray, pos_weight: float = 1.0) -> np.ndarray:
    return -(pos_weight * t * _log_sigmoid(logits) + (1 - t) * _log_sigmoid(-logits))


@reference("bce_with_logits")
def bce_with_logits(x: dict[str, np.ndarray], p: dict[str, Any]) -> np.ndarray:
    return _mean(_bce(x["preds"], x["target"], p["pos_weight"]))


@reference("balanced_bce")
def balanced_bce(x: dict[str, np.ndarray], p: dict[str, Any]) -> np.ndarray:
    logits, t, a = x["preds"], x["target"], p["alpha"]
    return _mean(-(a * t * _log_sigmoid(logits) + (1 - a) * (1 - t) * _log_sigmoid(-logits)))


@reference("focal")
def focal(x: dict[str, np.ndarray], p: dict[str, Any]) -> np.ndarray:
    # FL = α_t (1 - p_t)^γ CE; 1 - p_t = t (1 - p) + (1 - t) p, with 1 - p = σ(-x) exactly
    logits, t = x["preds"], x["target"]
    one_minus_pt = t * expit(-logits) + (1 - t) * expit(logits)
    loss = _bce(logits, t) * one_minus_pt ** p["gamma"]
    if p["alpha"] >= 0:
        loss = loss * (p["alpha"] * t + (1 - p["alpha"]) * (1 - t))
    return _mean(loss)


@reference("kl_div")
def kl_div(x: dict[str, np.ndarray], p: dict[str, Any]) -> np.ndarray:
    t, logq = x["target"], x["preds"]
    summed = (xlogy(t, t) - t * logq).sum(axis=1)
    return _mean(summed)
