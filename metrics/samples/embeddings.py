"""Samplers of the metric-learning losses and similarities (:mod:`metrics.embeddings`).

These draw the typical / extreme / degenerate inputs (``registry.REGIMES``) that the
registry-driven tests and benches use (see :mod:`metrics.samples`).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor


def _randn(gen: torch.Generator, shape: list[int], dtype: torch.dtype) -> Tensor:
    return torch.randn(shape, generator=gen, dtype=dtype)


def sample_triplet(gen: torch.Generator, sizes: Mapping[str, int], dtype: torch.dtype):
    n, d = sizes["N"], sizes["D"]
    anchor = _randn(gen, [n, d], dtype)
    positive = anchor + 0.5 * _randn(gen, [n, d], dtype)
    negative = anchor + 0.8 * _randn(gen, [n, d], dtype)  # margin active for some rows only
    return {"anchor": anchor, "positive": positive, "negative": negative}


def sample_contrastive(gen: torch.Generator, sizes: Mapping[str, int], dtype: torch.dtype):
    n, d = sizes["N"], sizes["D"]
    x1 = _randn(gen, [n, d], dtype) * 0.3
    x2 = _randn(gen, [n, d], dtype) * 0.3
    target = (torch.rand(n, generator=gen, dtype=dtype) > 0.5).to(dtype)
    return {"x1": x1, "x2": x2, "target": target}


def sample_classes(key: str):
    def sample(gen: torch.Generator, sizes: Mapping[str, int], dtype: torch.dtype):
        n, k, d = sizes["N"], sizes["K"], sizes["D"]
        table = _randn(gen, [k, d], dtype)
        target = torch.randint(0, k, (n,), generator=gen)
        preds = table[target] * 0.7 + _randn(gen, [n, d], dtype) * 0.7
        if key == "centers":
            table = table * 2.0
        return {"preds": preds, "target": target, key: table}

    return sample


def sample_pair(gen: torch.Generator, sizes: Mapping[str, int], dtype: torch.dtype):
    n, d = sizes["N"], sizes["D"]
    preds = _randn(gen, [n, d], dtype)
    return {"preds": preds, "target": preds + _randn(gen, [n, d], dtype)}


# -- extreme and degenerate regimes --------------------------------------------------------
# Each row of a batch is one case (the cases cycle from a random offset, so a batch of 6
# mixes them). Norms go from 1e-20 to 1e20 where the score stays representable in float32
# (a distance, a hinge on distances, a cosine); the squared distances of the contrastive and
# triplet-center losses stop at norms ~1e15, beyond which the float32 result itself overflows.
def _cases(gen: torch.Generator, n: int, count: int) -> Tensor:
    offset = int(torch.randint(0, count, (1,), generator=gen))
    return (torch.arange(n) + offset) % count


def _pick(case: Tensor, options: list[Tensor]) -> Tensor:
    """Row ``i`` of ``options[case[i]]``; every option is ``[N, ...]``."""
    out = options[0]
    for index, option in enumerate(options[1:], 1):
        mask = (case == index).reshape([-1] + [1] * (option.dim() - 1))
        out = torch.where(mask, option, out)
    return out.clone()


def _unit(gen: torch.Generator, n: int, d: int, dtype: torch.dtype) -> Tensor:
    v = _randn(gen, [n, d], dtype)
    return v / v.norm(dim=1, keepdim=True).clamp(min=1e-6)


def _axis(n: int, d: int, index: int, dtype: torch.dtype) -> Tensor:
    return torch.zeros(n, d, dtype=dtype).index_fill_(1, torch.tensor([index % d]), 1.0)


def sample_triplet_extreme(gen: torch.Generator, sizes: Mapping[str, int], dtype: torch.dtype):
    n, d = sizes["N"], sizes["D"]
    a = _randn(gen, [n, d], dtype)
    u, v = _unit(gen, n, d, dtype), _unit(gen, n, d, dtype)
    big = 1e4 * _randn(gen, [n, d], dtype)
    case = _cases(gen, n, 7)
    anchor = _pick(case, [a, big, 1e20 * u, 1e-20 * u, torch.zeros_like(a), a, 1e3 * u])
    positive = _pick(
        case,
        [
            a + 1e-6 * _randn(gen, [n, d], dtype),  # near-duplicate, negative far: loss 0
            big + _randn(gen, [n, d], dtype),  # huge norms, margin far exceeded
            -1e20 * u,  # norms ~1e20, far violated: loss ~2e20
            -1e-20 * u,  # tiny norms: every distance is ~||eps||, loss ~margin
            _axis(n, d, 0, dtype),  # orthogonal, equally far: loss = margin
            a + 1e3 * v,  # positive far, negative = anchor: loss ~1e3
            -1e3 * u,  # anchor and positive opposite, negative orthogonal
        ],
    )
    negative = _pick(
        case,
        [
            a + 1e3 * v,
            big + 1e4 * _randn(gen, [n, d], dtype),
            1.001e20 * u,
            1e-20 * v,
            _axis(n, d, 1, dtype),
            a.clone(),
            1e3 * v,
        ],
    )
    return {"anchor": anchor, "positive": positive, "negative": negative}


def sample_triplet_degenerate(gen: torch.Generator, sizes: Mapping[str, int], dtype: torch.dtype):
    n, d = sizes["N"], sizes["D"]
    a, b = _randn(gen, [n, d], dtype), _randn(gen, [n, d], dtype)
    zero = torch.zeros(n, d, dtype=dtype)
    case = _cases(gen, n, 4)
    # all three identical; all zero; positive = anchor; negative = anchor
    return {
        "anchor": _pick(case, [a, zero, a, a]),
        "positive": _pick(case, [a, zero, a, b]),
        "negative": _pick(case, [a, zero, b, a]),
    }


def sample_contrastive_extreme(gen: torch.Generator, sizes: Mapping[str, int], dtype: torch.dtype):
    n, d = sizes["N"], sizes["D"]
    a = _randn(gen, [n, d], dtype)
    u = _unit(gen, n, d, dtype)
    case = _cases(gen, n, 6)
    x1 = _pick(case, [a, 1e4 * a, 1e15 * a, 1e-20 * a, a, a])
    x2 = _pick(
        case,
        [
            a + 1e-7 * _randn(gen, [n, d], dtype),  # near-duplicate
            1e4 * _randn(gen, [n, d], dtype),  # huge norms: D ~1e4
            -1e15 * a,  # D ~1e15: ½ D² ~1e30, still a float32
            1e-20 * _randn(gen, [n, d], dtype),  # tiny norms: D ~ ||eps||
            a + (1.0 - 1e-3) * u,  # just inside the margin
            a + 1e2 * u,  # far beyond the margin
        ],
    )
    # both labels for every case: similar pairs far apart, dissimilar ones on top of each other
    target = (torch.rand(n, generator=gen) > 0.5).to(dtype)
    return {"x1": x1, "x2": x2, "target": target}


def sample_contrastive_degenerate(
    gen: torch.Generator, sizes: Mapping[str, int], dtype: torch.dtype
):
    n, d = sizes["N"], sizes["D"]
    a = _randn(gen, [n, d], dtype)
    zero = torch.zeros(n, d, dtype=dtype)
    case = _cases(gen, n, 2)
    x = _pick(case, [a, zero])  # zero-distance pairs, and all-zero ones
    target = (torch.arange(n) // 2 % 2).to(dtype)  # both labels
    return {"x1": x, "x2": x.clone(), "target": target}


def _class_table(gen: torch.Generator, k: int, d: int, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Unit class directions (the axes when K <= D, else random ones) and the class weights:
    the directions with norms from 1e-10 to 1e20 (a cosine does not depend on them)."""
    directions = torch.eye(k, d, dtype=dtype) if k <= d else _unit(gen, k, d, dtype)
    norms = torch.tensor([1e-10, 1.0, 1e3, 1e20], dtype=dtype)
    return directions, directions * norms[torch.randint(0, len(norms), (k, 1), generator=gen)]


