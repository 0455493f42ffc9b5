"""What the paired bootstrap costs a gate, against the same gate without it, in one run.

1. The shipped example gates (``examples/gate/*.toml``, in-process ONNX Runtime, artifacts
   exported before timing): wall time of ``run_gate`` as written (every figure's interval at
   1,000 resamples, ``confidence`` checks at theirs) against the same gate with the
   bootstrap off (``[gate] resamples = 0``, ``confidence`` removed); best of ``--repeat``.
   What it adds is split into the histograms of the ``confidence`` checks that did not
   pass (``plots.bootstrap_plots``, timed in the same run) and the rest (resampling,
   intervals, checks).
2. A seeded synthetic COCO set (``bench/coco.py``'s generator: 5,000 images, 80 categories,
   about 7 ground truths per image) at one or more detection densities: the gate's COCO
   evaluation (parse, IoU graph in eager PyTorch, matching, accumulate) against 1,000
   resamples of all twelve statistics from the per-image evidence.

Prints a table and writes it to ``bench/results/bootstrap-<date>.md``.

    .venv/bin/python bench/bootstrap.py [--images 5000] [--dets 7 100] [--resamples 1000]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
sys.path.insert(0, str(Path(__file__).resolve().parent))


def examples(repeat: int) -> list[tuple[str, float, float, float]]:
    """Per gate: best time without the bootstrap, with it, and its histograms' share of
    the best run with it."""
    from cvscore.evaluate.backends import InProcess
    from cvscore.gate import run as gate_run
    from cvscore.gate.config import load_gate
    from cvscore.gate.run import run_gate

    plotting = [0.0]
    draw = gate_run.bootstrap_plots

    def timed_plots(*args, **kwargs):  # type: ignore[no-untyped-def]
        t0 = time.perf_counter()
        try:
            return draw(*args, **kwargs)
        finally:
            plotting[0] += time.perf_counter() - t0

    gate_run.bootstrap_plots = timed_plots  # type: ignore[assignment]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        repo, out = Path(tmp) / "repo", Path(tmp) / "out"
        for name in ("pass", "fail", "confidence"):
            config = load_gate(ROOT / "examples" / "gate" / f"{name}.toml")
            backend = InProcess(config.runtime, repo, "cpu", progress=False)
            off = dataclasses.replace(
                config,
                resamples=0,
                checks=[dataclasses.replace(c, confidence=None) for c in config.checks],
            )
            run_gate(config, out, backend)  # export the artifacts, warm the caches
            times: dict[str, list[float]] = {"on": [], "off": []}
            plots: list[float] = []
            for _ in range(repeat):
                for label, cfg in (("off", off), ("on", config)):
                    plotting[0] = 0.0
                    t0 = time.perf_counter()
                    run_gate(cfg, out, backend)
                    times[label].append(time.perf_counter() - t0)
                    if label == "on":
                        plots.append(plotting[0])
            best = min(range(repeat), key=times["on"].__getitem__)
            rows.append((f"{name}.toml", min(times["off"]), times["on"][best], plots[best]))
    gate_run.bootstrap_plots = draw  # type: ignore[assignment]
    return rows


def coco_set(images: int, dets: float, resamples: int) -> tuple[int, float, float]:
    import numpy as np
    from coco import synthetic

    from cvscore.gate.bootstrap import draws, multiplicities
    from cvscore.metrics import coco
    from cvscore.metrics.coco_resample import coco_evidence, resampled_stats

    gt, res = synthetic(images, 80, 7.0, dets)
    t0 = time.perf_counter()
    data = coco.parse_coco(gt, res)
    agg = coco.evaluate(data)
    agg.compute()
    evaluate = time.perf_counter() - t0
    t0 = time.perf_counter()
    ev = coco_evidence(data, agg)
    n = len(ev["ids"])
    stats = resampled_stats(ev, multiplicities(draws(n, resamples, 0), n))
    boot = time.perf_counter() - t0
    assert np.isfinite(stats["AP"]).all()
    return len(res), evaluate, boot


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--dets", type=float, nargs="*", default=[7.0, 100.0])
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-examples", action="store_true")
    args = parser.parse_args()
    lines = [
        f"# Paired bootstrap cost, {dt.date.today().isoformat()}",
        "",
        f"`{' '.join(['bench/bootstrap.py', *sys.argv[1:]])}` on {platform.node()} "
        f"({platform.processor() or platform.machine()}), Python {platform.python_version()}.",
    ]
    if not args.skip_examples:
        lines += [
            "",
            "## Example gates (in-process ONNX Runtime, best of "
            f"{args.repeat}; bootstrap off = `resamples = 0`, no `confidence`)",
            "",
            "| gate | without bootstrap (s) | with bootstrap (s) | added | of which "
            "histograms (s) | added without the histograms |",
            "|---|--:|--:|--:|--:|--:|",
        ]
        for name, off, on, plots in examples(args.repeat):
            lines.append(
                f"| `{name}` | {off:.3f} | {on:.3f} | {(on / off - 1) * 100:+.1f}% | "
                f"{plots:.3f} | {((on - plots) / off - 1) * 100:+.1f}% |"
            )
    lines += [
        "",
        f"## Synthetic COCO, {args.images} images, 80 categories, ~7 ground truths per image",
        "",
        f"| detections | gate's COCO evaluation (s) | {args.resamples} resamples, 12 stats (s) "
        "| ratio |",
        "|--:|--:|--:|--:|",
    ]
    for dets in args.dets:
        count, evaluate, boot = coco_set(args.images, dets, args.resamples)
        lines.append(f"| {count:,} | {evaluate:.1f} | {boot:.1f} | {boot / evaluate:.2f} |")
        print(lines[-1], flush=True)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    lines += ["", f"Load average (1, 5, 15 min) at the end: {load} on {os.cpu_count()} cores."]
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"bootstrap-{dt.date.today().isoformat()}.md"
    out.write_text(text)
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
