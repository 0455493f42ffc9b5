"""Metric-learning losses and similarities on embeddings, per sample.

Embeddings are ``Tensor[N, D]``, one row per sample. Class-level parameters that are learnt
with the network (CosFace's class weights, triplet-center's centres) are inputs of the
graph without a batch axis, ``Tensor[K, D]``: the same for every sample of a batch. Every
function returns ``Tensor[N]``; all are losses (lower is better) except
:func:`cosine_similarity`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._utils import check_binary, check_labels, check_positive
from .registry import MetricSpec, ParamSpec, TensorSpec, register

FAMILY = "embeddings"
SCORE = (TensorSpec("score", ("N",), "float32", "per-sample loss"),)


def _max_abs(x: Tensor) -> Tensor:
    """``max |x|`` over the last axis (kept), with 1 where it is 0: a safe divisor."""
    scale = x.abs().amax(-1, keepdim=True)
    return torch.where(scale > 0, scale, torch.ones_like(scale))


# Norms are taken of ``x / max|x|`` and scaled back (as LAPACK's ``nrm2`` / ``hypot`` do):
# squaring first overflows float32 from norms ~1.8e19 (and underflows below ~1e-19) in
# every runtime — eager, TorchScript, ONNX's ReduceL2 or Pow/ReduceSum/Sqrt, torch.export.
def _pairwise_distance(x1: Tensor, x2: Tensor, p: float, eps: float) -> Tensor:
    """``||x1 - x2 + eps||_p`` over the last axis, as ``F.pairwise_distance``."""
    diff = x1 - x2 + eps
    if p == 1.0:
        return diff.abs().sum(-1)
    scale = _max_abs(diff)
    ratio = diff / scale
    if p == 2.0:
        return ratio.square().sum(-1).sqrt() * scale.squeeze(-1)
    return ratio.abs().pow(p).sum(-1).pow(1.0 / p) * scale.squeeze(-1)


def _normalize(x: Tensor, eps: float) -> Tensor:
    """``x / max(||x||₂, eps)`` over the last axis, as ``F.normalize(dim=-1)``.

    Written as ``(x / s) / max(||x / s||, eps / s)`` with ``s = max |x|``, which neither
    overflows nor underflows; ``x = 0`` gives 0.
    """
    scale = _max_abs(x)
    ratio = x / scale
    norm = ratio.square().sum(-1, keepdim=True).sqrt()
    return ratio / torch.maximum(norm, eps / scale)


def _one_hot(target: Tensor, num_classes: int, dtype: torch.dtype) -> Tensor:
    """``[N]`` class indices -> ``[N, K]`` one-hot, with ``K`` possibly symbolic."""
    classes = torch.arange(num_classes, device=target.device).unsqueeze(0)
    return (target.unsqueeze(1) == classes).to(dtype)


# -- functional core ----------------------------------------------------------------------
def triplet(
    anchor: Tensor,
    positive: Tensor,
    negative: Tensor,
    margin: float = 1.0,
    p: float = 2.0,
    eps: float = 1e-6,
    swap: bool = False,
) -> Tensor:
    """Triplet margin loss per triplet, as ``F.triplet_margin_loss(reduction="none")``.

    ``max(d(a, p) - d(a, n) + margin, 0)`` with ``d(x, y) = ||x - y + eps||_p`` (torch's
    ``pairwise_distance``, eps inside the norm). ``swap`` uses ``min(d(a, n), d(p, n))`` as
    the negative distance (Balntas et al. 2016). anchor, positive, negative (Tensor[N, D]).
    Returns Tensor[N] >= 0. Schroff et al. 2015, FaceNet, https://arxiv.org/abs/1503.03832.
    Convention: FaceNet uses *squared* distances on L2-normalised embeddings with margin
    0.2; torch (followed here) uses plain p-norm distances with margin 1.
    """
    d_pos = _pairwise_distance(anchor, positive, p, eps)
    d_neg = _pairwise_distance(anchor, negative, p, eps)
    if swap:
        d_neg = torch.minimum(d_neg, _pairwise_distance(positive, negative, p, eps))
    return torch.clamp(d_pos - d_neg + margin, min=0.0)


def contrastive(
    x1: Tensor, x2: Tensor, target: Tensor, margin: float = 1.0, eps: float = 1e-6
) -> Tensor:
    """Contrastive loss per pair, Hadsell et al.'s form.

    ``(1 - Y) ½ D² + Y ½ max(0, margin - D)²`` with ``D = ||x1 - x2 + eps||₂`` (as
    ``F.pairwise_distance``). ``Y = 0`` marks a similar pair, ``Y = 1`` a dissimilar one.
    x1, x2 (Tensor[N, D]); target (Tensor[N]) in {0, 1}. Returns Tensor[N] >= 0.
    Hadsell, Chopra & LeCun 2006, "Dimensionality Reduction by Learning an Invariant
    Mapping", CVPR. Convention: many libraries (TF Addons ``contrastive_loss``,
    pytorch-metric-learning) use the opposite label, 1 = similar, and drop the ½.
    """
    dist = _pairwise_distance(x1, x2, 2.0, eps)
    similar = 0.5 * dist.square()
    dissimilar = 0.5 * torch.clamp(margin - dist, min=0.0).square()
    return (1.0 - target) * similar + target * dissimilar


def cosface(
    preds: Tensor, target: Tensor, weight: Tensor, s: float = 64.0, m: float = 0.35
) -> Tensor:
    """CosFace (large margin cosine) loss per sample.

    ``-log(e^{s(cos θ_y - m)} / (e^{s(cos θ_y - m)} + Σ_{j≠y} e^{s cos θ_j}))`` with
    ``cos θ_j = <x / ||x||, W_j / ||W_j||>`` (``F.normalize``, eps 1e-12).
    preds (Tensor[N, D]) embeddings; target (Tensor[N]) int64 classes in [0, K);
    weight (Tensor[K, D]) class weights, no batch axis. Returns Tensor[N].
    Wang et al. 2018, https://arxiv.org/abs/1801.09414, whose defaults are s = 64,
    m = 0.35. InsightFace's CosFace configs use m = 0.4; ``m = 0`` is normalised softmax.
    """
    cos = _normalize(preds, 1e-12) @ _normalize(weight, 1e-12).t()
    onehot = _one_hot(target, weight.shape[0], cos.dtype)
    logits = s * (cos - m * onehot)
    return -(F.log_softmax(logits, dim=1) * onehot).sum(1)


def triplet_center(preds: Tensor, target: Tensor, centers: Tensor, margin: float = 5.0) -> Tensor:
    """Triplet-center loss per sample.

    ``max(D(f, c_y) + margin - min_{j≠y} D(f, c_j), 0)`` with the paper's squared
    Euclidean ``D(f, c) = ½ ||f - c||²₂``. preds (Tensor[N, D]) embeddings; target
    (Tensor[N]) int64 classes in [0, K); centers (Tensor[K, D]), no batch axis, K >= 2.
    Returns Tensor[N] >= 0. He et al. 2018, https://arxiv.org/abs/1803.06189.
    Convention: public reimplementations differ on D (plain Euclidean from ``cdist``, or
    without the ½) and on the margin (1 or 5); the paper tunes m per dataset.
    """
    dist = 0.5 * (preds.unsqueeze(1) - centers.unsqueeze(0)).square().sum(-1)  # [N, K]
    onehot = _one_hot(target, centers.shape[0], dist.dtype)
    d_pos = (dist * onehot).sum(1)
    others = torch.where(onehot > 0, torch.full_like(dist, float("inf")), dist)
    d_neg = others.amin(1)
    return torch.clamp(d_pos + margin - d_neg, min=0.0)


def cosine_similarity(preds: Tensor, target: Tensor, eps: float = 1e-8) -> Tensor:
    """Cosine similarity per pair, as ``F.cosine_similarity(dim=1)``.

    ``<x, y> / (max(||x||, eps) max(||y||, eps))``, in [-1, 1]; higher is better.
    preds, target (Tensor[N, D]). Returns Tensor[N]; 0 when either vector is zero.
    """
    return (_normalize(preds, eps) * _normalize(target, eps)).sum(1)


# -- modules ------------------------------------------------------------------------------
class Triplet(nn.Module):
    def __init__(
        self, margin: float = 1.0, p: float = 2.0, eps: float = 1e-6, swap: bool = False
    ) -> None:
        super().__init__()
        self.margin = float(margin)
        self.p = float(p)
        self.eps = float(eps)
        self.swap = bool(swap)

    def forward(self, anchor: Tensor, positive: Tensor, negative: Tensor) -> Tensor:
        return triplet(anchor, positive, negative, self.margin, self.p, self.eps, self.swap)


class Contrastive(nn.Module):
    def __init__(self, margin: float = 1.0, eps: float = 1e-6) -> None:
        super().__init__()
        self.margin = float(margin)
        self.eps = float(eps)

    def forward(self, x1: Tensor, x2: Tensor, target: Tensor) -> Tensor:
        return contrastive(x1, x2, target, self.margin, self.eps)


class CosFace(nn.Module):
    def __init__(self, s: float = 64.0, m: float = 0.35) -> None:
        super().__init__()
        self.s = float(s)
        self.m = float(m)

    def forward(self, preds: Tensor, target: Tensor, weight: Tensor) -> Tensor:
        return cosface(preds, target, weight, self.s, self.m)


class TripletCenter(nn.Module):
    def __init__(self, margin: float = 5.0) -> None:
        super().__init__()
        self.margin = float(margin)

    def forward(self, preds: Tensor, target: Tensor, centers: Tensor) -> Tensor:
        return triplet_center(preds, target, centers, self.margin)


class CosineSimilarity(nn.Module):
    def __init__(self, eps: float = 1e-8) -> None:
        super().__init__()
        self.eps = float(eps)

    def forward(self, preds: Tensor, target: Tensor) -> Tensor:
        return cosine_similarity(preds, target, self.eps)


# -- samplers and domain checks -------------------------------------------------------------
def _randn(gen: torch.Generator, shape: list[int], dtype: torch.dtype) -> Tensor:
    return torch.randn(shape, generator=gen, dtype=dtype)


def _sample_triplet(gen: torch.Generator, sizes: Mapping[str, int], dtype: torch.dtype):
    n, d = sizes["N"], sizes["D"]
    anchor = _randn(gen, [n, d], dtype)
    positive = anchor + 0.5 * _randn(gen, [n, d], dtype)
    negative = anchor + 0.8 * _randn(gen, [n, d], dtype)  # margin active for some rows only
    return {"anchor": anchor, "positive": positive, "negative": negative}


def _sample_contrastive(gen: torch.Generator, sizes: Mapping[str, int], dtype: torch.dtype):
    n, d = sizes["N"], sizes["D"]
    x1 = _randn(gen, [n, d], dtype) * 0.3
    x2 = _randn(gen, [n, d], dtype) * 0.3
    target = (torch.rand(n, generator=gen, dtype=dtype) > 0.5).to(dtype)
    return {"x1": x1, "x2": x2, "target": target}


def _sample_classes(key: str):
    def sample(gen: torch.Generator, sizes: Mapping[str, int], dtype: torch.dtype):
        n, k, d = sizes["N"], sizes["K"], sizes["D"]
        table = _randn(gen, [k, d], dtype)
        target = torch.randint(0, k, (n,), generator=gen)
        preds = table[target] * 0.7 + _randn(gen, [n, d], dtype) * 0.7
        if key == "centers":
            table = table * 2.0
        return {"preds": preds, "target": target, key: table}

    return sample


def _sample_pair(gen: torch.Generator, sizes: Mapping[str, int], dtype: torch.dtype):
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


def _sample_triplet_extreme(gen: torch.Generator, sizes: Mapping[str, int], dtype: torch.dtype):
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


def _sample_triplet_degenerate(gen: torch.Generator, sizes: Mapping[str, int], dtype: torch.dtype):
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


def _sample_contrastive_extreme(gen: torch.Generator, sizes: Mapping[str, int], dtype: torch.dtype):
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


def _sample_contrastive_degenerate(
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


def _sample_cosface_extreme(gen: torch.Generator, sizes: Mapping[str, int], dtype: torch.dtype):
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


def _sample_cosface_degenerate(gen: torch.Generator, sizes: Mapping[str, int], dtype: torch.dtype):
    n, k, d = sizes["N"], sizes["K"], sizes["D"]
    # every class weight the same: all cosines equal, the loss is log(1 + (K-1) e^{sm})
    weight = _randn(gen, [1, d], dtype).expand(k, d).clone()
    target = torch.randint(0, k, (n,), generator=gen)
    preds = _randn(gen, [n, d], dtype)
    case = _cases(gen, n, 3)
    preds = _pick(case, [preds, torch.zeros_like(preds), weight[:1].expand(n, d)])
    return {"preds": preds, "target": target, "weight": weight}


def _sample_center_extreme(gen: torch.Generator, sizes: Mapping[str, int], dtype: torch.dtype):
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


def _sample_center_degenerate(gen: torch.Generator, sizes: Mapping[str, int], dtype: torch.dtype):
    n, k, d = sizes["N"], sizes["K"], sizes["D"]
    target = torch.randint(0, k, (n,), generator=gen)
    case = int(torch.randint(0, 2, (1,), generator=gen))
    # every centre the same point (loss = margin wherever f is), or all zero with f = 0
    centers = _randn(gen, [1, d], dtype).expand(k, d).clone() * case
    preds = _randn(gen, [n, d], dtype) * case
    return {"preds": preds, "target": target, "centers": centers}


def _sample_cosine_extreme(gen: torch.Generator, sizes: Mapping[str, int], dtype: torch.dtype):
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


def _sample_cosine_degenerate(gen: torch.Generator, sizes: Mapping[str, int], dtype: torch.dtype):
    n, d = sizes["N"], sizes["D"]
    x = _randn(gen, [n, d], dtype)
    zero = torch.zeros(n, d, dtype=dtype)
    case = _cases(gen, n, 3)
    # identical vectors (1), both zero (0), one zero (0)
    return {"preds": _pick(case, [x, zero, x]), "target": _pick(case, [x, zero, zero])}


def _validate_triplet(params: Mapping[str, Any], inputs: Mapping[str, Tensor]) -> None:
    check_positive("margin", params["margin"])
    check_positive("p", params["p"])
    check_positive("eps", params["eps"], allow_zero=True)


def _validate_contrastive(params: Mapping[str, Any], inputs: Mapping[str, Tensor]) -> None:
    check_positive("margin", params["margin"])
    check_positive("eps", params["eps"], allow_zero=True)
    check_binary("target", inputs["target"])


def _validate_cosface(params: Mapping[str, Any], inputs: Mapping[str, Tensor]) -> None:
    check_positive("s", params["s"])
    check_positive("m", params["m"], allow_zero=True)
    check_labels("target", inputs["target"], inputs["weight"].shape[0])


def _validate_triplet_center(params: Mapping[str, Any], inputs: Mapping[str, Tensor]) -> None:
    check_positive("margin", params["margin"])
    check_labels("target", inputs["target"], inputs["centers"].shape[0])


def _validate_cosine(params: Mapping[str, Any], inputs: Mapping[str, Tensor]) -> None:
    check_positive("eps", params["eps"])


# -- registry -----------------------------------------------------------------------------
def _emb(name: str, doc: str) -> TensorSpec:
    return TensorSpec(name, ("N", "D"), "float32", doc)


_LABELS = TensorSpec("target", ("N",), "int64", "class indices in [0, K)")

register(
    MetricSpec(
        name="triplet",
        family=FAMILY,
        module=Triplet,
        functional=triplet,
        inputs=(
            _emb("anchor", "anchor embeddings"),
            _emb("positive", "embeddings of the anchor's class"),
            _emb("negative", "embeddings of another class"),
        ),
        outputs=SCORE,
        params=(
            ParamSpec("margin", 1.0, "required gap d(a, n) - d(a, p); > 0"),
            ParamSpec("p", 2.0, "norm degree of the distance"),
            ParamSpec("eps", 1e-6, "added to the difference inside the norm, as torch"),
            ParamSpec("swap", False, "distance swap (Balntas et al. 2016)"),
        ),
        higher_is_better=False,
        paper="Schroff et al. 2015, FaceNet, arXiv:1503.03832",
        oracle="torch.nn.functional.triplet_margin_loss(reduction='none')",
        sample=_sample_triplet,
        regimes={"extreme": _sample_triplet_extreme, "degenerate": _sample_triplet_degenerate},
        summary="triplet margin loss",
        validate=_validate_triplet,
        example_sizes={"N": 3, "D": 5},
        min_sizes={"D": 1},
    )
)

register(
    MetricSpec(
        name="contrastive",
        family=FAMILY,
        module=Contrastive,
        functional=contrastive,
        inputs=(
            _emb("x1", "first embeddings of each pair"),
            _emb("x2", "second embeddings of each pair"),
            TensorSpec("target", ("N",), "float32", "0 = similar pair, 1 = dissimilar (Hadsell)"),
        ),
        outputs=SCORE,
        params=(
            ParamSpec("margin", 1.0, "dissimilar pairs are pushed beyond this distance; > 0"),
            ParamSpec("eps", 1e-6, "added to the difference inside the norm, as torch"),
        ),
        higher_is_better=False,
        paper="Hadsell, Chopra & LeCun 2006, Dimensionality Reduction by Learning an "
        "Invariant Mapping (CVPR)",
        oracle="hand-worked; torch.nn.functional.pairwise_distance formula",
        sample=_sample_contrastive,
        regimes={
            "extreme": _sample_contrastive_extreme,
            "degenerate": _sample_contrastive_degenerate,
        },
        summary="contrastive loss, Y=0 similar",
        validate=_validate_contrastive,
        example_sizes={"N": 3, "D": 5},
        min_sizes={"D": 1},
    )
)


def _cosface_work(sizes: Mapping[str, int], params: Mapping[str, Any]) -> int:
    """Bytes at the peak: the N·K cosine matrix and its margin and softmax temporaries
    (measured ~18 per pair), and the normalised copies of the inputs."""
    n, k, d = (sizes.get(key, 0) for key in "NKD")
    return 24 * n * k + 8 * (n + k) * d


register(
    MetricSpec(
        name="cosface",
        family=FAMILY,
        module=CosFace,
        functional=cosface,
        inputs=(
            _emb("preds", "embeddings"),
            _LABELS,
            TensorSpec("weight", ("K", "D"), "float32", "class weight matrix (no batch axis)"),
        ),
        outputs=SCORE,
        params=(
            ParamSpec("s", 64.0, "scale of the cosine logits; > 0"),
            ParamSpec("m", 0.35, "cosine margin subtracted from the target logit; >= 0"),
        ),
        higher_is_better=False,
        paper="Wang et al. 2018, CosFace, arXiv:1801.09414",
        oracle="torch.nn.functional.normalize + cross_entropy on s(cos - m onehot)",
        sample=_sample_classes("weight"),
        regimes={"extreme": _sample_cosface_extreme, "degenerate": _sample_cosface_degenerate},
        summary="large margin cosine loss",
        validate=_validate_cosface,
        example_sizes={"N": 3, "K": 4, "D": 5},
        work=_cosface_work,
        min_sizes={"K": 1, "D": 1},
    )
)

register(
    MetricSpec(
        name="triplet_center",
        family=FAMILY,
        module=TripletCenter,
        functional=triplet_center,
        inputs=(
            _emb("preds", "embeddings"),
            _LABELS,
            TensorSpec("centers", ("K", "D"), "float32", "class centres (no batch axis)"),
        ),
        outputs=SCORE,
        params=(
            ParamSpec("margin", 5.0, "required gap between nearest other centre and own; > 0"),
        ),
        higher_is_better=False,
        paper="He et al. 2018, Triplet-Center Loss, arXiv:1803.06189",
        oracle="numpy re-implementation; hand-worked distances",
        sample=_sample_classes("centers"),
        regimes={"extreme": _sample_center_extreme, "degenerate": _sample_center_degenerate},
        summary="triplet-center loss, D = 1/2 squared Euclidean",
        validate=_validate_triplet_center,
        example_sizes={"N": 3, "K": 4, "D": 5},
        min_sizes={"K": 2, "D": 1},
    )
)

register(
    MetricSpec(
        name="cosine_similarity",
        family=FAMILY,
        module=CosineSimilarity,
        functional=cosine_similarity,
        inputs=(_emb("preds", "embeddings"), _emb("target", "reference embeddings")),
        outputs=(TensorSpec("score", ("N",), "float32", "per-pair cosine similarity"),),
        params=(ParamSpec("eps", 1e-8, "lower bound on each norm; > 0"),),
        higher_is_better=True,
        paper="Nguyen & Bai 2010, Cosine Similarity Metric Learning for Face Verification, ACCV",
        oracle="torch.nn.functional.cosine_similarity",
        sample=_sample_pair,
        regimes={"extreme": _sample_cosine_extreme, "degenerate": _sample_cosine_degenerate},
        summary="cosine similarity of embedding pairs",
        validate=_validate_cosine,
        example_sizes={"N": 3, "D": 5},
        min_sizes={"D": 1},
    )
)
