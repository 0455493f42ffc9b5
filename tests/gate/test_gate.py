"""``cvscore gate``: exit codes, the four outputs, configuration errors, determinism.

The example gates in ``examples/gate`` run against one model repository per module (the
artifacts are exported there on first use), through the command line in a subprocess for
the exit codes and through ``run_gate`` for the details.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from cvscore.evaluate.backends import InProcess, Remote
from cvscore.evaluate.errors import DataError
from cvscore.gate import checks as gate_checks
from cvscore.gate.config import load_gate
from cvscore.gate.report import dumps_report
from cvscore.gate.run import run_gate
from cvscore.gate.schema import ConfigError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "gate"
OUTPUTS = ("report.json", "junit.xml", "summary.md")


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gate-repo")


def cli(*args: str, repo: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cvscore.cli", "gate", *args, "--repository", str(repo)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


def in_process(repo: Path, runtime: str = "onnx") -> InProcess:
    return InProcess(runtime, repo, "cpu", progress=False)


def junit(path: Path) -> tuple[ET.Element, list[ET.Element]]:
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites"
    suites = root.findall("testsuite")
    assert len(suites) == 1
    suite = suites[0]
    cases = suite.findall("testcase")
    failures = [c for c in cases if c.find("failure") is not None]
    assert int(suite.get("tests", "-1")) == len(cases) == int(root.get("tests", "-1"))
    assert int(suite.get("failures", "-1")) == len(failures) == int(root.get("failures", "-1"))
    assert int(suite.get("errors", "-1")) == 0
    return suite, failures


def summary_failures(text: str) -> int:
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    return sum(line.startswith("| ❌") for line in rows)


@pytest.fixture(scope="module")
def passed(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pass")
    step = out / "step-summary.md"
    step.write_text("earlier step\n")
    result = cli(
        str(EXAMPLES / "pass.toml"),
        "--out",
        str(out),
        "--quiet",
        repo=repo,
        env={"GITHUB_STEP_SUMMARY": str(step)},
    )
    assert result.returncode == 0, result.stderr
    return out


def test_pass_gate_exits_0_and_writes_the_outputs(passed: Path) -> None:
    for name in OUTPUTS:
        assert (passed / name).is_file(), name
    pngs = sorted(p.name for p in passed.glob("*.png"))
    assert "pr_boxes_coco_map.png" in pngs and "dist_pairs_psnr_score.png" in pngs
    assert all((passed / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    suite, failures = junit(passed / "junit.xml")
    assert failures == [] and int(suite.get("tests", "0")) == 11
    summary = (passed / "summary.md").read_text()
    assert summary.startswith("## ✅ cvscore gate `example-pass` passed: 11 checks, 0 failed")
    assert summary_failures(summary) == 0
    # appended to $GITHUB_STEP_SUMMARY, after what was there
    assert (passed / "step-summary.md").read_text() == "earlier step\n" + summary
    report = json.loads((passed / "report.json").read_text())
    assert report["passed"] is True
    assert report["precision"]["significant_digits"] == 5
    art = report["artifacts"]["pairs/psnr"]
    assert art["runtime"] == "onnx" and re.fullmatch(r"[0-9a-f]{64}", art["sha256"])
    assert art["versions"]["torch"]
    assert len(report["samples"]["pairs/psnr/score"]) == 10  # the baseline of the next run


def test_fail_gate_exits_1_and_junit_counts_what_the_summary_shows(
    repo: Path, tmp_path: Path
) -> None:
    result = cli(str(EXAMPLES / "fail.toml"), "--out", str(tmp_path), "--quiet", repo=repo)
    assert result.returncode == 1, result.stderr
    for name in OUTPUTS:
        assert (tmp_path / name).is_file(), name
    suite, failures = junit(tmp_path / "junit.xml")
    summary = (tmp_path / "summary.md").read_text()
    assert 0 < len(failures) < int(suite.get("tests", "0"))  # some pass, some fail
    assert summary_failures(summary) == len(failures)
    assert f"failed: {len(failures)} of {suite.get('tests')} checks failed" in summary
    # a failure carries the figure, the threshold and the delta
    failure = failures[0].find("failure")
    assert failure is not None and failure.text is not None
    for word in ("figure: boxes/coco_map/AP", "threshold: min 0.5", "delta: -"):
        assert word in failure.text
    report = json.loads((tmp_path / "report.json").read_text())
    assert sum(not c["passed"] for c in report["checks"]) == len(failures)
    assert report["passed"] is False


def test_broken_gate_exits_2_naming_every_problem(repo: Path, tmp_path: Path) -> None:
    result = cli(str(EXAMPLES / "broken.toml"), "--out", str(tmp_path / "o"), repo=repo)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    expected = [
        r"broken\.toml:5: gate\.runtime: expected one of eager, torchscript, onnx, got 'tensorrt'",
        r"broken\.toml:6: gate\.treshold: unknown key",
        r"broken\.toml:11: datasets\.boxes\.dt: .*no_such_file\.json: no such file",
        r"broken\.toml:18: datasets\.pairs\.metrics\.psnrr: Unknown metric `psnrr`",
        r"broken\.toml:26: datasets\.masks\.metrics\.mean_iou\.colour: unknown parameter",
        r"broken\.toml:30: checks\[0\]\.min: min 0\.9 > max 0\.5",
        r"broken\.toml:35: checks\[1\]\.max_drop: expected a number >= 0, got -0\.1",
        r"broken\.toml:39: checks\[2\]\.max_drop: a relative drop is a fraction in \[0, 1\]",
        r"broken\.toml:44: checks\[3\]\.min: min 1\.5 can never pass",
        r"broken\.toml:47: checks\[4\]\.figure: unknown figure 'boxes/coco_map/mAP'",
        r"broken\.toml:48: checks\[4\]\.mn: unknown key",
    ]
    for pattern in expected:
        assert re.search(pattern, result.stderr), (pattern, result.stderr)
    # the outputs say why: one <error> test case per problem, the problems with their lines
    root = ET.parse(tmp_path / "o" / "junit.xml").getroot()
    cases = root.findall("testsuite/testcase")
    errors = [c.find("error") for c in cases]
    (count,) = re.findall(r"(\d+) configuration problems", result.stderr)
    assert len(cases) == int(count) == int(root.get("errors", "-1")) >= len(expected)
    assert all(e is not None for e in errors) and int(root.get("failures", "-1")) == 0
    texts = [e.text or "" for e in errors if e is not None]
    for pattern in expected:
        assert any(re.search(pattern, text) for text in texts), (pattern, texts)
    summary = (tmp_path / "o" / "summary.md").read_text()
    assert summary.startswith(
        f"## ⚠️ cvscore gate `broken` could not be evaluated: {count} problems"
    )
    assert "broken.toml:39` | `checks[2].max_drop` |" in summary
    assert not (tmp_path / "o" / "report.json").exists()  # no figures: nothing ran


def _write_gate(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "gate.toml"
    data = (EXAMPLES / "data").as_posix()
    path.write_text(body.replace("DATA", data))
    return path


PAIRS = """
[datasets.pairs]
kind = "images"
target = "DATA/images/target"
pred = "DATA/images/pred_good"
[datasets.pairs.metrics.psnr]
"""


@pytest.mark.parametrize(
    ("checks", "message"),
    [
        ('figure = "pairs/psnr/mean"\nmax_drop = 0.1', "needs a baseline"),
        ('figure = "pairs/psnr/mean"', "no threshold"),
        ('figure = "pairs/psnr/mean"\nmin = "high"', "expected a finite number, got 'high'"),
        ('figure = "pairs/psnr/mean"\nmin = 1\ndrop = "relative"', "`drop` without `max_drop`"),
        ('figure = "pairs/psnr/median"\nmin = 1', "unknown figure 'pairs/psnr/median'"),
        ('figure = "pairs/psnr/mean"\nmin = 1\nhigher_is_better = 1', "expected true or false"),
    ],
)
def test_check_errors_name_the_line(tmp_path: Path, checks: str, message: str) -> None:
    path = _write_gate(tmp_path, PAIRS + "\n[[checks]]\n" + checks + "\n")
    with pytest.raises(ConfigError) as info:
        load_gate(path)
    assert message in str(info.value)
    assert re.search(r"gate\.toml:(8|9|10|11): checks\[0\]", str(info.value)), str(info.value)


def test_unreadable_data_and_unreachable_server_exit_2(repo: Path, tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    (images / "000.png").write_bytes(b"not a png")
    path = _write_gate(
        tmp_path,
        PAIRS.replace('"DATA/images/pred_good"', f'"{images.as_posix()}"')
        + '\n[[checks]]\nfigure = "pairs/psnr/mean"\nmin = 1\n',
    )
    with pytest.raises(DataError, match=r"000\.png: not a readable image"):
        run_gate(load_gate(path), tmp_path / "o", in_process(repo))
    result = cli(
        str(EXAMPLES / "pass.toml"),
        "--server",
        "127.0.0.1:1",
        "--timeout",
        "0.5",
        "--quiet",
        "--out",
        str(tmp_path / "o"),
        repo=repo,
    )
    assert result.returncode == 2
    assert "127.0.0.1:1 is unreachable" in result.stderr
    assert "Traceback" not in result.stderr
    root = ET.parse(tmp_path / "o" / "junit.xml").getroot()
    (error,) = root.findall("testsuite/testcase/error")
    assert "127.0.0.1:1 is unreachable" in error.get("message", "")


def test_figures_are_identical_across_runtimes_and_runs(
    passed: Path, repo: Path, tmp_path: Path
) -> None:
    onnx = json.loads((passed / "report.json").read_text())
    for runtime in ("eager", "torchscript", "onnx"):
        config = load_gate(EXAMPLES / "pass.toml", runtime=runtime)
        result = run_gate(config, tmp_path / runtime, in_process(repo, runtime))
        assert result.exit_code == 0
        text = (tmp_path / runtime / "report.json").read_text()
        report = json.loads(text)
        assert json.dumps(report["figures"]) == json.dumps(onnx["figures"]), runtime
        assert report["runtime"] == runtime
        if runtime == "onnx":  # a rerun: everything but the run section, byte for byte
            same = {k: v for k, v in report.items() if k != "run"}
            assert dumps_report(same) == dumps_report({k: v for k, v in onnx.items() if k != "run"})


def test_gate_through_a_server_gives_the_in_process_figures(
    passed: Path, repo: Path, tmp_path: Path
) -> None:
    from cvscore.server.app import BackgroundServer, ServerConfig

    onnx = json.loads((passed / "report.json").read_text())
    config = load_gate(EXAMPLES / "pass.toml")
    with BackgroundServer(ServerConfig(repo, port=0, runtime="onnx")) as server:
        backend = Remote(server.address, "onnx", progress=False)
        try:
            result = run_gate(config, tmp_path, backend, server=server.address)
        finally:
            backend.close()
    assert result.exit_code == 0
    assert result.report["figures"] == onnx["figures"]
    assert result.report["artifacts"]["pairs/psnr"]["server"] == server.address


def test_regression_uses_the_baseline_direction_and_relative_drop() -> None:
    checks = [
        gate_checks.Check("up", "d/m/a", "max_drop", 0.1, True, True),
        gate_checks.Check("down", "d/m/b", "max_drop", 0.5, False, False),
    ]
    results = gate_checks.evaluate_checks(
        checks, {"d/m/a": 0.85, "d/m/b": 2.4}, {"d/m/a": 1.0, "d/m/b": 2.0}, 5
    )
    # a: higher is better, 1.0 -> 0.85 is a relative drop of 0.15 > 0.1
    assert not results[0].passed and results[0].measured == 0.15 and results[0].delta == -0.15
    # b: lower is better, 2.0 -> 2.4 is a drop of 0.4 <= 0.5
    assert results[1].passed and results[1].measured == 0.4


def test_gate_server_needs_export_for_gate_then_matches_in_process(
    passed: Path, tmp_path: Path
) -> None:
    """A repository built with `cvscore export` lacks the gate's parameterised variants: the
    gate says which and how to export them (exit 2); after `cvscore export --for-gate` the
    gate through the server exits 0 with the in-process figures."""
    from cvscore.exporters.naming import variant_name
    from cvscore.server.app import BackgroundServer, ServerConfig

    def cvscore(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "cvscore.cli", *args],
            capture_output=True, text=True, cwd=ROOT, timeout=600,
        )  # fmt: skip

    served = tmp_path / "served"
    # the plain export (the metrics the gate uses; the whole zoo would only take longer)
    plain = cvscore("export", "coco_map", "mean_iou", "psnr", "ssim", "recall_at_k",
                    "--out", str(served), "--formats", "onnx")  # fmt: skip
    assert plain.returncode == 0, plain.stderr
    wanted = [
        variant_name("mean_iou", {"num_classes": 4, "ignore_index": 255}),
        variant_name("recall_at_k", {"ks": [1.0, 5.0]}),
    ]
    assert all(re.fullmatch(r"[a-z_]+-[0-9a-f]{12}", name) for name in wanted), wanted
    gate_file = str(EXAMPLES / "pass.toml")
    with BackgroundServer(ServerConfig(served, port=0, runtime="onnx")) as server:
        lacking = cvscore("gate", gate_file, "--server", server.address, "--quiet",
                          "--out", str(tmp_path / "lacking"))  # fmt: skip
    assert lacking.returncode == 2, lacking.stderr
    assert "Traceback" not in lacking.stderr
    for name in wanted:
        assert name in lacking.stderr
    assert f"cvscore export --for-gate {gate_file}" in lacking.stderr
    errors = ET.parse(tmp_path / "lacking" / "junit.xml").getroot().findall(".//error")
    assert sorted(e.text.split(": ")[1] for e in errors if e.text) == sorted(wanted)

    for_gate = cvscore("export", "--for-gate", gate_file, "--out", str(served), "--formats", "onnx")
    assert for_gate.returncode == 0, for_gate.stderr
    assert all((served / name / "manifest.json").is_file() for name in wanted)
    with BackgroundServer(ServerConfig(served, port=0, runtime="onnx")) as server:
        remote = cvscore("gate", gate_file, "--server", server.address, "--quiet",
                         "--out", str(tmp_path / "remote"))  # fmt: skip
    assert remote.returncode == 0, remote.stderr
    report = json.loads((tmp_path / "remote" / "report.json").read_text())
    in_process = json.loads((passed / "report.json").read_text())
    assert report["figures"] == in_process["figures"]
    assert report["artifacts"]["masks/mean_iou"]["model"] == wanted[0]


def test_coco_segm_and_keypoints_datasets(repo: Path, tmp_path: Path) -> None:
    from ..metrics.coco_fixtures import keypoints_fixture, pycocotools_eval, segm_fixture

    files = {}
    for kind, fixture in (("segm", segm_fixture), ("keypoints", keypoints_fixture)):
        gt, dt = fixture(5)
        (tmp_path / f"{kind}_gt.json").write_text(json.dumps(gt))
        (tmp_path / f"{kind}_dt.json").write_text(json.dumps(dt))
        files[kind] = pycocotools_eval(gt, dt, kind).stats
    body = """
