"""GPU benchmark: compute against the memory-bandwidth floor, and serving, on one device.

Run by ``make gpu-check`` after the CUDA tests, on a machine with a CUDA GPU (and a CUDA
build of torch). Three parts, in one process, each figure measured in this run:

1. Bandwidth: a large device-to-device copy (1 GiB on CUDA), timed with CUDA events; read
   plus written bytes over the time.
2. Compute: every elementwise metric of the registry (all inputs ``[N, *]``, one score per
   row: l1, mse, smooth_l1, bce, ...), plus ssim and giou, on inputs already on the device,
   through eager PyTorch, TorchScript, torch.export and ONNX Runtime (its CUDA provider with
   I/O bound to device memory when onnxruntime-gpu is installed; "n/a" otherwise). Each
   time is set against the floor: the bytes the call must read and write once, over the
   measured bandwidth. Every runtime's scores are checked against eager's on the same device
   before they are timed.
3. Serving: ``cvscore serve --device DEVICE --runtime R`` for R in torchscript, torch_export
   (and onnx where its CUDA provider is present), loaded by bench/serve.py's load generator
   (tritonclient.grpc): giou 1000 pairs from 8 callers, ssim 16x3x256x256 from 1 caller.
   Each server's answers are checked to come from R on DEVICE.

    .venv/bin/python bench/gpu.py                       # CUDA; bench/results/gpu-<gpu>-<date>.md
    .venv/bin/python bench/gpu.py --device cpu --quick  # smoke run on any machine
    .venv/bin/python bench/gpu.py --preflight           # exit 2 unless CUDA is usable

With ``--device cuda`` and no usable CUDA it exits 2 at once with a message saying why.
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import re
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
# Not elementwise, but what the serving rows use: timed beside the others for scale.
EXTRA = ("ssim", "giou")
FORMATS = ("torchscript", "torch_export", "onnx")
# (N, H, W) of the elementwise inputs, and (N, C, H, W) / N for ssim / giou, by device.
SIZES = {
    ("cuda", False): {"pixel": (32, 2048, 2048), "ssim": (16, 3, 512, 512), "giou": 1_000_000},
    ("cuda", True): {"pixel": (16, 1024, 1024), "ssim": (4, 3, 256, 256), "giou": 100_000},
    ("cpu", False): {"pixel": (16, 256, 256), "ssim": (4, 3, 128, 128), "giou": 100_000},
    ("cpu", True): {"pixel": (2, 64, 64), "ssim": (1, 3, 32, 32), "giou": 1_000},
}


def cuda_problem() -> str | None:
    """Why CUDA cannot be used here, or None when it can."""
    if torch.version.cuda is None:
        return (
            f"torch {torch.__version__} is a CPU-only build; install a CUDA build of "
            "torch==" + torch.__version__.split("+")[0] + " to run the GPU check"
        )
    if not torch.cuda.is_available():
        return f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no CUDA device"
    return None


def require_cuda() -> None:
    problem = cuda_problem()
    if problem:
        print(f"bench/gpu.py: needs a CUDA GPU: {problem}", file=sys.stderr)
        raise SystemExit(2)


# -- timing -----------------------------------------------------------------------------------
def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def median_ms(fn: Callable[[], object], device: str, budget_s: float) -> float:
    """Median time per call: calls are timed in rounds long enough to hide launch jitter."""
    for _ in range(3):
        fn()
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    once = max(time.perf_counter() - t0, 1e-6)
    inner = max(1, min(1000, int(0.01 / once)))  # ~10 ms per round
    rounds: list[float] = []
    start = time.perf_counter()
    while len(rounds) < 5 or (time.perf_counter() - start < budget_s and len(rounds) < 50):
        if device == "cuda":
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
            for _ in range(inner):
                fn()
            end.record()
            end.synchronize()
            rounds.append(begin.elapsed_time(end) / inner)
        else:
            t0 = time.perf_counter()
            for _ in range(inner):
                fn()
            rounds.append((time.perf_counter() - t0) * 1e3 / inner)
    return statistics.median(rounds)


def bandwidth(device: str) -> float:
    """Bytes per second of a large copy on the device, read and written bytes counted."""
    size = (1 << 30) if device == "cuda" else (64 << 20)
    src = torch.ones(size // 4, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    ms = median_ms(lambda: dst.copy_(src), device, budget_s=0.5)
    return 2 * size / (ms / 1e3)


# -- compute ----------------------------------------------------------------------------------
def elementwise_specs() -> list[Any]:
    from cvscore.metrics import registry

    return [
        s
        for s in registry.specs()
        if s.inputs
        and all(tuple(t.shape) == ("N", "*") for t in s.inputs)
        and [tuple(t.shape) for t in s.outputs] == [("N",)]
    ]


def make_inputs(spec: Any, sizes: dict[str, Any]) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    if spec.name == "ssim":
        n, c, h, w = sizes["ssim"]
        axes = {"N": n, "C": c, "H": h, "W": w}
    elif spec.name == "giou":
        axes = {"N": sizes["giou"]}
    else:
        n, h, w = sizes["pixel"]
        axes = {"N": n, "H": h, "W": w}
    return dict(spec.make_inputs(gen, axes))


def onnx_session(path: Path, device: str) -> Any | None:
    """An ORT session on the device, or None where ORT cannot run there."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if device == "cpu":
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return None
    return ort.InferenceSession(str(path), options, providers=["CUDAExecutionProvider"])


