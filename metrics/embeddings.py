"""Metric-learning losses and similarities on embeddings, per sample.

Embeddings are ``Tensor[N, D]``, one row per sample. Class-level parameters that are learnt
with the network (CosFace's class weights, triplet-center's centres) are inputs of the
graph without a batch axis, ``Tensor[K, D]``: the same for every sample of a batch. Each
function returns ``Tensor[N]``, a loss (lower is better) but :func:`cosine_similarity`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._utils import check_binary, check_labels, check_positive, power
from .registry import MetricSpec, ParamSpec, TensorSpec, register
from .samples import embeddings as samples

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
    return power(power(ratio.abs(), p).sum(-1), 1.0 / p) * scale.squeeze(-1)


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
    # a product summed over D, not a matmul: a GEMM's order of summation depends on its rows
    cos = (_normalize(preds, 1e-12).unsqueeze(1) * _normalize(weight, 1e-12)).sum(-1)
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


# -- domain checks ------------------------------------------------------------------------
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
        sample=samples.sample_triplet,
        regimes={
            "extreme": samples.sample_triplet_extreme,
            "degenerate": samples.sample_triplet_degenerate,
        },
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
        sample=samples.sample_contrastive,
        regimes={
            "extreme": samples.sample_contrastive_extreme,
            "degenerate": samples.sample_contrastive_degenerate,
        },
        summary="contrastive loss, Y=0 similar",
        validate=_validate_contrastive,
        example_sizes={"N": 3, "D": 5},
        min_sizes={"D": 1},
    )
)


def _cosface_work(sizes: Mapping[str, int], params: Mapping[str, Any]) -> int:
    """Bytes at the peak: the N·K·D product (and ONNX's padded copy), the N·K cosines and
    their softmax temporaries (~18 per pair, measured), the normalised inputs."""
    n, k, d = (sizes.get(key, 0) for key in "NKD")
    return 8 * n * k * d + 24 * n * k + 8 * (n + k) * d


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
        sample=samples.sample_classes("weight"),
        regimes={
            "extreme": samples.sample_cosface_extreme,
            "degenerate": samples.sample_cosface_degenerate,
        },
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
        sample=samples.sample_classes("centers"),
        regimes={
            "extreme": samples.sample_center_extreme,
            "degenerate": samples.sample_center_degenerate,
        },
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
        sample=samples.sample_pair,
        regimes={
            "extreme": samples.sample_cosine_extreme,
            "degenerate": samples.sample_cosine_degenerate,
        },
        summary="cosine similarity of embedding pairs",
        validate=_validate_cosine,
        example_sizes={"N": 3, "D": 5},
        min_sizes={"D": 1},
    )
)
