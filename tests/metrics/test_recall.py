"""recall_at_k: the top-k graph and its aggregator against a brute-force numpy ranking."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cvscore.metrics import registry, retrieval

KS = [1, 3, 5, 50]


def brute_force(q, ql, g, gl, exclude, ks, metric):
    if metric == "cosine":
        # F.normalize's convention: divide by max(norm, eps), so a zero vector stays zero
        qn = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        gn = g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-12)
        sim = qn @ gn.T
    else:
        sim = -((q[:, None, :] - g[None, :, :]) ** 2).sum(-1)
    hit_rate = {k: [] for k in ks}
    recall = {k: [] for k in ks}
    for i in range(len(q)):
        items = [j for j in range(len(g)) if j != exclude[i]]
        order = sorted(items, key=lambda j: (-sim[i, j], j))
        relevant = {j for j in items if gl[j] == ql[i]}
        if not relevant:
            continue
        for k in ks:
            found = len(relevant & set(order[:k]))
            hit_rate[k].append(found > 0)
            recall[k].append(found / len(relevant))
    return {k: np.mean(hit_rate[k]) for k in ks}, {k: np.mean(recall[k]) for k in ks}


def _data(seed: int, n: int = 40, m: int = 30, d: int = 8, classes: int = 5):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(classes, d))
    ql, gl = rng.integers(0, classes, n), rng.integers(0, classes + 2, m)  # some unmatched labels
    q = (centers[ql] + rng.normal(scale=1.0, size=(n, d))).astype(np.float32)
    g = (centers[np.minimum(gl, classes - 1)] + rng.normal(scale=1.0, size=(m, d))).astype(
        np.float32
    )
    return q, ql, g, gl


def _score(module, q, ql, g, gl, exclude):
    counts = module(*(torch.from_numpy(np.asarray(x)) for x in (q, ql, g, gl, exclude)))
    agg = retrieval.RetrievalAggregator(ks=module.ks, metric=module.metric)
    agg.update({"counts": counts.numpy()})
    return agg


@pytest.mark.parametrize("metric", retrieval.METRICS)
def test_query_gallery_matches_brute_force(metric: str) -> None:
    q, ql, g, gl = _data(0)
    q[3] = 0.0  # a zero embedding: cosine similarity 0 to everything, ranked by index
    g[7:12] = g[6]  # exact ties: the lower gallery index ranks first
    gl[6:12] = [0, 1, 0, 2, 0, 1]
    exclude = np.full(len(q), -1)
    module = retrieval.RecallAtK(KS, metric)
    figures = _score(module, q, ql, g, gl, exclude).compute()
    hit_rate, recall = brute_force(q.astype(float), ql, g.astype(float), gl, exclude, KS, metric)
    for k in KS:
        assert figures[f"hit_rate@{k}"] == pytest.approx(hit_rate[k], abs=1e-12)
        assert figures[f"recall@{k}"] == pytest.approx(recall[k], abs=1e-12)
    assert figures["recall@50"] == 1.0  # k beyond the gallery retrieves everything


def test_leave_one_out_excludes_the_query_itself() -> None:
    q, ql, _, _ = _data(1, n=25)
    exclude = np.arange(len(q))
    module = retrieval.RecallAtK(KS, "euclidean")
    figures = _score(module, q, ql, q, ql, exclude).compute()
    hit_rate, recall = brute_force(
        q.astype(float), ql, q.astype(float), ql, exclude, KS, "euclidean"
    )
    for k in KS:
        assert figures[f"hit_rate@{k}"] == pytest.approx(hit_rate[k], abs=1e-12)
        assert figures[f"recall@{k}"] == pytest.approx(recall[k], abs=1e-12)
    # without the exclusion every query finds itself first: hit rate@1 = 1
    same = _score(module, q, ql, q, ql, np.full(len(q), -1)).compute()
    assert same["hit_rate@1"] == 1.0


def test_hand_worked() -> None:
    # Query [1, 0]; gallery by cosine: [1, 0] (relevant), [0, 1] (not), [-1, 0] (relevant).
    # top-1 holds 1 of the 2 relevant: hit rate 1, recall 0.5; top-3 holds both: recall 1.
    module = retrieval.RecallAtK([1, 3], "cosine")
    agg = _score(
        module, np.array([[1.0, 0.0]], np.float32), [0],
        np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], np.float32), [0, 1, 0], [-1],
    )  # fmt: skip
    figures = agg.compute()
    assert figures["hit_rate@1"] == 1.0 and figures["recall@1"] == 0.5
    assert figures["recall@3"] == 1.0


def test_queries_without_relevant_items_are_counted_and_left_out() -> None:
    module = retrieval.RecallAtK([1], "cosine")
    agg = _score(
        module, np.eye(2, dtype=np.float32), [0, 9], np.eye(2, dtype=np.float32), [0, 1], [-1, -1]
    )
    figures = agg.compute()
    assert figures["queries_without_relevant"] == 1.0 and figures["hit_rate@1"] == 1.0
    nothing = retrieval.RetrievalAggregator(ks=[1])
    assert math.isnan(nothing.compute()["recall@1"])


def test_merge_associative_and_byte_identical() -> None:
    q, ql, g, gl = _data(2, n=60)
    module = retrieval.RecallAtK(KS, "cosine")
    one = _score(module, q, ql, g, gl, np.full(60, -1))
    parts = [
        retrieval.RetrievalAggregator.from_bytes(
            _score(module, q[i : i + 20], ql[i : i + 20], g, gl, np.full(20, -1)).to_bytes()
        )
        for i in (0, 20, 40)
    ]
    a, b, c = parts
    assert a.merge(b.merge(c)).to_bytes() == a.merge(b).merge(c).to_bytes() == one.to_bytes()
    assert c.merge(a).merge(b).compute() == one.compute()  # fsum: order-free figures


def test_bad_parameters_are_rejected() -> None:
    with pytest.raises(ValueError, match="`ks`"):
        retrieval.RecallAtK([0, 5])
    with pytest.raises(ValueError, match="`metric`"):
        registry.get("recall_at_k").build(metric="manhattan")