[datasets.masks]
kind = "coco"
iou_type = "segm"
gt = "segm_gt.json"
dt = "segm_dt.json"
[datasets.masks.metrics.coco_map]
[datasets.poses]
kind = "coco"
iou_type = "keypoints"
gt = "keypoints_gt.json"
dt = "keypoints_dt.json"
[datasets.poses.metrics.coco_oks]
[[checks]]
figure = "masks/coco_map/AP_small"
min = 0.0
[[checks]]
figure = "poses/coco_oks/AR_large"
min = 0.0
"""
    path = tmp_path / "gate.toml"
    path.write_text(body)
    result = run_gate(load_gate(path), tmp_path / "o", in_process(repo))
    assert result.exit_code == 0
    figures = json.loads((tmp_path / "o" / "report.json").read_text())["figures"]
    from cvscore.metrics.coco_eval import PARAMS

    for key, kind in (("masks/coco_map", "segm"), ("poses/coco_oks", "keypoints")):
        names = PARAMS[kind].stat_names
        assert {k for k in figures if k.startswith(key)} == {f"{key}/{n}" for n in names}
        got = [figures[f"{key}/{n}"] for n in names]
        assert got == pytest.approx(list(files[kind]), rel=1e-4)  # the report's 5 digits
    # keypoints take the OKS graph
    path.write_text(body.replace("poses.metrics.coco_oks", "poses.metrics.coco_map"))
    with pytest.raises(ConfigError, match="iou_type 'keypoints' takes metric coco_oks"):
        load_gate(path)
