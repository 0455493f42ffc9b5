"""Mask losses against a numpy re-implementation of nnU-Net's SoftDiceLoss and torch's CE."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cvscore.metrics import masks, registry

from ..conftest import DEVICES, tol

DTYPES = (torch.float32, torch.float64)
# (N, C, spatial...) shapes: 2-D and 3-D masks, and plain classification (no spatial axes)
SHAPES = ((4, 3, 6, 7), (3, 4, 2, 3, 5), (5, 3))


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _inputs(seed: int, shape: tuple[int, ...], dtype: torch.dtype = torch.float64):
    g = _gen(seed)
    preds = torch.randn(shape, generator=g, dtype=dtype) * 2
    target = torch.randint(0, shape[1], (shape[0], *shape[2:]), generator=g)
    return preds, target


def _numpy_soft_dice(
    preds: np.ndarray, target: np.ndarray, smooth: float, do_bg: bool, apply_softmax: bool
) -> np.ndarray:
    """nnU-Net SoftDiceLoss(batch_dice=False) per sample, written out in numpy (float64)."""
    x = preds.astype(np.float64)
    if apply_softmax:
        x = np.exp(x - x.max(1, keepdims=True))
        x = x / x.sum(1, keepdims=True)
    num_classes = x.shape[1]
    y = np.moveaxis(np.eye(num_classes)[target], -1, 1)  # one-hot, [N, C, *]
    axes = tuple(range(2, x.ndim))
    tp = (x * y).sum(axes)
    fp = (x * (1 - y)).sum(axes)
    fn = ((1 - x) * y).sum(axes)
    dc = (2 * tp + smooth) / np.clip(2 * tp + fp + fn + smooth, 1e-8, None)
    if not do_bg:
        dc = dc[:, 1:]
    return -dc.mean(1)


# -- soft Dice ----------------------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(
    ("smooth", "do_bg", "apply_softmax"),
    [(1.0, True, True), (1e-5, False, True), (0.0, True, True), (1.0, False, False)],
)
def test_soft_dice_matches_numpy_nnunet(shape, smooth, do_bg, apply_softmax, dtype, device):
    preds, target = _inputs(1, shape, dtype)
    if not apply_softmax:
        preds = torch.softmax(preds, 1)  # probabilities, as nnU-Net with apply_nonlin=None
    module = masks.SoftDice(smooth, do_bg, apply_softmax)
    out = module(preds.to(device), target.to(device)).cpu()
    ref = _numpy_soft_dice(preds.double().numpy(), target.numpy(), smooth, do_bg, apply_softmax)
    assert out.dtype == dtype
    torch.testing.assert_close(out, torch.from_numpy(ref).to(dtype), **tol(dtype))


def test_soft_dice_hand_worked() -> None:
    # perfect prediction: huge logits on the true class, p ~ one-hot. Present classes have
    # fp = fn = 0 (dc = 1), absent ones tp = fp = fn = 0 and dc = smooth / smooth = 1.
    target = torch.tensor([[[0, 1], [1, 1]], [[2, 2], [2, 2]]])
    logits = 50.0 * F.one_hot(target, 4).movedim(-1, 1).double()
    out = masks.SoftDice()(logits, target)
    np.testing.assert_allclose(out.numpy(), [-1.0, -1.0], atol=1e-12)
    # exact one-hot probabilities without softmax: -1 exactly
    probs = F.one_hot(target, 4).movedim(-1, 1).double()
    assert masks.SoftDice(apply_softmax=False)(probs, target).tolist() == [-1.0, -1.0]
    # C = 2, equal logits (p = 1/2), 4 positions all class 0, smooth 1:
    # class 0: tp = 2, fp = 0, fn = 2 -> (4 + 1) / (4 + 2 + 1) = 5/7
    # class 1: tp = 0, fp = 2, fn = 0 -> 1 / (2 + 1) = 1/3; mean 11/21
    zeros = torch.zeros(1, 2, 4, dtype=torch.float64)
    zero_target = torch.zeros(1, 4, dtype=torch.long)
    assert masks.SoftDice()(zeros, zero_target).item() == pytest.approx(-11 / 21)
    assert masks.SoftDice(do_bg=False)(zeros, zero_target).item() == pytest.approx(-1 / 3)
    # smooth = 0 and a class absent everywhere: 0 / clamp(0, 1e-8) = 0, not NaN
    probs = torch.tensor([[[1.0, 1.0], [0.0, 0.0]]], dtype=torch.float64)
    out = masks.SoftDice(smooth=0.0, apply_softmax=False)(
        probs, torch.zeros(1, 2, dtype=torch.long)
    )
    assert out.item() == pytest.approx(-0.5)  # class 0 dc = 1, class 1 dc = 0


# -- Combo --------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(("alpha", "do_bg"), [(0.5, True), (0.2, False), (1.0, True), (0.0, True)])
def test_combo_matches_cross_entropy_and_numpy_dice(shape, alpha, do_bg, dtype) -> None:
    preds, target = _inputs(2, shape, dtype)
    ce = F.cross_entropy(preds, target, reduction="none").reshape(shape[0], -1).mean(1)
    dice = _numpy_soft_dice(preds.double().numpy(), target.numpy(), 1.0, do_bg, True)
    expected = alpha * ce + (1 - alpha) * torch.from_numpy(dice).to(dtype)
    out = masks.Combo(alpha, 1.0, do_bg)(preds, target)
    torch.testing.assert_close(out, expected, **tol(dtype))


def test_combo_hand_worked() -> None:
    # equal logits: CE = log C at every position; Dice as in test_soft_dice_hand_worked
    zeros = torch.zeros(1, 2, 4, dtype=torch.float64)
    target = torch.zeros(1, 4, dtype=torch.long)
    out = masks.Combo(alpha=0.5)(zeros, target)
    assert out.item() == pytest.approx(0.5 * np.log(2) - 0.5 * 11 / 21)
    # a confident perfect prediction: CE ~ 0 and Dice ~ 1, so combo ~ -(1 - alpha)
    target = torch.tensor([[0, 1, 2, 1]])
    logits = 50.0 * F.one_hot(target, 3).movedim(-1, 1).double()
    assert masks.Combo(alpha=0.3)(logits, target).item() == pytest.approx(-0.7, abs=1e-12)


# -- contract checks ----------------------------------------------------------------------
def test_modules_equal_functionals() -> None:
    preds, target = _inputs(3, (4, 3, 5, 6))
    for smooth, do_bg, soft in [(1.0, True, True), (0.5, False, True), (1e-5, True, False)]:
        expected = masks.soft_dice(preds, target, smooth, do_bg, soft)
        torch.testing.assert_close(masks.SoftDice(smooth, do_bg, soft)(preds, target), expected)
    for alpha, smooth, do_bg in [(0.5, 1.0, True), (0.7, 1e-5, False)]:
        expected = masks.combo(preds, target, alpha, smooth, do_bg)
        torch.testing.assert_close(masks.Combo(alpha, smooth, do_bg)(preds, target), expected)


@pytest.mark.parametrize("name", ["soft_dice", "combo"])
@pytest.mark.parametrize("do_bg", [True, False])
def test_gradcheck(name: str, do_bg: bool) -> None:
    preds, target = _inputs(4, (2, 3, 3, 2))
    module = registry.get(name).build(do_bg=do_bg)
    preds.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p: module(p, target), (preds,))


@pytest.mark.parametrize("name", ["soft_dice", "combo"])
def test_bad_inputs_name_the_argument(name: str) -> None:
    spec = registry.get(name)
    preds, target = _inputs(5, (2, 3, 4, 4), torch.float32)
    with pytest.raises(ValueError, match=r"`target` to hold class indices in \[0, 2\], got 3"):
        spec.check_inputs({"preds": preds, "target": torch.full_like(target, 3)})
    with pytest.raises(ValueError, match=r"`target` to hold class indices in \[0, 2\], got -1"):
        spec.check_inputs({"preds": preds, "target": target - 1})
    with pytest.raises(ValueError, match="`target` to have dtype int64, got float32"):
        spec.check_inputs({"preds": preds, "target": target.float()})
    with pytest.raises(ValueError, match="trailing axes of `target`"):
        spec.check_inputs({"preds": preds, "target": target[:, :3]})
    with pytest.raises(ValueError, match="`preds` to have at least 2 classes when `do_bg`"):
        spec.check_inputs(
            {"preds": preds[:, :1], "target": torch.zeros_like(target)}, {"do_bg": False}
        )
    with pytest.raises(ValueError, match="`smooth` to be non-negative, got -1"):
        spec.check_inputs({"preds": preds, "target": target}, {"smooth": -1.0})
    if name == "combo":
        with pytest.raises(ValueError, match=r"`alpha` to be in \[0.0, 1.0\], got 1.5"):
            spec.check_inputs({"preds": preds, "target": target}, {"alpha": 1.5})
    assert spec.check_inputs({"preds": preds, "target": target}) == 2


@pytest.mark.parametrize("name", ["soft_dice", "combo"])
def test_empty_batch(name: str) -> None:
    for shape in ((0, 3, 4, 5), (0, 3)):
        preds = torch.zeros(shape)
        target = torch.zeros((0, *shape[2:]), dtype=torch.long)
        out = registry.get(name).build(do_bg=False)(preds, target)
        assert out.shape == (0,)


@pytest.mark.parametrize("name", ["soft_dice", "combo"])
@pytest.mark.parametrize("do_bg", [True, False])
def test_scripted_matches_eager_for_any_class_count(name: str, do_bg: bool) -> None:
    module = registry.get(name).build(do_bg=do_bg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = torch.jit.script(module)
    for seed, shape in enumerate([(1, 2, 3, 4), (7, 5, 2, 6), (7, 3), (1, 4, 2, 2, 2)]):
        preds, target = _inputs(6 + seed, shape, torch.float32)
        torch.testing.assert_close(scripted(preds, target), module(preds, target))
