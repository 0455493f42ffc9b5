"""The `confidence` example gate end to end, baselines written by one run for the next, and
the configuration errors of the new keys (with their lines)."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from cvscore.evaluate.backends import InProcess
from cvscore.gate.config import load_gate
from cvscore.gate.evidence import write_baseline
from cvscore.gate.report import dumps_report
from cvscore.gate.run import GateResult, run_gate
from cvscore.gate.schema import ConfigError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "gate"


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("confidence-repo")


def run(gate: Path, out: Path, repo: Path, baseline: Path | None = None) -> GateResult:
    config = load_gate(gate, baseline=baseline)
    return run_gate(config, out, InProcess(config.runtime, repo, "cpu", progress=False))


def test_the_confidence_example_fails_warns_and_reruns_byte_for_byte(
    repo: Path, tmp_path: Path
) -> None:
    first = run(EXAMPLES / "confidence.toml", tmp_path / "a", repo)
    assert [c.verdict for c in first.checks] == ["inconclusive", "pass", "pass", "fail", "fail"]
    assert first.exit_code == 1 and first.failed == 2
    # the point-value twin of the inconclusive check fails on the same drop
    assert first.checks[0].delta == first.checks[4].delta and first.checks[4].interval is None
    suite = ET.parse(tmp_path / "a" / "junit.xml").getroot().find("testsuite")
    assert suite is not None and suite.get("skipped") == "1"
    # one histogram per figure with a confidence check, passing ones included
    for name in (
        "boot_boxes_coco_map_AP.png",
        "boot_pairs_psnr_mean.png",
        "boot_masks_mean_iou_mean_iou.png",
    ):
        assert name in first.plots
        assert (tmp_path / "a" / name).read_bytes()[:4] == b"\x89PNG"
    report = first.report
    assert report["bootstrap"]["intervals"]["boxes/coco_map/AP"]["change"] is not None
    second = run(EXAMPLES / "confidence.toml", tmp_path / "b", repo)
    same = {k: v for k, v in report.items() if k != "run"}
    assert dumps_report(same) == dumps_report(
        {k: v for k, v in second.report.items() if k != "run"}
    )
    for name in ("evidence.npz", "boot_boxes_coco_map_AP.png", "boot_masks_mean_iou_mean_iou.png"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_a_baseline_written_by_one_run_is_used_by_the_next(repo: Path, tmp_path: Path) -> None:
    run(EXAMPLES / "confidence.toml", tmp_path / "first", repo)
    base = write_baseline(tmp_path / "first", tmp_path / "kept" / "base.json")
    assert base == tmp_path / "kept" / "base.npz" and base.is_file()
    assert json.loads((tmp_path / "kept" / "base.json").read_text())["evidence"]["file"] == (
        "base.npz"
    )
    again = run(
        EXAMPLES / "confidence.toml", tmp_path / "next", repo, tmp_path / "kept" / "base.json"
    )
    drops = [c for c in again.checks if c.kind == "max_drop" and c.interval is not None]
    assert drops and all(c.interval.change == (0.0, 0.0) for c in drops)  # type: ignore[union-attr]
    assert all(c.verdict == "pass" for c in drops)


def test_the_new_keys_are_checked_with_their_lines(tmp_path: Path) -> None:
    gate = tmp_path / "g.toml"
    shutil.copy(EXAMPLES / "baseline.json", tmp_path / "old.json")  # no evidence beside it
    gate.write_text(
        f"""[gate]
baseline = "old.json"
seed = -1

[datasets.pairs]
kind = "images"
target = "{EXAMPLES / "data/images/target"}"
pred = "{EXAMPLES / "data/images/pred_good"}"
[datasets.pairs.metrics.psnr]

[[checks]]
figure = "pairs/psnr/mean"
min = 20.0
confidence = 1.5

[[checks]]
figure = "pairs/psnr/mean"
min = 20.0
resamples = 500

[[checks]]
figure = "pairs/psnr/mean"
max_drop = 0.5
confidence = 0.95
inconclusive = "maybe"
"""
    )
    with pytest.raises(ConfigError) as info:
        load_gate(gate)
    shown = [str(p).replace(str(gate), "g.toml") for p in info.value.problems]
    assert shown == [
        "g.toml:3: gate.seed: expected an integer >= 0, got -1",
        "g.toml:14: checks[0].confidence: expected a number in [0.5, 0.999], got 1.5",
        "g.toml:19: checks[1].resamples: `resamples` without `confidence`",
        "g.toml:24: checks[2].confidence: a max_drop with confidence needs the baseline's "
        f"evidence for pairs/psnr; {tmp_path / 'old.json'} has none (write the baseline with "
        "`cvscore gate --write-baseline`)",
        "g.toml:25: checks[2].inconclusive: expected one of fail, warn, pass, got 'maybe'",
    ]
