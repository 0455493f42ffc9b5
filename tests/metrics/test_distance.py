"""Distance maps against scipy.ndimage, distance-penalised Dice and masked L1 against numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.ndimage import distance_transform_edt

from cvscore.metrics import distance, registry

from ..conftest import tol

DTYPES = (torch.float32, torch.float64)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _masks(seed: int, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    return (torch.rand(shape, generator=_gen(seed)) > 0.3).to(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(6, 13, 17), (3, 1, 9), (3, 24, 5), (2, 40, 40)])
def test_distance_map_equals_scipy(shape: tuple[int, ...], dtype: torch.dtype) -> None:
    masks = _masks(1, shape, dtype)
    masks[:, -1, -1] = 0.0  # scipy's result is defined only where background exists
    masks[0] = 1.0
    masks[0, shape[1] // 2, shape[2] // 2] = 0.0  # one background pixel: distances up to ~28
    out = distance.distance_transform_edt(masks)
    expected = np.stack([distance_transform_edt(m) for m in masks.numpy()])
    np.testing.assert_allclose(out.numpy(), expected, rtol=0, atol=1e-5)
    assert out.dtype == dtype


def test_distance_map_hand_worked() -> None:
    # foreground row 1 1 0: distances 2, 1, 0 along the row; an empty mask is all zeros;
    # a mask with no background has no finite distance (scipy returns an artefact there)
    masks = torch.tensor([[[1.0, 1.0, 0.0]], [[0.0, 0.0, 0.0]], [[1.0, 1.0, 1.0]]])
    out = distance.distance_transform_edt(masks)
    assert out[0].tolist() == [[2.0, 1.0, 0.0]] and out[1].tolist() == [[0.0, 0.0, 0.0]]
    assert torch.isinf(out[2]).all()


def _penalty_np(mask: np.ndarray) -> np.ndarray:
    """Caliva et al.'s map as SegLoss's compute_edts_forPenalizedLoss, with 0/0 -> 0."""
    out = np.zeros(mask.shape)
    for i, m in enumerate(mask.astype(bool)):
        for region, inside in ((m, m), (~m, ~m)):
            if region.all() or not region.any():
                continue  # no boundary: no penalty
            d = distance_transform_edt(region)
            out[i] += (d.max() - d) / d.max() * inside
    return out


@pytest.mark.parametrize("dtype", DTYPES)
def test_distance_penalty_matches_scipy_reimplementation(dtype: torch.dtype) -> None:
    masks = _masks(2, (5, 12, 15), dtype)
    masks[1] = 0.0  # no foreground
    masks[2] = 1.0  # no background
    out = distance.distance_penalty(masks)
    np.testing.assert_allclose(out.numpy(), _penalty_np(masks.numpy()), rtol=0, atol=1e-6)
    assert float(out.min()) >= 0 and float(out.max()) < 1


def _distance_dice_np(logits: np.ndarray, target: np.ndarray, smooth: float, do_bg: bool):
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    scores = []
    for c in range(0 if do_bg else 1, logits.shape[1]):
        y = (target == c).astype(float)
        w = 1.0 + _penalty_np(y)
        pc = p[:, c]
        inter = (w * pc * y).sum((1, 2))
        total = (w * pc).sum((1, 2)) + (w * y).sum((1, 2))
        scores.append((2 * inter + smooth) / (total + smooth))
    return 1.0 - np.mean(scores, axis=0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    ("smooth", "do_bg", "classes"), [(1e-5, False, 2), (1.0, True, 4), (1e-5, False, 3)]
)
def test_distance_dice_matches_numpy(
    smooth: float, do_bg: bool, classes: int, dtype: torch.dtype
) -> None:
    spec = registry.get("distance_dice")
    inputs = spec.make_inputs(_gen(3), {"N": 6, "C": classes, "H": 14, "W": 11}, dtype)
    out = distance.DistanceDice(smooth, do_bg)(**inputs)
    expected = _distance_dice_np(inputs["preds"].numpy(), inputs["target"].numpy(), smooth, do_bg)
    np.testing.assert_allclose(out.numpy(), expected, **tol(dtype))


def test_distance_dice_hand_worked() -> None:
    # a perfect, confident prediction: every class's weighted Dice is 1, the loss 0
    target = torch.zeros(1, 6, 7, dtype=torch.int64)
    target[0, 1:4, 2:6] = 1
    logits = F.one_hot(target, 2).permute(0, 3, 1, 2).double() * 60.0
    assert distance.distance_dice(logits, target).item() == pytest.approx(0.0, abs=1e-12)
    # uniform probabilities 1/2 on a mask whose every pixel has weight w: Dice is
    # 2·(w/2)·|Y| / (w/2·P + w·|Y|); with constant w (no boundary: empty foreground) it is
    # the plain soft Dice. Here class 1 is absent everywhere: (0 + s) / (P/2 + s)
    empty = torch.zeros(1, 4, 5, dtype=torch.int64)
    out = distance.distance_dice(torch.zeros(1, 2, 4, 5, dtype=torch.float64), empty, smooth=1.0)
    assert out.item() == pytest.approx(1.0 - 1.0 / (10.0 + 1.0))


@pytest.mark.parametrize("dtype", DTYPES)
def test_masked_l1_normalises_each_term_by_its_own_mask(dtype: torch.dtype) -> None:
    g = _gen(4)
    preds, target = (
        torch.rand(5, 3, 8, 9, generator=g, dtype=dtype),
        torch.rand(5, 3, 8, 9, generator=g, dtype=dtype),
    )
    mask = torch.rand(5, 8, 9, generator=g, dtype=dtype)  # soft masks are allowed
    out = distance.MaskedL1(alpha_fg=0.7, beta_bg=1.3)(preds, target, mask)
    d = (preds - target).abs().numpy()
    m = np.broadcast_to(mask.numpy()[:, None], d.shape)
    fg = (d * m).sum((1, 2, 3)) / m.sum((1, 2, 3))
    bg = (d * (1 - m)).sum((1, 2, 3)) / (1 - m).sum((1, 2, 3))
    np.testing.assert_allclose(
        out.numpy(), np.stack([0.7 * fg + 1.3 * bg, fg, bg], 1), **tol(dtype)
    )


def test_masked_l1_hand_worked() -> None:
    # |F - F*| = 1 everywhere, the mask covers 1 of 4 pixels: each term is the mean error
    # over its own region, so fg = 1 / 1 and bg = 3 / 3 (not 1/4 and 3/4), total = 1 + 1.
    preds = torch.ones(1, 2, 2, 2)
    mask = torch.zeros(1, 2, 2)
    mask[0, 0, 0] = 1.0
    assert distance.masked_l1(preds, torch.zeros(1, 2, 2, 2), mask).tolist() == [[2.0, 1.0, 1.0]]
    # error 1 on the masked pixel only, weights 2 and 0.5: fg = 1, bg = 0, total = 2
    preds = torch.zeros(1, 1, 2, 2)
    preds[0, 0, 0, 0] = 1.0
    out = distance.masked_l1(preds, torch.zeros(1, 1, 2, 2), mask, 2.0, 0.5)
    assert out.tolist() == [[2.0, 1.0, 0.0]]


def test_masked_l1_empty_and_full_masks_contribute_zero() -> None:
    # an empty mask has no foreground: fg contributes 0 and bg is the plain L1 (mean 0.5);
    # a full mask has no background: bg contributes 0
    preds = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]]).expand(2, 1, 2, 2)
    target = torch.zeros(2, 1, 2, 2)
    mask = torch.stack([torch.zeros(2, 2), torch.ones(2, 2)])
    out = distance.masked_l1(preds, target, mask)
    assert out.tolist() == [[0.5, 0.0, 0.5], [0.5, 0.5, 0.0]]
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["distance_dice", "masked_l1"])
def test_empty_batch(name: str) -> None:
    spec = registry.get(name)
    inputs = spec.make_inputs(_gen(0), {"N": 0})
    spec.check_inputs(inputs)
    out = spec.build()(**inputs)
    assert out.shape[0] == 0 and out.shape[1:] == tuple(d for d in spec.outputs[0].shape[1:])


def test_domain_errors_name_the_input() -> None:
    dice = registry.get("distance_dice")
    inputs = dice.make_inputs(_gen(5))
    bad = inputs["target"].clone()
    bad[0, 0, 0] = 3
    with pytest.raises(ValueError, match=r"`target` to hold class indices in \[0, 2\], got 3"):
        dice.check_inputs({**inputs, "target": bad})
    with pytest.raises(ValueError, match="axis C of `preds` to be at least 2"):
        dice.check_inputs({**inputs, "preds": inputs["preds"][:, :1]})
    with pytest.raises(ValueError, match="`smooth` to be positive"):
        dice.check_inputs(inputs, {"smooth": 0.0})
    masked = registry.get("masked_l1")
    inputs = masked.make_inputs(_gen(6))
    with pytest.raises(ValueError, match="`mask` to hold values in"):
        masked.check_inputs({**inputs, "mask": inputs["mask"] * 2 + 0.5})
    with pytest.raises(ValueError, match="axis H of `mask`"):
        masked.check_inputs({**inputs, "mask": inputs["mask"][:, 1:]})
