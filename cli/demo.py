"""``cvscore demo``: serve the zoo from a real ``cvscore serve`` process and score through it.

Exports the zoo if needed, starts ``cvscore serve --port 0`` as a subprocess, scores one
sample of every served metric (every registered family) through the cvscore client and
through ``tritonclient.grpc`` (the Open Inference Protocol), compares both with the eager
PyTorch module, prints a table, then stops the server with SIGTERM and checks that it
exits 0.
"""

from __future__ import annotations

import argparse
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from .common import print_table, repository

READY = "cvscore serving on "
RTOL, ATOL = 1e-4, 1e-5


def add_parser(sub: Any) -> None:
    p = sub.add_parser("demo", help="serve the zoo and score a sample through two clients")
    p.add_argument("--repository", help="repository directory (default: the cache)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return run_demo(repository(args))


def start_server(
    repo: Path, extra: list[str] | None = None, timeout: float = 300.0
) -> tuple[subprocess.Popen[str], str]:
    """``cvscore serve --port 0`` in a subprocess; return it and the address it printed."""
    cmd = [
        sys.executable, "-m", "cvscore.cli", "serve",
        "--repository", str(repo), "--port", "0", "--runtime", "onnx,torchscript",
        "--log-level", "warning", *(extra or []),
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    end = time.monotonic() + timeout
    while True:
        try:
            line = lines.get(timeout=max(0.0, end - time.monotonic()))
        except queue.Empty:
            proc.kill()
            raise TimeoutError(f"`cvscore serve` did not start in {timeout:.0f} s") from None
        if line is None:
            raise RuntimeError(f"`cvscore serve` exited with {proc.wait()} before serving")
        if line.startswith(READY):
            return proc, line[len(READY) :].strip()


def stop_server(proc: subprocess.Popen[str], timeout: float = 60.0) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def _max_diff(a: Any, b: Any) -> float:
    """Largest |a - b|, where equal non-finite values (NaN and NaN, inf and inf) count as 0."""
    import numpy as np

    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    diff = np.where(same, 0.0, np.abs(a - b))
    return float(diff.max()) if diff.size else 0.0


def _triton_scores(client: Any, name: str, inputs: dict[str, Any], output: str) -> Any:
    import tritonclient.grpc as tc

    from ..wire import TO_KSERVE

    infer_inputs = []
    for key, array in inputs.items():
        item = tc.InferInput(key, list(array.shape), TO_KSERVE[str(array.dtype)])
        item.set_data_from_numpy(array)
        infer_inputs.append(item)
    return client.infer(name, infer_inputs).as_numpy(output)


def run_demo(repo: Path) -> int:
    import numpy as np
    import torch
    import tritonclient.grpc as tc

    from ..client import Client
    from ..metrics import registry
    from ..server.app import ServerConfig, prepare_repository

    print(f"exporting the zoo into {repo} (cached after the first run) ...", file=sys.stderr)
    prepare_repository(ServerConfig(repository=repo, export_missing=True))
    print("starting `cvscore serve --port 0` ...", file=sys.stderr)
    proc, address = start_server(repo)
    print(f"server on {address} (pid {proc.pid})", file=sys.stderr)
    rows = []
    worst = 0.0
    failed = []
    try:
        triton = tc.InferenceServerClient(address)
        with Client(address, timeout=60) as client:
            gen = torch.Generator().manual_seed(2026)
            for info in client.list_metrics():
                if info.metric not in registry.names():
                    continue
                spec = registry.get(info.metric)
                inputs = spec.make_inputs(gen, {"N": 4})
                eager = spec.build(**info.params)(**inputs).detach().numpy()
                ours = client.score(info.name, inputs, reduction="none")
                canonical = {k: v.numpy() for k, v in spec.canonical(inputs).items()}
                theirs = _triton_scores(triton, info.name, canonical, spec.outputs[0].name)
                diff = max(_max_diff(ours.scores, eager), _max_diff(theirs, eager))
                if not (
                    np.allclose(ours.scores, eager, RTOL, ATOL, equal_nan=True)
                    and np.allclose(theirs, eager, RTOL, ATOL, equal_nan=True)
                ):
                    failed.append(info.name)
                worst = max(worst, diff)
                rows.append([
                    info.name, info.family, ours.runtime,
                    f"{float(np.mean(eager)):.6f}", f"{float(np.mean(ours.scores)):.6f}",
                    f"{float(np.mean(theirs)):.6f}", f"{diff:.1e}",
                ])  # fmt: skip
        triton.close()
    finally:
        code = stop_server(proc)
    header = (
        "metric",
        "family",
        "runtime",
        "eager",
        "cvscore client",
        "tritonclient",
        "max |diff|",
    )
    print_table(header, rows)
    families = sorted({r[1] for r in rows})
    print(
        f"\n{len(rows)} metrics from {len(families)} families ({', '.join(families)}), "
        f"4 samples each; largest difference from eager PyTorch {worst:.2e}"
    )
    print(f"server stopped with SIGTERM, exit code {code}")
    if failed:
        print(f"outside tolerance (rtol {RTOL}, atol {ATOL}): {failed}", file=sys.stderr)
    return 0 if code == 0 and not failed and rows else 1
