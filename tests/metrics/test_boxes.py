"""Box regression losses against hand-worked values and a numpy re-implementation."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from cvscore.metrics import boxes, registry

from ..conftest import DEVICES, tol

DTYPES = (torch.float32, torch.float64)
NAMES = ("iou", "giou", "diou", "ciou", "unitbox")
EPS = 1e-7


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _pairs(seed: int, n: int, dtype: torch.dtype = torch.float64) -> dict[str, torch.Tensor]:
    return registry.get("iou").make_inputs(_gen(seed), {"N": n}, dtype)


def _numpy_losses(p: np.ndarray, t: np.ndarray, eps: float = EPS) -> dict[str, np.ndarray]:
    """torchvision's formulas written out in numpy, one box pair per row (float64)."""
    px1, py1, px2, py2 = p.T
    tx1, ty1, tx2, ty2 = t.T
    inter = np.maximum(np.minimum(px2, tx2) - np.maximum(px1, tx1), 0) * np.maximum(
        np.minimum(py2, ty2) - np.maximum(py1, ty1), 0
    )
    union = (px2 - px1) * (py2 - py1) + (tx2 - tx1) * (ty2 - ty1) - inter
    iou = inter / (union + eps)
    cw = np.maximum(px2, tx2) - np.minimum(px1, tx1)
    ch = np.maximum(py2, ty2) - np.minimum(py1, ty1)
    giou = iou - (cw * ch - union) / (cw * ch + eps)
    rho2 = ((px1 + px2) / 2 - (tx1 + tx2) / 2) ** 2 + ((py1 + py2) / 2 - (ty1 + ty2) / 2) ** 2
    diou_loss = 1 - iou + rho2 / (cw**2 + ch**2 + eps)
    # torchvision's atan(w / h); the inputs here have h > 0, where it equals atan2(w, h)
    v = (
        4
        / np.pi**2
        * (np.arctan((tx2 - tx1) / (ty2 - ty1)) - np.arctan((px2 - px1) / (py2 - py1))) ** 2
    )
    alpha = v / (1 - iou + v + eps)
    return {
        "iou": 1 - iou,
        "giou": 1 - giou,
        "diou": diou_loss,
        "ciou": diou_loss + alpha * v,
        "unitbox": -np.log((inter + eps) / (union + eps)),
    }


def _all(p: list[list[float]], t: list[list[float]]) -> dict[str, torch.Tensor]:
    pt = torch.tensor(p, dtype=torch.float64)
    tt = torch.tensor(t, dtype=torch.float64)
    return {name: registry.get(name).build()(pt, tt) for name in NAMES}


def _close(actual: torch.Tensor, expected: float) -> None:
    assert actual.item() == pytest.approx(expected, rel=1e-6, abs=1e-6)


# -- hand-worked values -------------------------------------------------------------------
def test_identical_boxes_lose_nothing() -> None:
    # I = U = 4: IoU = 4 / (4 + eps) ~ 1, same centre, same aspect, enclosing box = the box
    out = _all([[0.0, 0.0, 2.0, 2.0]], [[0.0, 0.0, 2.0, 2.0]])
    for name in NAMES:
        _close(out[name], 0.0)


def test_nested_boxes_hand_worked() -> None:
    # box1 = [-1,-1,1,1] (area 4), box2 = [0,0,1,1] (area 1): I = 1, U = 4, IoU = 0.25.
    # The enclosing box is box1 (area 4 = U): GIoU = IoU = 0.25.
    # Centres (0,0) and (0.5,0.5): ρ² = 0.5; enclosing diagonal² = 2² + 2² = 8.
    # Both are squares: v = 0, so CIoU = DIoU.
    out = _all([[-1.0, -1.0, 1.0, 1.0]], [[0.0, 0.0, 1.0, 1.0]])
    _close(out["iou"], 0.75)
    _close(out["giou"], 0.75)
    _close(out["diou"], 0.75 + 0.5 / 8)
    _close(out["ciou"], 0.75 + 0.5 / 8)
    _close(out["unitbox"], math.log(4))  # -log 0.25


