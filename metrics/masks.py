"""Segmentation-mask losses on class-index targets, per sample.

preds (Tensor[N, C, *]) are logits (or probabilities where stated), target (Tensor[N, *])
int64 class indices in ``[0, C)``; trailing spatial axes may be any number, including none.
Every function returns ``Tensor[N]``, the loss of each sample (lower is better).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from ._utils import check_labels, check_positive, check_range
from .pixel import cross_entropy
from .registry import MetricSpec, ParamSpec, TensorSpec, register

FAMILY = "masks"
INPUTS = (
    TensorSpec("preds", ("N", "C", "*"), "float32", "logits (probabilities if not softmaxed)"),
    TensorSpec("target", ("N", "*"), "int64", "class indices in [0, C)"),
)
SCORE = (TensorSpec("score", ("N",), "float32", "per-sample loss"),)


# -- helpers ------------------------------------------------------------------------------
def _flatten_from(x: Tensor, start: int) -> Tensor:
    """``[d0 .. d{start-1}, *] -> [d0 .. d{start-1}, S]``; no trailing axes gives ``S = 1``."""
    if x.dim() > start:
        return x.flatten(start)
    return x.unsqueeze(-1)


def _one_hot(target: Tensor, num_classes: int, dtype: torch.dtype) -> Tensor:
    """``[N, S]`` class indices -> ``[N, C, S]`` one-hot, with ``C`` possibly symbolic."""
    classes = torch.arange(num_classes, device=target.device).view(1, num_classes, 1)
    return (target.unsqueeze(1) == classes).to(dtype)


# -- functional core ----------------------------------------------------------------------
def soft_dice(
    preds: Tensor,
    target: Tensor,
    smooth: float = 1.0,
    do_bg: bool = True,
    apply_softmax: bool = True,
) -> Tensor:
    """nnU-Net's soft Dice loss per sample: minus the mean over classes of the soft Dice.

    With ``p = softmax(preds, dim=1)`` (or ``preds`` as given when ``apply_softmax`` is False)
    and ``y`` the one-hot target, per sample n and class c, summed over the positions:
    ``tp = Σ p y``, ``fp = Σ p (1 - y)``, ``fn = Σ (1 - p) y`` and
    ``dc = (2 tp + smooth) / max(2 tp + fp + fn + smooth, 1e-8)``;
    the score is ``-mean_c dc`` over all classes, or classes 1.. when ``do_bg`` is False.

    preds (Tensor[N, C, *]) logits; target (Tensor[N, *]) int64 class indices.
    Returns Tensor[N] in [-1, 0]: -1 for a perfect prediction.
    Convention: this is nnU-Net's ``SoftDiceLoss`` with ``batch_dice=False`` (Isensee et al.
    2021, https://arxiv.org/abs/1809.10486): the Dice is negated, not ``1 - dice``, and a class
    absent from both prediction and target scores 1 thanks to ``smooth``. The class default
    ``smooth=1`` is used here; nnU-Net's trainers pass ``smooth=1e-5, do_bg=False``.
    Milletari et al. 2016, V-Net, https://arxiv.org/abs/1606.04797.
    """
    num_classes = preds.shape[1]
    probs = torch.softmax(preds, dim=1) if apply_softmax else preds
    probs = _flatten_from(probs, 2)
    onehot = _one_hot(_flatten_from(target, 1), num_classes, probs.dtype)
    tp = (probs * onehot).sum(2)
    fp = (probs * (1.0 - onehot)).sum(2)
    fn = ((1.0 - probs) * onehot).sum(2)
    dc = (2.0 * tp + smooth) / torch.clamp(2.0 * tp + fp + fn + smooth, min=1e-8)
    if do_bg:
        return -dc.mean(1)
    # Drop class 0 with a mask, not dc[:, 1:]: a C - 1 sized axis would make torch.export
    # guard C != 2.
    keep = torch.arange(num_classes, device=dc.device) > 0
    return -torch.where(keep, dc, torch.zeros_like(dc)).sum(1) / keep.sum().to(dc.dtype)


def combo(
    preds: Tensor,
    target: Tensor,
    alpha: float = 0.5,
    smooth: float = 1.0,
    do_bg: bool = True,
) -> Tensor:
    """Combo loss per sample: ``alpha * CE + (1 - alpha) * soft_dice``.

    ``CE`` is the softmax cross-entropy averaged over the sample's positions
    (:func:`metrics.pixel.cross_entropy`), ``soft_dice`` nnU-Net's negative Dice on
    ``softmax(preds)`` (:func:`soft_dice`), so the Dice term is subtracted, as in the paper's
    ``α L_CE - (1 - α) Dice``. preds (Tensor[N, C, *]) logits; target (Tensor[N, *]) int64
    class indices. Returns Tensor[N].
    Convention: the paper's CE carries its own positive/negative weight β; here it is plain
    multi-class CE. nnU-Net's ``DC_and_CE_loss`` is the unnormalised ``CE + soft_dice``,
    i.e. twice this with ``alpha=0.5``.
    Taghanaki et al. 2019, Combo loss, https://arxiv.org/abs/1805.02798.
    """
    ce = cross_entropy(preds, target)
    dice = soft_dice(preds, target, smooth, do_bg, True)
    return alpha * ce + (1.0 - alpha) * dice


# -- modules ------------------------------------------------------------------------------
class SoftDice(nn.Module):
    def __init__(self, smooth: float = 1.0, do_bg: bool = True, apply_softmax: bool = True) -> None:
        super().__init__()
        self.smooth = float(smooth)
        self.do_bg = bool(do_bg)
        self.apply_softmax = bool(apply_softmax)

    def forward(self, preds: Tensor, target: Tensor) -> Tensor:
        return soft_dice(preds, target, self.smooth, self.do_bg, self.apply_softmax)


class Combo(nn.Module):
    def __init__(self, alpha: float = 0.5, smooth: float = 1.0, do_bg: bool = True) -> None:
        super().__init__()
        self.alpha = float(alpha)
        self.smooth = float(smooth)
        self.do_bg = bool(do_bg)

    def forward(self, preds: Tensor, target: Tensor) -> Tensor:
        return combo(preds, target, self.alpha, self.smooth, self.do_bg)


# -- sampler and domain checks ------------------------------------------------------------
def _sample(gen: torch.Generator, sizes: Mapping[str, int], dtype: torch.dtype):
    n, c, h, w = sizes["N"], sizes["C"], sizes["H"], sizes["W"]
    preds = torch.randn(n, c, h, w, generator=gen, dtype=dtype) * 2
    target = torch.randint(0, c, (n, h, w), generator=gen)
    return {"preds": preds, "target": target}


def confident_logits(gen: torch.Generator, target: Tensor, num_classes: int, dtype) -> Tensor:
    """Logits ``[N, C, *]`` with one class ahead by 15, 40 or 80 at each position: the target
    class (confidently right) or the next one (confidently wrong)."""
    n = target.shape[0]
    right = torch.rand(target.shape, generator=gen) < 0.6
    lead = torch.where(right, target, (target + 1) % num_classes)
    classes = torch.arange(num_classes).view(1, num_classes, *([1] * (target.dim() - 1)))
    onehot = (lead.unsqueeze(1) == classes).to(dtype)
    table = torch.tensor([15.0, 40.0, 80.0], dtype=dtype)
    margin = table[torch.randint(0, 3, (n, 1, *target.shape[1:]), generator=gen)]
    noise = torch.randn(onehot.shape, generator=gen, dtype=dtype)
    return noise + margin * onehot


def _sample_extreme(gen: torch.Generator, sizes: Mapping[str, int], dtype: torch.dtype):
    n, c, h, w = sizes["N"], sizes["C"], sizes["H"], sizes["W"]
    target = torch.randint(0, c, (n, h, w), generator=gen)
    # a class present in one pixel only, next to dominant ones
    target = torch.where(torch.rand(n, h, w, generator=gen) < 0.7, torch.zeros_like(target), target)
    return {"preds": confident_logits(gen, target, c, dtype), "target": target}


def _sample_degenerate(gen: torch.Generator, sizes: Mapping[str, int], dtype: torch.dtype):
    """Equal logits everywhere (uniform softmax) or a perfect prediction (softmax exactly
    one-hot in float32), against one class everywhere or a random map."""
    n, c, h, w = sizes["N"], sizes["C"], sizes["H"], sizes["W"]
    target = torch.randint(0, c, (n, h, w), generator=gen)
    single = torch.rand(n, 1, 1, generator=gen) < 0.5
    target = torch.where(single, torch.zeros_like(target), target)
    classes = torch.arange(c).view(1, c, 1, 1)
    perfect = 200.0 * (target.unsqueeze(1) == classes).to(dtype)
    flat = torch.rand(n, 1, 1, 1, generator=gen) < 0.5
    return {"preds": torch.where(flat, torch.zeros_like(perfect), perfect), "target": target}


def _validate(params: Mapping[str, Any], inputs: Mapping[str, Tensor]) -> None:
    num_classes = inputs["preds"].shape[1]
    check_positive("smooth", params["smooth"], allow_zero=True)
    if "alpha" in params:
        check_range("alpha", params["alpha"], 0.0, 1.0)
    if not params["do_bg"] and num_classes < 2:
        raise ValueError(
            f"Expected `preds` to have at least 2 classes when `do_bg` is False, got {num_classes}"
        )
    check_labels("target", inputs["target"], num_classes)


# -- registry -----------------------------------------------------------------------------
_SIZES = {"N": 3, "C": 4, "H": 5, "W": 6}
_SMOOTH = ParamSpec("smooth", 1.0, "added to numerator and denominator of each class's Dice")
_DO_BG = ParamSpec("do_bg", True, "include class 0 (background) in the mean over classes")

register(
    MetricSpec(
        name="soft_dice",
        family=FAMILY,
        module=SoftDice,
        functional=soft_dice,
        inputs=INPUTS,
        outputs=SCORE,
        params=(
            _SMOOTH,
            _DO_BG,
            ParamSpec(
                "apply_softmax", True, "softmax preds over C; False: preds are probabilities"
            ),
        ),
        higher_is_better=False,
        paper="Milletari et al. 2016, V-Net, arXiv:1606.04797; nnU-Net, arXiv:1809.10486",
        oracle="numpy re-implementation of nnU-Net SoftDiceLoss; hand-worked perfect prediction",
        sample=_sample,
        regimes={"extreme": _sample_extreme, "degenerate": _sample_degenerate},
        summary="nnU-Net soft Dice loss (negative mean Dice over classes)",
        validate=_validate,
        example_sizes=_SIZES,
    )
)

register(
    MetricSpec(
        name="combo",
        family=FAMILY,
        module=Combo,
        functional=combo,
        inputs=(
            TensorSpec("preds", ("N", "C", "*"), "float32", "logits"),
            INPUTS[1],
        ),
        outputs=SCORE,
        params=(
            ParamSpec("alpha", 0.5, "weight of cross-entropy; 1 - alpha weights soft Dice"),
            _SMOOTH,
            _DO_BG,
        ),
        higher_is_better=False,
        paper="Taghanaki et al. 2019, Combo loss, arXiv:1805.02798",
        oracle="torch.nn.functional.cross_entropy + numpy nnU-Net SoftDiceLoss",
        sample=_sample,
        regimes={"extreme": _sample_extreme, "degenerate": _sample_degenerate},
        summary="alpha * cross-entropy + (1 - alpha) * soft Dice",
        validate=_validate,
        example_sizes=_SIZES,
    )
)
