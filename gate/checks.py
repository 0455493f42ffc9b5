"""Checks: the ``[[checks]]`` tables resolved into thresholds, and evaluated on figures.

Every threshold is one check (one JUnit test case). ``min`` / ``max`` compare a figure with
a threshold; ``max_drop`` compares it with the baseline report's figure, in the worse
direction, absolutely or as a fraction of the baseline.

With ``confidence = 0.95`` a check is decided on a paired bootstrap interval instead of the
point value (``bootstrap.py``): the interval of the figure for ``min`` / ``max``, of the drop
(baseline − candidate on the same resamples, in the worse direction; relative: over each
resample's baseline) for ``max_drop``. It fails when the whole interval lies beyond the
threshold, passes when the whole interval lies inside, and is *inconclusive* when it
straddles it; ``inconclusive = "fail" | "warn" | "pass"`` (default ``"warn"``) says whether
that fails the gate (``warn`` passes it, marked). A two-sided interval at level ``c``
decides each side at ``(1 + c) / 2``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .bootstrap import DEFAULT_RESAMPLES, Bootstrap, change, percentile_interval
from .report import CheckResult, Interval, round_sig
from .schema import CHECK, Problems


@dataclass
class Check:
    name: str
    figure: str
    kind: str  # min | max | max_drop
    threshold: float
    relative: bool
    higher_is_better: bool
    confidence: float | None = None  # decide on a bootstrap interval at this level
    resamples: int = DEFAULT_RESAMPLES
    inconclusive: str = "warn"  # fail | warn | pass


def parse_checks(
    problems: Problems,
    raw: Any,
    known: Mapping[str, tuple[str, tuple[float, float] | None, bool]],
    baseline_path: Path | None,
    baseline: Mapping[str, Any] | None,
    skip_regressions: bool,
    baseline_evidence: Mapping[str, Any] | None = None,
) -> list[Check]:
    """``known``: figure -> (metric, the range it lies in or None, higher_is_better);
    ``baseline_evidence``: the metric keys the baseline's evidence file covers."""
    if raw is None:  # missing or not an array of tables: the schema has said so
        return []
    if not raw:
        problems.add(("checks",), "expected at least one [[checks]] table")
        return []
    checks: list[Check] = []
    for i, c in enumerate(raw):
        where: tuple[Any, ...] = ("checks", i)
        good = problems.table(where, c, CHECK)
        figure = good.get("figure")
        if figure is None:
            continue
        if figure not in known:
            prefix = figure.rsplit("/", 1)[0] + "/"
            hint = sorted(k for k in known if k.startswith(prefix)) or sorted(known)
            shown = ", ".join(hint[:12]) + (f", ... ({len(hint)} in all)" if len(hint) > 12 else "")
            problems.add(
                (*where, "figure"), f"unknown figure {figure!r} (known: {shown or 'none'})"
            )
            continue
        _, span, default_hib = known[figure]
        bounds = {k: float(good[k]) for k in ("min", "max", "max_drop") if k in good}
        if not bounds:
            if not any(k in c for k in ("min", "max", "max_drop")):
                problems.add(where, "no threshold: expected min, max and/or max_drop")
            continue
        if "min" in bounds and "max" in bounds and bounds["min"] > bounds["max"]:
            problems.add((*where, "min"), f"min {c['min']} > max {c['max']}: can never pass")
        if span is not None:
            lies = f"{figure} lies in [{span[0]:g}, {span[1]:g}]"
            if "min" in bounds and bounds["min"] > span[1]:
                problems.add((*where, "min"), f"min {c['min']} can never pass: {lies}")
            if "max" in bounds and bounds["max"] < span[0]:
                problems.add((*where, "max"), f"max {c['max']} can never pass: {lies}")
        drop = good.get("drop", "absolute")
        if "drop" in good and "max_drop" not in c:
            problems.add((*where, "drop"), "`drop` without `max_drop`")
        if drop == "relative" and bounds.get("max_drop", 0.0) > 1:
            problems.add(
                (*where, "max_drop"),
                f"a relative drop is a fraction in [0, 1], got {c['max_drop']}",
            )
        hib = bool(good.get("higher_is_better", default_hib))
        label = good.get("name")
        for key in ("resamples", "inconclusive"):
            if key in good and "confidence" not in c:
                problems.add((*where, key), f"`{key}` without `confidence`")
        confidence = good.get("confidence")
        metric_key = figure.rsplit("/", 1)[0]
        if (
            confidence is not None
            and "max_drop" in bounds
            and not skip_regressions
            and baseline is not None
            and metric_key not in (baseline_evidence or {})
        ):
            problems.add(
                (*where, "confidence"),
                f"a max_drop with confidence needs the baseline's evidence for {metric_key}; "
                f"{baseline_path} has none (write the baseline with `cvscore gate "
                "--write-baseline`)",
            )
        if "max_drop" in bounds and not skip_regressions:
            if baseline_path is None:
                problems.add(
                    (*where, "max_drop"),
                    "a regression check needs a baseline: set [gate] baseline or pass --baseline",
                )
            elif baseline is not None and figure not in baseline["figures"]:
                problems.add((*where, "figure"), f"{figure} is not in the baseline {baseline_path}")
        for kind in ("min", "max", "max_drop"):
            if kind not in bounds or (kind == "max_drop" and skip_regressions):
                continue
            relative = kind == "max_drop" and drop == "relative"
            default_label = {
                "min": f"{figure} >= {bounds[kind]:g}",
                "max": f"{figure} <= {bounds[kind]:g}",
                "max_drop": f"{figure} drop <= {bounds[kind]:g}{' relative' if relative else ''}",
            }[kind]
            name = f"{label} ({kind})" if label else default_label
            checks.append(
                Check(
                    name, figure, kind, bounds[kind], relative, hib, confidence,
                    int(good.get("resamples", DEFAULT_RESAMPLES)),
                    str(good.get("inconclusive", "warn")),
                )
            )  # fmt: skip
    return checks