def test_disjoint_boxes_hand_worked() -> None:
    # [0,0,1,1] vs [2,2,3,3]: I = 0, U = 2, IoU = 0; enclosing [0,0,3,3], area 9:
    # GIoU = 0 - (9 - 2)/9 -> loss 16/9. Centres 2√2 apart: ρ² = 8; diagonal² = 18.
    out = _all([[0.0, 0.0, 1.0, 1.0]], [[2.0, 2.0, 3.0, 3.0]])
    _close(out["iou"], 1.0)
    _close(out["giou"], 16 / 9)
    _close(out["diou"], 1 + 8 / 18)
    _close(out["ciou"], 1 + 8 / 18)
    _close(out["unitbox"], math.log((2 + EPS) / EPS))  # finite, ~16.8
    # touching corners [0,0,1,1] vs [1,1,2,2]: IoU = 0, enclosing area 4, GIoU = -0.5 -> 1.5
    _close(_all([[0.0, 0.0, 1.0, 1.0]], [[1.0, 1.0, 2.0, 2.0]])["giou"], 1.5)


def test_aspect_ratio_term_hand_worked() -> None:
    # [0,0,2,1] (w=2, h=1) vs [0,0,1,2]: I = 1, U = 3, IoU = 1/3; enclosing [0,0,2,2],
    # diagonal² 8; centres (1, 0.5), (0.5, 1): ρ² = 0.5.
    # v = 4/π² (atan(1/2) - atan(2))², α = v / (1 - IoU + v).
    out = _all([[0.0, 0.0, 2.0, 1.0]], [[0.0, 0.0, 1.0, 2.0]])
    diou = 1 - 1 / 3 + 0.5 / 8
    v = 4 / math.pi**2 * (math.atan(0.5) - math.atan(2.0)) ** 2
    _close(out["diou"], diou)
    _close(out["ciou"], diou + v / (1 - 1 / 3 + v) * v)


def test_zero_area_boxes_are_finite_with_finite_gradients() -> None:
    preds = torch.tensor(
        [
            [1.0, 1.0, 1.0, 1.0],  # a point inside [0,0,2,2]
            [0.0, 0.0, 2.0, 0.0],  # a horizontal segment (h = 0)
            [1.0, 1.0, 1.0, 1.0],  # a point on itself
        ],
        dtype=torch.float64,
        requires_grad=True,
    )
    target = torch.tensor(
        [[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 1.0, 1.0]],
        dtype=torch.float64,
        requires_grad=True,
    )
    out = {name: registry.get(name).build()(preds, target) for name in NAMES}
    # point in [0,0,2,2]: I = 0, U = 4, enclosing = target (GIoU 0), same centre (ρ = 0).
    # atan2(0, 0) := 0 vs atan2(2, 2) = π/4: v = 4/π² (π/4)² = 1/4, α = 0.25 / 1.25 = 0.2
    # segment: I = 0, U = 4; centres (1,0), (1,1): ρ² = 1, diagonal² 8; atan2(2, 0) = π/2,
    # as torchvision's atan(2/0); v = 1/4 again.
    # point on itself: I = U = A_c = 0; every penalty is 0/eps = 0; unitbox log(eps/eps) = 0.
    expected = {
        "iou": [1.0, 1.0, 1.0],
        "giou": [1.0, 1.0, 1.0],
        "diou": [1.0, 1.125, 1.0],
        "ciou": [1.05, 1.175, 1.0],
        "unitbox": [math.log((4 + EPS) / EPS), math.log((4 + EPS) / EPS), 0.0],
    }
    for name in NAMES:
        np.testing.assert_allclose(out[name].detach().numpy(), expected[name], rtol=1e-6)
        grads = torch.autograd.grad(out[name].sum(), (preds, target))
        assert all(bool(torch.isfinite(g).all()) for g in grads), name


