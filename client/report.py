"""The gate's outputs: ``report.json``, ``junit.xml`` and ``summary.md``.

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
class CheckResult:
    """One threshold of one figure, evaluated."""

    name: str
    figure: str
    kind: str  # "min" | "max" | "max_drop"
    threshold: float
    relative: bool
    value: float
    baseline: float | None
    delta: float  # min/max: value - threshold; max_drop: value - baseline
    measured: float | None  # max_drop: the drop (relative when `relative`), else None
    passed: bool

    @property
    def condition(self) -> str:
        if self.kind == "min":
            return f">= {fmt(self.threshold)}"
        if self.kind == "max":
            return f"<= {fmt(self.threshold)}"
        unit = " (relative)" if self.relative else ""
        return f"drop <= {fmt(self.threshold)}{unit}"

    def explain(self) -> str:
        """One line: the figure, the threshold and the delta."""
        verdict = "passed" if self.passed else "FAILED"
        if self.kind == "max_drop":
            return (
                f"{self.figure} = {fmt(self.value)}, baseline {fmt(self.baseline)}, "
                f"delta {fmt(self.delta, sign=True)}, drop {fmt(self.measured)} "
                f"(max_drop {fmt(self.threshold)}{', relative' if self.relative else ''}): {verdict}"
            )
        return (
            f"{self.figure} = {fmt(self.value)}, {self.kind} {fmt(self.threshold)}, "
            f"delta {fmt(self.delta, sign=True)}: {verdict}"
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
            "drop": None if self.measured is None else encode(self.measured),
            "passed": self.passed,
        }


def write_junit(
    path: Path,
    gate: str,
    checks: Sequence[CheckResult],
    seconds: float,
    properties: Mapping[str, str],
) -> None:
    """JUnit XML: one ``testsuite`` (the gate), one ``testcase`` per check."""
    failures = sum(not c.passed for c in checks)
    counts = {"tests": str(len(checks)), "failures": str(failures), "errors": "0"}
    root = ET.Element("testsuites", {"name": "cvscore gate", **counts, "time": f"{seconds:.3f}"})
    suite = ET.SubElement(
        root, "testsuite", {"name": gate, **counts, "skipped": "0", "time": f"{seconds:.3f}"}
    )
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
        if not check.passed:
            failure = ET.SubElement(
                case, "failure", {"message": check.explain(), "type": check.kind}
            )
            failure.text = "\n".join(
                f"{k}: {v}"
                for k, v in (
                    ("figure", check.figure),
                    ("value", fmt(check.value)),
                    ("threshold", f"{check.kind} {fmt(check.threshold)}"),
                    ("baseline", fmt(check.baseline)),
                    ("delta", fmt(check.delta, sign=True)),
                )
            )
        ET.SubElement(case, "system-out").text = check.explain()
    ET.indent(root)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)


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
    head = (
        f"## ✅ cvscore gate `{gate}` passed: {len(checks)} checks, 0 failed"
        if not failed
        else f"## ❌ cvscore gate `{gate}` failed: {failed} of {len(checks)} checks failed"
    )
    lines = [
        head,
        "",
        "| | check | figure | value | threshold | baseline | delta |",
        "|---|---|---|--:|---|--:|--:|",
    ]
    for c in checks:
        lines.append(
            f"| {'✅' if c.passed else '❌'} | {c.name} | `{c.figure}` | {fmt(c.value)} | "
            f"{c.condition} | {fmt(c.baseline)} | {fmt(c.delta, sign=True)} |"
        )
    lines += [
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
