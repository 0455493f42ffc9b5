"""Samplers of the VGG feature losses (:mod:`metrics.features`).

These draw the typical / extreme / degenerate inputs (``registry.REGIMES``) that the
registry-driven tests and benches use (see :mod:`metrics.samples`).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from .images import checkerboard, degenerate_image_cases, extreme_image_cases, mix_cases


def sample_images(gen: torch.Generator, sizes: Mapping[str, int], dtype: torch.dtype):
    n, h, w = sizes["N"], sizes["H"], sizes["W"]
    preds = torch.rand(n, 3, h, w, generator=gen, dtype=dtype)
    target = (preds + 0.2 * torch.randn(n, 3, h, w, generator=gen, dtype=dtype)).clamp(0, 1)
    return {"preds": preds, "target": target}


def sample_masks(gen: torch.Generator, sizes: Mapping[str, int], dtype: torch.dtype):
    n, h, w = sizes["N"], sizes["H"], sizes["W"]
    preds = torch.rand(n, h, w, generator=gen, dtype=dtype) * 0.98 + 0.01
    target = (torch.rand(n, h, w, generator=gen, dtype=dtype) > 0.7).to(dtype)
    return {"preds": preds, "target": target}


def images_extreme(gen: torch.Generator, sizes: Mapping[str, int], dtype: torch.dtype):
    # saturated, very low and very high contrast, single-colour channels, near-identical
    shape = [sizes["N"], 3, sizes["H"], sizes["W"]]
    return mix_cases(gen, shape[0], extreme_image_cases(gen, shape, dtype))


def images_degenerate(gen: torch.Generator, sizes: Mapping[str, int], dtype: torch.dtype):
    # identical (loss 0), flat, all-zero and all-one images
    shape = [sizes["N"], 3, sizes["H"], sizes["W"]]
    return mix_cases(gen, shape[0], degenerate_image_cases(gen, shape, dtype))


def _choice(gen: torch.Generator, values: list[float], shape: list[int], dtype: torch.dtype):
    table = torch.tensor(values, dtype=dtype)
    return table[torch.randint(0, len(values), shape, generator=gen)]


def masks_extreme(gen: torch.Generator, sizes: Mapping[str, int], dtype: torch.dtype):
    """Probabilities at and next to 0 and 1 (confident right and wrong), checkerboards."""
    shape = [sizes["N"], sizes["H"], sizes["W"]]
    target = (torch.rand(shape, generator=gen, dtype=dtype) > 0.5).to(dtype)
    board = checkerboard(shape, dtype)
    confident = _choice(gen, [0.0, 1e-7, 1e-3, 0.5, 1 - 1e-3, 1 - 1e-7, 1.0], shape, dtype)
    right = torch.where(target > 0, 1.0 - 1e-7, 1e-7).to(dtype)
    return mix_cases(
        gen,
        shape[0],
        [
            {"preds": confident, "target": target},
            {"preds": right, "target": target},
            {"preds": 1.0 - target, "target": target},  # every pixel wrong: BCE 100
            {"preds": 1.0 - board, "target": board},
            {"preds": (board * 0.998 + 0.001), "target": board},
        ],
    )


def masks_degenerate(gen: torch.Generator, sizes: Mapping[str, int], dtype: torch.dtype):
    """Empty and full masks, predicted exactly, flat, and exactly wrong."""
    shape = [sizes["N"], sizes["H"], sizes["W"]]
    empty, full = torch.zeros(shape, dtype=dtype), torch.ones(shape, dtype=dtype)
    target = (torch.rand(shape, generator=gen, dtype=dtype) > 0.5).to(dtype)
    half = torch.full(shape, 0.5, dtype=dtype)
    return mix_cases(
        gen,
        shape[0],
        [
            {"preds": empty.clone(), "target": empty},
            {"preds": full.clone(), "target": full},
            {"preds": target.clone(), "target": target},
            {"preds": half, "target": empty.clone()},
            {"preds": half.clone(), "target": full.clone()},
            {"preds": full.clone(), "target": empty.clone()},
        ],
    )