def sample_cosface_extreme(gen: torch.Generator, sizes: Mapping[str, int], dtype: torch.dtype):
    n, k, d = sizes["N"], sizes["K"], sizes["D"]
    directions, weight = _class_table(gen, k, d, dtype)
    target = torch.randint(0, k, (n,), generator=gen)
    own, wrong = directions[target], directions[(target + 1) % k]
    noise = _unit(gen, n, d, dtype)
    # orthogonal to every class where K < D: the last axis
    orthogonal = _axis(n, d, d - 1, dtype) if k < d else noise
    case = _cases(gen, n, 7)
    preds = _pick(
        case,
        [
            own,  # aligned with its class: loss ~(K-1) e^{-s(1-m)} ~1e-18
            wrong * 3.0,  # aligned with another class: loss ~s(1 + m)
            own + 1e-4 * noise,  # near-duplicate of its class
            orthogonal * 0.5,  # every cosine 0: loss log(1 + (K-1) e^{sm})
            own * 1e20,  # huge norm
            wrong * 1e-10,  # tiny norm (above F.normalize's eps 1e-12)
            own * 1e-15,  # below the eps: F.normalize divides by 1e-12
        ],
    )
    return {"preds": preds, "target": target, "weight": weight}


def sample_cosface_degenerate(gen: torch.Generator, sizes: Mapping[str, int], dtype: torch.dtype):
    n, k, d = sizes["N"], sizes["K"], sizes["D"]
    # every class weight the same: all cosines equal, the loss is log(1 + (K-1) e^{sm})
    weight = _randn(gen, [1, d], dtype).expand(k, d).clone()
    target = torch.randint(0, k, (n,), generator=gen)
    preds = _randn(gen, [n, d], dtype)
    case = _cases(gen, n, 3)
    preds = _pick(case, [preds, torch.zeros_like(preds), weight[:1].expand(n, d)])
    return {"preds": preds, "target": target, "weight": weight}