def onnx_call(session: Any, flat: dict[str, torch.Tensor], device: str) -> Callable[[], Any]:
    """One ORT run with inputs and output bound to device memory (no host copies)."""
    import onnxruntime as ort

    if device == "cpu":
        feed = {k: v.numpy() for k, v in flat.items()}
        return lambda: session.run(None, feed)[0]
    binding = session.io_binding()
    for name, tensor in flat.items():
        value = ort.OrtValue.ortvalue_from_numpy(tensor.cpu().numpy(), "cuda", 0)
        binding.bind_ortvalue_input(name, value)
    for out in session.get_outputs():
        binding.bind_output(out.name, "cuda")

    def run() -> Any:
        session.run_with_iobinding(binding)
        return binding.get_outputs()[0]

    return run


def host_scores(value: Any) -> torch.Tensor:
    """A runtime's scores (tensor, numpy array or ORT value) as a float64 CPU tensor."""
    if not torch.is_tensor(value):
        value = torch.from_numpy(np.asarray(value.numpy() if hasattr(value, "numpy") else value))
    return value.detach().double().cpu()


def bench_compute(spec: Any, repo: Path, device: str, sizes: dict[str, Any], bw: float, budget):
    inputs = make_inputs(spec, sizes)
    flat = {k: v.to(device) for k, v in spec.canonical(inputs).items()}
    nbytes = sum(v.numel() * v.element_size() for v in flat.values())
    nbytes += 4 * next(iter(flat.values())).shape[0]  # the [N] float32 scores written
    floor_ms = nbytes / bw * 1e3
    on_device = {k: v.to(device) for k, v in inputs.items()}
    eager = spec.build().to(device).eval()
    calls: dict[str, Callable[[], Any] | None] = {"eager": lambda: eager(**on_device)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        folder = repo / spec.name / "1"
        scripted = torch.jit.load(str(folder / "model.pt"), map_location=device).eval()
        exported = torch.export.load(str(folder / "model.pt2")).module().to(device)
    calls["torchscript"] = lambda: scripted(**flat)
    calls["torch_export"] = lambda: exported(**flat)
    session = onnx_session(folder / "model.onnx", device)
    calls["onnx"] = onnx_call(session, flat, device) if session is not None else None

    times: dict[str, float | None] = {}
    worst = 0.0
    with torch.inference_mode():
        reference = eager(**on_device).double().cpu()
        for kind, fn in calls.items():
            if fn is None:
                times[kind] = None
                continue
            scores = host_scores(fn())
            if scores.shape != reference.shape or not torch.allclose(
                scores, reference, rtol=1e-3, atol=1e-5, equal_nan=True
            ):
                raise AssertionError(f"{spec.name}: {kind} on {device} disagrees with eager")
            worst = max(worst, float((scores - reference).abs().max()) if scores.numel() else 0.0)
            times[kind] = median_ms(fn, device, budget)
    best = min((t, k) for k, t in times.items() if t is not None and k != "eager")
    shape = "x".join(str(d) for d in next(iter(inputs.values())).shape)
    kind = "elementwise" if spec.name not in EXTRA else "not elementwise"
    cell = [f"{t:.3f}" if t is not None else "n/a" for t in times.values()]
    return [
        spec.name, kind, shape, f"{nbytes / 1e6:.1f}", f"{floor_ms:.3f}", *cell,
        f"{best[0] / floor_ms:.2f} ({best[1]})", f"{nbytes / (best[0] / 1e3) / 1e9:.0f}",
        f"{worst:.1e}",
    ]  # fmt: skip


COMPUTE_HEADER = [
    "metric", "kind", "input", "bytes MB", "floor ms", "eager ms", "torchscript ms",
    "torch.export ms", "onnxruntime ms", "best / floor", "best GB/s", "max abs diff vs eager",
]  # fmt: skip


# -- serving ----------------------------------------------------------------------------------
def serving_rows(repo: Path, device: str, seconds: float, quick: bool) -> list[list[str]]:
    sys.path.insert(0, str(BENCH))
    import onnxruntime as ort
    import serve  # bench/serve.py: the same load generator and process handling

    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 100, (1000, 2)).astype(np.float32)
    wh = rng.uniform(1, 50, (1000, 2)).astype(np.float32)
    boxes = {"preds": np.concatenate([xy, xy + wh], 1), "target": np.concatenate([xy + 2, xy + wh + 3], 1)}  # fmt: skip
    side = 64 if quick else 256
    images = {k: rng.random((16, 3, side, side), dtype=np.float32) for k in ("preds", "target")}
    workloads = [("giou 1000 pairs", "giou", boxes, 8), (f"ssim 16x3x{side}x{side}", "ssim", images, 1)]  # fmt: skip
    rows = []
    for runtime in ("torchscript", "torch_export", "onnx"):
        if (
            runtime == "onnx"
            and device == "cuda"
            and ("CUDAExecutionProvider" not in ort.get_available_providers())
        ):
            rows += [[w, runtime, str(c), "n/a (onnxruntime-gpu not installed)", "", "", "", ""]
                     for w, _, _, c in workloads]  # fmt: skip
            continue
        port = serve.free_port()
        cmd = [
            str(Path(sys.executable).parent / "cvscore"), "serve", "--repository", str(repo),
            "--port", str(port), "--models", "giou,ssim", "--device", device,
            "--runtime", runtime, "--no-progress", "--log-level", "error",
        ]  # fmt: skip
        url = f"127.0.0.1:{port}"
        with serve.process(cmd, url):
            for workload, model, arrays, callers in workloads:
                served_by = answered_by(url, model, arrays)
                if served_by != (runtime, device):
                    raise AssertionError(f"{model}: asked {runtime} on {device}, got {served_by}")
                r = serve.load(url, model, arrays, callers, seconds)
                rows.append([workload, runtime, str(callers), f"{r['rps']:.0f}",
                             f"{r['p50_ms']:.2f}", f"{r['p99_ms']:.2f}", f"{r['mb_s']:.1f}",
                             str(r["errors"])])  # fmt: skip
                print(" | ".join(rows[-1]), flush=True)
    return rows


