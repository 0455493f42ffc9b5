"""Paired bootstrap of every gate figure, from the per-sample evidence (``evidence.py``).

A resample draws ``N`` units (images, samples, queries) with replacement::

    idx = np.random.default_rng(seed).integers(0, N, size=(resamples, N))

the same draw for the candidate and the baseline, which is what makes the difference
*paired*: resample ``b`` compares both models on the same multiset of images. A figure is
recomputed per resample from its evidence, never by re-running a model:

- a per-sample reduction on ``scores[idx]`` (``mean`` as an exactly rounded sum over
  ``N``, like the figure itself; ``median``, ``min``, ``max``, ``std`` as numpy's);
- mean IoU and accuracies from the confusion counts summed with multiplicities
  ``w[b, i]`` (how often resample ``b`` draws unit ``i``);
- hit rate@k and recall@k from the weighted per-query hits;
- the twelve COCO statistics by :func:`cvscore.metrics.coco_resample.resampled_stats`.

Intervals are percentile intervals: ``np.percentile`` (linear) at ``(1 - c) / 2`` and
``(1 + c) / 2`` of the resampled values, NaN resamples left out (a class absent from a
resample has no IoU). Everything is seeded, so reports are byte-identical run to run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from .evidence import Evidence

DEFAULT_RESAMPLES = 1000
DEFAULT_CONFIDENCE = 0.95
DEFAULT_SEED = 0


class PairingError(ValueError):
    """The baseline's evidence covers other units than the candidate's: no pairing."""


def draws(units: int, resamples: int, seed: int) -> np.ndarray:
    """int64[resamples, units]: the unit indices each resample draws."""
    return np.random.default_rng(seed).integers(0, units, size=(resamples, units))


def multiplicities(idx: np.ndarray, units: int) -> np.ndarray:
    """int64[B, units]: how often each resample draws each unit."""
    b_n = len(idx)
    flat = (idx + units * np.arange(b_n, dtype=np.int64)[:, None]).reshape(-1)
    return np.bincount(flat, minlength=b_n * units).reshape(b_n, units)


def percentile_interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    """The percentile interval of ``values`` at level ``confidence`` (NaNs left out)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    if v.size == 0:
        return math.nan, math.nan
    tail = (1.0 - confidence) / 2.0
    lo, hi = np.percentile(v, [100.0 * tail, 100.0 * (1.0 - tail)])
    return float(lo), float(hi)


def resampled_figures(ev: Mapping[str, Any], idx: np.ndarray) -> dict[str, np.ndarray]:
    """Every figure of one metric's evidence, per resample: name -> float64[B]."""
    kind = ev["kind"]
    if kind == "samples":
        return _samples(np.asarray(ev["scores"], dtype=np.float64), idx, ev["figures"])
    weights = multiplicities(idx, len(ev["ids"]))
    if kind == "confusion":
        return _confusion(np.asarray(ev["confusion"], dtype=np.int64), weights)
    if kind == "retrieval":
        return _retrieval(ev, weights)
    if kind == "coco":
        from ..metrics.coco_resample import resampled_stats

        return resampled_stats(ev, weights)
    raise ValueError(f"Unknown evidence kind {kind!r}")


def _samples(scores: np.ndarray, idx: np.ndarray, how: list[str]) -> dict[str, np.ndarray]:
    drawn = scores[idx]  # [B, N]
    out: dict[str, np.ndarray] = {}
    n = drawn.shape[1]
    for name in how:
        if n == 0:
            out[name] = np.full(len(idx), math.nan)
        elif name == "mean":
            out[name] = np.array([math.fsum(row) / n for row in drawn.tolist()])
        else:
            reduce: Any = {"median": np.median, "min": np.min, "max": np.max, "std": np.std}[name]
            out[name] = reduce(drawn, axis=1)
    return out


def _confusion(confusion: np.ndarray, weights: np.ndarray) -> dict[str, np.ndarray]:
    k = confusion.shape[1]
    c = (weights @ confusion.reshape(len(confusion), k * k)).reshape(-1, k, k).astype(np.float64)
    tp = np.diagonal(c, axis1=1, axis2=2)
    support = c.sum(2)
    union = c.sum(1) + support - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / np.where(union > 0, union, 1), np.nan)
        acc = np.where(support > 0, tp / np.where(support > 0, support, 1), np.nan)
        total = c.sum((1, 2))
        out = {
            "mean_iou": _nanmean_rows(iou),
            "pixel_accuracy": np.where(total > 0, tp.sum(1) / np.maximum(total, 1), np.nan),
            "mean_accuracy": _nanmean_rows(acc),
        }
    out.update({f"iou_{i}": iou[:, i] for i in range(k)})
    return out


