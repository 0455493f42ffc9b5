"""Fidelity table: every form of every metric against an independent float64 reference.

Exports the zoo (every format), then, for each metric and each input regime (typical,
extreme, degenerate), scores fresh seeded inputs at several batch sizes in eager float32,
TorchScript, ONNX Runtime and torch.export and compares each with the metric's float64
reference from ``tests/references`` (numpy / scipy / reference libraries, computed on the
exact float32 values the forms see). Each cell is the worst absolute error and, in
brackets, that error in units of the harness's float32 tolerance (``atol + rtol·|ref|``;
above 1 fails ``tests/test_fidelity.py``). "NaN!" marks a non-finite value where the
reference is finite.

    .venv/bin/python bench/fidelity.py [--metrics ...]

Writes bench/results/fidelity-cpu-<date>.md. The VGG losses need $CVSCORE_VGG_WEIGHTS (a
seeded random VGG19 is written to a temporary file when it is unset).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the references live with the tests

from cvscore.exporters import export_many  # noqa: E402
from cvscore.metrics import registry  # noqa: E402
from cvscore.metrics._vgg import ENV_WEIGHTS, random_state_dict  # noqa: E402
from cvscore.metrics.registry import REGIMES  # noqa: E402
from cvscore.server import runtimes  # noqa: E402
from tests import references  # noqa: E402
from tests.test_fidelity import (  # noqa: E402
    BATCH_SIZES,
    REFERENCE_TOLERANCES,
    Forms,
    compute_dtype,
    regime_inputs,
)

RESULTS = ROOT / "bench" / "results"
FORMS = ("eager", *runtimes.RUNTIMES)
LABELS = {"eager": "eager fp32", "onnx": "onnxruntime", "torch_export": "torch.export"}


def worst(actual: np.ndarray, expected: np.ndarray, dtype: torch.dtype) -> tuple[float, float]:
    """(worst |error|, worst error / tolerance); inf for a lost finite value."""
    if expected.dtype.kind in "iub":
        bad = float(np.abs(actual.astype(np.int64) - expected).max(initial=0))
        return bad, (np.inf if bad else 0.0)
    actual = actual.astype(np.float64)
    finite = np.isfinite(expected)
    if (finite & ~np.isfinite(actual)).any() or (~finite & (actual != expected)).any():
        return np.inf, np.inf
    tol = REFERENCE_TOLERANCES[dtype]
    err = np.abs(actual - expected)[finite]
    if not err.size:
        return 0.0, 0.0
    ratio = err / (tol["atol"] + tol["rtol"] * np.abs(expected[finite]))
    return float(err.max()), float(ratio.max())


def cell(err: float, ratio: float) -> str:
    return "NaN!" if not np.isfinite(err) else f"{err:.1e} ({ratio:.2g})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--metrics", nargs="*")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        if not os.environ.get(ENV_WEIGHTS):
            path = Path(tmp) / "vgg19.pth"
            widths = [2, 2, 4, 4, 8, 8, 8, 8, 16, 16, 16, 16, 16, 16, 16, 16]
            torch.save(random_state_dict("vgg19", widths, seed=0), path)
            os.environ[ENV_WEIGHTS] = str(path)
        repo = Path(tmp) / "repo"
        export_many(args.metrics, repo, progress=True)
        forms = Forms(repo)
        for spec in registry.select(args.metrics):
            dtype = compute_dtype(spec)
            for regime in REGIMES:
                found = {form: (0.0, 0.0) for form in FORMS}
                for n in BATCH_SIZES[regime]:
                    inputs = regime_inputs(spec, n, regime)
                    expected = references.compute(spec.name, inputs, spec.defaults())
                    for form in FORMS:
                        err, ratio = worst(forms.run(spec, form, inputs), expected, dtype)
                        found[form] = max(found[form], (err, ratio), key=lambda e: e[1])
                rows.append([spec.name, regime, *(cell(*found[f]) for f in FORMS)])
                print(" | ".join(rows[-1]), flush=True)
    header = ["metric", "regime", *(LABELS.get(f, f) for f in FORMS)]
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    text = (
        f"# cvscore fidelity, {stamp}\n\n"
        "Worst |form - float64 reference| per metric and input regime, over batch sizes "
        + ", ".join(f"{r} {list(BATCH_SIZES[r])}" for r in REGIMES)
        + "; in brackets, that error in units of the float32 tolerance "
        f"(atol {REFERENCE_TOLERANCES[torch.float32]['atol']:g} + rtol "
        f"{REFERENCE_TOLERANCES[torch.float32]['rtol']:g}·|ref|; float64 for coco_map), above "
        "1 fails the harness. References: `tests/references/` (numpy, scipy, scikit-image, "
        "pytorch-msssim, pycocotools). Regenerate with `.venv/bin/python bench/fidelity.py`.\n\n"
        + "| " + " | ".join(header) + " |\n|" + "---|" * len(header) + "\n"
        + "\n".join("| " + " | ".join(r) + " |" for r in rows) + "\n"
    )  # fmt: skip
    print("\n" + text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"fidelity-cpu-{stamp}.md").write_text(text)


if __name__ == "__main__":
    main()
