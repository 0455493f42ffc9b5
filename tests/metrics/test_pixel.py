"""Pixel-wise and classification losses against torch.nn.functional, scipy and hand values."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import scipy.special
import torch
import torch.nn.functional as F

from cvscore.metrics import pixel, registry
from cvscore.server import runtimes

from ..conftest import DEVICES, tol

DTYPES = (torch.float32, torch.float64)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _per_sample(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1).mean(1)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_regression_losses_match_functional(device: str, dtype: torch.dtype) -> None:
    g = _gen(1)
    preds = torch.randn(6, 3, 8, 9, generator=g, dtype=dtype).to(device)
    target = torch.randn(6, 3, 8, 9, generator=g, dtype=dtype).to(device)
    cases = {
        "l1": F.l1_loss(preds, target, reduction="none"),
        "mse": F.mse_loss(preds, target, reduction="none"),
    }
    for name, elementwise in cases.items():
        out = registry.get(name).build().to(device)(preds, target)
        torch.testing.assert_close(out, _per_sample(elementwise), **tol(dtype))
    for beta in (0.0, 0.3, 1.0, 2.5):
        out = pixel.SmoothL1(beta).to(device)(preds, target)
        ref = F.smooth_l1_loss(preds, target, reduction="none", beta=beta)
        torch.testing.assert_close(out, _per_sample(ref), **tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    ("weight", "ignore_index", "smoothing"),
    [(None, -100, 0.0), ([0.2, 1.0, 3.0, 0.5], -100, 0.0), (None, 2, 0.1), ([1, 2, 3, 4], 1, 0.2)],
)
def test_cross_entropy_matches_functional_elementwise(weight, ignore_index, smoothing, dtype):
    g = _gen(2)
    preds = torch.randn(5, 4, 6, 7, generator=g, dtype=dtype) * 3
    target = torch.randint(0, 4, (5, 6, 7), generator=g)
    w = None if weight is None else torch.tensor(weight, dtype=dtype)
    ref = F.cross_entropy(
        preds,
        target,
        weight=w,
        ignore_index=ignore_index,
        label_smoothing=smoothing,
        reduction="none",
    )
    valid = (target != ignore_index).reshape(5, -1).sum(1).clamp(min=1).to(dtype)
    expected = ref.reshape(5, -1).sum(1) / valid
    out = pixel.CrossEntropy(weight, ignore_index, smoothing).to(dtype)(preds, target)
    torch.testing.assert_close(out, expected, **tol(dtype))


def test_cross_entropy_classification_equals_reduction_none_and_mean() -> None:
    g = _gen(3)
    preds = torch.randn(9, 5, generator=g)
    target = torch.randint(0, 5, (9,), generator=g)
    out = pixel.CrossEntropy()(preds, target)
    torch.testing.assert_close(out, F.cross_entropy(preds, target, reduction="none"))
    # unweighted, nothing ignored: the batch mean of the scores is torch's "mean"
    torch.testing.assert_close(out.mean(), F.cross_entropy(preds, target))


def test_cross_entropy_hand_worked() -> None:
    # two equal logits: p = 1/2 for each class, so -log p = log 2 whatever the label
    out = pixel.CrossEntropy()(torch.zeros(1, 2), torch.tensor([1]))
    assert out.item() == pytest.approx(math.log(2))
    # every position ignored: no valid term, the sample scores 0 rather than 0/0
    out = pixel.CrossEntropy(ignore_index=0)(
        torch.randn(1, 3, 2), torch.zeros(1, 2, dtype=torch.long)
    )
    assert out.item() == 0.0


def test_binary_losses_match_functional() -> None:
    g = _gen(4)
    logits = torch.randn(4, 10, 11, generator=g, dtype=torch.float64) * 4
    target = torch.rand(4, 10, 11, generator=g, dtype=torch.float64)
    probs = torch.sigmoid(logits)
    torch.testing.assert_close(
        pixel.BinaryCrossEntropy()(probs, target),
        _per_sample(F.binary_cross_entropy(probs, target, reduction="none")),
    )
    for pw in (1.0, 0.25, 4.0):
        torch.testing.assert_close(
            pixel.BCEWithLogits(pw)(logits, target),
            _per_sample(
                F.binary_cross_entropy_with_logits(
                    logits,
                    target,
                    pos_weight=torch.tensor(pw, dtype=torch.float64),
                    reduction="none",
                )
            ),
        )


def test_binary_cross_entropy_clamps_log_at_minus_100_like_torch() -> None:
    preds = torch.tensor([[0.0, 1.0]])
    target = torch.tensor([[1.0, 0.0]])
    # log(0) is clamped to -100 in both terms: the mean of two 100s
    assert pixel.BinaryCrossEntropy()(preds, target).item() == pytest.approx(100.0)
    assert F.binary_cross_entropy(preds, target).item() == pytest.approx(100.0)


def test_balanced_bce() -> None:
    g = _gen(5)
    logits = torch.randn(3, 50, generator=g, dtype=torch.float64)
    target = (torch.rand(3, 50, generator=g) > 0.7).double()
    half = pixel.BalancedBCE(0.5)(logits, target)
    plain = _per_sample(F.binary_cross_entropy_with_logits(logits, target, reduction="none"))
    torch.testing.assert_close(half, 0.5 * plain)  # alpha = 1/2 weighs both terms by 1/2
    # hand-worked: x = 0 gives log σ = log(1 - σ) = -log 2; alpha=0.8 on a positive -> 0.8 log 2
    out = pixel.BalancedBCE(0.8)(torch.zeros(1, 1), torch.ones(1, 1))
    assert out.item() == pytest.approx(0.8 * math.log(2))
    out = pixel.BalancedBCE(0.8)(torch.zeros(1, 1), torch.zeros(1, 1))
    assert out.item() == pytest.approx(0.2 * math.log(2))


def test_focal_hand_worked_and_identities() -> None:
    # x = 0, t = 1: p_t = 1/2, CE = log 2, (1 - p_t)^2 = 1/4, alpha_t = 0.25
    out = pixel.Focal()(torch.zeros(1, 1), torch.ones(1, 1))
    assert out.item() == pytest.approx(math.log(2) * 0.25 * 0.25)
    # same point as a negative: alpha_t = 0.75
    out = pixel.Focal()(torch.zeros(1, 1), torch.zeros(1, 1))
    assert out.item() == pytest.approx(math.log(2) * 0.25 * 0.75)
    g = _gen(6)
    logits = torch.randn(4, 30, generator=g, dtype=torch.float64) * 3
    target = (torch.rand(4, 30, generator=g) > 0.5).double()
    bce = _per_sample(F.binary_cross_entropy_with_logits(logits, target, reduction="none"))
    # gamma = 0 and no alpha weighting is plain BCE with logits
    torch.testing.assert_close(pixel.Focal(0.0, -1.0)(logits, target), bce)
    # independent elementwise formula (torchvision's sigmoid_focal_loss), YOLOv5's gamma=1.5
    p = torch.sigmoid(logits)
    p_t = p * target + (1 - p) * (1 - target)
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    ref = (0.25 * target + 0.75 * (1 - target)) * ce * (1 - p_t) ** 1.5
    torch.testing.assert_close(pixel.Focal(1.5, 0.25)(logits, target), _per_sample(ref))


def test_kl_div_matches_scipy_and_torch() -> None:
    rng = np.random.default_rng(7)
    p = rng.dirichlet(np.ones(6), size=5)
    q = rng.dirichlet(np.ones(6), size=5)
    p[0, 2] = 0.0  # 0 log 0 = 0
    p[0] /= p[0].sum()
    out = pixel.KLDiv()(torch.from_numpy(np.log(q)), torch.from_numpy(p))
    expected = scipy.special.rel_entr(p, q).sum(1)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-12)
    batchmean = F.kl_div(torch.from_numpy(np.log(q)), torch.from_numpy(p), reduction="batchmean")
    assert out.mean().item() == pytest.approx(batchmean.item(), rel=1e-12)
    # identical distributions diverge by nothing
    same = pixel.KLDiv()(torch.from_numpy(np.log(q)), torch.from_numpy(q))
    np.testing.assert_allclose(same.numpy(), 0.0, atol=1e-15)


def test_domain_errors_name_the_input() -> None:
    ce = registry.get("cross_entropy")
    preds = torch.randn(2, 3, 4)
    with pytest.raises(ValueError, match=r"`target`.*\[0, 2\].*got 3"):
        ce.check_inputs({"preds": preds, "target": torch.full((2, 4), 3)})
    with pytest.raises(ValueError, match=r"`weight`.*3.*got 2"):
        ce.check_inputs(
            {"preds": preds, "target": torch.zeros(2, 4, dtype=torch.long)}, {"weight": [1, 2]}
        )
    with pytest.raises(ValueError, match="`target` to have dtype int64, got float32"):
        ce.check_inputs({"preds": preds, "target": torch.zeros(2, 4)})
    with pytest.raises(ValueError, match=r"trailing axes of `target`"):
        ce.check_inputs({"preds": preds, "target": torch.zeros(2, 5, dtype=torch.long)})
    bce = registry.get("binary_cross_entropy")
    with pytest.raises(ValueError, match=r"`preds` to hold values in \[0, 1\]"):
        bce.check_inputs({"preds": torch.full((2, 3), 1.5), "target": torch.zeros(2, 3)})
    with pytest.raises(ValueError, match="`preds` to hold log-probabilities"):
        registry.get("kl_div").check_inputs({"preds": torch.ones(2, 3), "target": torch.ones(2, 3)})
    with pytest.raises(ValueError, match="`gamma` to be non-negative, got -1"):
        registry.get("focal").check_inputs(
            {"preds": torch.zeros(1, 2), "target": torch.zeros(1, 2)}, {"gamma": -1.0}
        )
    with pytest.raises(ValueError, match="Unknown parameter `gama`"):
        registry.get("focal").build(gama=1.0)


def test_empty_batch_scores_to_empty() -> None:
    for name in ("l1", "mse", "smooth_l1", "bce_with_logits", "focal"):
        out = registry.get(name).build()(torch.zeros(0, 5), torch.zeros(0, 5))
        assert out.shape == (0,)
    out = pixel.CrossEntropy()(torch.zeros(0, 3, 4), torch.zeros(0, 4, dtype=torch.long))
    assert out.shape == (0,)


@pytest.mark.parametrize("runtime", runtimes.RUNTIMES)
def test_balanced_bce_artifacts_survive_confident_logits(zoo_repo: Path, runtime: str) -> None:
    # alpha = 0.5, target 1: loss = 0.5 softplus(-x). For x = -15, -17, -20 that is
    # 0.5 (15 + log1p(e^-15)) = 7.5000001, 8.5000000, 10.0 (ONNX's Log(Sigmoid(x)) gave
    # 7.42, 8.12, inf); for x = +20 it is 0.5 log1p(e^-20) = 1.03e-9 (ONNX gave NaN).
    logits = np.array([[-15.0], [-17.0], [-20.0], [20.0], [-80.0], [80.0]], dtype=np.float32)
    target = np.ones_like(logits)
    expected = 0.5 * np.logaddexp(0.0, -logits.astype(np.float64))[:, 0]
    model = runtimes.load(zoo_repo, "balanced_bce", runtime)
    out = model.run({"preds": logits, "target": target})["score"]
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-12)
    # negatives: 0.5 softplus(x), the mirror image
    out = model.run({"preds": -logits, "target": np.zeros_like(logits)})["score"]
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-12)
