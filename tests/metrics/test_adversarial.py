"""GAN losses against torch.nn.functional BCE / MSE / L1 and hand-worked values."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from cvscore.metrics import adversarial, registry

from ..conftest import tol

DTYPES = (torch.float32, torch.float64)
NAMES = (
    "gan_minmax_d", "gan_minmax_g", "gan_nonsaturating_g", "lsgan_d", "lsgan_g", "wgan_d",
    "wgan_g", "cycle_consistency",
)  # fmt: skip


def _logits(dtype: torch.dtype, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(6, 1, 5, 7, generator=g, dtype=dtype) * 3 for _ in range(2))  # type: ignore[return-value]


def _mean(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).mean(1)


@pytest.mark.parametrize("dtype", DTYPES)
def test_gan_losses_match_bce_with_logits(dtype: torch.dtype) -> None:
    real, fake = _logits(dtype)

    def bce(x: torch.Tensor, t: float) -> torch.Tensor:
        return _mean(F.binary_cross_entropy_with_logits(x, torch.full_like(x, t), reduction="none"))

    # D: BCE(real, 1) + BCE(fake, 0); G minimax: log(1 - D) = -BCE(fake, 0); non-saturating: BCE(fake, 1)
    torch.testing.assert_close(
        adversarial.gan_minmax_d(real, fake), bce(real, 1.0) + bce(fake, 0.0), **tol(dtype)
    )
    torch.testing.assert_close(adversarial.gan_minmax_g(fake), -bce(fake, 0.0), **tol(dtype))
    torch.testing.assert_close(adversarial.gan_nonsaturating_g(fake), bce(fake, 1.0), **tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_lsgan_and_cycle_match_mse_and_l1(dtype: torch.dtype) -> None:
    real, fake = _logits(dtype, 2)

    def mse(x: torch.Tensor, t: float) -> torch.Tensor:
        return _mean(F.mse_loss(x, torch.full_like(x, t), reduction="none"))

    out = adversarial.LSGAND()(real.flatten(1), fake.flatten(1))
    torch.testing.assert_close(out, 0.5 * mse(real, 1.0) + 0.5 * mse(fake, 0.0), **tol(dtype))
    out = adversarial.LSGAND(a=-1.0, b=1.0)(real, fake)  # the -1/1 coding of Mao et al. §3.2.2
    torch.testing.assert_close(out, 0.5 * mse(real, 1.0) + 0.5 * mse(fake, -1.0), **tol(dtype))
    torch.testing.assert_close(adversarial.LSGANG()(fake), 0.5 * mse(fake, 1.0), **tol(dtype))
    l1 = _mean(F.l1_loss(real, fake, reduction="none"))
    torch.testing.assert_close(adversarial.CycleConsistency()(real, fake), 10 * l1, **tol(dtype))


def test_hand_worked_values() -> None:
    # logit 0 is D = 1/2: -log(1/2) - log(1/2) = 2 ln 2; log(1 - 1/2) = -ln 2; -log(1/2) = ln 2
    zero = torch.zeros(2, 3)
    assert adversarial.gan_minmax_d(zero, zero).tolist() == pytest.approx([2 * math.log(2)] * 2)
    assert adversarial.gan_minmax_g(zero).tolist() == pytest.approx([-math.log(2)] * 2)
    assert adversarial.gan_nonsaturating_g(zero).tolist() == pytest.approx([math.log(2)] * 2)
    # a perfect LSGAN discriminator (real 1, fake 0) scores 0, its generator (1/2)(0 - 1)² = 1/2
    ones = torch.ones(1, 4)
    assert adversarial.lsgan_d(ones, torch.zeros(1, 4)).item() == 0.0
    assert adversarial.lsgan_g(torch.zeros(1, 4)).item() == pytest.approx(0.5)
    # WGAN: critic means 3 (real) and 1 (fake) -> D loss 1 - 3 = -2, G loss -1
    real, fake = torch.tensor([[2.0, 4.0]]), torch.tensor([[0.0, 2.0]])
    assert adversarial.wgan_d(real, fake).item() == -2.0
    assert adversarial.wgan_g(fake).item() == -1.0
    # cycle: reconstruction off by 0.1 everywhere -> 10 · 0.1 = 1
    x = torch.rand(2, 3, 4, 4)
    assert adversarial.cycle_consistency(x + 0.1, x).tolist() == pytest.approx([1.0, 1.0])
    # the saturating generator loss: gradient -σ(x) vanishes as D(G(z)) -> 0, the
    # non-saturating one's, σ(x) - 1, does not
    x = torch.tensor([[-8.0]], requires_grad=True)
    (g_sat,) = torch.autograd.grad(adversarial.gan_minmax_g(x).sum(), x)
    (g_ns,) = torch.autograd.grad(adversarial.gan_nonsaturating_g(x).sum(), x)
    assert abs(g_sat.item()) < 1e-3 < abs(g_ns.item())


def test_confident_logits_hand_worked() -> None:
    # softplus(x) = x + log(1 + e^-x): at ±80 the loss is 80 + 1.8e-35 or 1.8e-35 itself,
    # each to float32 precision (no inf, no 0 where the value is tiny but positive)
    tiny = math.log1p(math.exp(-80.0))
    x = torch.tensor([[80.0], [-80.0], [40.0], [-15.0]])
    expected = [tiny, 80.0, math.log1p(math.exp(-40.0)), 15.0 + math.log1p(math.exp(-15.0))]
    out = adversarial.gan_nonsaturating_g(x)
    assert out.tolist() == pytest.approx(expected, rel=1e-6)
    assert (out > 0).all()
    # a confidently right discriminator (real +80, fake -80) and a confidently wrong one
    right = adversarial.gan_minmax_d(torch.full((1, 3), 80.0), torch.full((1, 3), -80.0))
    wrong = adversarial.gan_minmax_d(torch.full((1, 3), -80.0), torch.full((1, 3), 80.0))
    assert right.item() == pytest.approx(2 * tiny, rel=1e-6)
    assert wrong.item() == pytest.approx(160.0, rel=1e-6)
    assert adversarial.gan_minmax_g(torch.full((1, 2), -80.0)).item() == pytest.approx(-tiny)


@pytest.mark.parametrize("name", NAMES)
def test_empty_batch(name: str) -> None:
    spec = registry.get(name)
    inputs = spec.make_inputs(torch.Generator().manual_seed(0), {"N": 0})
    spec.check_inputs(inputs)
    assert spec.build()(**inputs).shape == (0,)


def test_domain_errors_name_the_input() -> None:
    spec = registry.get("gan_minmax_d")
    real = torch.randn(3, 4)
    with pytest.raises(ValueError, match="`fake` to hold finite values"):
        spec.check_inputs({"real": real, "fake": torch.full((3, 4), float("inf"))})
    with pytest.raises(ValueError, match="axis P of `fake`"):  # different patch counts
        spec.check_inputs({"real": real, "fake": torch.randn(3, 5)})
    with pytest.raises(ValueError, match="`fake`"):  # a PatchGAN map must be flattened
        registry.get("wgan_g").check_inputs({"fake": torch.randn(3, 1, 4, 4)})
    cycle = registry.get("cycle_consistency")
    x = torch.rand(2, 3, 4, 4)
    with pytest.raises(ValueError, match="`weight` to be non-negative"):
        cycle.check_inputs({"preds": x, "target": x}, {"weight": -10.0})
