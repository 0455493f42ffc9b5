"""Shared fixtures: the zoo exported once per session, tolerances per dtype, devices."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from cvscore.exporters import export_many
from cvscore.metrics._vgg import ENV_WEIGHTS, random_state_dict

# One tolerance table per dtype (artifact or eager vs a reference computed in that dtype).
TOLERANCES: dict[torch.dtype, dict[str, float]] = {
    torch.float32: {"rtol": 1e-4, "atol": 1e-5},
    torch.float64: {"rtol": 1e-7, "atol": 1e-9},
}

DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=[
            pytest.mark.cuda,
            pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available"),
        ],
    ),
]


def tol(dtype: torch.dtype) -> dict[str, float]:
    return TOLERANCES[dtype]


# Channel widths of the test VGG19 (torchvision's are 64, 64, 128, 128, 256 x4, 512 x8):
# the same layout and layer indices, narrow enough that exports and gradcheck stay quick.
VGG_TEST_WIDTHS = [2, 2, 4, 4, 8, 8, 8, 8, 16, 16, 16, 16, 16, 16, 16, 16]


@pytest.fixture(scope="session", autouse=True)
def vgg_weights(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A seeded random VGG19 in torchvision's key format, named by $CVSCORE_VGG_WEIGHTS.

    The VGG losses (perceptual, style, texture, topology) read that variable when their
    `weights` parameter is empty, so registry-driven tests build them with default params.
    """
    path = tmp_path_factory.mktemp("vgg") / "vgg19-test.pth"
    torch.save(random_state_dict("vgg19", VGG_TEST_WIDTHS, seed=0), path)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(ENV_WEIGHTS, str(path))
        yield path


@pytest.fixture(scope="session")
def zoo_repo(tmp_path_factory: pytest.TempPathFactory, vgg_weights: Path) -> Path:
    """Every registered metric exported in every format, once per test session.

    The VGG losses get their weights from `vgg_weights` through $CVSCORE_VGG_WEIGHTS, so
    their manifests keep the default parameters.
    """
    # $CVSCORE_TEST_ZOO keeps the export between runs while developing (up-to-date models
    # are skipped, stale ones re-exported); CI leaves it unset and exports afresh.
    kept = os.environ.get("CVSCORE_TEST_ZOO")
    repo = Path(kept) if kept else tmp_path_factory.mktemp("zoo")
    export_many(None, repo, progress=False)
    return repo
