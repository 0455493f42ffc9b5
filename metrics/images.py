"""Full-reference image quality and image priors, per sample.

Images are ``Tensor[N, C, H, W]`` with values on a scale of ``data_range`` (1.0 for [0, 1]).
Every function returns ``Tensor[N]``, one score per image.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._ssim import gaussian_window, ssim_and_cs
from ._utils import check_positive, per_sample_mean, power
from .registry import MetricSpec, ParamSpec, TensorSpec, register
from .samples import images as samples

FAMILY = "images"
IMAGE = ("N", "C", "H", "W")
PAIR = (
    TensorSpec("preds", IMAGE, "float32", "predicted images"),
    TensorSpec("target", IMAGE, "float32", "reference images"),
)
PADDINGS = ("valid", "same")


# -- helpers ------------------------------------------------------------------------------
def _abs_diff_sum(x: Tensor, dim: int) -> Tensor:
    """``Σ |x[i] - x[i - 1]|`` along ``dim`` (2 or 3) for ``i >= 1``, summed per sample.

    Written with ``roll`` and a mask rather than two slices so that no axis of size
    ``H - 1`` appears: torch.export then keeps H and W dynamic without guards.
    """
    diff = (x - torch.roll(x, 1, dim)).abs()
    keep = torch.arange(x.shape[dim], device=x.device) > 0
    if dim == 2:
        keep = keep.unsqueeze(1)
    return torch.where(keep, diff, torch.zeros_like(diff)).sum(dim=(1, 2, 3))


# -- functional core ----------------------------------------------------------------------
def ssim(
    preds: Tensor,
    target: Tensor,
    kernel_size: int = 11,
    sigma: float = 1.5,
    data_range: float = 1.0,
    k1: float = 0.01,
    k2: float = 0.03,
    padding: str = "valid",
) -> Tensor:
    """Structural similarity per image, averaged over channels and window positions.

    With Gaussian-weighted local means ``μ``, variances ``σ²`` and covariance ``σ_xy``
    (population form, ``E[x²] - μ²``), ``C1 = (k1 L)²``, ``C2 = (k2 L)²``, ``L = data_range``:
    ``SSIM = (2 μx μy + C1)(2 σxy + C2) / ((μx² + μy² + C1)(σx² + σy² + C2))``.

    preds, target (Tensor[N, C, H, W]). Returns Tensor[N] in [-1, 1]; 1 for identical images.
    ``padding="valid"`` (default) averages only the positions where the whole window fits, as
    Wang et al. and scikit-image's ``structural_similarity(gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False)`` and pytorch-msssim; it needs
    ``H, W >= kernel_size``. ``padding="same"`` zero-pads by ``kernel_size // 2`` and averages
    over all ``H x W`` positions, as the widespread ``pytorch-ssim`` snippet: the zero border
    enters the window statistics. torchmetrics (1.9) differs from both: it reflect-pads,
    averages over all ``H x W`` positions, and takes its window size from sigma
    (``2 int(3.5 σ + 0.5) + 1``); its map cropped to the interior is the "valid" map here.
    Wang et al. 2004, IEEE TIP 13(4), https://doi.org/10.1109/TIP.2003.819861 (no arXiv).
    """
    window = gaussian_window(kernel_size, sigma, preds.dtype, preds.device)
    c1 = (k1 * data_range) ** 2
    c2 = (k2 * data_range) ** 2
    per_channel, _ = ssim_and_cs(preds, target, window, c1, c2, padding == "valid")
    return per_channel.mean(1)


MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def _halve(x: Tensor) -> Tensor:
    """2x2 average pooling; an odd side is first zero-padded by one on both ends.

    The padded zeros count in the average, as ``F.avg_pool2d(x, 2, padding=side % 2)``
    does (pytorch-msssim's downsampling).
    """
    ph = x.shape[2] % 2
    pw = x.shape[3] % 2
    return F.avg_pool2d(F.pad(x, [pw, pw, ph, ph]), 2)


def ms_ssim(
    preds: Tensor,
    target: Tensor,
    kernel_size: int = 11,
    sigma: float = 1.5,
    data_range: float = 1.0,
    k1: float = 0.01,
    k2: float = 0.03,
) -> Tensor:
    """Multi-scale structural similarity per image (5 scales).

    ``MS-SSIM = Π_{j<5} relu(cs_j)^{w_j} · relu(ssim_5)^{w_5}`` per channel, then averaged over
    channels, with ``w = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)`` (Wang et al. 2003),
    ``cs_j`` the mean contrast-structure term at scale j (valid Gaussian window) and the
    images halved by 2x2 average pooling between scales. preds, target (Tensor[N, C, H, W])
    with ``H, W > (kernel_size - 1) * 16``; returns Tensor[N] in [0, 1], 1 for identical
    images. Conventions follow pytorch-msssim (``ms_ssim(..., size_average=False)``): the
    relu on each term, the per-channel product, and zero padding of odd sides when
    pooling. Wang, Simoncelli & Bovik 2003, https://doi.org/10.1109/ACSSC.2003.1292216.
    """
    window = gaussian_window(kernel_size, sigma, preds.dtype, preds.device)
    c1 = (k1 * data_range) ** 2
    c2 = (k2 * data_range) ** 2
    weights = [0.0448, 0.2856, 0.3001, 0.2363, 0.1333]  # MS_SSIM_WEIGHTS, as TorchScript wants
    value = torch.ones_like(preds[:, :, 0, 0])
    for level, weight in enumerate(weights):
        per_channel, cs = ssim_and_cs(preds, target, window, c1, c2, True)
        if level < len(weights) - 1:
            value = value * power(torch.relu(cs), weight)
            preds = _halve(preds)
            target = _halve(target)
        else:
            value = value * power(torch.relu(per_channel), weight)
    return value.mean(1)


def psnr(preds: Tensor, target: Tensor, data_range: float = 1.0) -> Tensor:
    """Peak signal-to-noise ratio per image, in dB: ``10 log10(L² / MSE)``.

    ``MSE`` is the mean squared difference over all of the image's ``C·H·W`` elements and
    ``L = data_range``. preds, target (Tensor[N, C, H, W]). Returns Tensor[N]; identical
    images give ``+inf`` (MSE = 0), never NaN. Same as scikit-image's
    ``peak_signal_noise_ratio`` per image and torchmetrics' with ``dim=(1, 2, 3)``.
    """
    mse = per_sample_mean((preds - target).square())
    return 20.0 * math.log10(data_range) - 10.0 * torch.log10(mse)


def total_variation(preds: Tensor) -> Tensor:
    """Anisotropic total variation per image: ``Σ |x[i+1, j] - x[i, j]| + Σ |x[i, j+1] - x[i, j]|``.

    Summed over channels and positions (not averaged). preds (Tensor[N, C, H, W]). Returns
    Tensor[N] >= 0, as torchmetrics' ``TotalVariation(reduction=None)``.
    Rudin, Osher & Fatemi 1992, https://doi.org/10.1016/0167-2789(92)90242-F (no arXiv);
    as an image prior: Mahendran & Vedaldi 2015, https://arxiv.org/abs/1412.0035.
    """
    return _abs_diff_sum(preds, 2) + _abs_diff_sum(preds, 3)


# -- modules ------------------------------------------------------------------------------
class SSIM(nn.Module):
    def __init__(
        self,
        kernel_size: int = 11,
        sigma: float = 1.5,
        data_range: float = 1.0,
        k1: float = 0.01,
        k2: float = 0.03,
        padding: str = "valid",
    ) -> None:
        super().__init__()
        self.kernel_size = int(kernel_size)
        self.sigma = float(sigma)
        self.data_range = float(data_range)
        self.k1 = float(k1)
        self.k2 = float(k2)
        self.padding = str(padding)

    def forward(self, preds: Tensor, target: Tensor) -> Tensor:
        return ssim(
            preds,
            target,
            self.kernel_size,
            self.sigma,
            self.data_range,
            self.k1,
            self.k2,
            self.padding,
        )


class MSSSIM(nn.Module):
    def __init__(
        self,
        kernel_size: int = 11,
        sigma: float = 1.5,
        data_range: float = 1.0,
        k1: float = 0.01,
        k2: float = 0.03,
    ) -> None:
        super().__init__()
        self.kernel_size = int(kernel_size)
        self.sigma = float(sigma)
        self.data_range = float(data_range)
        self.k1 = float(k1)
        self.k2 = float(k2)

    def forward(self, preds: Tensor, target: Tensor) -> Tensor:
        return ms_ssim(
            preds, target, self.kernel_size, self.sigma, self.data_range, self.k1, self.k2
        )


class PSNR(nn.Module):
    def __init__(self, data_range: float = 1.0) -> None:
        super().__init__()
        self.data_range = float(data_range)

    def forward(self, preds: Tensor, target: Tensor) -> Tensor:
        return psnr(preds, target, self.data_range)


class TotalVariation(nn.Module):
    def forward(self, preds: Tensor) -> Tensor:
        return total_variation(preds)


# -- domain checks ------------------------------------------------------------------------
def _validate_ssim(params: Mapping[str, Any], inputs: Mapping[str, Tensor]) -> None:
    kernel_size = params["kernel_size"]
    if not isinstance(kernel_size, int) or kernel_size <= 0 or kernel_size % 2 == 0:
        raise ValueError(f"Expected `kernel_size` to be odd and positive, got {kernel_size}")
    check_positive("sigma", params["sigma"])
    check_positive("data_range", params["data_range"])
    check_positive("k1", params["k1"])
    check_positive("k2", params["k2"])
    padding = params["padding"]
    if padding not in PADDINGS:
        raise ValueError(f"Expected `padding` to be one of {list(PADDINGS)}, got {padding!r}")
    if padding == "valid":
        for name in ("preds", "target"):
            shape = list(inputs[name].shape)
            if min(shape[-2:]) < kernel_size:
                raise ValueError(
                    f"Expected `{name}` to have H and W >= kernel_size ({kernel_size}) with "
                    f"padding 'valid', got shape {shape}"
                )


def _validate_ms_ssim(params: Mapping[str, Any], inputs: Mapping[str, Tensor]) -> None:
    _validate_ssim({**params, "padding": "valid"}, inputs)
    smallest = (params["kernel_size"] - 1) * 2 ** (len(MS_SSIM_WEIGHTS) - 1) + 1
    for name in ("preds", "target"):
        shape = list(inputs[name].shape)
        if min(shape[-2:]) < smallest:
            raise ValueError(
                f"Expected `{name}` to have H and W >= {smallest} for {len(MS_SSIM_WEIGHTS)} "
                f"scales of a {params['kernel_size']}-tap window, got shape {shape}"
            )


def _validate_psnr(params: Mapping[str, Any], inputs: Mapping[str, Tensor]) -> None:
    check_positive("data_range", params["data_range"])


# -- registry -----------------------------------------------------------------------------
WINDOW_PARAMS = (
    ParamSpec("kernel_size", 11, "side of the Gaussian window; odd"),
    ParamSpec("sigma", 1.5, "standard deviation of the Gaussian window"),
    ParamSpec("data_range", 1.0, "max - min of the value scale (255 for 8-bit)"),
    ParamSpec("k1", 0.01, "C1 = (k1 * data_range)^2"),
    ParamSpec("k2", 0.03, "C2 = (k2 * data_range)^2"),
)


def _ssim_work(sizes: Mapping[str, int], params: Mapping[str, Any]) -> int:
    """Bytes at the peak: five blurred maps and the separable blur's temporaries per pixel
    (measured ~190 per pixel for SSIM and MS-SSIM in ONNX Runtime)."""
    return 256 * math.prod(sizes.get(k, 0) for k in "NCHW")


register(
    MetricSpec(
        name="ssim",
        family=FAMILY,
        module=SSIM,
        functional=ssim,
        inputs=PAIR,
        outputs=(TensorSpec("score", ("N",), "float32", "mean SSIM per image"),),
        params=(
            *WINDOW_PARAMS,
            ParamSpec("padding", "valid", "'valid': window fully inside; 'same': zero padding"),
        ),
        higher_is_better=True,
        paper="Wang et al. 2004, Image Quality Assessment: From Error Visibility to "
        "Structural Similarity, IEEE TIP, doi:10.1109/TIP.2003.819861",
        oracle="skimage structural_similarity; pytorch_msssim.ssim; torchmetrics SSIM map interior",
        sample=samples.sample_pair,
        regimes=samples.PAIR_REGIMES,
        summary="structural similarity, Gaussian window",
        validate=_validate_ssim,
        example_sizes={"N": 3, "C": 2, "H": 23, "W": 21},
        work=_ssim_work,
        min_sizes={"H": 11, "W": 11},
    )
)

register(
    MetricSpec(
        name="ms_ssim",
        family=FAMILY,
        module=MSSSIM,
        functional=ms_ssim,
        inputs=PAIR,
        outputs=(TensorSpec("score", ("N",), "float32", "MS-SSIM per image"),),
        params=WINDOW_PARAMS,
        higher_is_better=True,
        paper="Wang, Simoncelli & Bovik 2003, Multiscale structural similarity for image "
        "quality assessment, doi:10.1109/ACSSC.2003.1292216",
        oracle="pytorch_msssim.ms_ssim(size_average=False)",
        sample=samples.sample_pair,
        regimes=samples.PAIR_REGIMES,
        summary="multi-scale structural similarity, 5 scales",
        validate=_validate_ms_ssim,
        example_sizes={"N": 3, "C": 2, "H": 163, "W": 166},
        work=_ssim_work,
        min_sizes={"H": 161, "W": 161},
    )
)

register(
    MetricSpec(
        name="psnr",
        family=FAMILY,
        module=PSNR,
        functional=psnr,
        inputs=PAIR,
        outputs=(TensorSpec("score", ("N",), "float32", "PSNR in dB per image; +inf if equal"),),
        params=(ParamSpec("data_range", 1.0, "max - min of the value scale (255 for 8-bit)"),),
        higher_is_better=True,
        paper="Huynh-Thu & Ghanbari 2008, Scope of validity of PSNR, doi:10.1049/el:20080522",
        oracle="skimage.metrics.peak_signal_noise_ratio; torchmetrics PSNR",
        sample=samples.sample_pair,
        regimes=samples.PAIR_REGIMES,
        summary="peak signal-to-noise ratio in dB",
        validate=_validate_psnr,
        example_sizes={"N": 3, "C": 2, "H": 7, "W": 5},
    )
)

register(
    MetricSpec(
        name="total_variation",
        family=FAMILY,
        module=TotalVariation,
        functional=total_variation,
        inputs=(TensorSpec("preds", IMAGE, "float32", "images"),),
        outputs=(TensorSpec("score", ("N",), "float32", "anisotropic TV per image"),),
        params=(),
        higher_is_better=False,
        paper="Rudin, Osher & Fatemi 1992; Mahendran & Vedaldi 2015, arXiv:1412.0035",
        oracle="torchmetrics TotalVariation(reduction=None)",
        sample=samples.sample_one,
        regimes={"extreme": samples.one_extreme, "degenerate": samples.one_degenerate},
        summary="anisotropic total variation (sum of absolute neighbour differences)",
        example_sizes={"N": 3, "C": 2, "H": 7, "W": 5},
    )
)
