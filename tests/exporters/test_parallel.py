"""Exporting many models over worker processes: same artifacts as one by one, failures."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from cvscore.exporters import export_many, parallel
from cvscore.exporters.parallel import Task, default_jobs, run_tasks

SMALL = ("l1", "psnr", "giou")


def _files(repo: Path, name: str) -> dict[str, str]:
    manifest = json.loads((repo / name / "manifest.json").read_text())
    return {k: v["sha256"] for k, v in manifest["files"].items()}


def test_workers_write_the_same_artifacts_as_one_process(tmp_path: Path) -> None:
    serial = export_many(list(SMALL), tmp_path / "serial", jobs=1, progress=False)
    pooled = export_many(list(SMALL), tmp_path / "pooled", jobs=2, progress=False)
    # results come back in the order asked for, whichever worker finished first
    assert [r.name for r in pooled] == [r.name for r in serial] == sorted(SMALL, key=SMALL.index)
    assert not any(r.skipped for r in pooled)
    for name in SMALL:
        files = _files(tmp_path / "pooled", name)
        assert set(files) == {"model.pt", "model.onnx", "model.pt2"}
        # the ONNX graph and its config are byte for byte what one process writes
        assert files["model.onnx"] == _files(tmp_path / "serial", name)["model.onnx"]
        for path in ("config.pbtxt",):
            assert (tmp_path / "pooled" / name / path).read_text() == (
                tmp_path / "serial" / name / path
            ).read_text()


def test_an_up_to_date_repository_starts_no_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    export_many(list(SMALL[:2]), tmp_path, formats=("onnx",), jobs=1, progress=False)

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a pool was started for models that are up to date")

    monkeypatch.setattr(parallel, "ProcessPoolExecutor", refuse)
    again = export_many(list(SMALL[:2]), tmp_path, formats=("onnx",), jobs=2, progress=False)
    assert [r.skipped for r in again] == [True, True]


def test_a_failure_stops_the_export_unless_keep_going(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tasks = [
        Task("l1", None, ("onnx",), False),
        Task("focal", {"gama": 1.0}, ("onnx",), False),  # a misspelt parameter
        Task("psnr", None, ("onnx",), False),
    ]
    with pytest.raises(ValueError, match="Unknown parameter `gama`"):
        run_tasks(tasks, tmp_path / "a", jobs=2)
    with caplog.at_level(logging.WARNING, logger="cvscore.exporters.parallel"):
        results = run_tasks(tasks, tmp_path / "b", jobs=2, keep_going=True)
    assert [r.name if r else None for r in results] == ["l1", None, "psnr"]
    assert (tmp_path / "b" / "psnr" / "1" / "model.onnx").is_file()
    assert any("cannot export focal" in r.getMessage() for r in caplog.records)


def test_jobs_come_from_the_environment_or_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(parallel.JOBS_ENV, "3")
    assert default_jobs() == 3
    for bad in ("two", "0"):
        monkeypatch.setenv(parallel.JOBS_ENV, bad)
        with pytest.raises(ValueError, match=parallel.JOBS_ENV):
            default_jobs()
    monkeypatch.delenv(parallel.JOBS_ENV)
    assert default_jobs() >= 1
    with pytest.raises(ValueError, match="`jobs`"):
        run_tasks([], Path("."), jobs=0)


def test_cli_refuses_a_bad_jobs_count(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "cvscore.cli",
            "export",
            "l1",
            "--out",
            str(tmp_path),
            "--jobs",
            "0",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "Expected --jobs to be a positive integer, got 0" in proc.stderr
    assert not (tmp_path / "l1").exists()
