"""Checks: the ``[[checks]]`` tables resolved into thresholds, and evaluated on figures.

Every threshold is one check (one JUnit test case). ``min`` / ``max`` compare a figure with
a threshold; ``max_drop`` compares it with the baseline report's figure, in the worse
direction, absolutely or as a fraction of the baseline.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .report import CheckResult, round_sig
from .schema import CHECK, Problems


@dataclass
class Check:
    name: str
    figure: str
    kind: str  # min | max | max_drop
    threshold: float
    relative: bool
    higher_is_better: bool


def parse_checks(
    problems: Problems,
    raw: Any,
    known: Mapping[str, tuple[str, tuple[float, float] | None, bool]],
    baseline_path: Path | None,
    baseline: Mapping[str, Any] | None,
    skip_regressions: bool,
) -> list[Check]:
    """``known``: figure -> (metric, the range it lies in or None, higher_is_better)."""
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
            checks.append(Check(name, figure, kind, bounds[kind], relative, hib))
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
) -> list[CheckResult]:
    """Each check on the (rounded) figures. The baseline's value is kept for every check
    whose figure it holds; the delta is the margin to the threshold for ``min`` / ``max``
    (positive: inside) and the change from the baseline for ``max_drop``."""
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
            )
        )
    return results
