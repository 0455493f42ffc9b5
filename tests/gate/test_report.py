"""The gate's reports say what each delta is, and always show the baseline they have."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from cvscore.gate.checks import Check, evaluate_checks
from cvscore.gate.report import GateProblem, summary_markdown, write_error_outputs, write_junit

CHECKS = [
    Check("ap min", "boxes/coco_map/AP", "min", 0.5, False, True),
    Check("psnr max", "pairs/psnr/mean", "max", 40.0, False, True),
    Check("ap drop", "boxes/coco_map/AP", "max_drop", 0.02, False, True),
    Check("iou drop", "masks/mean_iou/mean_iou", "max_drop", 0.05, True, True),
]
FIGURES = {"boxes/coco_map/AP": 0.55, "pairs/psnr/mean": 41.0, "masks/mean_iou/mean_iou": 0.72}
BASELINE = {"boxes/coco_map/AP": 0.6, "pairs/psnr/mean": 39.0, "masks/mean_iou/mean_iou": 0.8}


def test_deltas_are_margins_to_thresholds_or_changes_from_the_baseline() -> None:
    ap_min, psnr_max, ap_drop, iou_drop = evaluate_checks(CHECKS, FIGURES, BASELINE, 5)
    # min: 0.55 - 0.5 = +0.05 inside the bound, +10% of the threshold
    assert (ap_min.delta, ap_min.delta_relative, ap_min.delta_kind) == (
        0.05, 0.1, "margin to threshold"
    )  # fmt: skip
    assert ap_min.passed and ap_min.baseline == 0.6  # the baseline shown on a min check too
    # max: 41 is 1 over 40, a negative margin
    assert (psnr_max.delta, psnr_max.delta_relative, psnr_max.passed) == (-1.0, -0.025, False)
    # max_drop: 0.55 - 0.6 = -0.05 from the baseline (-8.33%), a drop of 0.05 > 0.02
    assert (ap_drop.delta, ap_drop.delta_kind, ap_drop.measured) == (
        -0.05, "change from baseline", 0.05
    )  # fmt: skip
    assert ap_drop.delta_relative == -0.083333 and not ap_drop.passed
    # relative max_drop: 0.72 vs 0.8 is a drop of 10% > 5%
    assert iou_drop.measured == 0.1 and not iou_drop.passed


def test_summary_and_junit_state_the_kind_of_each_delta(tmp_path: Path) -> None:
    results = evaluate_checks(CHECKS, FIGURES, BASELINE, 5)
    text = summary_markdown("g", results, "onnx", 5, {}, [], "baseline.json")
    rows = [
        line for line in text.splitlines() if line.startswith("| ✅") or line.startswith("| ❌")
    ]
    # no `confidence`: no interval, decided on the point value
    assert rows[0].endswith("| 0.6 | +0.05 | +10% | margin to threshold | – | point value |")
    assert rows[2].endswith("| 0.6 | -0.05 | -8.33% | change from baseline | – | point value |")
    assert "margin to the threshold (positive: inside the bound)" in text
    write_junit(tmp_path / "junit.xml", "g", results, 1.0, {})
    failure = ET.parse(tmp_path / "junit.xml").getroot().find(".//failure")
    assert failure is not None and "delta: -1 (-2.5%) margin to threshold" in (failure.text or "")


def test_error_outputs_have_an_error_case_per_problem(tmp_path: Path) -> None:
    problems = [
        GateProblem("g.toml:5", "gate.runtime", "expected one of eager, torchscript, onnx"),
        GateProblem("server 127.0.0.1:1", "", "unreachable"),
    ]
    summary = write_error_outputs(tmp_path, "g", problems)
    root = ET.parse(tmp_path / "junit.xml").getroot()
    assert root.get("errors") == "2" and root.get("failures") == "0"
    errors = root.findall("testsuite/testcase/error")
    assert [e.text for e in errors] == [
        "g.toml:5: gate.runtime: expected one of eager, torchscript, onnx",
        "server 127.0.0.1:1: unreachable",
    ]
    assert (tmp_path / "summary.md").read_text() == summary
    assert "| `g.toml:5` | `gate.runtime` | expected one of eager, torchscript, onnx |" in summary
