"""The README's "Running an artifact in another runtime": examples/onnx_runtime.py works."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cvscore.metrics import registry

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "onnx_runtime.py"


def _example():
    spec = importlib.util.spec_from_file_location("onnx_runtime_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["ssim", "l1", "giou", "mean_iou", "cross_entropy"])
def test_plain_onnxruntime_with_the_manifest_equals_eager(zoo_repo: Path, name: str) -> None:
    example = _example()
    spec = registry.get(name)
    gen = torch.Generator().manual_seed(3)
    inputs = spec.make_inputs(gen, {"N": 3})  # in the eager module's (unflattened) shapes
    expected = spec.build()(**inputs).numpy()
    got = example.score(zoo_repo / name, {k: v.numpy() for k, v in inputs.items()})
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_example_runs_without_cvscore_or_torch(zoo_repo: Path) -> None:
    code = (
        "import runpy, sys; sys.argv = ['x', sys.argv[1]]; "
        f"runpy.run_path({str(EXAMPLE)!r}, run_name='__main__'); "
        "assert 'torch' not in sys.modules and 'cvscore' not in sys.modules, 'imported torch'"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(zoo_repo)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    lines = dict(line.split(maxsplit=1) for line in proc.stdout.splitlines())
    assert set(lines) == {"ssim", "l1", "giou", "mean_iou"}
    assert 0 < float(lines["mean_iou"]) <= 1
