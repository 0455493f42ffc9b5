"""Image metrics against scikit-image, torchmetrics, pytorch-msssim, scipy and hand values."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import scipy.signal
import torch
from pytorch_msssim import ms_ssim as msssim_ms_ssim
from pytorch_msssim import ssim as msssim_ssim
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from torchmetrics.image import (
    PeakSignalNoiseRatio,
    StructuralSimilarityIndexMeasure,
    TotalVariation,
)

from cvscore.metrics import images, registry

from ..conftest import DEVICES, tol

DTYPES = (torch.float32, torch.float64)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _pair(
    seed: int, n=3, c=2, h=23, w=21, dtype=torch.float64
) -> tuple[torch.Tensor, torch.Tensor]:
    out = registry.get("ssim").make_inputs(_gen(seed), {"N": n, "C": c, "H": h, "W": w}, dtype)
    return out["preds"], out["target"]


def _numpy_ssim(
    x: np.ndarray, y: np.ndarray, kernel_size: int, sigma: float, mode: str
) -> np.ndarray:
    """SSIM per image with a direct 2-D correlation (scipy), zero fill for "same" (float64)."""
    d = np.arange(kernel_size) - (kernel_size - 1) / 2
    g = np.exp(-(d**2) / (2 * sigma**2))
    window = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = 0.01**2, 0.03**2
    scores = []
    for xi, yi in zip(x, y, strict=True):
        maps = []
        for xc, yc in zip(xi, yi, strict=True):

            def f(a: np.ndarray) -> np.ndarray:
                return scipy.signal.correlate2d(a, window, mode=mode, boundary="fill")

            mx, my = f(xc), f(yc)
            vx, vy, vxy = f(xc * xc) - mx**2, f(yc * yc) - my**2, f(xc * yc) - mx * my
            s = (2 * mx * my + c1) * (2 * vxy + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
            maps.append(s)
        scores.append(np.mean(maps))
    return np.array(scores)


# -- SSIM ---------------------------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_ssim_valid_matches_scikit_image(dtype: torch.dtype, device: str) -> None:
    x, y = _pair(1, dtype=dtype)
    out = images.SSIM()(x.to(device), y.to(device)).cpu()
    ref = _skimage_ssim(x, y)
    assert out.dtype == dtype
    torch.testing.assert_close(out, torch.tensor(ref, dtype=dtype), **tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("kernel_size", "sigma"), [(11, 1.5), (9, 1.0), (15, 2.0)])
def test_ssim_valid_matches_torchmetrics_map_interior(
    kernel_size: int, sigma: float, dtype
) -> None:
    # torchmetrics (1.9) reflect-pads, sizes its Gaussian window from sigma (2·int(3.5σ + 0.5)
    # + 1 taps, hence the pairs above) and averages its map over all H x W positions. Its map
    # at the interior positions is the "valid" one: crop it there and average.
    x, y = _pair(2, n=4, c=3, h=19, w=16, dtype=dtype)
    metric = StructuralSimilarityIndexMeasure(
        sigma=sigma, data_range=1.0, reduction="none", return_full_image=True
    ).to(dtype)
    _, full = metric(x, y)
    pad = kernel_size // 2
    ref = full[..., pad:-pad, pad:-pad].mean(dim=(1, 2, 3))
    out = images.SSIM(kernel_size, sigma)(x, y)
    torch.testing.assert_close(out, ref.to(dtype), **tol(dtype))


def test_ssim_valid_matches_pytorch_msssim() -> None:
    x, y = _pair(3, n=5, c=3, h=32, w=27, dtype=torch.float32)
    ref = msssim_ssim(x, y, data_range=1.0, size_average=False, win_size=11, win_sigma=1.5)
    torch.testing.assert_close(images.SSIM()(x, y), ref, **tol(torch.float32))


@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize(("kernel_size", "sigma"), [(11, 1.5), (7, 1.0)])
def test_ssim_matches_direct_2d_correlation(padding: str, kernel_size: int, sigma: float) -> None:
    x, y = _pair(4, n=3, c=2, h=17, w=14)
    out = images.SSIM(kernel_size, sigma, padding=padding)(x, y)
    ref = _numpy_ssim(x.numpy(), y.numpy(), kernel_size, sigma, padding)
    torch.testing.assert_close(out, torch.from_numpy(ref), **tol(torch.float64))


def test_ssim_hand_worked() -> None:
    x, _ = _pair(5)
    np.testing.assert_allclose(images.SSIM()(x, x).numpy(), 1.0, rtol=1e-12)  # identical
    # constant images a, b: μ = a, b exactly (the window sums to 1) and σ = 0, so
    # SSIM = (2ab + C1) / (a² + b² + C1) with C1 = 1e-4: (0.24 + 1e-4) / (0.40 + 1e-4)
    a = torch.full((1, 2, 12, 13), 0.2, dtype=torch.float64)
    b = torch.full((1, 2, 12, 13), 0.6, dtype=torch.float64)
    assert images.SSIM()(a, b).item() == pytest.approx(0.2401 / 0.4001, rel=1e-12)
    # data_range scales C1, C2 with the values: 8-bit images at L = 255 score the same
    x, y = _pair(6)
    torch.testing.assert_close(images.SSIM(data_range=255.0)(255 * x, 255 * y), images.SSIM()(x, y))


def _contrast_cases(n: int, c: int, h: int, w: int, seed: int) -> dict[str, tuple]:
    """float32 image pairs at the extremes of contrast, [N, C, H, W]."""
    g = _gen(seed)
    level = torch.rand(n, c, 1, 1, generator=g)
    other = torch.rand(n, c, 1, 1, generator=g)
    checker = ((torch.arange(h)[:, None] + torch.arange(w)[None, :]) % 2).float()
    checker = checker.expand(n, c, h, w)
    noise = torch.randn(n, c, h, w, generator=g)
    return {
        # flat against flat (different levels and the same level)
        "flat": (level.expand(n, c, h, w), other.expand(n, c, h, w)),
        "flat, equal": (level.expand(n, c, h, w), level.expand(n, c, h, w).clone()),
        # values within 1e-3 of a constant
        "low contrast": (
            level + 1e-3 * torch.rand(n, c, h, w, generator=g),
            level + 1e-3 * torch.rand(n, c, h, w, generator=g),
        ),
        # 0/1 checkerboards: against their inverse and against a noisy copy
        "high contrast": (checker, 1.0 - checker),
        "high contrast, noisy": (checker, (checker + 0.1 * noise).clamp(0, 1)),
    }


def _skimage_ssim(x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    return np.array(
        [
            structural_similarity(
                xi,
                yi,
                channel_axis=0,
                gaussian_weights=True,
                sigma=1.5,
                use_sample_covariance=False,
                data_range=1.0,
            )
            for xi, yi in zip(x.double().numpy(), y.double().numpy(), strict=True)
        ]
    )


def _msssim_float64(x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    # pytorch-msssim's own window is float32; a float64 one makes it float64 throughout
    d = torch.arange(11, dtype=torch.float64) - 5
    g = torch.exp(-(d**2) / (2 * 1.5**2))
    win = (g / g.sum()).view(1, 1, 1, 11).repeat(x.shape[1], 1, 1, 1)
    out = msssim_ms_ssim(x.double(), y.double(), data_range=1.0, size_average=False, win=win)
    return out.numpy()


@pytest.mark.parametrize("case", ["flat", "flat, equal", "low contrast", "high contrast",
                                  "high contrast, noisy"])  # fmt: skip
def test_ssim_float32_on_flat_and_extreme_contrast_matches_scikit_image(case: str) -> None:
    # Issue 14, finding 5: σ² = blur(x² + y²) - μ² cancelled in float32 (7e-5 off on flat
    # images, against C2 = 9e-4); the moments are now taken about each image's mean.
    x, y = _contrast_cases(3, 2, 40, 37, 21)[case]
    out = images.SSIM()(x, y)
    assert out.dtype == torch.float32
    np.testing.assert_allclose(out.double().numpy(), _skimage_ssim(x, y), rtol=0, atol=1e-5)
    # "same" padding: the zero border corrected for the shift, against a direct 2-D filter
    same = images.SSIM(padding="same")(x, y).double().numpy()
    ref = _numpy_ssim(x.double().numpy(), y.double().numpy(), 11, 1.5, "same")
    np.testing.assert_allclose(same, ref, rtol=0, atol=1e-5)


@pytest.mark.parametrize("case", ["flat", "low contrast", "high contrast, noisy"])
def test_ms_ssim_float32_on_flat_and_extreme_contrast(case: str) -> None:
    x, y = _contrast_cases(2, 2, 161, 170, 22)[case]
    out = images.MSSSIM()(x, y)
    np.testing.assert_allclose(out.double().numpy(), _msssim_float64(x, y), rtol=0, atol=1e-5)


# -- PSNR ---------------------------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("data_range", [1.0, 255.0])
def test_psnr_matches_scikit_image_and_torchmetrics(data_range: float, dtype, device) -> None:
    x, y = _pair(7, n=4, c=3, h=9, w=8, dtype=dtype)
    x, y = x * data_range, y * data_range
    out = images.PSNR(data_range)(x.to(device), y.to(device)).cpu()
    ref = [
        peak_signal_noise_ratio(yi, xi, data_range=data_range)
        for xi, yi in zip(x.double().numpy(), y.double().numpy(), strict=True)
    ]
    torch.testing.assert_close(out, torch.tensor(ref, dtype=dtype), **tol(dtype))
    tm = PeakSignalNoiseRatio(data_range=data_range, reduction="none", dim=(1, 2, 3))
    torch.testing.assert_close(out, tm(x, y).to(dtype), **tol(dtype))


def test_psnr_hand_worked() -> None:
    x, _ = _pair(8)
    # identical images: MSE = 0, PSNR = +inf (not NaN)
    out = images.PSNR()(x, x)
    assert bool(torch.isposinf(out).all())
    # a uniform offset of 0.1: MSE = 0.01, 10 log10(1 / 0.01) = 20 dB
    np.testing.assert_allclose(images.PSNR()(x + 0.1, x).numpy(), 20.0, rtol=1e-12)
    # 8-bit scale, offset 1: 10 log10(255²) = 48.13 dB
    out = images.PSNR(255.0)(255 * x + 1, 255 * x)
    np.testing.assert_allclose(out.numpy(), 20 * math.log10(255), rtol=1e-12)


# -- total variation ----------------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(4, 3, 9, 7), (2, 1, 1, 5), (3, 2, 6, 1)])
def test_total_variation_matches_torchmetrics(shape, dtype, device) -> None:
    x = torch.rand(shape, generator=_gen(9), dtype=dtype)
    out = images.TotalVariation()(x.to(device)).cpu()
    ref = TotalVariation(reduction=None)(x)
    torch.testing.assert_close(out, ref.to(dtype), **tol(dtype))


def test_total_variation_hand_worked() -> None:
    # [[0, 1], [2, 4]]: vertical |2 - 0| + |4 - 1| = 5, horizontal |1 - 0| + |4 - 2| = 3
    img = torch.tensor([[[[0.0, 1.0], [2.0, 4.0]]]])
    assert images.TotalVariation()(img).item() == 8.0
    # constant images vary by nothing; a single pixel has no neighbours
    assert images.TotalVariation()(torch.full((2, 3, 4, 5), 0.7)).tolist() == [0.0, 0.0]
    assert images.TotalVariation()(torch.full((1, 1, 1, 1), 3.0)).tolist() == [0.0]


# -- contract checks ----------------------------------------------------------------------
def test_modules_equal_functionals() -> None:
    x, y = _pair(10)
    for kwargs in ({}, {"kernel_size": 7, "sigma": 1.0, "padding": "same", "k1": 0.02}):
        torch.testing.assert_close(images.SSIM(**kwargs)(x, y), images.ssim(x, y, **kwargs))
    torch.testing.assert_close(images.PSNR(2.0)(x, y), images.psnr(x, y, 2.0))
    torch.testing.assert_close(images.TotalVariation()(x), images.total_variation(x))


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_ssim_gradcheck(padding: str) -> None:
    x, y = _pair(11, n=2, c=1, h=12, w=11)
    leaves = (x.requires_grad_(True), y.requires_grad_(True))
    assert torch.autograd.gradcheck(images.SSIM(padding=padding), leaves)


def test_psnr_and_total_variation_gradcheck() -> None:
    x, y = _pair(12, n=2, c=2, h=4, w=5)
    leaves = (x.requires_grad_(True), y.requires_grad_(True))
    assert torch.autograd.gradcheck(images.PSNR(), leaves)
    assert torch.autograd.gradcheck(images.TotalVariation(), (leaves[0],))


def test_bad_inputs_name_the_argument() -> None:
    spec = registry.get("ssim")
    x, y = _pair(13, dtype=torch.float32)
    inputs = {"preds": x, "target": y}
    with pytest.raises(ValueError, match="Expected `kernel_size` to be odd and positive, got 4"):
        spec.check_inputs(inputs, {"kernel_size": 4})
    with pytest.raises(ValueError, match="`kernel_size` to be odd and positive, got -3"):
        spec.check_inputs(inputs, {"kernel_size": -3})
    with pytest.raises(ValueError, match="`data_range` to be positive, got 0"):
        spec.check_inputs(inputs, {"data_range": 0.0})
    with pytest.raises(ValueError, match="`sigma` to be positive"):
        spec.check_inputs(inputs, {"sigma": -1.0})
    with pytest.raises(ValueError, match=r"`padding` to be one of \['valid', 'same'\], got 'full'"):
        spec.check_inputs(inputs, {"padding": "full"})
    with pytest.raises(ValueError, match=r"`preds` to have H and W >= kernel_size \(25\)"):
        spec.check_inputs(inputs, {"kernel_size": 25})
    with pytest.raises(ValueError, match="axis W of `preds` to be at least 11, got 8"):
        spec.check_inputs({"preds": x[..., :8], "target": y[..., :8]})
    with pytest.raises(ValueError, match=r"`target` to have shape \[N, C, H, W\]"):
        spec.check_inputs({**inputs, "target": y[:, 0]})
    with pytest.raises(ValueError, match="axis C of `target`"):
        spec.check_inputs({**inputs, "target": y[:, :1]})
    assert spec.check_inputs(inputs) == 3
    assert spec.check_inputs(inputs, {"kernel_size": 21, "padding": "same"}) == 3
    with pytest.raises(ValueError, match="`data_range` to be positive, got -1"):
        registry.get("psnr").check_inputs(inputs, {"data_range": -1.0})
    with pytest.raises(ValueError, match=r"`preds` to have shape \[N, C, H, W\]"):
        registry.get("total_variation").check_inputs({"preds": x[0]})


@pytest.mark.parametrize("name", ["ssim", "psnr", "total_variation"])
def test_empty_batch(name: str) -> None:
    spec = registry.get(name)
    inputs = spec.make_inputs(_gen(14), {"N": 0})
    spec.check_inputs(inputs)
    out = spec.build()(**inputs)
    assert out.shape == (0,)
    if name == "ssim":
        assert images.SSIM(padding="same")(**inputs).shape == (0,)


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("ssim", {}),
        ("ssim", {"padding": "same", "kernel_size": 7}),
        ("psnr", {}),
        ("total_variation", {}),
    ],
)
def test_scripted_matches_eager(name: str, params: dict) -> None:
    spec = registry.get(name)
    module = spec.build(**params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = torch.jit.script(module)
    for n, extra in ((1, 0), (7, 3)):
        sizes = {k: (v if k == "N" else v + extra) for k, v in spec.example_sizes.items()}
        inputs = spec.make_inputs(_gen(15 + n), {**sizes, "N": n})
        torch.testing.assert_close(scripted(**inputs), module(**inputs))


@pytest.mark.parametrize("shape", [(2, 3, 161, 161), (3, 1, 200, 173)])
def test_ms_ssim_matches_pytorch_msssim(shape: tuple[int, ...]) -> None:
    # odd sides exercise the zero-padded 2x2 pooling between scales
    gen = torch.Generator().manual_seed(sum(shape))
    sizes = dict(zip(("N", "C", "H", "W"), shape, strict=True))
    inputs = registry.get("ms_ssim").make_inputs(gen, sizes, torch.float64)
    ours = images.ms_ssim(**inputs)
    theirs = msssim_ms_ssim(inputs["preds"], inputs["target"], data_range=1.0, size_average=False)
    # pytorch-msssim builds its Gaussian window in float32: agreement is to ~1e-6, not 1e-15
    torch.testing.assert_close(ours, theirs.double(), rtol=0, atol=5e-6)


def test_ms_ssim_hand_worked_and_domain() -> None:
    spec = registry.get("ms_ssim")
    x = torch.rand(2, 1, 161, 170, generator=torch.Generator().manual_seed(3))
    # identical images: every cs and the last ssim are exactly 1, and 1 ** w = 1
    torch.testing.assert_close(images.ms_ssim(x, x), torch.ones(2))
    with pytest.raises(ValueError, match=r"axis H of `preds` to be at least 161, got 160"):
        spec.check_inputs(
            {"preds": torch.rand(1, 1, 160, 200), "target": torch.rand(1, 1, 160, 200)}
        )
