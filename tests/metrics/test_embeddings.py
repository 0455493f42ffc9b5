"""Embedding losses against torch.nn.functional, numpy and hand-worked values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cvscore.metrics import embeddings, registry

from ..conftest import tol

DTYPES = (torch.float32, torch.float64)
NAMES = ("triplet", "contrastive", "cosface", "triplet_center", "cosine_similarity")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    ("margin", "p", "swap"), [(1.0, 2.0, False), (0.3, 1.0, True), (0.5, 3.0, True)]
)
def test_triplet_matches_functional(
    margin: float, p: float, swap: bool, dtype: torch.dtype
) -> None:
    g = _gen(1)
    a, pos, neg = (torch.randn(40, 8, generator=g, dtype=dtype) for _ in range(3))
    out = embeddings.Triplet(margin, p, swap=swap)(a, pos, neg)
    ref = F.triplet_margin_loss(a, pos, neg, margin=margin, p=p, swap=swap, reduction="none")
    torch.testing.assert_close(out, ref, **tol(dtype))
    assert (out > 0).any() and (out == 0).any()  # both sides of the hinge are exercised


def test_triplet_hand_worked() -> None:
    # d(a, p) = 1, d(a, n) = 3 (eps = 0): max(1 - 3 + margin, 0) is 0 for margin 1, 1 for margin 3
    a, p, n = torch.zeros(1, 2), torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 3.0]])
    assert embeddings.triplet(a, p, n, 1.0, eps=0.0).item() == 0.0
    assert embeddings.triplet(a, p, n, 3.0, eps=0.0).item() == pytest.approx(1.0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_contrastive_matches_pairwise_distance_formula(dtype: torch.dtype) -> None:
    g = _gen(2)
    x1, x2 = (
        torch.randn(50, 6, generator=g, dtype=dtype),
        torch.randn(50, 6, generator=g, dtype=dtype),
    )
    y = (torch.rand(50, generator=g) > 0.5).to(dtype)
    d = F.pairwise_distance(x1, x2).numpy()
    yn = y.numpy()
    expected = (1 - yn) * 0.5 * d**2 + yn * 0.5 * np.maximum(0.0, 3.0 - d) ** 2
    out = embeddings.Contrastive(margin=3.0)(x1, x2, y)
    np.testing.assert_allclose(out.numpy(), expected, **tol(dtype))


def test_contrastive_hand_worked() -> None:
    # x1 = (0, 0), x2 = (3, 4): D = 5. Similar (Y = 0): D²/2 = 12.5. Dissimilar (Y = 1):
    # beyond margin 1 -> 0; within margin 6 -> (6 - 5)²/2 = 0.5
    x1, x2 = torch.zeros(3, 2), torch.tensor([[3.0, 4.0]]).expand(3, 2)
    out = embeddings.contrastive(x1, x2, torch.tensor([0.0, 1.0, 1.0]), margin=1.0, eps=0.0)
    assert out.tolist() == pytest.approx([12.5, 0.0, 0.0])
    out = embeddings.contrastive(x1[:1], x2[:1], torch.tensor([1.0]), margin=6.0, eps=0.0)
    assert out.item() == pytest.approx(0.5)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("s", "m"), [(64.0, 0.35), (30.0, 0.4), (10.0, 0.0)])
def test_cosface_matches_cross_entropy_on_margin_logits(
    s: float, m: float, dtype: torch.dtype
) -> None:
    g = _gen(3)
    x = torch.randn(30, 8, generator=g, dtype=dtype)
    w = torch.randn(5, 8, generator=g, dtype=dtype)
    y = torch.randint(0, 5, (30,), generator=g)
    cos = F.linear(F.normalize(x), F.normalize(w))
    ref = F.cross_entropy(s * (cos - m * F.one_hot(y, 5).to(dtype)), y, reduction="none")
    torch.testing.assert_close(embeddings.CosFace(s, m)(x, y, w), ref, **tol(dtype))


def test_cosface_hand_worked() -> None:
    # two orthogonal classes, embedding along class 0: cos = (1, 0); s = 1, m = 0.5:
    # logits (0.5, 0) -> -log(e^0.5 / (e^0.5 + 1))
    w = torch.eye(2)
    out = embeddings.cosface(torch.tensor([[2.0, 0.0]]), torch.tensor([0]), w, s=1.0, m=0.5)
    assert out.item() == pytest.approx(math.log1p(math.exp(-0.5)))


def _triplet_center_np(x: np.ndarray, y: np.ndarray, c: np.ndarray, margin: float) -> np.ndarray:
    d = 0.5 * ((x[:, None, :] - c[None, :, :]) ** 2).sum(-1)
    pos = d[np.arange(len(y)), y]
    d[np.arange(len(y)), y] = np.inf
    return np.maximum(pos + margin - d.min(1), 0.0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_triplet_center_matches_numpy(dtype: torch.dtype) -> None:
    g = _gen(4)
    x = torch.randn(40, 6, generator=g, dtype=dtype)
    c = torch.randn(7, 6, generator=g, dtype=dtype)
    y = torch.randint(0, 7, (40,), generator=g)
    out = embeddings.TripletCenter(margin=2.0)(x, y, c)
    expected = _triplet_center_np(x.numpy(), y.numpy(), c.numpy(), 2.0)
    np.testing.assert_allclose(out.numpy(), expected, **tol(dtype))
    assert (out > 0).any() and (out == 0).any()


def test_triplet_center_hand_worked() -> None:
    # f at its own centre (0, 0); other centres at distance 1 and 3: D = ||.||²/2 -> 0, 0.5, 4.5.
    # margin 5: max(0 + 5 - 0.5, 0) = 4.5; margin 0.25: 0
    c = torch.tensor([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0]])
    x, y = torch.zeros(1, 2), torch.tensor([0])
    assert embeddings.triplet_center(x, y, c, 5.0).item() == pytest.approx(4.5)
    assert embeddings.triplet_center(x, y, c, 0.25).item() == 0.0


@pytest.mark.parametrize("dtype", DTYPES)
def test_cosine_similarity_matches_functional(dtype: torch.dtype) -> None:
    g = _gen(5)
    x, y = (
        torch.randn(30, 9, generator=g, dtype=dtype),
        torch.randn(30, 9, generator=g, dtype=dtype),
    )
    x[0] = 0.0  # a zero vector: similarity 0, not NaN
    out = embeddings.CosineSimilarity()(x, y)
    torch.testing.assert_close(out, F.cosine_similarity(x, y, dim=1), **tol(dtype))
    assert out[0] == 0
    # parallel, opposite and orthogonal vectors: 1, -1, 0
    hand = embeddings.cosine_similarity(
        torch.tensor([[1.0, 2.0], [1.0, 2.0], [1.0, 0.0]]),
        torch.tensor([[2.0, 4.0], [-3.0, -6.0], [0.0, 5.0]]),
    )
    torch.testing.assert_close(hand, torch.tensor([1.0, -1.0, 0.0]))
    assert registry.get("cosine_similarity").higher_is_better


@pytest.mark.parametrize("dtype", DTYPES)
def test_norms_neither_overflow_nor_underflow(dtype: torch.dtype) -> None:
    # squaring first overflows float32 from norms ~1.8e19: the distance was inf, the
    # cosine 0 (x / inf), in every runtime. Norms are scaled by max |x| first.
    big, tiny = 1e20, 1e-20
    u = torch.tensor([[3.0, 4.0]], dtype=dtype)
    v = torch.tensor([[4.0, -3.0]], dtype=dtype)
    # d(a, p) = 10 · 5e20 = 5e21 (eps is below float32's resolution there), d(a, n) = 0
    out = embeddings.triplet(big * u, -big * u * 9, big * u, margin=1.0)
    assert out.item() == pytest.approx(5e21, rel=1e-6)
    for scale in (big, tiny, 1.0):
        cos = embeddings.cosine_similarity(scale * u, scale * (u + v), eps=1e-30)
        assert cos.item() == pytest.approx(2**-0.5, rel=1e-6)  # (3, 4) vs (7, 1): 25 / (5 √50)
    # F.normalize's convention below the eps: x / eps; zero stays zero
    x = torch.tensor([[0.0, 0.0], [3e-13, 4e-13], [3e19, 4e19]], dtype=dtype)
    expected = torch.tensor([[0.0, 0.0], [0.3, 0.4], [0.6, 0.8]], dtype=dtype)
    torch.testing.assert_close(embeddings._normalize(x, 1e-12), expected, **tol(dtype))
    # CosFace with a class weight of norm 1e20 and an embedding of norm 1e-10: the same loss
    # as with unit vectors
    w = torch.eye(2, dtype=dtype)
    unit = embeddings.cosface(u / 5, torch.tensor([0]), w, s=1.0, m=0.5)
    w_big = w * torch.tensor([[big], [1.0]], dtype=dtype)
    scaled = embeddings.cosface(1e-10 * u / 5, torch.tensor([0]), w_big, s=1.0, m=0.5)
    torch.testing.assert_close(scaled, unit, **tol(dtype))


@pytest.mark.parametrize("name", NAMES)
def test_empty_batch(name: str) -> None:
    spec = registry.get(name)
    inputs = spec.make_inputs(_gen(0), {"N": 0})
    spec.check_inputs(inputs)
    assert spec.build()(**inputs).shape == (0,)


def test_domain_errors_name_the_input() -> None:
    g = _gen(6)
    cosface = registry.get("cosface")
    inputs = cosface.make_inputs(g)
    with pytest.raises(ValueError, match=r"`target` to hold class indices in \[0, 3\], got 4"):
        cosface.check_inputs({**inputs, "target": torch.tensor([0, 1, 4])})
    with pytest.raises(ValueError, match="axis D of `weight`"):  # wrong embedding width
        cosface.check_inputs({**inputs, "weight": torch.randn(4, 6)})
    with pytest.raises(ValueError, match="`s` to be positive"):
        cosface.check_inputs(inputs, {"s": 0.0})
    center = registry.get("triplet_center")
    inputs = center.make_inputs(g)
    with pytest.raises(ValueError, match="axis K of `centers` to be at least 2"):
        center.check_inputs(
            {**inputs, "centers": torch.randn(1, 5), "target": torch.zeros(3, dtype=torch.int64)}
        )
    with pytest.raises(ValueError, match="`margin` to be positive, got -1"):
        center.check_inputs(inputs, {"margin": -1.0})
    with pytest.raises(ValueError, match="`target` to hold class indices"):
        center.check_inputs({**inputs, "target": torch.tensor([0, -1, 2])})
    triplet = registry.get("triplet")
    inputs = triplet.make_inputs(g)
    with pytest.raises(ValueError, match="`margin` to be positive, got 0"):
        triplet.check_inputs(inputs, {"margin": 0.0})
    with pytest.raises(ValueError, match="axis D of `negative`"):
        triplet.check_inputs({**inputs, "negative": torch.randn(3, 4)})
    contrastive = registry.get("contrastive")
    inputs = contrastive.make_inputs(g)
    with pytest.raises(ValueError, match=r"`target` to hold only 0 and 1, got 0\.5"):
        contrastive.check_inputs({**inputs, "target": torch.tensor([0.0, 0.5, 1.0])})
    with pytest.raises(ValueError, match="`eps` to be positive"):
        registry.get("cosine_similarity").check_inputs(
            registry.get("cosine_similarity").make_inputs(g), {"eps": 0.0}
        )
