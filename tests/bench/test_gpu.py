"""bench/gpu.py, the GPU check's benchmark, run end to end on the CPU with tiny inputs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cvscore.metrics import registry

ROOT = Path(__file__).resolve().parents[2]
GPU = ROOT / "bench" / "gpu.py"
# Every metric whose inputs are all [N, *] and whose graph returns one score per row.
ELEMENTWISE = {
    "l1",
    "mse",
    "smooth_l1",
    "binary_cross_entropy",
    "bce_with_logits",
    "balanced_bce",
    "focal",
}


def table(text: str, first_header: str) -> list[dict[str, str]]:
    """The markdown table whose header starts with ``| first_header |``, as dicts."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |"))
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    body = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        body.append(dict(zip(header, [c.strip() for c in line.strip("|").split("|")], strict=True)))
    return body


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("gpu-bench")
    done = subprocess.run(
        [
            sys.executable,
            str(GPU),
            "--device",
            "cpu",
            "--quick",
            "--seconds",
            "0.3",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (written,) = out.glob("gpu-cpu-smoke-*.md")
    return written.read_text()


def test_compute_rows_set_every_elementwise_metric_against_the_bandwidth_floor(smoke: str) -> None:
    bandwidth = float(re.search(r"Copy bandwidth: ([\d.]+) GB/s", smoke).group(1)) * 1e9
    rows = {r["metric"]: r for r in table(smoke, "metric")}
    elementwise = {n for n, r in rows.items() if r["kind"] == "elementwise"}
    assert elementwise >= ELEMENTWISE
    assert {"ssim", "giou"} <= {n for n, r in rows.items() if r["kind"] == "not elementwise"}
    for name in elementwise:
        spec = registry.get(name)
        assert all(tuple(t.shape) == ("N", "*") for t in spec.inputs), name
    for name in ELEMENTWISE:  # pixel pairs at the quick CPU size: 2 x 64 x 64 float32, twice
        row = rows[name]
        assert row["input"] == "2x64x64"
        nbytes = 2 * (2 * 64 * 64 * 4) + 2 * 4  # two inputs read, [N] float32 scores written
        assert float(row["bytes MB"]) == pytest.approx(nbytes / 1e6, abs=0.05)
        assert float(row["floor ms"]) == pytest.approx(nbytes / bandwidth * 1e3, abs=1.5e-3)
        times = {k: float(row[f"{k} ms"]) for k in ("torchscript", "torch.export", "onnxruntime")}
        assert all(t > 0 for t in times.values())
        best_kind = re.search(r"\((\w+)\)", row["best / floor"]).group(1)
        best = min(times.values())
        ratio = float(row["best / floor"].split()[0])
        # best / floor is the fastest form's time over the floor shown (both rounded)
        assert ratio == pytest.approx(best / (nbytes / bandwidth * 1e3), rel=0.2), name
        assert best_kind in {"torchscript", "torch_export", "onnx"}
        assert float(row["max abs diff vs eager"]) < 1e-4


def test_serving_rows_cover_each_runtime_with_no_errors(smoke: str) -> None:
    rows = table(smoke, "workload")
    seen = {(r["workload"].split()[0], r["runtime"]) for r in rows}
    assert seen == {
        (w, k) for w in ("giou", "ssim") for k in ("torchscript", "torch_export", "onnx")
    }
    for row in rows:
        assert float(row["req/s"]) > 0 and row["errors"] == "0", row


def test_refuses_clearly_without_cuda() -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA is present here: the refusal does not apply")
    for args in (["--preflight"], ["--device", "cuda"]):
        done = subprocess.run([sys.executable, str(GPU), *args], capture_output=True, text=True)
        assert done.returncode == 2, args
        assert "bench/gpu.py: needs a CUDA GPU:" in done.stderr
        assert f"torch {torch.__version__}" in done.stderr
