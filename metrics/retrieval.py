"""Embedding retrieval recall@k: a per-query top-k graph and its aggregator.

Each query is ranked against a gallery (an input without batch axis, ``[M, D]``) by cosine
similarity or by (negative squared) Euclidean distance; ties go to the lower gallery index.
For leave-one-out evaluation within one set, pass the set as both queries and gallery and
``exclude[i] = i``: that gallery item is removed from query ``i``'s ranking.

The graph returns, per query, ``counts[n, j]`` = the number of relevant gallery items (same
label) among the top ``ks[j]``, and in a last column the number of relevant items in the
gallery. The aggregator keeps them per query and reports both definitions in use:

* ``hit_rate@k`` (what metric-learning papers call Recall@K, e.g. Oh Song et al. 2016,
  https://arxiv.org/abs/1511.06452): the share of queries with at least one relevant item
  in the top k;
* ``recall@k`` (information retrieval): the mean over queries of
  ``|relevant ∩ top k| / |relevant|``.

Queries with no relevant item in the gallery are left out of both and counted in
``queries_without_relevant``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .registry import MetricSpec, ParamSpec, TensorSpec, register
from .states import RetrievalAggregator, check_ks

FAMILY = "dataset"
METRICS = ("cosine", "euclidean")


def recall_at_k(
    preds: Tensor,
    target: Tensor,
    gallery: Tensor,
    gallery_target: Tensor,
    exclude: Tensor,
    ks: list[int],
    metric: str = "cosine",
) -> Tensor:
    """Relevant items in each query's top k for every k, and relevant items in the gallery.

    preds (Tensor[N, D]) query embeddings; target (Tensor[N]) int64 query labels;
    gallery (Tensor[M, D]); gallery_target (Tensor[M]); exclude (Tensor[N]) int64 gallery
    index removed from each query's ranking (-1: none); ks the cut-offs (K of them).
    Returns ``Tensor[N, K + 1]`` in the embeddings' dtype: column ``j < K`` counts the
    relevant items among the top ``ks[j]``, column ``K`` the relevant items in the gallery.

    No sort: the k-th largest similarity ``v`` (``topk`` values, which do not depend on
    how ties are ordered) splits the gallery into ``> v`` (all in the top k) and ``== v``
    (the first ``k - #(> v)`` by index are in), so ties go to the lower gallery index.
    """
    if metric == "cosine":
        q = F.normalize(preds, dim=1, eps=1e-12)
        g = F.normalize(gallery, dim=1, eps=1e-12)
        sim = q @ g.t()
    else:
        sq = (preds * preds).sum(1)[:, None] + (gallery * gallery).sum(1)[None, :]
        sim = -(sq - 2.0 * (preds @ gallery.t())).clamp(min=0.0)
    m = gallery.shape[0]
    n = preds.shape[0]
    positions = torch.arange(m, device=preds.device)
    drop = positions[None, :] == exclude[:, None]
    sim = torch.where(drop, torch.full_like(sim, -math.inf), sim)
    rel = (target[:, None] == gallery_target[None, :]) & ~drop
    cuts = [int(k) for k in ks]
    k_max = 1
    for k in cuts:
        k_max = max(k_max, k)
    # Padding with -inf makes k_max a constant however small the gallery is.
    padded = torch.cat(
        [sim, torch.full((n, k_max), -math.inf, dtype=sim.dtype, device=sim.device)], 1
    )
    kth = torch.topk(padded, k_max, dim=1).values
    columns: list[Tensor] = []
    for k in cuts:
        value = kth[:, k - 1 : k]
        above = sim > value
        tied = sim == value
        room = k - above.sum(1, keepdim=True)
        taken = tied & (torch.cumsum(tied.to(torch.int64), 1) <= room)
        columns.append(((above | taken) & rel).sum(1))
    columns.append(rel.sum(1))
    return torch.stack(columns, 1).to(preds.dtype)


class RecallAtK(nn.Module):
    def __init__(self, ks: Sequence[float] = (1.0, 5.0, 10.0), metric: str = "cosine") -> None:
        super().__init__()
        if metric not in METRICS:
            raise ValueError(f"Expected `metric` to be one of {list(METRICS)}, got {metric!r}")
        self.ks = check_ks(ks)  # TorchScript infers List[int]
        self.metric = metric

    def forward(
        self,
        preds: Tensor,
        target: Tensor,
        gallery: Tensor,
        gallery_target: Tensor,
        exclude: Tensor,
    ) -> Tensor:
        return recall_at_k(preds, target, gallery, gallery_target, exclude, self.ks, self.metric)


def _sample(gen: torch.Generator, sizes: Mapping[str, int], dtype: torch.dtype):
    n, m, d = sizes["N"], sizes["M"], sizes["D"]
    return {
        "preds": torch.randn(n, d, generator=gen, dtype=dtype),
        "target": torch.randint(0, 3, (n,), generator=gen),
        "gallery": torch.randn(m, d, generator=gen, dtype=dtype),
        "gallery_target": torch.randint(0, 3, (m,), generator=gen),
        "exclude": torch.randint(-1, m, (n,), generator=gen),
    }


def _sample_extreme(gen: torch.Generator, sizes: Mapping[str, int], dtype: torch.dtype):
    """Norms from 1e-3 to 1e3, gallery items duplicated (exact ties, same label), queries
    that copy a gallery item, and ties broken by index."""
    n, m, d = sizes["N"], sizes["M"], sizes["D"]
    scale = torch.tensor([1e-3, 1.0, 1e3], dtype=dtype)
    gallery = torch.randn(m, d, generator=gen, dtype=dtype)
    gallery_target = torch.randint(0, 3, (m,), generator=gen)
    half = max(m // 2, 1)
    gallery[half:] = gallery[: m - half]  # duplicates carry the same label
    gallery_target[half:] = gallery_target[: m - half]
    gallery = gallery * scale[torch.randint(0, 3, (m, 1), generator=gen)]
    copy = torch.randint(0, m, (n,), generator=gen)
    preds = gallery[copy] * scale[torch.randint(0, 3, (n, 1), generator=gen)]
    preds = torch.where(
        torch.rand(n, 1, generator=gen) < 0.5,
        preds,
        torch.randn(n, d, generator=gen, dtype=dtype) * 1e3,
    )
    return {
        "preds": preds,
        "target": torch.randint(0, 3, (n,), generator=gen),
        "gallery": gallery,
        "gallery_target": gallery_target,
        "exclude": torch.where(torch.rand(n, generator=gen) < 0.5, copy, torch.full_like(copy, -1)),
    }


def _sample_degenerate(gen: torch.Generator, sizes: Mapping[str, int], dtype: torch.dtype):
    """Zero vectors (cosine 0 with everything: all ties, so the lowest indices win) and
    queries whose label is absent from the gallery."""
    n, m, d = sizes["N"], sizes["M"], sizes["D"]
    zero_rows = torch.rand(m, 1, generator=gen) < 0.5
    gallery = torch.where(
        zero_rows, torch.zeros(m, d, dtype=dtype), torch.randn(m, d, generator=gen, dtype=dtype)
    )
    return {
        "preds": torch.zeros(n, d, dtype=dtype),
        "target": torch.randint(0, 4, (n,), generator=gen),  # label 3 is never in the gallery
        "gallery": gallery,
        "gallery_target": torch.randint(0, 3, (m,), generator=gen),
        "exclude": torch.full((n,), -1, dtype=torch.int64),
    }


def _validate(params: Mapping[str, Any], inputs: Mapping[str, Tensor]) -> None:
    check_ks(params["ks"])
    if params["metric"] not in METRICS:
        raise ValueError(
            f"Expected `metric` to be one of {list(METRICS)}, got {params['metric']!r}"
        )
    exclude, m = inputs["exclude"], inputs["gallery"].shape[0]
    if exclude.numel() and (int(exclude.min()) < -1 or int(exclude.max()) >= m):
        raise ValueError(f"Expected `exclude` to hold gallery indices in [-1, {m - 1}]")


def _recall_work(sizes: Mapping[str, int], params: Mapping[str, Any]) -> int:
    """Bytes at the peak: the N·M similarity matrix and its temporaries (measured ~35 per
    query-gallery pair)."""
    n, m, d = (sizes.get(k, 0) for k in "NMD")
    return 48 * n * m + 8 * (n + m) * d


register(
    MetricSpec(
        name="recall_at_k",
        family=FAMILY,
        module=RecallAtK,
        functional=recall_at_k,
        inputs=(
            TensorSpec("preds", ("N", "D"), "float32", "query embeddings"),
            TensorSpec("target", ("N",), "int64", "query labels"),
            TensorSpec("gallery", ("M", "D"), "float32", "gallery embeddings"),
            TensorSpec("gallery_target", ("M",), "int64", "gallery labels"),
            TensorSpec("exclude", ("N",), "int64", "gallery index left out per query, or -1"),
        ),
        outputs=(
            TensorSpec(
                "counts",
                ("N", "K1"),
                "float32",
                "relevant items in the top ks[j] (K columns), then in the gallery",
            ),
        ),
        params=(
            ParamSpec("ks", [1.0, 5.0, 10.0], "cut-offs k, several at once"),
            ParamSpec("metric", "cosine", "cosine or euclidean"),
        ),
        higher_is_better=True,
        paper="Oh Song et al. 2016, arXiv:1511.06452 (Recall@K as hit rate); Manning et al. 2008 (IR recall)",
        oracle="numpy brute-force ranking with a stable argsort",
        sample=_sample,
        regimes={"extreme": _sample_extreme, "degenerate": _sample_degenerate},
        summary="retrieval hit rate@k and IR recall@k (cosine or Euclidean)",
        differentiable=False,
        validate=_validate,
        example_sizes={"N": 4, "M": 6, "D": 5},
        work=_recall_work,
        min_sizes={"M": 1},
        aggregator=RetrievalAggregator,
    )
)
