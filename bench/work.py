"""Admission's work estimates against measured peaks: is every estimate an upper bound?

For each case, a fresh process loads the metric's ONNX artifact, builds valid inputs, runs
it once on one row and once on the whole batch, and reports the growth of its peak RSS over
its RSS before the run (what the run allocated beyond the inputs), next to what admission
(server/admission.py) estimates for the same request. An estimate below the measure lets a
request past the budget; one far above refuses requests that would fit.

    .venv/bin/python bench/work.py

Writes bench/results/work-cpu-<date>.md.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
MiB = 1 << 20
CASES = [
    ("coco_map", {"N": 3000, "G": 3000}),
    ("distance_dice", {"N": 2, "C": 3, "H": 128, "W": 128}),
    ("mean_iou", {"N": 16, "H": 512, "W": 512}),
    ("recall_at_k", {"N": 2000, "M": 20000, "D": 64}),
    ("ssim", {"N": 16, "C": 3, "H": 512, "W": 512}),
    ("ms_ssim", {"N": 16, "C": 3, "H": 512, "W": 512}),
    ("cosface", {"N": 4096, "K": 10000, "D": 128}),
    ("triplet_center", {"N": 4096, "K": 2000, "D": 64}),
    ("l1", {"N": 64, "H": 1024, "W": 1024}),
    ("cross_entropy", {"N": 16, "C": 8, "H": 256, "W": 256}),
    ("combo", {"N": 16, "C": 8, "H": 256, "W": 256}),
    ("psnr", {"N": 16, "C": 3, "H": 512, "W": 512}),
    ("total_variation", {"N": 16, "C": 3, "H": 512, "W": 512}),
    ("giou", {"N": 4_000_000}),
]

CHILD = r"""
import json, os, resource, sys
from pathlib import Path
import torch
from cvscore.exporters.repository import read_manifest
from cvscore.metrics import registry
from cvscore.server import runtimes
from cvscore.server.admission import Limits, Plan
from cvscore.server.signature import Signature
repo, name, sizes = Path(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
spec = registry.get(name)
runtime = runtimes.load(repo, name, "onnx", "cpu")
signature = Signature.from_manifest({**read_manifest(repo / name), "name": name}, spec)
sample = spec.make_inputs(torch.Generator().manual_seed(0), sizes)
inputs = {k: v.numpy() for k, v in spec.canonical(sample).items()}
admission = Plan(signature, Limits(1 << 60, 1 << 60)).admit(inputs)
runtime.run({k: v[:1] for k, v in inputs.items()})
rss = int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
runtime.run(inputs)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
graph = Plan(signature, Limits(1 << 60, 1 << 60)).graph_bytes(admission.sizes)
print(json.dumps({"inputs": sum(v.nbytes for v in inputs.values()), "measured": peak - rss,
                  "graph": graph, "work": admission.work_bytes}))
"""


def main() -> int:
    from cvscore.exporters import export_many

    repo = Path(tempfile.mkdtemp(prefix="cvscore-work-"))
    export_many(sorted({n for n, _ in CASES}), repo, formats=("onnx",), progress=False)
    rows = [
        f"# Admission work estimates vs measured peaks, {dt.date.today().isoformat()}\n",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores; ONNX Runtime on CPU, one run "
        "per fresh process; measured = peak RSS growth during the run (beyond the inputs); "
        "graph = the estimate of the same (`MetricSpec.work`, or 6 temporaries of the "
        "product of every axis); admitted = graph + 2 x inputs, what `--max-work-mb` bounds. "
        "Command: `.venv/bin/python bench/work.py`.\n",
        "| metric | sizes | inputs MiB | measured MiB | graph estimate MiB | estimate / measured "
        "| admitted MiB |",
        "|---|---|---|---|---|---|---|",
    ]
    under = 0
    for name, sizes in CASES:
        out = subprocess.run(
            [sys.executable, "-c", CHILD, str(repo), name, json.dumps(sizes)],
            capture_output=True,
            text=True,
            check=True,
        )
        r = json.loads(out.stdout.strip().splitlines()[-1])
        ratio = r["graph"] / max(r["measured"], 1)
        under += ratio < 1
        dims = ", ".join(f"{k}={v}" for k, v in sizes.items())
        rows.append(
            f"| {name} | {dims} | {r['inputs'] / MiB:.0f} | {r['measured'] / MiB:.0f} | "
            f"{r['graph'] / MiB:.0f} | {ratio:.2f} | {r['work'] / MiB:.0f} |"
        )
        print(rows[-1], flush=True)
    rows.append(f"\nEstimates below the measured peak: {under} of {len(CASES)}.")
    report = "\n".join(rows) + "\n"
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"work-cpu-{dt.date.today().isoformat()}.md"
    path.write_text(report)
    print(report)
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
