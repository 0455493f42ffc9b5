"""The gate's outputs: ``report.json``, ``junit.xml`` and ``summary.md``.

When the gate cannot be evaluated (exit 2), :func:`write_error_outputs` still writes
``junit.xml`` (one ``<error>`` test case per problem) and ``summary.md`` (the problems with
their lines), so a CI run shows why in its test report and its pull-request comment.

Figures are rounded to a stated number of significant digits before they are compared or
written, so that the same gate on the same data writes byte-identical ``figures`` whatever
the runtime (eager, TorchScript, ONNX Runtime) or the server: the runtimes agree to about
1e-6 relative (float32 kernels), far inside the rounding step. Non-finite figures (PSNR of
identical images, IoU of a class present nowhere) are written as the strings ``"inf"``,
``"-inf"`` and ``"nan"``, since JSON has no such numbers. Everything that changes from run to
run (time, host, durations) lives in the ``run`` section, never in ``figures``.
"""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPORT_FORMAT = "cvscore-gate-report/1"
DEFAULT_DIGITS = 5


def round_sig(value: float, digits: int) -> float:
    """``value`` rounded to ``digits`` significant digits (non-finite values unchanged)."""
    if not math.isfinite(value) or value == 0.0:
        return float(value) + 0.0  # -0.0 -> 0.0
    return float(f"{value:.{digits}g}") + 0.0


def encode(value: float) -> float | str:
    """A figure as JSON: a number, or ``"inf"`` / ``"-inf"`` / ``"nan"``."""
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value


def decode(value: Any) -> float:
    if isinstance(value, str) and value in {"inf", "-inf", "nan"}:
        return float(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"Expected a number or 'inf'/'-inf'/'nan', got {value!r}")
    return float(value)


def fmt(value: float | None, digits: int = DEFAULT_DIGITS, sign: bool = False) -> str:
    if value is None:
        return "–"
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return ("+" if sign and value > 0 else "") + ("inf" if value > 0 else "-inf")
    text = f"{round_sig(value, digits):{'+' if sign else ''}.{digits}g}"
    return text


def dumps_report(report: Mapping[str, Any]) -> str:
    """Deterministic JSON: sorted keys, two-space indent, no NaN literals, final newline."""
    return json.dumps(report, indent=2, sort_keys=True, allow_nan=False) + "\n"


@dataclass(frozen=True)
class Interval:
    """The bootstrap interval a check was decided on (``checks.py``) and its verdict."""

    low: float
    high: float
    of: str  # "figure" | "drop" | "relative drop"
    confidence: float
    resamples: int
    verdict: str  # "pass" | "fail" | "inconclusive"
    policy: str  # what inconclusive means: "fail" | "warn" | "pass"
    change: tuple[float, ...] | None = None  # max_drop: candidate − baseline, same level

    def text(self) -> str:
        return f"[{fmt(self.low)}, {fmt(self.high)}]"

    @property
    def basis(self) -> str:
        """``95% CI of the drop (1000 resamples): inconclusive (warn)``."""
        level = f"{self.confidence * 100:g}%"
        tail = f" ({self.policy})" if self.verdict == "inconclusive" else ""
        return f"{level} CI of the {self.of} ({self.resamples} resamples): {self.verdict}{tail}"

    def to_json(self) -> dict[str, Any]:
        return {
            "low": encode(self.low),
            "high": encode(self.high),
            "of": self.of,
            "confidence": self.confidence,
            "resamples": self.resamples,
            "verdict": self.verdict,
            "inconclusive": self.policy,
            "change": None if self.change is None else [encode(v) for v in self.change],
        }


