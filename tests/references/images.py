"""Float64 references for the image metrics.

SSIM is scikit-image's ``structural_similarity`` (``gaussian_weights=True``, σ = 1.5,
``use_sample_covariance=False``, the spec's ``data_range``, K1, K2), the convention the spec
documents for ``padding="valid"``: the mean of the SSIM map over the positions where the
whole window fits (skimage filters with ``mode="reflect"`` and then crops ``(win - 1) / 2``
from every side, so the reflected border never counts). Its window is ``2 int(3.5 σ + 0.5)
+ 1`` taps; for another ``kernel_size`` or for ``padding="same"`` (zero padding, mean over
all positions) the reference is a direct scipy filter of the same formula.

MS-SSIM is pytorch-msssim's ``ms_ssim(size_average=False)`` in float64 throughout (its own
window is float32, so a float64 one is passed). PSNR is ``10 log10(L² / MSE)`` (+inf for
identical images) and total variation the sum of absolute neighbour differences, in numpy.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.ndimage
import torch
from pytorch_msssim import ms_ssim as _msssim
from skimage.metrics import structural_similarity

from . import reference


def _window(kernel_size: int, sigma: float) -> np.ndarray:
    d = np.arange(kernel_size, dtype=np.float64) - (kernel_size - 1) / 2
    g = np.exp(-(d**2) / (2 * sigma**2))
    return g / g.sum()


def _constants(p: dict[str, Any]) -> tuple[float, float]:
    return (p["k1"] * p["data_range"]) ** 2, (p["k2"] * p["data_range"]) ** 2


def _per_sample_sum(a: np.ndarray) -> np.ndarray:
    return a.reshape(a.shape[0], int(np.prod(a.shape[1:]))).sum(axis=1)


def _ssim_scipy(x: np.ndarray, y: np.ndarray, p: dict[str, Any]) -> float:
    """SSIM of one [C, H, W] pair with a zero-padded separable Gaussian (scipy), float64."""
    k, g = p["kernel_size"], _window(p["kernel_size"], p["sigma"])
    c1, c2 = _constants(p)
    pad = k // 2

    def blur(a: np.ndarray) -> np.ndarray:
        a = scipy.ndimage.correlate1d(a, g, axis=-1, mode="constant")
        return scipy.ndimage.correlate1d(a, g, axis=-2, mode="constant")

    mx, my = blur(x), blur(y)
    vx, vy, vxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    s = (2 * mx * my + c1) * (2 * vxy + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    if p["padding"] == "valid":
        s = s[:, pad : s.shape[1] - pad, pad : s.shape[2] - pad]
    return float(s.mean(axis=(1, 2)).mean())


@reference("ssim")
def ssim(x: dict[str, np.ndarray], p: dict[str, Any]) -> np.ndarray:
    sigma = p["sigma"]
    skimage_window = 2 * int(3.5 * sigma + 0.5) + 1
    out = []
    for a, b in zip(x["preds"], x["target"], strict=True):
        if p["padding"] == "valid" and p["kernel_size"] == skimage_window:
            score = structural_similarity(
                a,
                b,
                channel_axis=0,
                gaussian_weights=True,
                sigma=sigma,
                use_sample_covariance=False,
                data_range=p["data_range"],
                K1=p["k1"],
                K2=p["k2"],
            )
        else:
            score = _ssim_scipy(a, b, p)
        out.append(float(score))
    return np.array(out, dtype=np.float64)


@reference("ms_ssim")
def ms_ssim(x: dict[str, np.ndarray], p: dict[str, Any]) -> np.ndarray:
    preds, target = x["preds"], x["target"]
    if preds.shape[0] == 0:
        return np.zeros(0)
    c = preds.shape[1]
    win = torch.from_numpy(_window(p["kernel_size"], p["sigma"])).view(1, 1, 1, -1)
    out = _msssim(
        torch.from_numpy(preds),
        torch.from_numpy(target),
        data_range=p["data_range"],
        size_average=False,
        win=win.repeat(c, 1, 1, 1),
        K=(p["k1"], p["k2"]),
    )
    return out.numpy()


@reference("psnr")
def psnr(x: dict[str, np.ndarray], p: dict[str, Any]) -> np.ndarray:
    diff = x["preds"] - x["target"]
    mse = _per_sample_sum(diff**2) / diff[0].size if len(diff) else np.zeros(0)
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(p["data_range"] ** 2 / mse)


@reference("total_variation")
def total_variation(x: dict[str, np.ndarray], p: dict[str, Any]) -> np.ndarray:
    img = x["preds"]
    return _per_sample_sum(np.abs(np.diff(img, axis=2))) + _per_sample_sum(
        np.abs(np.diff(img, axis=3))
    )
