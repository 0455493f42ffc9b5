"""Float64 references for the landmark and ordinal-regression losses.

Wing from Feng et al. 2018, Eq. 5 (``np.log1p``), summed over a sample's coordinates as the
spec documents; mean-variance from Pan et al. 2018 with ``scipy.special.logsumexp`` for the
log-softmax and numpy's round-half-to-even for the age of the softmax term.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import logsumexp

from . import reference


@reference("wing")
def wing(x: dict[str, np.ndarray], p: dict[str, Any]) -> np.ndarray:
    w, eps = p["w"], p["eps"]
    a = np.abs(x["preds"] - x["target"])
    c = w - w * np.log1p(w / eps)
    loss = np.where(a < w, w * np.log1p(a / eps), a - c)
    return loss.reshape(loss.shape[0], int(np.prod(loss.shape[1:]))).sum(axis=1)


@reference("mean_variance")
def mean_variance(x: dict[str, np.ndarray], p: dict[str, Any]) -> np.ndarray:
    logits, y = x["preds"], x["target"]
    n, k = logits.shape
    logp = logits - logsumexp(logits, axis=1, keepdims=True) if n else logits
    prob = np.exp(logp)
    ages = np.arange(k, dtype=np.float64)
    mean = (prob * ages).sum(axis=1)
    variance = (prob * (ages[None, :] - mean[:, None]) ** 2).sum(axis=1)
    # L_s: cross-entropy at the rounded age (np.round is half-to-even, as torch.round)
    ce = -logp[np.arange(n), np.round(y).astype(np.int64)]
    return ce + p["lambda1"] * 0.5 * (mean - y) ** 2 + p["lambda2"] * variance
