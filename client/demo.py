"""``cvscore demo``: export the zoo, score one sample per metric in every runtime, compare."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from ..exporters import export_many
from ..metrics import registry
from ..server import runtimes
from .cli import print_table


def run_demo(repo: Path) -> int:
    print(f"exporting the zoo into {repo} (cached after the first run) ...", file=sys.stderr)
    export_many(None, repo, formats=("torchscript", "onnx"))
    rows = []
    worst = 0.0
    gen = torch.Generator().manual_seed(2026)
    for spec in registry.specs():
        inputs = spec.make_inputs(gen, {"N": 1})
        spec.check_inputs(inputs)
        eager = float(spec.build()(**inputs)[0])
        flat = {k: v.numpy() for k, v in spec.canonical(inputs).items()}
        values = [eager]
        for kind in ("torchscript", "onnx"):
            out = runtimes.load(repo, spec.name, kind).run(flat)
            values.append(float(out[spec.outputs[0].name].reshape(-1)[0]))
        diff = max(abs(v - eager) for v in values[1:]) if np.isfinite(eager) else 0.0
        worst = max(worst, diff)
        rows.append([spec.name, spec.family, *(f"{v:.6f}" for v in values), f"{diff:.1e}"])
    print_table(("metric", "family", "eager", "torchscript", "onnxruntime", "max |diff|"), rows)
    print(f"\n{len(rows)} metrics; largest eager-vs-artifact difference {worst:.2e}")
    return 0