def _relative(change: float, reference: float) -> float | None:
    """``change`` as a fraction of ``|reference|``; None where that is undefined."""
    if reference == 0 or not math.isfinite(reference) or not math.isfinite(change):
        return None
    return change / abs(reference)


def evaluate_checks(
    checks: list[Check],
    figures: Mapping[str, float],
    baseline: Mapping[str, float] | None,
    digits: int,
    bootstrap: Bootstrap | None = None,
) -> list[CheckResult]:
    """Each check on the (rounded) figures. The baseline's value is kept for every check
    whose figure it holds; the delta is the margin to the threshold for ``min`` / ``max``
    (positive: inside) and the change from the baseline for ``max_drop``. Checks with a
    ``confidence`` are decided on ``bootstrap``'s intervals (rounded to ``digits``)."""
    results = []
    for c in checks:
        value = figures[c.figure]
        base = None if baseline is None else baseline.get(c.figure)
        measured: float | None = None
        if c.kind in {"min", "max"}:
            passed = value >= c.threshold if c.kind == "min" else value <= c.threshold
            margin = value - c.threshold if c.kind == "min" else c.threshold - value
            delta, reference, delta_kind = margin, c.threshold, "margin to threshold"
        else:
            assert base is not None
            change = value - base if not (math.isinf(value) and value == base) else 0.0
            drop = -change if c.higher_is_better else change
            if c.relative:
                measured = drop / abs(base) if base != 0 else (0.0 if drop <= 0 else math.inf)
            else:
                measured = drop
            passed = not math.isnan(measured) and measured <= c.threshold
            measured = round_sig(measured, digits)
            delta, reference, delta_kind = change, base, "change from baseline"
        relative = _relative(delta, reference)
        interval = None
        if c.confidence is not None:
            if bootstrap is None:
                raise ValueError(f"{c.name}: a check with `confidence` needs a bootstrap")
            interval = _interval(c, bootstrap, digits)
            passed = interval.verdict == "pass" or (
                interval.verdict == "inconclusive" and c.inconclusive != "fail"
            )
        results.append(
            CheckResult(
                name=c.name,
                figure=c.figure,
                kind=c.kind,
                threshold=c.threshold,
                relative=c.relative,
                value=value,
                baseline=base,
                delta=round_sig(delta, digits),
                delta_relative=None if relative is None else round_sig(relative, digits),
                delta_kind=delta_kind,
                measured=measured,
                passed=bool(passed) and not math.isnan(value),
                interval=interval,
            )
        )
    return results


def _interval(c: Check, boot: Bootstrap, digits: int) -> Interval:
    """The bootstrap interval a check is decided on, and the verdict it gives."""
    assert c.confidence is not None
    values = boot.values(c.figure, c.resamples)
    if values is None:
        raise ValueError(f"{c.name}: no evidence for {c.figure}")
    changes: tuple[float, float] | None = None
    if c.kind == "max_drop":
        base = boot.baseline_values(c.figure, c.resamples)
        if base is None:
            raise ValueError(f"{c.name}: the baseline has no evidence for {c.figure}")
        diff = change(values, base)
        changes = percentile_interval(diff, c.confidence)
        drop = -diff if c.higher_is_better else diff
        if c.relative:
            with np.errstate(invalid="ignore", divide="ignore"):
                drop = np.where(base != 0, drop / np.abs(base), np.where(drop <= 0, 0.0, math.inf))
        lo, hi = (round_sig(v, digits) for v in percentile_interval(drop, c.confidence))
        of = "relative drop" if c.relative else "drop"
        verdict = "fail" if lo > c.threshold else "pass" if hi <= c.threshold else "inconclusive"
    else:
        lo, hi = (round_sig(v, digits) for v in percentile_interval(values, c.confidence))
        of = "figure"
        if c.kind == "min":
            verdict = (
                "pass" if lo >= c.threshold else "fail" if hi < c.threshold else "inconclusive"
            )
        else:
            verdict = (
                "pass" if hi <= c.threshold else "fail" if lo > c.threshold else "inconclusive"
            )
    if math.isnan(lo) or math.isnan(hi):
        verdict = "inconclusive"
    return Interval(
        low=lo,
        high=hi,
        of=of,
        confidence=c.confidence,
        resamples=c.resamples,
        verdict=verdict,
        policy=c.inconclusive,
        change=None if changes is None else tuple(round_sig(v, digits) for v in changes),
    )
