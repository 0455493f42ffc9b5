"""Samplers of the image quality metrics and priors (:mod:`metrics.images`).

These draw the typical / extreme / degenerate inputs (``registry.REGIMES``) that the
registry-driven tests and benches use (see :mod:`metrics.samples`). ``mix_cases``,
``checkerboard`` and the extreme and degenerate image cases serve the other image-shaped
families too (:mod:`metrics.samples.features`).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor


def sample_pair(gen: torch.Generator, sizes: Mapping[str, int], dtype: torch.dtype):
    """A smooth-ish image in [0, 1] and a noisy copy, so SSIM and PSNR are informative."""
    n, c, h, w = sizes["N"], sizes["C"], sizes["H"], sizes["W"]
    target = torch.rand(n, c, h, w, generator=gen, dtype=dtype)
    target = F.avg_pool2d(target, 3, stride=1, padding=1, count_include_pad=False)
    noise = torch.randn(n, c, h, w, generator=gen, dtype=dtype)
    level = torch.rand(n, 1, 1, 1, generator=gen, dtype=dtype) * 0.2 + 0.02
    preds = (target + level * noise).clamp(0.0, 1.0)
    return {"preds": preds, "target": target}


def sample_one(gen: torch.Generator, sizes: Mapping[str, int], dtype: torch.dtype):
    n, c, h, w = sizes["N"], sizes["C"], sizes["H"], sizes["W"]
    return {"preds": torch.rand(n, c, h, w, generator=gen, dtype=dtype)}


def mix_cases(gen: torch.Generator, n: int, cases: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    """One batch from several cases: row ``i`` comes from case ``(offset + i) % len(cases)``.

    Each case holds full-batch tensors; the offset is drawn from ``gen``, so a batch of 1
    covers one case and a batch of ``len(cases)`` covers them all.
    """
    offset = int(torch.randint(0, len(cases), (1,), generator=gen))
    pick = (torch.arange(n) + offset) % len(cases)
    rows = torch.arange(n)
    return {
        key: torch.stack([case[key] for case in cases])[pick, rows].contiguous() for key in cases[0]
    }


def checkerboard(shape: list[int], dtype: torch.dtype, phase: int = 0) -> Tensor:
    """0/1 checkerboard of ``shape`` (``[..., H, W]``), 1 where ``i + j + phase`` is odd."""
    h, w = shape[-2], shape[-1]
    board = (torch.arange(h)[:, None] + torch.arange(w)[None, :] + phase) % 2
    return board.to(dtype).expand(shape).clone()


def _levels(gen: torch.Generator, shape: list[int], dtype: torch.dtype) -> Tensor:
    """One random grey level per (sample, channel), broadcast over H x W."""
    return torch.rand(shape[0], shape[1], 1, 1, generator=gen, dtype=dtype).expand(shape).clone()


def _smooth(gen: torch.Generator, shape: list[int], dtype: torch.dtype) -> Tensor:
    x = torch.rand(shape, generator=gen, dtype=dtype)
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


def extreme_image_cases(
    gen: torch.Generator, shape: list[int], dtype: torch.dtype
) -> list[dict[str, Tensor]]:
    """``(preds, target)`` pairs in [0, 1] at the extremes of the value scale and of contrast.

    Saturated (most pixels exactly 0 or 1), very low contrast (within 1e-3 of a level), very
    high contrast (0/1 checkerboards against their inverse and a noisy copy), single-colour
    channels (each channel one pure colour, or one channel flat at 0) and near-identical
    pairs (a difference of 1e-5: PSNR near 100 dB).
    """
    noise = torch.randn(shape, generator=gen, dtype=dtype)
    binary = (torch.rand(shape, generator=gen, dtype=dtype) > 0.5).to(dtype)
    level = _levels(gen, shape, dtype) * (1 - 1e-3)
    board = checkerboard(shape, dtype)
    pure = (_levels(gen, shape, dtype) > 0.5).to(dtype)  # each channel 0 or 1
    smooth = _smooth(gen, shape, dtype)
    dark = smooth.clone()
    dark[:, :1] = 0.0
    return [
        {"preds": (binary + 0.5 * noise).clamp(0, 1), "target": binary},
        {
            "preds": level + 1e-3 * torch.rand(shape, generator=gen, dtype=dtype),
            "target": level + 1e-3 * torch.rand(shape, generator=gen, dtype=dtype),
        },
        {"preds": 1.0 - board, "target": board},
        {"preds": (board + 0.1 * noise).clamp(0, 1), "target": board},
        {"preds": (pure + 0.05 * noise).clamp(0, 1), "target": pure},
        {"preds": (dark + 0.1 * noise).clamp(0, 1) * (dark > 0), "target": dark},
        {"preds": smooth * 0.8 + 0.1 + 1e-5 * noise, "target": smooth * 0.8 + 0.1},
    ]


def degenerate_image_cases(
    gen: torch.Generator, shape: list[int], dtype: torch.dtype
) -> list[dict[str, Tensor]]:
    """Identical pairs (SSIM 1, PSNR +inf), flat images, all-zero and all-one images."""
    smooth = _smooth(gen, shape, dtype)
    level = _levels(gen, shape, dtype)
    zeros = torch.zeros(shape, dtype=dtype)
    ones = torch.ones(shape, dtype=dtype)
    return [
        {"preds": smooth.clone(), "target": smooth},
        {"preds": _levels(gen, shape, dtype), "target": level},
        {"preds": level.clone(), "target": level},
        {"preds": zeros, "target": zeros.clone()},
        {"preds": zeros.clone(), "target": ones},
        {"preds": zeros.clone(), "target": smooth.clone()},
    ]


def _image_shape(sizes: Mapping[str, int]) -> list[int]:
    return [sizes["N"], sizes["C"], sizes["H"], sizes["W"]]


def _pair_extreme(gen: torch.Generator, sizes: Mapping[str, int], dtype: torch.dtype):
    shape = _image_shape(sizes)
    return mix_cases(gen, shape[0], extreme_image_cases(gen, shape, dtype))


def _pair_degenerate(gen: torch.Generator, sizes: Mapping[str, int], dtype: torch.dtype):
    shape = _image_shape(sizes)
    return mix_cases(gen, shape[0], degenerate_image_cases(gen, shape, dtype))


def one_extreme(gen: torch.Generator, sizes: Mapping[str, int], dtype: torch.dtype):
    # the extreme pairs' predictions, and 8-bit-scale images (TV has no value scale)
    shape = _image_shape(sizes)
    cases = [{"preds": c["preds"]} for c in extreme_image_cases(gen, shape, dtype)]
    cases.append({"preds": torch.randint(0, 256, shape, generator=gen).to(dtype)})
    cases.append({"preds": 255.0 * checkerboard(shape, dtype)})
    return mix_cases(gen, shape[0], cases)


def one_degenerate(gen: torch.Generator, sizes: Mapping[str, int], dtype: torch.dtype):
    # flat (a level per channel), all-zero and all-one images: TV 0
    shape = _image_shape(sizes)
    flat = _levels(gen, shape, dtype)
    cases = [flat, torch.zeros(shape, dtype=dtype), torch.ones(shape, dtype=dtype)]
    return mix_cases(gen, shape[0], [{"preds": x} for x in cases])


PAIR_REGIMES = {"extreme": _pair_extreme, "degenerate": _pair_degenerate}
