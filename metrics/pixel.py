"""Pixel-wise and classification losses, per sample.

Every function here returns ``Tensor[N]``: the loss of each sample, averaged over that
sample's elements (its pixels, positions or logits). Reducing over the batch happens outside
the graph. Inputs shaped ``[N, *]`` take any number of trailing axes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._utils import (
    as_weight,
    log1p_exp_neg_abs,
    log_sigmoid,
    per_sample_mean,
    per_sample_sum,
    power,
    sigmoid,
)
from .registry import MetricSpec, ParamSpec, TensorSpec, register
from .samples import pixel as samples

FAMILY = "pixel"
PAIR = (
    TensorSpec("preds", ("N", "*"), "float32", "predictions"),
    TensorSpec("target", ("N", "*"), "float32", "ground truth, same shape as preds"),
)
SCORE = (TensorSpec("score", ("N",), "float32", "per-sample loss"),)


# -- functional core ----------------------------------------------------------------------
def l1(preds: Tensor, target: Tensor) -> Tensor:
    """Mean absolute error per sample: ``mean_i |preds_i - target_i|``."""
    return per_sample_mean((preds - target).abs())


def mse(preds: Tensor, target: Tensor) -> Tensor:
    """Mean squared error per sample: ``mean_i (preds_i - target_i)^2``."""
    return per_sample_mean((preds - target).square())


def smooth_l1(preds: Tensor, target: Tensor, beta: float = 1.0) -> Tensor:
    """Smooth L1 (Huber scaled by 1/beta) per sample, as ``F.smooth_l1_loss``.

    ``0.5 d^2 / beta`` where ``|d| < beta``, else ``|d| - 0.5 beta``; ``beta = 0`` is L1.
    Fast R-CNN, Girshick 2015, https://arxiv.org/abs/1504.08083.
    """
    return per_sample_mean(F.smooth_l1_loss(preds, target, reduction="none", beta=beta))


def cross_entropy(
    preds: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
) -> Tensor:
    """Softmax cross-entropy per sample, averaged over the sample's valid positions.

    preds (Tensor[N, C, *]) logits; target (Tensor[N, *]) int64 class indices.
    At each position ``l = (1 - ε) w[y] (-log p_y) + ε/C Σ_c w[c] (-log p_c)``, which is
    ``F.cross_entropy(..., reduction="none")`` elementwise. A sample's score is the mean of
    ``l`` over its positions whose target is not ``ignore_index`` (0 when none are valid).
    For ``[N, C]`` classification that is exactly the ``reduction="none"`` value, so with
    class weights the batch mean of these scores is ``Σ w·l / N`` (torch's ``"sum" / N``),
    not torch's ``"mean"``, which divides by ``Σ w``: per-sample scores cannot know the other
    samples' weights.
    """
    num_classes = preds.shape[1]
    logp = F.log_softmax(preds, dim=1)
    valid = target != ignore_index
    safe = torch.where(valid, target, torch.zeros_like(target))
    nll = -logp.gather(1, safe.unsqueeze(1)).squeeze(1)
    if weight is not None:
        w = weight.to(logp.dtype)
        nll = nll * w[safe]
        shape = [1, num_classes] + [1] * (logp.dim() - 2)
        smooth = -(logp * w.reshape(shape)).sum(1) / num_classes
    else:
        smooth = -logp.sum(1) / num_classes
    loss = (1.0 - label_smoothing) * nll + label_smoothing * smooth
    loss = torch.where(valid, loss, torch.zeros_like(loss))
    count = per_sample_sum(valid.to(loss.dtype)).clamp(min=1.0)
    return per_sample_sum(loss) / count


def binary_cross_entropy(preds: Tensor, target: Tensor) -> Tensor:
    """BCE on probabilities per sample, as ``F.binary_cross_entropy`` (logs clamped at -100).

    ``-(t log p + (1 - t) log(1 - p))``; preds must lie in [0, 1].
    """
    log_p = torch.log(preds).clamp(min=-100.0)
    log_1mp = torch.log1p(-preds).clamp(min=-100.0)
    return per_sample_mean(-(target * log_p + (1.0 - target) * log_1mp))


def _bce_logits_elementwise(preds: Tensor, target: Tensor, pos_weight: float = 1.0) -> Tensor:
    # Stable form: (1 - t) x + (1 + (pw - 1) t) (log(1 + e^-|x|) + max(-x, 0)).
    log_weight = 1.0 + (pos_weight - 1.0) * target
    softplus_neg = log1p_exp_neg_abs(preds) + torch.clamp(-preds, min=0.0)
    return (1.0 - target) * preds + log_weight * softplus_neg


def bce_with_logits(preds: Tensor, target: Tensor, pos_weight: float = 1.0) -> Tensor:
    """BCE on logits per sample, as ``F.binary_cross_entropy_with_logits``.

    ``-(pw t log σ(x) + (1 - t) log(1 - σ(x)))``, computed in the stable log-sum-exp form.
    """
    return per_sample_mean(_bce_logits_elementwise(preds, target, pos_weight))


def balanced_bce(preds: Tensor, target: Tensor, alpha: float = 0.5) -> Tensor:
    """α-balanced BCE on logits per sample: ``-(α t log σ(x) + (1 - α)(1 - t) log(1 - σ(x)))``.

    α weights the positive term and 1 - α the negative one (Lin et al. 2017, §3.1,
    https://arxiv.org/abs/1708.02002; the class-balanced BCE of HED, Xie & Tu 2015, sets α
    to the share of negatives). α = 0.5 is half of plain BCE.
    """
    log_sig = log_sigmoid(preds)  # export-safe: F.logsigmoid becomes Log(Sigmoid(x)) in ONNX
    log_1msig = log_sigmoid(-preds)
    return per_sample_mean(-(alpha * target * log_sig + (1.0 - alpha) * (1.0 - target) * log_1msig))


def focal(preds: Tensor, target: Tensor, gamma: float = 2.0, alpha: float = 0.25) -> Tensor:
    """Sigmoid focal loss on logits per sample.

    ``FL = α_t (1 - p_t)^γ BCE(x, t)`` with ``p_t = p t + (1 - p)(1 - t)`` and
    ``α_t = α t + (1 - α)(1 - t)``; a negative α turns the α weighting off.
    Defaults γ=2, α=0.25 follow RetinaNet and torchvision's ``sigmoid_focal_loss``; YOLOv5's
    ``FocalLoss`` uses γ=1.5 (α=0.25). γ=0 with α<0 is plain BCE with logits.
    Lin et al. 2017, https://arxiv.org/abs/1708.02002.
    """
    prob = sigmoid(preds)
    ce = _bce_logits_elementwise(preds, target)
    p_t = prob * target + (1.0 - prob) * (1.0 - target)
    loss = ce * power(1.0 - p_t, gamma)
    if alpha >= 0:
        loss = loss * (alpha * target + (1.0 - alpha) * (1.0 - target))
    return per_sample_mean(loss)


def kl_div(preds: Tensor, target: Tensor) -> Tensor:
    """KL(target || exp(preds)) per sample, summed over the class axis.

    preds (Tensor[N, C, *]) log-probabilities; target (Tensor[N, C, *]) probabilities, as
    ``F.kl_div(preds, target)``: ``Σ_c t_c (log t_c - preds_c)`` with ``0 log 0 = 0``.
    Summed over C, averaged over any further positions, so for ``[N, C]`` the batch mean of
    the scores is ``F.kl_div(..., reduction="batchmean")``.
    """
    pointwise = torch.xlogy(target, target) - target * preds
    summed = pointwise.sum(1)
    return per_sample_mean(summed)


# -- modules ------------------------------------------------------------------------------
class L1(nn.Module):
    def forward(self, preds: Tensor, target: Tensor) -> Tensor:
        return l1(preds, target)


class MSE(nn.Module):
    def forward(self, preds: Tensor, target: Tensor) -> Tensor:
        return mse(preds, target)


class SmoothL1(nn.Module):
    def __init__(self, beta: float = 1.0) -> None:
        super().__init__()
        self.beta = float(beta)

    def forward(self, preds: Tensor, target: Tensor) -> Tensor:
        return smooth_l1(preds, target, self.beta)


class CrossEntropy(nn.Module):
    def __init__(
        self,
        weight: list[float] | None = None,
        ignore_index: int = -100,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        self.register_buffer("weight", as_weight(weight))
        self.has_weight = weight is not None
        self.ignore_index = int(ignore_index)
        self.label_smoothing = float(label_smoothing)

    def forward(self, preds: Tensor, target: Tensor) -> Tensor:
        weight: Tensor | None = self.weight if self.has_weight else None  # type: ignore[assignment]
        return cross_entropy(preds, target, weight, self.ignore_index, self.label_smoothing)


class BinaryCrossEntropy(nn.Module):
    def forward(self, preds: Tensor, target: Tensor) -> Tensor:
        return binary_cross_entropy(preds, target)


class BCEWithLogits(nn.Module):
    def __init__(self, pos_weight: float = 1.0) -> None:
        super().__init__()
        self.pos_weight = float(pos_weight)

    def forward(self, preds: Tensor, target: Tensor) -> Tensor:
        return bce_with_logits(preds, target, self.pos_weight)


class BalancedBCE(nn.Module):
    def __init__(self, alpha: float = 0.5) -> None:
        super().__init__()
        self.alpha = float(alpha)

    def forward(self, preds: Tensor, target: Tensor) -> Tensor:
        return balanced_bce(preds, target, self.alpha)


class Focal(nn.Module):
    def __init__(self, gamma: float = 2.0, alpha: float = 0.25) -> None:
        super().__init__()
        self.gamma = float(gamma)
        self.alpha = float(alpha)

    def forward(self, preds: Tensor, target: Tensor) -> Tensor:
        return focal(preds, target, self.gamma, self.alpha)


class KLDiv(nn.Module):
    def forward(self, preds: Tensor, target: Tensor) -> Tensor:
        return kl_div(preds, target)


# -- registry -----------------------------------------------------------------------------
_SIZES = {"N": 3, "H": 5, "W": 6}


def _pair_spec(name, module, functional, summary, paper, oracle, kind, params=(), validate=None):
    return register(
        MetricSpec(
            name=name,
            family=FAMILY,
            module=module,
            functional=functional,
            inputs=PAIR,
            outputs=SCORE,
            params=params,
            higher_is_better=False,
            paper=paper,
            oracle=oracle,
            sample=samples.pair_sampler(kind),
            regimes=samples.pair_regimes(kind),
            summary=summary,
            validate=validate,
            example_sizes=_SIZES,
        )
    )


ZHAO_2017 = "Zhao et al. 2017, Loss Functions for Image Restoration, arXiv:1511.08861"
GOODFELLOW_2016 = (
    "Goodfellow et al. 2016, Deep Learning, sec. 6.2.2.2 (sigmoid units, cross-entropy)"
)
_pair_spec(
    "l1", L1, l1, "mean absolute error", ZHAO_2017, "torch.nn.functional.l1_loss", "regression"
)
_pair_spec(
    "mse", MSE, mse, "mean squared error", ZHAO_2017, "torch.nn.functional.mse_loss", "regression"
)
_pair_spec(
    "smooth_l1",
    SmoothL1,
    smooth_l1,
    "smooth L1 / Huber / beta",
    "Girshick 2015, Fast R-CNN, arXiv:1504.08083",
    "torch.nn.functional.smooth_l1_loss",
    "regression",
    (ParamSpec("beta", 1.0, "quadratic below |d| < beta; 0 gives L1"),),
    samples.validate_smooth_l1,
)
_pair_spec(
    "binary_cross_entropy",
    BinaryCrossEntropy,
    binary_cross_entropy,
    "binary cross-entropy on probabilities",
    GOODFELLOW_2016,
    "torch.nn.functional.binary_cross_entropy",
    "probability",
    validate=samples.validate_probability,
)
_pair_spec(
    "bce_with_logits",
    BCEWithLogits,
    bce_with_logits,
    "binary cross-entropy on logits",
    GOODFELLOW_2016,
    "torch.nn.functional.binary_cross_entropy_with_logits",
    "binary",
    (ParamSpec("pos_weight", 1.0, "weight of the positive term"),),
    samples.validate_binary_target,
)
_pair_spec(
    "balanced_bce",
    BalancedBCE,
    balanced_bce,
    "alpha-balanced binary cross-entropy on logits",
    "Lin et al. 2017 (sec. 3.1), arXiv:1708.02002; Xie & Tu 2015 (HED), arXiv:1504.06375",
    "hand-worked; alpha=0.5 is half of F.binary_cross_entropy_with_logits",
    "binary",
    (ParamSpec("alpha", 0.5, "weight of positives; 1 - alpha for negatives"),),
    samples.validate_balanced,
)
_pair_spec(
    "focal",
    Focal,
    focal,
    "sigmoid focal loss on logits",
    "Lin et al. 2017, Focal Loss for Dense Object Detection, arXiv:1708.02002",
    "torchvision.ops.sigmoid_focal_loss formula (hand-worked); gamma=0 is BCE",
    "binary",
    (
        ParamSpec("gamma", 2.0, "focusing exponent (YOLOv5 uses 1.5)"),
        ParamSpec("alpha", 0.25, "positive-class weight; negative disables"),
    ),
    samples.validate_focal,
)

register(
    MetricSpec(
        name="cross_entropy",
        family=FAMILY,
        module=CrossEntropy,
        functional=cross_entropy,
        inputs=(
            TensorSpec("preds", ("N", "C", "*"), "float32", "logits"),
            TensorSpec("target", ("N", "*"), "int64", "class indices"),
        ),
        outputs=SCORE,
        params=(
            ParamSpec("weight", None, "per-class weights (length C) for class imbalance"),
            ParamSpec("ignore_index", -100, "target value that is skipped"),
            ParamSpec("label_smoothing", 0.0, "mass spread uniformly over classes"),
        ),
        higher_is_better=False,
        paper="Szegedy et al. 2016 (label smoothing), arXiv:1512.00567",
        oracle="torch.nn.functional.cross_entropy(reduction='none')",
        sample=samples.sample_ce,
        regimes={"extreme": samples.sample_ce_extreme, "degenerate": samples.sample_ce_degenerate},
        summary="softmax cross-entropy (weighted, ignore_index, label smoothing)",
        validate=samples.validate_ce,
        example_sizes={"N": 3, "C": 4, "H": 5, "W": 6},
    )
)

register(
    MetricSpec(
        name="kl_div",
        family=FAMILY,
        module=KLDiv,
        functional=kl_div,
        inputs=(
            TensorSpec("preds", ("N", "C", "*"), "float32", "log-probabilities"),
            TensorSpec("target", ("N", "C", "*"), "float32", "probabilities"),
        ),
        outputs=SCORE,
        params=(),
        higher_is_better=False,
        paper="Kullback & Leibler 1951",
        oracle="scipy.special.rel_entr; torch.nn.functional.kl_div",
        sample=samples.sample_kl,
        regimes={"extreme": samples.sample_kl_extreme, "degenerate": samples.sample_kl_degenerate},
        summary="KL divergence summed over classes",
        validate=samples.validate_kl,
        example_sizes={"N": 3, "C": 4, "H": 5},
    )
)