# -- the numpy re-implementation ----------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", NAMES)
def test_matches_numpy_formula(name: str, dtype: torch.dtype, device: str) -> None:
    inputs = _pairs(10, 64, dtype)
    # a few far-apart pairs as well: IoU = 0 and only the penalties move
    inputs["target"][:8] += 20.0
    p, t = inputs["preds"], inputs["target"]
    out = registry.get(name).build()(p.to(device), t.to(device)).cpu()
    ref = _numpy_losses(p.double().numpy(), t.double().numpy())[name]
    assert out.dtype == dtype
    torch.testing.assert_close(out, torch.from_numpy(ref).to(dtype), **tol(dtype))


def test_sampler_gives_varied_overlaps() -> None:
    inputs = _pairs(11, 200)
    iou = 1 - boxes.iou(inputs["preds"], inputs["target"])
    assert float(iou.min()) < 0.05 and float(iou.max()) > 0.8
    assert bool(((iou > 0.2) & (iou < 0.7)).any())


# -- contract checks ----------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_module_equals_functional(name: str) -> None:
    spec = registry.get(name)
    inputs = _pairs(12, 9)
    for eps in (EPS, 1e-3):
        expected = spec.functional(inputs["preds"], inputs["target"], eps)
        torch.testing.assert_close(spec.build(eps=eps)(**inputs), expected, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["iou", "giou", "diou", "unitbox"])
def test_gradcheck(name: str) -> None:
    inputs = _pairs(13, 4)
    leaves = (inputs["preds"].requires_grad_(True), inputs["target"].requires_grad_(True))
    assert torch.autograd.gradcheck(registry.get(name).build(), leaves)


def test_ciou_gradient_treats_alpha_as_a_constant() -> None:
    # torchvision computes α under no_grad, so the gradient is that of DIoU + α₀ v with α₀
    # frozen at the current boxes; gradcheck that function, then compare the two gradients.
    inputs = _pairs(14, 4)
    p, t = inputs["preds"], inputs["target"]
    iou0 = torch.from_numpy(1 - _numpy_losses(p.numpy(), t.numpy())["iou"])

    def aspect(b: torch.Tensor) -> torch.Tensor:
        return torch.atan2(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])

    def v_of(pp: torch.Tensor, tt: torch.Tensor) -> torch.Tensor:
        return 4 / math.pi**2 * (aspect(tt) - aspect(pp)) ** 2

    with torch.no_grad():
        v = v_of(p, t)
        alpha0 = v / (1 - iou0 + v + EPS)

    def frozen(pp: torch.Tensor, tt: torch.Tensor) -> torch.Tensor:
        return boxes.diou(pp, tt) + alpha0 * v_of(pp, tt)

    leaves = (p.clone().requires_grad_(True), t.clone().requires_grad_(True))
    assert torch.autograd.gradcheck(frozen, leaves)
    torch.testing.assert_close(frozen(*leaves), boxes.ciou(*leaves))
    weights = torch.rand(4, generator=_gen(15), dtype=torch.float64)
    want = torch.autograd.grad((frozen(*leaves) * weights).sum(), leaves)
    got = torch.autograd.grad((boxes.ciou(*leaves) * weights).sum(), leaves)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("name", NAMES)
def test_bad_inputs_name_the_argument(name: str) -> None:
    spec = registry.get(name)
    inputs = _pairs(16, 3, torch.float32)
    with pytest.raises(ValueError, match=r"`preds` to have shape \[N, 4\], got \[3, 5\]"):
        spec.check_inputs({**inputs, "preds": torch.rand(3, 5)})
    with pytest.raises(ValueError, match="axis N of `target`"):
        spec.check_inputs({**inputs, "target": inputs["target"][:2]})
    flipped = inputs["target"].clone()
    flipped[1, [0, 2]] = flipped[1, [2, 0]]  # x1 > x2
    with pytest.raises(ValueError, match=r"`target` boxes .* x2 >= x1.*at index 1"):
        spec.check_inputs({**inputs, "target": flipped})
    nan = inputs["preds"].clone()
    nan[0, 0] = float("nan")
    with pytest.raises(ValueError, match="`preds` to hold finite coordinates"):
        spec.check_inputs({**inputs, "preds": nan})
    with pytest.raises(ValueError, match="`eps` to be positive, got 0"):
        spec.check_inputs(inputs, {"eps": 0.0})
    assert spec.check_inputs(inputs) == 3