def answered_by(url: str, model: str, arrays: dict[str, np.ndarray]) -> tuple[str, str]:
    """(runtime, device) a server's KServe response says computed one request."""
    import tritonclient.grpc as tc

    client = tc.InferenceServerClient(url)
    inputs = []
    for name, arr in arrays.items():
        inp = tc.InferInput(name, list(arr.shape), "FP32")
        inp.set_data_from_numpy(arr)
        inputs.append(inp)
    response = client.infer(model, inputs, client_timeout=120.0).get_response()
    client.close()
    params = response.parameters
    return params["runtime"].string_param, params["device"].string_param


SERVE_HEADER = ["workload", "runtime", "callers", "req/s", "p50 ms", "p99 ms", "MB/s in", "errors"]


def markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name(0)
    return f"CPU ({platform.machine()}, {torch.get_num_threads()} torch threads)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--quick", action="store_true", help="small inputs, short rows")
    parser.add_argument("--preflight", action="store_true", help="only check CUDA; exit 2 if not")
    parser.add_argument("--seconds", type=float, help="per serving row (default 3, quick 1)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the .md table")
    parser.add_argument("--no-serve", action="store_true", help="compute part only")
    args = parser.parse_args(argv)
    if args.preflight or args.device == "cuda":
        require_cuda()
        if args.preflight:
            print(f"CUDA ok: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
            return 0
    from cvscore.exporters import export_many

    started = time.perf_counter()
    seconds = args.seconds or (1.0 if args.quick else 3.0)
    budget = 0.2 if args.quick else 1.0
    sizes = SIZES[(args.device, args.quick)]
    specs = [*elementwise_specs()]
    from cvscore.metrics import registry

    specs += [registry.get(n) for n in EXTRA]
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        t0 = time.perf_counter()
        export_many([s.name for s in specs], repo, formats=FORMATS, progress=False)
        export_s = time.perf_counter() - t0
        bw = bandwidth(args.device)
        print(f"{device_name(args.device)}: copy bandwidth {bw / 1e9:.1f} GB/s", flush=True)
        compute = []
        for spec in specs:
            compute.append(bench_compute(spec, repo, args.device, sizes, bw, budget))
            print(" | ".join(compute[-1]), flush=True)
        if args.device == "cuda":
            torch.cuda.empty_cache()
        serving = [] if args.no_serve else serving_rows(repo, args.device, seconds, args.quick)

    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    import onnxruntime as ort

    text = (
        f"# cvscore GPU benchmark ({args.device}{', quick' if args.quick else ''}), {stamp}\n\n"
        f"Device: {device_name(args.device)}; torch {torch.__version__} (CUDA "
        f"{torch.version.cuda}); onnxruntime {ort.__version__} providers "
        f"{', '.join(ort.get_available_providers())}.\n"
        f"Copy bandwidth: {bw / 1e9:.1f} GB/s (device-to-device copy, read + written bytes).\n"
        f"Floor = bytes read + written once / that bandwidth; `best / floor` is the fastest "
        f"exported form's median time over it (1.00 = at the bandwidth limit). Inputs are on the "
        f"device before timing; each form's scores were checked against eager's first.\n"
        f"Export of {len(specs)} metrics x {len(FORMATS)} formats: {export_s:.1f} s.\n\n"
        "## Compute\n\n" + markdown(COMPUTE_HEADER, compute) + "\n\n"
        "## Serving (cvscore serve, tritonclient.grpc, closed loop, "
        f"{seconds:.0f} s per row)\n\n"
        + (markdown(SERVE_HEADER, serving) if serving else "skipped (--no-serve)")
        + f"\n\nWall time: {time.perf_counter() - started:.0f} s. Command: "
        f"`.venv/bin/python bench/gpu.py --device {args.device}{' --quick' if args.quick else ''}`\n"
    )
    print("\n" + text)
    args.out.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^a-z0-9]+", "-", device_name(args.device).lower()).strip("-")
    slug = slug if args.device == "cuda" else "cpu-smoke"
    out = args.out / f"gpu-{slug}-{stamp}.md"
    out.write_text(text)
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
