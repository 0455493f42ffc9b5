"""Per-metric compute benchmark: eager vs TorchScript vs ONNX Runtime vs a peer library.

For each metric at two batch sizes it prints the median time per call of every runtime, the
peer library where one exists (torchmetrics, pytorch-msssim), and the bytes-moved floor: the
time to read the inputs and write the outputs once at this machine's measured memory
bandwidth. It also times exporting the whole zoo cold and warm. The table is printed and
written to bench/results/compute-<host>-<date>.md.

    .venv/bin/python bench/compute.py [--metrics ssim psnr ...] [--quick]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from cvscore.exporters import export_many
from cvscore.metrics import registry
from cvscore.metrics._vgg import ENV_WEIGHTS, random_state_dict
from cvscore.server import runtimes

RESULTS = Path(__file__).resolve().parent / "results"

# Sizes that resemble real use, by family, with two batch sizes each.
FAMILY_SIZES: dict[str, tuple[dict[str, int], tuple[int, int]]] = {
    "pixel": ({"C": 21, "H": 128, "W": 128}, (1, 16)),
    "boxes": ({}, (1_000, 100_000)),
    "masks": ({"C": 4, "H": 128, "W": 128}, (1, 16)),
    "images": ({"C": 3, "H": 256, "W": 256}, (1, 16)),
}
DEFAULT_SIZES: tuple[dict[str, int], tuple[int, int]] = ({}, (1, 64))
# Per-metric sizes where the family's would not fit the machine (full VGG19 at 224 px).
METRIC_SIZES: dict[str, tuple[dict[str, int], tuple[int, int]]] = {
    "perceptual": ({"H": 224, "W": 224}, (1, 8)),
    "style": ({"H": 64, "W": 64}, (1, 8)),
    "texture": ({"H": 64, "W": 64}, (1, 8)),
    "topology": ({"H": 64, "W": 64}, (1, 8)),
    "ms_ssim": ({"C": 3, "H": 256, "W": 256}, (1, 8)),
}


def measure_bandwidth() -> float:
    """Bytes per second for a large copy (read + write counted)."""
    src = np.ones(64 * 1024 * 1024 // 8, dtype=np.float64)  # 64 MiB
    dst = np.empty_like(src)
    times = []
    for _ in range(7):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        times.append(time.perf_counter() - t0)
    return 2 * src.nbytes / min(times)


def median_ms(fn: Callable[[], object], budget_s: float = 0.6, max_reps: int = 50) -> float:
    for _ in range(2):
        fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max_reps and (len(times) < 5 or time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def peer(name: str, params: dict[str, object]) -> tuple[str, Callable[..., object]] | None:
    """The independent library implementation of a metric, per sample where it allows."""
    try:
        if name == "ssim":
            from torchmetrics.functional.image import structural_similarity_index_measure

            return "torchmetrics", lambda preds, target: structural_similarity_index_measure(
                preds, target, data_range=params["data_range"], reduction="none"
            )
        if name == "psnr":
            from torchmetrics.functional.image import peak_signal_noise_ratio

            return "torchmetrics", lambda preds, target: peak_signal_noise_ratio(
                preds, target, data_range=params["data_range"], reduction="none", dim=(1, 2, 3)
            )
        if name == "ms_ssim":
            from pytorch_msssim import ms_ssim

            return "pytorch-msssim", lambda preds, target: ms_ssim(
                preds, target, data_range=params["data_range"], size_average=False
            )
        if name == "total_variation":
            from torchmetrics.functional.image import total_variation

            return "torchmetrics", lambda preds: total_variation(preds, reduction="none")
    except ImportError:
        return None
    return None


def bench_metric(spec, repo: Path, bandwidth: float) -> list[list[str]]:
    extra, batches = METRIC_SIZES.get(spec.name) or FAMILY_SIZES.get(spec.family, DEFAULT_SIZES)
    rows = []
    loaded = {kind: runtimes.load(repo, spec.name, kind) for kind in runtimes.RUNTIMES}
    module = spec.build()
    other = peer(spec.name, spec.defaults())
    for n in batches:
        gen = torch.Generator().manual_seed(0)
        sizes = {
            **spec.example_sizes,
            **{k: v for k, v in extra.items() if k in spec.example_sizes},
        }
        inputs = spec.make_inputs(gen, {**sizes, "N": n})
        flat = {k: v.numpy() for k, v in spec.canonical(inputs).items()}
        nbytes = sum(v.nbytes for v in flat.values()) + 4 * n
        with torch.inference_mode():
            t_eager = median_ms(lambda x=inputs: module(**x))
            t = {kind: median_ms(lambda rt=rt, x=flat: rt.run(x)) for kind, rt in loaded.items()}
            t_peer = median_ms(lambda x=inputs: other[1](**x)) if other else float("nan")
        best_kind = min(("torchscript", "onnx"), key=lambda k: t[k])
        floor = nbytes / bandwidth * 1e3
        shape = "x".join(str(d) for d in next(iter(inputs.values())).shape)
        rows.append(
            [
                spec.name,
                shape,
                f"{t_eager:.3f}",
                f"{t['torchscript']:.3f}",
                f"{t['onnx']:.3f}",
                f"{t['torch_export']:.3f}",
                f"{t_peer:.3f} ({other[0]})" if other else "-",
                f"{t_eager / t[best_kind]:.2f} ({best_kind})",
                f"{t_peer / t[best_kind]:.2f}" if other else "-",
                f"{floor:.3f}",
                f"{t[best_kind] / floor:.0f}",
            ]
        )
    return rows


def markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--metrics", nargs="*", help="metric names (default: all)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        if not os.environ.get(ENV_WEIGHTS):
            # Timing needs the real architecture, not trained values: a full-width random VGG19.
            weights = Path(tmp) / "vgg19-random.pth"
            torch.save(random_state_dict("vgg19", seed=0), weights)
            os.environ[ENV_WEIGHTS] = str(weights)
        repo = Path(tmp) / "repo"
        t0 = time.perf_counter()
        export_many(args.metrics, repo, progress=False)
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        export_many(args.metrics, repo, progress=False)
        warm = time.perf_counter() - t0
        bandwidth = measure_bandwidth()
        rows: list[list[str]] = []
        for spec in registry.select(args.metrics):
            rows.extend(bench_metric(spec, repo, bandwidth))
            print(" | ".join(rows[-1]), flush=True)

    header = [
        "metric", "input", "eager ms", "torchscript ms", "onnxruntime ms", "torch.export ms",
        "peer ms", "eager / best export", "peer / best export", "bytes floor ms", "best / floor",
    ]  # fmt: skip
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    text = (
        f"# cvscore compute benchmark, {stamp}\n\n"
        f"Machine: {platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"torch {torch.__version__}; memory bandwidth {bandwidth / 1e9:.1f} GB/s (copy).\n"
        f"Median per call. `eager / best export` > 1 means the faster of TorchScript and ONNX "
        f"Runtime beats eager; `peer / best export` > 1 means it beats the peer library.\n\n"
        f"Export of {len(registry.select(args.metrics))} metrics x 3 formats: "
        f"cold {cold:.1f} s, warm (cached) {warm:.2f} s.\n\n" + markdown(header, rows) + "\n"
    )
    print("\n" + text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"compute-{platform.node() or 'host'}-{stamp}.md"
    if not args.metrics:
        out = RESULTS / f"compute-cpu-{stamp}.md"
    out.write_text(text)
    print(f"written to {out}")


if __name__ == "__main__":
    main()
