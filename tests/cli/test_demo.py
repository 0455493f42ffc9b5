"""``cvscore demo``: a real ``cvscore serve`` subprocess, two clients, a clean stop."""

from __future__ import annotations

from pathlib import Path

import pytest

from cvscore.cli.demo import run_demo
from cvscore.exporters.repository import list_models


def test_demo_scores_every_family_through_both_clients(
    zoo_repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_demo(zoo_repo) == 0
    out = capsys.readouterr().out
    header, _rule, *rows = out.split("\n\n")[0].splitlines()
    assert header.split()[:4] == ["metric", "family", "runtime", "eager"]
    assert "tritonclient" in header
    assert sorted(r.split()[0] for r in rows) == list_models(zoo_repo)
    assert "server stopped with SIGTERM, exit code 0" in out
