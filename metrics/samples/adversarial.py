"""Samplers of the adversarial (GAN) losses (:mod:`metrics.adversarial`).

These draw the typical / extreme / degenerate inputs (``registry.REGIMES``) that the
registry-driven tests and benches use (see :mod:`metrics.samples`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch


def sampler(*names: str):
    def sample(gen: torch.Generator, sizes: Mapping[str, int], dtype: torch.dtype):
        if "P" in sizes:  # a flattened PatchGAN map per sample
            shape = [sizes["N"], sizes["P"]]
        else:  # images for the cycle term
            shape = [sizes["N"], sizes["C"], sizes["H"], sizes["W"]]
        return {n: torch.randn(shape, generator=gen, dtype=dtype) * 2 for n in names}

    return sample


def _choice(gen: torch.Generator, values: list[float], shape: list[int], dtype: torch.dtype):
    table = torch.tensor(values, dtype=dtype)
    return table[torch.randint(0, len(values), shape, generator=gen)]


def _shape(sizes: Mapping[str, int]) -> list[int]:
    if "P" in sizes:
        return [sizes["N"], sizes["P"]]
    return [sizes["N"], sizes["C"], sizes["H"], sizes["W"]]


# Confident discriminator logits: ±15, ±40, ±80 and their neighbours (float32's
# Log(Sigmoid(x)) overflows from |x| ~ 17 and Softplus loses digits from |x| ~ 15), a few
# moderate ones so that a mean is not one term. A positive logit on a real sample is the
# discriminator confidently right, on a generated one confidently wrong, and vice versa.
_CONFIDENT = [-80.0, -40.0, -20.0, -17.0, -15.0, -2.0, 0.5, 15.0, 17.0, 20.0, 40.0, 80.0]


def _sampler_extreme(kind: str, *names: str):
    def sample(gen: torch.Generator, sizes: Mapping[str, int], dtype: torch.dtype):
        shape = _shape(sizes)
        n = shape[0]
        if kind == "logistic":
            # per sample: all confidently right, all confidently wrong, or mixed
            mode = torch.randint(0, 3, (n, 1), generator=gen)
            out = {}
            for sign, name in zip((1.0, -1.0), ("real", "fake"), strict=True):
                if name not in names:
                    continue
                mag = _choice(gen, [15.0, 17.0, 20.0, 40.0, 80.0], shape, dtype)
                mixed = _choice(gen, _CONFIDENT, shape, dtype)
                right, wrong = sign * mag, -sign * mag
                out[name] = torch.where(mode == 0, right, torch.where(mode == 1, wrong, mixed))
            return out
        if kind == "least_squares":
            # per sample: outputs at or next to the targets (a = 0, b = c = 1), confident
            # logit-sized outputs, or far-off ones up to 1e6
            bands = [[0.0, 1.0, 1e-6, 1.0 + 1e-6, 1.0 - 1e-6], [-80.0, -15.0, 15.0, 80.0]]
            bands.append([-1e4, 1e4, 1e6, -1e6])
            out = {}
            for name in names:
                band = torch.randint(0, len(bands), (n, 1), generator=gen)
                value = torch.zeros(shape, dtype=dtype)
                for index, values in enumerate(bands):
                    value = torch.where(band == index, _choice(gen, values, shape, dtype), value)
                out[name] = value
            return out
        if kind == "critic":
            # unbounded critic scores from 1e-4 to 1e6, one sign and magnitude per sample
            # (within a sample the scores vary by a factor 2, so no mean cancels)
            out = {}
            for name in names:
                scale = _choice(gen, [-1e6, -1e2, -1.0, -1e-4, 1e-4, 1.0, 1e2, 1e4], [n, 1], dtype)
                out[name] = scale * (1.0 + torch.rand(shape, generator=gen, dtype=dtype))
            return out
        # images: near-perfect reconstructions (errors 1e-7 to 1e-3), saturated ones
        # (0 against 1) and 0-255 images with errors of 1 to 255
        scale = _choice(gen, [1.0, 1.0, 255.0], [n, 1, 1, 1], dtype)
        target = torch.rand(shape, generator=gen, dtype=dtype)
        error = _choice(gen, [0.0, 1e-7, 1e-5, 1e-3, 1.0], shape, dtype)
        saturated = (target > 0.5).to(dtype)
        mode = torch.rand(n, 1, 1, 1, generator=gen) < 0.3
        target = torch.where(mode, saturated, target) * scale
        preds = torch.where(mode, (1.0 - saturated) * scale, target + error * scale)
        return {"preds": preds, "target": target}

    return sample


def _sampler_degenerate(kind: str, *names: str):
    def sample(gen: torch.Generator, sizes: Mapping[str, int], dtype: torch.dtype):
        shape = _shape(sizes)
        n = shape[0]
        if kind == "images":
            # perfect reconstructions (0) of random and of flat images, and flat against flat
            target = torch.rand(shape, generator=gen, dtype=dtype)
            flat = _choice(gen, [0.0, 0.5, 1.0], [n, 1, 1, 1], dtype).expand(shape)
            mode = torch.randint(0, 3, (n, 1, 1, 1), generator=gen)
            target = torch.where(mode == 0, target, flat)
            preds = torch.where(mode == 2, 1.0 - flat, target)
            return {"preds": preds.clone(), "target": target.clone()}
        # every output of a sample the same value, the same for real and fake: the
        # undecided discriminator (0) and other constants
        level = _choice(gen, [0.0, 0.0, 1.0, -3.0, 2.5], [n, 1], dtype).expand(shape)
        out = {name: level.clone() for name in names}
        if kind == "least_squares":
            # and every output at its target (a = 0 for fake, b = 1 for real; the generator's
            # c = 1): a zero loss
            optimum = torch.rand(n, 1, generator=gen) < 0.5
            for name in names:
                best = 0.0 if name == "fake" and "real" in names else 1.0
                out[name] = torch.where(optimum, torch.full_like(level, best), level).clone()
        return out

    return sample


def regimes_of(kind: str, *names: str) -> dict[str, Any]:
    return {
        "extreme": _sampler_extreme(kind, *names),
        "degenerate": _sampler_degenerate(kind, *names),
    }
