"""``cvscore score``: through a server, in-process, and as a real command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cvscore.cli.main import main
from cvscore.client import Client

from ..server.conftest import sample


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    out = {}
    for name, value in sample("cross_entropy", seed=9, N=4).items():
        out[name] = tmp_path / f"{name}.npy"
        np.save(out[name], value.numpy())
    return out


def _args(files: dict[str, Path]) -> list[str]:
    return [a for name, path in files.items() for a in ("--input", f"{name}={path}")]


def test_score_through_a_server(address: str, files, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["score", "cross_entropy", *_args(files), "--server", address, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    inputs = {k: np.load(v) for k, v in files.items()}
    with Client(address) as client:
        expected = client.score("cross_entropy", inputs)
    assert out["value"] == expected.value
    assert out["scores"] == expected.scores.tolist()
    assert (out["runtime"], out["device"], out["reduction"]) == ("onnx", "cpu", "mean")


def test_score_in_process_gives_the_servers_numbers(
    address: str, small_repo: Path, files, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["score", "cross_entropy", *_args(files), "--reduction", "sum", "--json"]
    assert main([*args, "--repository", str(small_repo)]) == 0
    local = json.loads(capsys.readouterr().out)
    assert main([*args, "--server", address]) == 0
    remote = json.loads(capsys.readouterr().out)
    assert local == remote


@pytest.mark.parametrize("where", ["server", "in-process"])
def test_score_errors_are_one_line(
    where: str, address: str, small_repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    np.save(tmp_path / "a.npy", np.zeros((2, 4), np.float32))
    np.save(tmp_path / "b.npy", np.zeros((3, 4), np.float32))
    target = ["--server", address] if where == "server" else ["--repository", str(small_repo)]
    args = [
        "score",
        "giou",
        "--input",
        f"preds={tmp_path / 'a.npy'}",
        "--input",
        f"target={tmp_path / 'b.npy'}",
    ]
    assert main([*args, *target]) == 2
    assert capsys.readouterr().err == (
        "cvscore score: error: INVALID_ARGUMENT: "
        "Expected axis N of `target` to equal axis N of `preds` (2), got 3\n"
    )


def test_score_bad_input_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["score", "giou", "--input", "preds", "--server", "127.0.0.1:1"]) == 2
    assert "Expected --input NAME=FILE.npy, got 'preds'" in capsys.readouterr().err


def test_the_cvscore_command(address: str, files) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "cvscore.cli", "score", "cross_entropy", *_args(files),
         "--server", address, "--reduction", "none"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["metric", "cross_entropy"]
    assert lines[1].split() == ["runtime", "onnx", "(cpu)"]
    assert lines[2].startswith("scores (N=4)")
