"""Float64 references for the GAN losses, from the discriminator's raw outputs.

The logistic family (Goodfellow et al. 2014) is written with ``np.logaddexp``:
``softplus(x) = logaddexp(0, x)``, ``-log σ(x) = softplus(-x)``, ``-log(1 - σ(x)) =
softplus(x)``. LSGAN from Mao et al. 2017 (with the spec's ½), WGAN from Arjovsky et al.
2017, the cycle term from Zhu et al. 2017 (λ mean |F(G(x)) - x|). Each is averaged over a
sample's outputs (patches).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import reference


def _mean(x: np.ndarray) -> np.ndarray:
    return x.reshape(x.shape[0], int(np.prod(x.shape[1:]))).mean(axis=1)


def _softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)


@reference("gan_minmax_d")
def gan_minmax_d(x: dict[str, np.ndarray], p: dict[str, Any]) -> np.ndarray:
    # -log D(x) - log(1 - D(G(z))), D = σ(logit)
    return _mean(_softplus(-x["real"])) + _mean(_softplus(x["fake"]))


@reference("gan_minmax_g")
def gan_minmax_g(x: dict[str, np.ndarray], p: dict[str, Any]) -> np.ndarray:
    # log(1 - D(G(z))) = -softplus(fake)
    return _mean(-_softplus(x["fake"]))


@reference("gan_nonsaturating_g")
def gan_nonsaturating_g(x: dict[str, np.ndarray], p: dict[str, Any]) -> np.ndarray:
    # -log D(G(z)) = softplus(-fake)
    return _mean(_softplus(-x["fake"]))


@reference("lsgan_d")
def lsgan_d(x: dict[str, np.ndarray], p: dict[str, Any]) -> np.ndarray:
    return 0.5 * _mean((x["real"] - p["b"]) ** 2) + 0.5 * _mean((x["fake"] - p["a"]) ** 2)


@reference("lsgan_g")
def lsgan_g(x: dict[str, np.ndarray], p: dict[str, Any]) -> np.ndarray:
    return 0.5 * _mean((x["fake"] - p["c"]) ** 2)


@reference("wgan_d")
def wgan_d(x: dict[str, np.ndarray], p: dict[str, Any]) -> np.ndarray:
    return _mean(x["fake"]) - _mean(x["real"])


@reference("wgan_g")
def wgan_g(x: dict[str, np.ndarray], p: dict[str, Any]) -> np.ndarray:
    return -_mean(x["fake"])


@reference("cycle_consistency")
def cycle_consistency(x: dict[str, np.ndarray], p: dict[str, Any]) -> np.ndarray:
    return p["weight"] * _mean(np.abs(x["preds"] - x["target"]))