@dataclass(frozen=True)
class CheckResult:
    """One threshold of one figure, evaluated.

    ``delta`` is stated with its kind: for ``min`` / ``max`` the *margin to threshold*
    (positive inside the bound, negative outside); for ``max_drop`` the *change from
    baseline* (value - baseline). ``delta_relative`` is the same as a fraction of the
    threshold or the baseline (None where that is 0 or not finite).
    """

    name: str
    figure: str
    kind: str  # "min" | "max" | "max_drop"
    threshold: float
    relative: bool
    value: float
    baseline: float | None  # the baseline report's figure, whenever it has one
    delta: float
    delta_relative: float | None
    delta_kind: str  # "margin to threshold" | "change from baseline"
    measured: float | None  # max_drop: the drop (relative when `relative`), else None
    passed: bool
    interval: Interval | None = None  # set when the check is decided on a bootstrap interval

    @property
    def verdict(self) -> str:
        """pass | fail | inconclusive (an inconclusive check passes unless its policy fails)."""
        return self.interval.verdict if self.interval else ("pass" if self.passed else "fail")

    @property
    def inconclusive(self) -> bool:
        return self.verdict == "inconclusive"

    @property
    def basis(self) -> str:
        return self.interval.basis if self.interval else "point value"

    @property
    def condition(self) -> str:
        if self.kind == "min":
            return f">= {fmt(self.threshold)}"
        if self.kind == "max":
            return f"<= {fmt(self.threshold)}"
        unit = " (relative)" if self.relative else ""
        return f"drop <= {fmt(self.threshold)}{unit}"

    def delta_text(self) -> str:
        """``+0.012 (+2.4%) margin to threshold``."""
        rel = "" if self.delta_relative is None else f" ({fmt_percent(self.delta_relative)})"
        return f"{fmt(self.delta, sign=True)}{rel} {self.delta_kind}"

    def explain(self) -> str:
        """One line: the figure, the threshold, the baseline and the delta with its kind."""
        verdict = "passed" if self.passed else "FAILED"
        if self.inconclusive:
            verdict = f"INCONCLUSIVE ({verdict})"
        base = "" if self.baseline is None else f", baseline {fmt(self.baseline)}"
        ci = ""
        if self.interval is not None:
            i = self.interval
            ci = f", {i.confidence * 100:g}% CI of the {i.of} {i.text()}"
        if self.kind == "max_drop":
            return (
                f"{self.figure} = {fmt(self.value)}{base}, {self.delta_text()}, drop "
                f"{fmt(self.measured)}{ci} (max_drop {fmt(self.threshold)}"
                f"{', relative' if self.relative else ''}): {verdict}"
            )
        return (
            f"{self.figure} = {fmt(self.value)}, {self.kind} {fmt(self.threshold)}{base}, "
            f"{self.delta_text()}{ci}: {verdict}"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "figure": self.figure,
            "kind": self.kind,
            "threshold": encode(self.threshold),
            "relative": self.relative,
            "value": encode(self.value),
            "baseline": None if self.baseline is None else encode(self.baseline),
            "delta": encode(self.delta),
            "delta_relative": None if self.delta_relative is None else encode(self.delta_relative),
            "delta_kind": self.delta_kind,
            "drop": None if self.measured is None else encode(self.measured),
            "passed": self.passed,
            "verdict": self.verdict,
            "basis": self.basis,
            "interval": None if self.interval is None else self.interval.to_json(),
        }


def fmt_percent(fraction: float) -> str:
    if math.isnan(fraction):
        return "nan"
    return f"{fraction * 100:+.3g}%"


def _junit_root(
    gate: str, tests: int, failures: int, errors: int, seconds: float, skipped: int = 0
) -> tuple[ET.Element, ET.Element]:
    counts = {"tests": str(tests), "failures": str(failures), "errors": str(errors)}
    root = ET.Element("testsuites", {"name": "cvscore gate", **counts, "time": f"{seconds:.3f}"})
    suite = ET.SubElement(
        root,
        "testsuite",
        {"name": gate, **counts, "skipped": str(skipped), "time": f"{seconds:.3f}"},
    )
    return root, suite


def _write_xml(root: ET.Element, path: Path) -> None:
    ET.indent(root)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)


def write_junit(
    path: Path,
    gate: str,
    checks: Sequence[CheckResult],
    seconds: float,
    properties: Mapping[str, str],
) -> None:
    """JUnit XML: one ``testsuite`` (the gate), one ``testcase`` per check. A check decided
    on an interval carries ``verdict`` / ``interval`` / ``basis`` properties; an inconclusive
    one that does not fail the gate (``warn``) is ``<skipped>`` with the reason."""
    failures = sum(not c.passed for c in checks)
    warned = sum(c.inconclusive and c.passed and c.interval.policy == "warn" for c in checks)  # type: ignore[union-attr]
    root, suite = _junit_root(gate, len(checks), failures, 0, seconds, warned)
    props = ET.SubElement(suite, "properties")
    for key in sorted(properties):
        ET.SubElement(props, "property", {"name": key, "value": properties[key]})
    for check in checks:
        dataset = check.figure.split("/", 1)[0]
        case = ET.SubElement(
            suite,
            "testcase",
            {"classname": f"cvscore.gate.{gate}.{dataset}", "name": check.name, "time": "0"},
        )
        if check.interval is not None:
            cprops = ET.SubElement(case, "properties")
            for key, value in (
                ("verdict", check.verdict),
                ("interval", check.interval.text()),
                ("basis", check.basis),
            ):
                ET.SubElement(cprops, "property", {"name": key, "value": value})
            if check.inconclusive and check.passed and check.interval.policy == "warn":
                ET.SubElement(case, "skipped", {"message": f"inconclusive: {check.explain()}"})
        if not check.passed:
            kind = f"{check.kind} inconclusive" if check.inconclusive else check.kind
            failure = ET.SubElement(case, "failure", {"message": check.explain(), "type": kind})
            failure.text = "\n".join(
                f"{k}: {v}"
                for k, v in (
                    ("figure", check.figure),
                    ("value", fmt(check.value)),
                    ("threshold", f"{check.kind} {fmt(check.threshold)}"),
                    ("baseline", fmt(check.baseline)),
                    ("delta", check.delta_text()),
                    ("basis", check.basis),
                )
            )
        ET.SubElement(case, "system-out").text = check.explain()
    _write_xml(root, path)