def sample_center_extreme(gen: torch.Generator, sizes: Mapping[str, int], dtype: torch.dtype):
    n, k, d = sizes["N"], sizes["K"], sizes["D"]
    # centres 1e-3 apart (every loss ~margin), 10 apart or 1e3 apart (margin far exceeded)
    scale = [1e-3, 10.0, 1e3][int(torch.randint(0, 3, (1,), generator=gen))]
    centers = _randn(gen, [k, d], dtype) * scale
    target = torch.randint(0, k, (n,), generator=gen)
    own, wrong = centers[target], centers[(target + 1) % k]
    # halfway between two centres the hinge is ~margin, a difference of two distances
    # ~scale²: beyond scale 10 that is below float32's resolution of the distances
    halfway = 0.5 * (own + wrong) if scale <= 10 else own
    case = _cases(gen, n, 4)
    preds = _pick(
        case,
        [
            own.clone(),  # at its own centre: d_pos = 0
            own + 1e-6 * scale * _randn(gen, [n, d], dtype),  # next to it
            wrong.clone(),  # at another class's centre: loss = D(c_y, c_j) + margin
            halfway,  # equally far from two centres: loss ~margin
        ],
    )
    return {"preds": preds, "target": target, "centers": centers}


def sample_center_degenerate(gen: torch.Generator, sizes: Mapping[str, int], dtype: torch.dtype):
    n, k, d = sizes["N"], sizes["K"], sizes["D"]
    target = torch.randint(0, k, (n,), generator=gen)
    case = int(torch.randint(0, 2, (1,), generator=gen))
    # every centre the same point (loss = margin wherever f is), or all zero with f = 0
    centers = _randn(gen, [1, d], dtype).expand(k, d).clone() * case
    preds = _randn(gen, [n, d], dtype) * case
    return {"preds": preds, "target": target, "centers": centers}


def sample_cosine_extreme(gen: torch.Generator, sizes: Mapping[str, int], dtype: torch.dtype):
    n, d = sizes["N"], sizes["D"]
    x = _randn(gen, [n, d], dtype)
    u = _unit(gen, n, d, dtype)
    case = _cases(gen, n, 8)
    preds = _pick(case, [x, x, _axis(n, d, 0, dtype), 1e20 * u, 1e-20 * u, 1e20 * u, 4e-9 * u, x])
    target = _pick(
        case,
        [
            x * (1.0 + 1e-6 * _randn(gen, [n, d], dtype)),  # near-duplicate: ~1
            -3.0 * x,  # opposite: -1
            5.0 * _axis(n, d, 1, dtype),  # orthogonal: 0
            -2e20 * u + 1e19 * _unit(gen, n, d, dtype),  # huge norms
            1e-20 * _unit(gen, n, d, dtype),  # tiny norms, below eps: ~0
            1e-3 * _unit(gen, n, d, dtype),  # huge against small
            1e-8 * _unit(gen, n, d, dtype),  # norms at the eps: the clamp decides
            1e4 * x,  # parallel at very different norms: 1
        ],
    )
    return {"preds": preds, "target": target}


def sample_cosine_degenerate(gen: torch.Generator, sizes: Mapping[str, int], dtype: torch.dtype):
    n, d = sizes["N"], sizes["D"]
    x = _randn(gen, [n, d], dtype)
    zero = torch.zeros(n, d, dtype=dtype)
    case = _cases(gen, n, 3)
    # identical vectors (1), both zero (0), one zero (0)
    return {"preds": _pick(case, [x, zero, x]), "target": _pick(case, [x, zero, zero])}