def _nanmean_rows(values: np.ndarray) -> np.ndarray:
    keep = ~np.isnan(values)
    count = keep.sum(1)
    total = np.where(keep, values, 0.0).sum(1)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _retrieval(ev: Mapping[str, Any], weights: np.ndarray) -> dict[str, np.ndarray]:
    hits = np.asarray(ev["hits"], dtype=np.int64)
    relevant = np.asarray(ev["relevant"], dtype=np.int64)
    keep = relevant > 0
    w = weights.astype(np.float64)
    n = w @ keep.astype(np.float64)
    frac = np.where(keep[:, None], hits / np.maximum(relevant, 1)[:, None], 0.0)
    out = {"queries": w.sum(1), "queries_without_relevant": w @ (~keep).astype(np.float64)}
    with np.errstate(invalid="ignore", divide="ignore"):
        for j, k in enumerate(int(k) for k in ev["params"]["ks"]):
            out[f"hit_rate@{k}"] = np.where(n > 0, (w @ (keep & (hits[:, j] > 0))) / n, np.nan)
            out[f"recall@{k}"] = np.where(n > 0, (w @ frac[:, j]) / n, np.nan)
    return out


class Bootstrap:
    """Resampled figures of a run (and of its baseline, paired), cached per resample count.

    ``evidence`` and ``baseline`` map metric keys (``dataset/metric``) to evidence; figure
    names are ``dataset/metric/figure`` as in the report.
    """

    def __init__(self, evidence: Evidence, baseline: Evidence | None, seed: int) -> None:
        self.evidence, self.baseline, self.seed = evidence, baseline or {}, seed
        self._cache: dict[tuple[str, str, int], dict[str, np.ndarray]] = {}

    def _figures(self, which: str, key: str, resamples: int) -> dict[str, np.ndarray] | None:
        source = self.evidence if which == "run" else self.baseline
        if key not in source:
            return None
        cache_key = (which, key, resamples)
        if cache_key not in self._cache:
            ev = source[key]
            if which == "baseline":
                mine = self.evidence[key]["ids"]
                if not np.array_equal(np.asarray(ev["ids"]), np.asarray(mine)):
                    raise PairingError(
                        f"{key}: the baseline's evidence covers other samples than this run's "
                        f"({len(ev['ids'])} vs {len(mine)} units, or other ids); a paired "
                        "bootstrap needs the same dataset"
                    )
            idx = draws(len(ev["ids"]), resamples, self.seed)
            self._cache[cache_key] = resampled_figures(ev, idx)
        return self._cache[cache_key]

    def has(self, figure: str, paired: bool = False) -> bool:
        key = figure.rpartition("/")[0]
        found = key in self.evidence
        return found and (not paired or key in self.baseline)

    def values(self, figure: str, resamples: int) -> np.ndarray | None:
        """float64[B]: the figure on each resample of this run (None: no evidence)."""
        key, _, name = figure.rpartition("/")
        figures = self._figures("run", key, resamples)
        return None if figures is None or name not in figures else figures[name]

    def baseline_values(self, figure: str, resamples: int) -> np.ndarray | None:
        """float64[B]: the baseline's figure on the same resamples (None: not paired)."""
        key, _, name = figure.rpartition("/")
        if key not in self.evidence:
            return None
        figures = self._figures("baseline", key, resamples)
        return None if figures is None or name not in figures else figures[name]


def change(candidate: np.ndarray, baseline: np.ndarray) -> np.ndarray:
    """candidate − baseline per resample; equal infinities change by 0."""
    with np.errstate(invalid="ignore"):
        diff = candidate - baseline
    return np.where(np.isinf(candidate) & (candidate == baseline), 0.0, diff)


def figure_intervals(
    boot: Bootstrap, figures: list[str], resamples: int, confidence: float, digits: int
) -> dict[str, dict[str, Any]]:
    """The report's ``bootstrap.intervals``: per figure, its interval and, with a paired
    baseline, the interval of the change (candidate − baseline), rounded to ``digits``."""
    from .report import encode, round_sig

    def pair(values: np.ndarray) -> list[float | str]:
        return [encode(round_sig(v, digits)) for v in percentile_interval(values, confidence)]

    out: dict[str, dict[str, Any]] = {}
    for figure in figures:
        values = boot.values(figure, resamples)
        if values is None:
            continue
        entry: dict[str, Any] = {"interval": pair(values), "change": None}
        base = boot.baseline_values(figure, resamples) if boot.has(figure, paired=True) else None
        if base is not None:
            entry["change"] = pair(change(values, base))
        out[figure] = entry
    return out