def summary_markdown(
    gate: str,
    checks: Sequence[CheckResult],
    runtime: str,
    digits: int,
    artifacts: Mapping[str, Mapping[str, Any]],
    plots: Sequence[str],
    baseline: str | None,
) -> str:
    """A Markdown table fit for a pull-request comment and for ``$GITHUB_STEP_SUMMARY``."""
    failed = sum(not c.passed for c in checks)
    unsure = sum(c.inconclusive for c in checks)
    also = f", {unsure} inconclusive" if unsure else ""
    head = (
        f"## ✅ cvscore gate `{gate}` passed: {len(checks)} checks, 0 failed{also}"
        if not failed
        else f"## ❌ cvscore gate `{gate}` failed: {failed} of {len(checks)} checks failed{also}"
    )
    lines = [
        head,
        "",
        "| | check | figure | value | threshold | baseline | delta | relative | delta is "
        "| interval | verdict basis |",
        "|---|---|---|--:|---|--:|--:|--:|---|---|---|",
    ]
    for c in checks:
        rel = "–" if c.delta_relative is None else fmt_percent(c.delta_relative)
        mark = "⚠️" if c.inconclusive and c.passed else "✅" if c.passed else "❌"
        ci = "–" if c.interval is None else f"{c.interval.of} {c.interval.text()}"
        lines.append(
            f"| {mark} | {c.name} | `{c.figure}` | {fmt(c.value)} | "
            f"{c.condition} | {fmt(c.baseline)} | {fmt(c.delta, sign=True)} | {rel} | "
            f"{c.delta_kind} | {ci} | {c.basis} |"
        )
    lines += [
        "",
        "Delta: for `min` / `max` the margin to the threshold (positive: inside the bound), "
        "for `max_drop` the change from the baseline (value − baseline); relative: as a "
        "fraction of the threshold or the baseline. Interval: a paired bootstrap interval "
        "(same resampled images for this run and the baseline) of the figure, or of the drop "
        "for `max_drop`, for checks with `confidence`; ⚠️ marks an inconclusive check (the "
        "interval straddles the threshold) that does not fail the gate.",
        "",
        f"Runtime `{runtime}`; figures rounded to {digits} significant digits"
        + (f"; baseline `{baseline}`." if baseline else "; no baseline."),
    ]
    if artifacts:
        lines += ["", "<details><summary>Artifacts</summary>", ""]
        lines += ["| metric | model | file | sha256 |", "|---|---|---|---|"]
        for key in sorted(artifacts):
            a = artifacts[key]
            sha = a.get("sha256") or "–"
            lines.append(
                f"| `{key}` | {a.get('model', '–')} | {a.get('file', '–')} | `{sha[:16]}` |"
            )
        lines += ["", "</details>"]
    if plots:
        lines += ["", "Plots: " + ", ".join(f"`{p}`" for p in plots)]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class GateProblem:
    """Why a gate could not be evaluated: a line of the gate file, or the run itself."""

    where: str  # "pass.toml:12" or "pass.toml" or "server 127.0.0.1:1"
    key: str  # "checks[2].min", or "" when the problem is not one key's
    message: str

    @property
    def title(self) -> str:
        return f"{self.where}: {self.key}" if self.key else self.where


def write_error_outputs(
    out_dir: Path, gate: str, problems: Sequence[GateProblem], seconds: float = 0.0
) -> str:
    """``junit.xml`` with one ``<error>`` test case per problem and ``summary.md`` listing
    them; returns the summary (for ``$GITHUB_STEP_SUMMARY``)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    root, suite = _junit_root(gate, len(problems), 0, len(problems), seconds)
    for i, p in enumerate(problems):
        case = ET.SubElement(
            suite,
            "testcase",
            {"classname": f"cvscore.gate.{gate}.configuration", "name": p.title or f"problem {i}",
             "time": "0"},
        )  # fmt: skip
        error = ET.SubElement(case, "error", {"message": p.message, "type": "GateError"})
        error.text = f"{p.title}: {p.message}"
    _write_xml(root, out_dir / "junit.xml")
    noun = "problem" if len(problems) == 1 else "problems"
    lines = [
        f"## ⚠️ cvscore gate `{gate}` could not be evaluated: {len(problems)} {noun}",
        "",
        "| where | key | problem |",
        "|---|---|---|",
    ]
    for p in problems:
        message = p.message.replace("|", "\\|").replace("\n", " ")
        lines.append(f"| `{p.where}` | {f'`{p.key}`' if p.key else '–'} | {message} |")
    lines += ["", "No check was run; fix the problems above and run the gate again."]
    summary = "\n".join(lines) + "\n"
    (out_dir / "summary.md").write_text(summary, encoding="utf-8")
    return summary
