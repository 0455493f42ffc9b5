"""Adversarial (GAN) losses from the discriminator's outputs, per sample.

``real`` and ``fake`` are the discriminator's raw outputs (logits; a WGAN critic's scores)
on real samples and on generated ones, ``Tensor[N, P]``: ``P = 1`` for one output per
sample, or a PatchGAN map flattened to ``P = H W`` outputs, averaged per sample. (The
functions take any ``[N, *]``; graphs take ``[N, P]`` so that a missing batch axis is an
error rather than a different batch.) The sample ``i`` of ``real`` and of ``fake``
are scored together, so both carry the same batch size; pair them as the training loop
does. Every function returns ``Tensor[N]``, to be minimised by the player it names
(``_d``: the discriminator, ``_g``: the generator).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from ._utils import check_finite, check_positive, per_sample_mean, softplus
from .pixel import l1
from .registry import MetricSpec, ParamSpec, TensorSpec, register
from .samples import adversarial as samples

# softplus is ``_utils.softplus`` (Exp, Log, Abs, Max, Where), not F.softplus: that exports
# as ONNX's Softplus, which the ONNX operator set defines as log(exp(x) + 1) and leaves to
# each runtime to evaluate stably (onnxruntime's CPU kernel does; the naive form is inf
# from x ~ 89 and 0 below x ~ -17).
FAMILY = "adversarial"
REAL = TensorSpec("real", ("N", "P"), "float32", "discriminator logits on real samples")
FAKE = TensorSpec("fake", ("N", "P"), "float32", "discriminator logits on generated samples")
SCORE = (TensorSpec("score", ("N",), "float32", "per-sample loss"),)
_GOODFELLOW = "Goodfellow et al. 2014, Generative Adversarial Nets, arXiv:1406.2661"
_MAO = "Mao et al. 2017, Least Squares GANs, arXiv:1611.04076"
_ARJOVSKY = "Arjovsky et al. 2017, Wasserstein GAN, arXiv:1701.07875"


# -- functional core ----------------------------------------------------------------------
def gan_minmax_d(real: Tensor, fake: Tensor) -> Tensor:
    """Discriminator loss of the minimax GAN: ``-log D(x) - log(1 - D(G(z)))``.

    With ``D = σ(logit)``: ``softplus(-real) + softplus(fake)``, averaged over patches —
    ``F.binary_cross_entropy_with_logits`` with labels 1 for real and 0 for fake, summed.
    Some libraries halve it (the average of the two BCE terms). Goodfellow et al. 2014.
    """
    return per_sample_mean(softplus(-real)) + per_sample_mean(softplus(fake))


def gan_minmax_g(fake: Tensor) -> Tensor:
    """Generator loss of the minimax GAN: ``log(1 - D(G(z))) = -softplus(fake)``.

    The saturating form of the paper's value function: it is <= 0 and its gradient
    vanishes when the discriminator wins; see :func:`gan_nonsaturating_g`.
    """
    return per_sample_mean(-softplus(fake))


def gan_nonsaturating_g(fake: Tensor) -> Tensor:
    """Non-saturating generator loss: ``-log D(G(z)) = softplus(-fake)``.

    BCE with logits against label 1, the heuristic of Goodfellow et al. 2014, §3, that
    most implementations (DCGAN, pix2pix) train with.
    """
    return per_sample_mean(softplus(-fake))


def lsgan_d(real: Tensor, fake: Tensor, a: float = 0.0, b: float = 1.0) -> Tensor:
    """LSGAN discriminator loss: ``½ (D(x) - b)² + ½ (D(G(z)) - a)²`` on raw outputs.

    Mao et al. 2017 with the 0-1 coding a = 0 (fake), b = 1 (real); the -1/1/0 coding of
    their §3.2.2 is a = -1, b = 1, c = 0. pix2pix/CycleGAN's ``MSELoss`` drops the ½.
    """
    return 0.5 * per_sample_mean((real - b).square()) + 0.5 * per_sample_mean((fake - a).square())


def lsgan_g(fake: Tensor, c: float = 1.0) -> Tensor:
    """LSGAN generator loss: ``½ (D(G(z)) - c)²`` on raw outputs, c = 1 (Mao et al. 2017)."""
    return 0.5 * per_sample_mean((fake - c).square())


def wgan_d(real: Tensor, fake: Tensor) -> Tensor:
    """WGAN critic loss: ``D(G(z)) - D(x)``, the negated Wasserstein estimate.

    Arjovsky et al. 2017; weight clipping or a gradient penalty is the training loop's job.
    """
    return per_sample_mean(fake) - per_sample_mean(real)


def wgan_g(fake: Tensor) -> Tensor:
    """WGAN generator loss: ``-D(G(z))`` (Arjovsky et al. 2017)."""
    return -per_sample_mean(fake)


def cycle_consistency(preds: Tensor, target: Tensor, weight: float = 10.0) -> Tensor:
    """Cycle-consistency loss: ``λ mean |F(G(x)) - x|`` per sample, λ = ``weight`` = 10.

    preds (Tensor[N, *]) reconstructions ``F(G(x))``; target (Tensor[N, *]) originals ``x``.
    One direction; CycleGAN adds the same term for ``G(F(y))`` and ``y``.
    Zhu et al. 2017, https://arxiv.org/abs/1703.10593.
    """
    return weight * l1(preds, target)


# -- modules ------------------------------------------------------------------------------
class GANMinimaxD(nn.Module):
    def forward(self, real: Tensor, fake: Tensor) -> Tensor:
        return gan_minmax_d(real, fake)


class GANMinimaxG(nn.Module):
    def forward(self, fake: Tensor) -> Tensor:
        return gan_minmax_g(fake)


class GANNonSaturatingG(nn.Module):
    def forward(self, fake: Tensor) -> Tensor:
        return gan_nonsaturating_g(fake)


class LSGAND(nn.Module):
    def __init__(self, a: float = 0.0, b: float = 1.0) -> None:
        super().__init__()
        self.a = float(a)
        self.b = float(b)

    def forward(self, real: Tensor, fake: Tensor) -> Tensor:
        return lsgan_d(real, fake, self.a, self.b)


class LSGANG(nn.Module):
    def __init__(self, c: float = 1.0) -> None:
        super().__init__()
        self.c = float(c)

    def forward(self, fake: Tensor) -> Tensor:
        return lsgan_g(fake, self.c)


class WGAND(nn.Module):
    def forward(self, real: Tensor, fake: Tensor) -> Tensor:
        return wgan_d(real, fake)


class WGANG(nn.Module):
    def forward(self, fake: Tensor) -> Tensor:
        return wgan_g(fake)


class CycleConsistency(nn.Module):
    def __init__(self, weight: float = 10.0) -> None:
        super().__init__()
        self.weight = float(weight)

    def forward(self, preds: Tensor, target: Tensor) -> Tensor:
        return cycle_consistency(preds, target, self.weight)


# -- domain checks ------------------------------------------------------------------------
def _validate_finite(params: Mapping[str, Any], inputs: Mapping[str, Tensor]) -> None:
    for name, tensor in inputs.items():
        check_finite(name, tensor)


def _validate_cycle(params: Mapping[str, Any], inputs: Mapping[str, Tensor]) -> None:
    check_positive("weight", params["weight"], allow_zero=True)
    _validate_finite(params, inputs)


# -- registry -----------------------------------------------------------------------------
def _spec(
    name, module, functional, inputs, summary, paper, oracle, params=(), validate=None, kind=""
):
    images = inputs[0].shape[-1] == "*"
    return register(
        MetricSpec(
            name=name,
            family=FAMILY,
            module=module,
            functional=functional,
            inputs=inputs,
            outputs=SCORE,
            params=params,
            higher_is_better=False,
            paper=paper,
            oracle=oracle,
            sample=samples.sampler(*(t.name for t in inputs)),
            regimes=samples.regimes_of(kind, *(t.name for t in inputs)),
            summary=summary,
            validate=validate or _validate_finite,
            example_sizes={"N": 3, "C": 3, "H": 4, "W": 5} if images else {"N": 3, "P": 6},
            min_sizes={} if images else {"P": 1},
        )
    )


_BCE = "torch.nn.functional.binary_cross_entropy_with_logits"
_spec(
    "gan_minmax_d",
    GANMinimaxD,
    gan_minmax_d,
    (REAL, FAKE),
    "minimax GAN discriminator loss -log D(x) - log(1 - D(G(z)))",
    _GOODFELLOW,
    f"{_BCE} (labels 1 real, 0 fake)",
    kind="logistic",
)
_spec(
    "gan_minmax_g",
    GANMinimaxG,
    gan_minmax_g,
    (FAKE,),
    "minimax (saturating) generator loss log(1 - D(G(z)))",
    _GOODFELLOW,
    f"-{_BCE} (label 0)",
    kind="logistic",
)
_spec(
    "gan_nonsaturating_g",
    GANNonSaturatingG,
    gan_nonsaturating_g,
    (FAKE,),
    "non-saturating generator loss -log D(G(z))",
    _GOODFELLOW,
    f"{_BCE} (label 1)",
    kind="logistic",
)
_spec(
    "lsgan_d",
    LSGAND,
    lsgan_d,
    (REAL, FAKE),
    "least-squares discriminator loss, a=0 b=1",
    _MAO,
    "torch.nn.functional.mse_loss / 2",
    (
        ParamSpec("a", 0.0, "target output for generated samples"),
        ParamSpec("b", 1.0, "target output for real samples"),
    ),
    kind="least_squares",
)
_spec(
    "lsgan_g",
    LSGANG,
    lsgan_g,
    (FAKE,),
    "least-squares generator loss, c=1",
    _MAO,
    "torch.nn.functional.mse_loss / 2",
    (ParamSpec("c", 1.0, "output the generator wants for its samples"),),
    kind="least_squares",
)
_spec(
    "wgan_d",
    WGAND,
    wgan_d,
    (REAL, FAKE),
    "WGAN critic loss D(G(z)) - D(x)",
    _ARJOVSKY,
    "hand-worked means",
    kind="critic",
)
_spec(
    "wgan_g",
    WGANG,
    wgan_g,
    (FAKE,),
    "WGAN generator loss -D(G(z))",
    _ARJOVSKY,
    "hand-worked means",
    kind="critic",
)
_spec(
    "cycle_consistency",
    CycleConsistency,
    cycle_consistency,
    (
        TensorSpec("preds", ("N", "*"), "float32", "reconstructions F(G(x))"),
        TensorSpec("target", ("N", "*"), "float32", "originals x"),
    ),
    "lambda * L1 of reconstruction vs original",
    "Zhu et al. 2017, CycleGAN, arXiv:1703.10593",
    "10 * torch.nn.functional.l1_loss",
    (ParamSpec("weight", 10.0, "lambda, the cycle term's weight"),),
    _validate_cycle,
    kind="images",
)
