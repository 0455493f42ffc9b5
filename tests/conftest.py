"""Shared fixtures: the zoo exported once per session, tolerances per dtype, devices."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cvscore.exporters import export_many

# One tolerance table per dtype (artifact or eager vs a reference computed in that dtype).
TOLERANCES: dict[torch.dtype, dict[str, float]] = {
    torch.float32: {"rtol": 1e-4, "atol": 1e-5},
    torch.float64: {"rtol": 1e-7, "atol": 1e-9},
}

DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available"),
    ),
]


def tol(dtype: torch.dtype) -> dict[str, float]:
    return TOLERANCES[dtype]


@pytest.fixture(scope="session")
def zoo_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every registered metric exported in every format, once per test session."""
    repo = tmp_path_factory.mktemp("zoo")
    export_many(None, repo, progress=False)
    return repo
