"""Fidelity table: for every metric, the largest difference of each artifact from eager.

Exports the zoo (every format), then scores fresh seeded inputs at batch sizes 1, 7 and 64
in eager float32, a float64 eager reference, TorchScript, ONNX Runtime and torch.export,
and prints per metric the largest absolute difference of each artifact from eager float32,
and of eager float32 from the float64 reference (relative to the reference's scale).

    .venv/bin/python bench/fidelity.py [--metrics ...]

Writes bench/results/fidelity-<date>.md. The VGG losses need $CVSCORE_VGG_WEIGHTS (a
seeded random VGG19 is written to a temporary file when it is unset).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from cvscore.exporters import export_many
from cvscore.metrics import registry
from cvscore.metrics._vgg import ENV_WEIGHTS, random_state_dict
from cvscore.server import runtimes

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--metrics", nargs="*")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if not os.environ.get(ENV_WEIGHTS):
            path = Path(tmp) / "vgg19.pth"
            widths = [4, 4, 8, 8, 16, 16, 16, 16, 32, 32, 32, 32, 32, 32, 32, 32]
            torch.save(random_state_dict("vgg19", widths, seed=0), path)
            os.environ[ENV_WEIGHTS] = str(path)
        repo = Path(tmp) / "repo"
        export_many(args.metrics, repo, progress=True)
        rows = []
        for spec in registry.select(args.metrics):
            worst = {kind: 0.0 for kind in runtimes.RUNTIMES}
            ref_err = 0.0
            loaded = {kind: runtimes.load(repo, spec.name, kind) for kind in runtimes.RUNTIMES}
            module = spec.build()
            module64 = spec.build().double()
            for n in (1, 7, 64):
                gen = torch.Generator().manual_seed(n)
                inputs = spec.make_inputs(gen, {"N": n})
                eager = module(**inputs).detach().double().numpy()
                inputs64 = {
                    k: v.double() if v.is_floating_point() else v for k, v in inputs.items()
                }
                reference = module64(**inputs64).detach().numpy()
                finite = np.isfinite(reference)
                scale = max(1.0, float(np.abs(reference[finite]).max())) if finite.any() else 1.0
                ref_err = max(
                    ref_err, float(np.abs(eager - reference)[finite].max(initial=0)) / scale
                )
                flat = {k: v.numpy() for k, v in spec.canonical(inputs).items()}
                for kind, rt in loaded.items():
                    out = rt.run(flat)[spec.outputs[0].name].astype(np.float64)
                    ok = np.isfinite(eager)
                    assert np.array_equal(ok, np.isfinite(out)), (
                        f"{spec.name}/{kind}: inf/nan differ"
                    )
                    worst[kind] = max(worst[kind], float(np.abs(out - eager)[ok].max(initial=0)))
            rows.append(
                [
                    spec.name,
                    spec.family,
                    *(f"{worst[k]:.1e}" for k in runtimes.RUNTIMES),
                    f"{ref_err:.1e}",
                ]
            )
            print(" | ".join(rows[-1]), flush=True)
    header = [
        "metric",
        "family",
        "torchscript",
        "onnxruntime",
        "torch.export",
        "eager fp32 vs fp64 (rel)",
    ]
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    text = (
        f"# cvscore fidelity, {stamp}\n\nLargest |artifact - eager float32| over batch sizes "
        "1, 7, 64 (seeded inputs from each metric's sampler), and the largest difference of "
        "eager float32 from a float64 reference relative to max(1, |reference|).\n\n"
        + "| " + " | ".join(header) + " |\n|" + "---|" * len(header) + "\n"
        + "\n".join("| " + " | ".join(r) + " |" for r in rows) + "\n"
    )  # fmt: skip
    print("\n" + text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"fidelity-cpu-{stamp}.md").write_text(text)


if __name__ == "__main__":
    main()
