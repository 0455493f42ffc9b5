"""How commands end, and what ``cvscore --help`` and ``cvscore metrics`` load and print."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from cvscore.cli import main as cli
from cvscore.cli import metrics as metrics_cmd
from cvscore.cli.errors import CliError


def _failing(exc: BaseException):
    def run(args: object) -> int:
        raise exc

    return run


def test_a_user_error_is_one_line_and_exit_2(monkeypatch, capsys) -> None:
    monkeypatch.setattr(metrics_cmd, "run", _failing(CliError("bad --family")))
    assert cli.main(["metrics"]) == 2
    err = capsys.readouterr().err
    assert err == "cvscore metrics: error: bad --family\n"
    assert cli.main(["--debug", "metrics"]) == 2
    assert "Traceback" in capsys.readouterr().err


@pytest.mark.parametrize("exc", [KeyError("oops"), ValueError("bug"), OSError("disk")])
def test_a_bug_keeps_its_traceback_and_exits_1(monkeypatch, capsys, exc: Exception) -> None:
    monkeypatch.setattr(metrics_cmd, "run", _failing(exc))
    assert cli.main(["metrics"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and type(exc).__name__ in err
    assert "internal error" in err


def test_help_loads_neither_torch_nor_grpc() -> None:
    code = (
        "import sys\nfrom cvscore.cli.main import build_parser\nbuild_parser().format_help()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'torch', 'grpc', 'numpy', 'onnxruntime'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _metrics(*args: str, cache: Path) -> subprocess.CompletedProcess:
    code = (
        "import sys\nfrom cvscore.cli.main import main\ncode = main(sys.argv[1:])\n"
        "print('torch loaded' if 'torch' in sys.modules else 'no torch', file=sys.stderr)\n"
        "sys.exit(code)"
    )
    return subprocess.run(
        [sys.executable, "-c", code, "metrics", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "CVSCORE_CACHE": str(cache)},
    )


def test_metrics_table_is_narrow_filtered_and_cached(tmp_path: Path) -> None:
    first = _metrics(cache=tmp_path)
    assert first.returncode == 0 and "torch loaded" in first.stderr  # builds the catalog
    assert list(tmp_path.glob("catalog-*.json"))
    second = _metrics(cache=tmp_path)
    assert second.returncode == 0 and "no torch" in second.stderr  # reads it
    assert second.stdout == first.stdout
    lines = second.stdout.splitlines()
    assert lines[0].split() == ["name", "family", "better", "params", "summary"]
    assert max(len(line) for line in lines) <= 100
    names = [line.split()[0] for line in lines[2:]]
    assert {"iou", "giou", "coco_map", "psnr"} <= set(names)

    boxes = _metrics("--family", "boxes", cache=tmp_path)
    families = {line.split()[1] for line in boxes.stdout.splitlines()[2:]}
    assert families == {"boxes"}
    wide = _metrics("*iou", "--wide", cache=tmp_path)
    head, *rows = wide.stdout.splitlines()
    assert head.split() == ["name", "family", "inputs", "output", "params", "better", "reference"]
    assert {r.split()[0] for r in rows[1:]} == {"iou", "giou", "diou", "ciou", "mean_iou"}
    assert "preds[N, 4]:float32" in wide.stdout
    listed = json.loads(_metrics("psnr", "--json", cache=tmp_path).stdout)
    assert [e["name"] for e in listed] == ["psnr"] and listed[0]["params"]

    unknown = _metrics("--family", "nope", cache=tmp_path)
    assert unknown.returncode == 2 and "Unknown family ['nope']" in unknown.stderr
    nothing = _metrics("no_such_metric", cache=tmp_path)
    assert nothing.returncode == 2 and "No metric matches" in nothing.stderr


def test_the_catalog_key_follows_the_definitions(tmp_path: Path, monkeypatch) -> None:
    import importlib.util

    (tmp_path / "boxes.py").write_text("A = 1\n")
    fake = types.SimpleNamespace(submodule_search_locations=[str(tmp_path)])
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: fake)
    before = metrics_cmd._catalog_key()
    assert metrics_cmd._catalog_key() == before
    (tmp_path / "boxes.py").write_text("A = 2\n")
    assert metrics_cmd._catalog_key() != before
