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

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .aggregators import check_same_config, dump_npz, load_npz
from .registry import MetricSpec, ParamSpec, TensorSpec, register

FAMILY = "dataset"
METRICS = ("cosine", "euclidean")


def _check_ks(ks: Sequence[float]) -> list[int]:
    out = [int(k) for k in ks]
    if not out or any(k < 1 or k != v for k, v in zip(out, ks, strict=True)):
        raise ValueError(f"Expected `ks` to be positive integers, got {list(ks)}")
    return out


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
        self.ks = _check_ks(ks)  # TorchScript infers List[int]
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


class RetrievalAggregator:
    """Per-query (hits, relevant) counts; merging concatenates, so it is exact."""

    metric = "recall_at_k"
    KIND = "recall_at_k/1"

    def __init__(
        self, ks: Sequence[float] = (1.0, 5.0, 10.0), metric: str = "cosine", **params: Any
    ) -> None:
        self.config: dict[str, Any] = {"ks": _check_ks(ks), "metric": metric}
        self.hits = np.zeros((0, len(self.config["ks"])), dtype=np.int64)
        self.relevant = np.zeros(0, dtype=np.int64)

    def update(
        self, outputs: Mapping[str, np.ndarray], inputs: Mapping[str, np.ndarray] | None = None
    ) -> None:
        counts = np.rint(np.asarray(outputs["counts"])).astype(np.int64)
        width = self.hits.shape[1] + 1
        if counts.ndim != 2 or counts.shape[1] != width:
            raise ValueError(f"Expected `counts` of shape [N, {width}], got {list(counts.shape)}")
        hits, relevant = counts[:, :-1], counts[:, -1]
        self.hits = np.concatenate([self.hits, hits])
        self.relevant = np.concatenate([self.relevant, relevant])

    def merge(self, other: RetrievalAggregator) -> RetrievalAggregator:
        check_same_config(self.KIND, self.config, other.config)
        out = RetrievalAggregator(**self.config)
        out.hits = np.concatenate([self.hits, other.hits])
        out.relevant = np.concatenate([self.relevant, other.relevant])
        return out

    def to_bytes(self) -> bytes:
        return dump_npz(self.KIND, self.config, {"hits": self.hits, "relevant": self.relevant})

    @classmethod
    def from_bytes(cls, data: bytes) -> RetrievalAggregator:
        config, arrays = load_npz(cls.KIND, data)
        out = cls(**config)
        out.hits, out.relevant = arrays["hits"], arrays["relevant"]
        return out

    def compute(self) -> dict[str, float]:
        keep = self.relevant > 0
        n = int(keep.sum())
        out: dict[str, float] = {
            "queries": float(len(self.relevant)),
            "queries_without_relevant": float(len(self.relevant) - n),
        }
        for j, k in enumerate(self.config["ks"]):
            hits = self.hits[keep, j]
            # fsum is exactly rounded, so the figure does not depend on the merge order.
            frac = math.fsum((hits / self.relevant[keep]).tolist())
            out[f"hit_rate@{k}"] = float((hits > 0).sum() / n) if n else math.nan
            out[f"recall@{k}"] = frac / n if n else math.nan
        return out


def _sample(gen: torch.Generator, sizes: Mapping[str, int], dtype: torch.dtype):
    n, m, d = sizes["N"], sizes["M"], sizes["D"]
    return {
        "preds": torch.randn(n, d, generator=gen, dtype=dtype),
        "target": torch.randint(0, 3, (n,), generator=gen),
        "gallery": torch.randn(m, d, generator=gen, dtype=dtype),
        "gallery_target": torch.randint(0, 3, (m,), generator=gen),
        "exclude": torch.randint(-1, m, (n,), generator=gen),
    }


def _validate(params: Mapping[str, Any], inputs: Mapping[str, Tensor]) -> None:
    _check_ks(params["ks"])
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
        summary="retrieval hit rate@k and IR recall@k (cosine or Euclidean)",
        differentiable=False,
        validate=_validate,
        example_sizes={"N": 4, "M": 6, "D": 5},
        work=_recall_work,
        min_sizes={"M": 1},
        aggregator=RetrievalAggregator,
    )
)
