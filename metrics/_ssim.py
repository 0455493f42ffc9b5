"""The Gaussian-window statistics SSIM and MS-SSIM are built from (:mod:`metrics.images`).

A separable Gaussian filter, and the per-(sample, channel) means of the SSIM map and of its
contrast-structure part, with "valid" and "same" (zero) padding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def gaussian_window(
    kernel_size: int, sigma: float, dtype: torch.dtype, device: torch.device
) -> Tensor:
    """Normalised 1-D Gaussian of ``kernel_size`` taps: ``exp(-d² / 2σ²) / Σ``."""
    dist = torch.arange(kernel_size, dtype=dtype, device=device) - (kernel_size - 1) / 2.0
    window = torch.exp(-0.5 * (dist / sigma).square())
    return window / window.sum()


def blur(maps: Tensor, window: Tensor, pad: int) -> Tensor:
    """Separable Gaussian filter of ``[B, M, H, W]``, each of the M channels on its own.

    A row pass then a column pass, zero padding ``pad``. The maps are the conv's channels
    (``groups=M``, a depthwise conv), so the group count stays static while the image
    channels, folded into the batch axis, stay dynamic.
    """
    k = window.shape[0]
    m = maps.shape[1]
    row = window.view(1, 1, 1, k).expand(m, 1, 1, k)
    col = window.view(1, 1, k, 1).expand(m, 1, k, 1)
    out = F.conv2d(maps, row, padding=(0, pad), groups=m)
    return F.conv2d(out, col, padding=(pad, 0), groups=m)


def ssim_and_cs(
    preds: Tensor, target: Tensor, window: Tensor, c1: float, c2: float, valid: bool
) -> tuple[Tensor, Tensor]:
    """Per-(sample, channel) means of the SSIM map and of its contrast-structure part.

    Four maps are filtered, as the channels of ``[N * C, 4, H, W]``: ``x'``, ``y'``,
    ``x'² + y'²`` and ``x'y'`` (the two variances only ever appear summed, so one blurred map
    serves both; a fifth map would cost a fifth more of the run time). ``x' = x - c_x`` and
    ``y' = y - c_y`` are the images less their mean per (sample, channel): variances and the
    covariance do not change under a shift, and without it ``σ² = E[x²] - μ²`` cancels
    catastrophically in float32 on flat or low-contrast images (E[x²] ~ 0.5 against a C2 of
    9e-4: an error of 7e-5 in SSIM on flat images). The means come back as
    ``μ = blur(x') + c m``, ``m`` the window's mass inside the image (1 in the interior).

    Both paddings filter with zero padding, so every map keeps the input's H x W, and
    "valid" averages over the interior only: cropping would create ``H - k + 1`` sized axes,
    which torch.export keeps dynamic only by guarding them away from 1. In the interior the
    shifted moments are exact; "same" corrects them at the border for the zero padding
    (the zeros of ``x`` are ``-c`` in ``x'``).
    """
    n, c, h, w = preds.shape[0], preds.shape[1], preds.shape[2], preds.shape[3]
    pad = window.shape[0] // 2
    cx = preds.mean(dim=(2, 3), keepdim=True)
    cy = target.mean(dim=(2, 3), keepdim=True)
    x = preds - cx
    y = target - cy
    maps = torch.stack([x, y, x * x + y * y, x * y], 2)
    mx, my, sq, xy = blur(maps.flatten(0, 1), window, pad).view(n, c, 4, h, w).unbind(2)
    var_sum = sq - mx * mx - my * my  # σx² + σy²
    cov = xy - mx * my  # σxy
    if valid:
        # the border, where the window leaves the image, is weighted 0 below
        mu_x = mx + cx
        mu_y = my + cy
    else:
        mass = window_mass(h, w, window, pad, preds)
        gap = 1.0 - mass
        spill = mass * gap
        mu_x = mx + cx * mass
        mu_y = my + cy * mass
        var_sum = var_sum + 2.0 * gap * (cx * mx + cy * my) + spill * (cx * cx + cy * cy)
        cov = cov + gap * (cx * my + cy * mx) + spill * (cx * cy)
    lum_num = 2.0 * mu_x * mu_y + c1
    lum_den = mu_x * mu_x + mu_y * mu_y + c1
    cs_map = (2.0 * cov + c2) / (var_sum + c2)
    ssim_map = lum_num / lum_den * cs_map
    if not valid:
        return ssim_map.mean(dim=(2, 3)), cs_map.mean(dim=(2, 3))
    return interior_mean(ssim_map, pad), interior_mean(cs_map, pad)


def interior_mean(maps: Tensor, pad: int) -> Tensor:
    """Mean of ``[N, C, H, W]`` over positions ``pad .. side - pad - 1``: ``[N, C]``.

    A weighted sum along W, then along H: ONNX Runtime's ReduceSum accumulates in order,
    and two short sums instead of one of H x W terms keep identical images at 1 there
    (one long sum put MS-SSIM 2e-6 below 1).
    """
    rows = (maps * interior(maps.shape[3], pad, maps)).sum(3)
    return (rows * interior(maps.shape[2], pad, maps)).sum(2)


def window_mass(h: int, w: int, window: Tensor, pad: int, like: Tensor) -> Tensor:
    """``[H, W]``: the share of the window inside the image at each position (zero padding).

    The 2-D window is separable, so this is the outer product of the 1-D masses: the
    filter of a row of ones (1 in the interior, less within ``pad`` of a side).
    """
    k = window.shape[0]
    taps = window.view(1, 1, k)
    ones_h = torch.ones(1, 1, h, dtype=like.dtype, device=like.device)
    ones_w = torch.ones(1, 1, w, dtype=like.dtype, device=like.device)
    rows = F.conv1d(ones_h, taps, padding=pad).view(h, 1)
    cols = F.conv1d(ones_w, taps, padding=pad).view(1, w)
    return rows * cols


def interior(size: int, pad: int, like: Tensor) -> Tensor:
    """Uniform weights over positions ``pad .. size - pad - 1`` of an axis, zero elsewhere."""
    index = torch.arange(size, device=like.device)
    inside = ((index >= pad) & (index < size - pad)).to(like.dtype)
    return inside / inside.sum()