@pytest.mark.parametrize("name", NAMES)
def test_empty_batch(name: str) -> None:
    out = registry.get(name).build()(torch.zeros(0, 4), torch.zeros(0, 4))
    assert out.shape == (0,)
    assert out.dtype == torch.float32


@pytest.mark.parametrize("name", NAMES)
def test_scripted_matches_eager(name: str) -> None:
    module = registry.get(name).build()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = torch.jit.script(module)
    for n in (0, 1, 7):
        inputs = _pairs(17 + n, n, torch.float32)
        torch.testing.assert_close(scripted(**inputs), module(**inputs), rtol=0, atol=0)


def test_the_fast_box_check_never_passes_a_bad_box() -> None:
    """``_well_formed`` (the served path's one-pass check) against the definition, on boxes
    with inf, NaN, swapped corners and float32-overflowing sides planted at random."""
    rng = np.random.default_rng(11)
    bad_values = [np.inf, -np.inf, np.nan, 3e38, -3e38]
    for trial in range(300):
        xy = rng.uniform(-1e4, 1e4, (64, 2))
        b = np.concatenate([xy, xy + rng.uniform(0, 1e3, (64, 2))], 1).astype(np.float32)
        for _ in range(int(rng.integers(0, 3))):
            i, j = int(rng.integers(64)), int(rng.integers(4))
            if rng.random() < 0.5:
                b[i, j] = bad_values[int(rng.integers(len(bad_values)))]
            else:
                b[i, [0, 2]] = b[i, [2, 0]]
        valid = bool(np.isfinite(b).all() and (b[:, 2:] >= b[:, :2]).all())
        fast = boxes._well_formed(torch.from_numpy(b))
        assert not fast or valid, f"trial {trial}: passed boxes that are not well formed"
        if valid and np.isfinite(b[:, 2:].astype(np.float32) - b[:, :2]).all():
            assert fast, f"trial {trial}: refused well-formed boxes"


def test_the_host_check_passes_only_what_validate_passes() -> None:
    """``host_check`` lets the server skip ``validate``: it may say True only where
    ``validate`` passes, and must say True for the common well-formed float32 request."""
    spec = registry.get("giou")
    params = spec.resolve_params()
    rng = np.random.default_rng(5)
    xy = rng.uniform(0, 100, (32, 2))
    good = np.concatenate([xy, xy + rng.uniform(0, 9, (32, 2))], 1).astype(np.float32)
    assert spec.host_check(params, {"preds": good, "target": good})
    assert spec.host_check(params, {"preds": good[:0], "target": good[:0]})
    swapped = good.copy()
    swapped[3, [0, 2]] = swapped[3, [2, 0]] + [1, -1]
    nan = good.copy()
    nan[7, 1] = np.nan
    for bad in (swapped, nan):
        assert not spec.host_check(params, {"preds": good, "target": bad})
        with pytest.raises(ValueError, match="target"):
            spec.validate(
                params, {"preds": torch.from_numpy(good), "target": torch.from_numpy(bad)}
            )
    # a side of -0.0 (x1 = +0.0, x2 = -0.0) is well formed: the bit test leaves it to validate
    signed = good.copy()
    signed[2] = [0.0, 0.0, -0.0, 1.0]
    assert not spec.host_check(params, {"preds": good, "target": signed})
    spec.validate(params, {"preds": torch.from_numpy(good), "target": torch.from_numpy(signed)})
    # layouts it does not read say False (validate decides), never True
    for other in (good.astype(np.float64), np.asfortranarray(good), good[:, :3]):
        assert not spec.host_check(params, {"preds": other, "target": good})
    assert not spec.host_check({**params, "eps": 0.0}, {"preds": good, "target": good})
