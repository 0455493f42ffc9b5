"""Serving benchmark: cvscore vs MLServer vs a bare gRPC echo, one load generator for all.

Every server is a real separate process on loopback, and every request is sent by the same
load generator: ``tritonclient.grpc`` (the Open Inference Protocol client) from 1, 8 and 32
concurrent callers, each with its own connection. Reported per row: requests/s, p50 and
p99 latency, and request MB/s.

- cvscore: ``cvscore serve`` on the exported repository (dynamic batching on, and off for
  the batching comparison).
- MLServer: the same ``model.onnx`` artifact through a small MLServer runtime that runs it
  with ONNX Runtime (MLServer lives in its own virtual environment, made on first use in
  ``bench/.mlserver-venv``; its dependencies do not fit beside cvscore's).
- echo: a bare ``grpc.aio`` server that receives the request bytes without decoding them
  and answers with a fixed response: the ceiling of Python gRPC on this machine.

    .venv/bin/python bench/serve.py [--seconds 4] [--skip-mlserver]

Writes bench/results/serve-<date>.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
MLSERVER_VENV = Path(__file__).resolve().parent / ".mlserver-venv"
CALLERS = (1, 8, 32)

MLSERVER_RUNTIME = """
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceResponse


class OnnxModel(MLModel):
    async def load(self) -> bool:
        self.session = ort.InferenceSession(self.settings.parameters.uri)
        self.output_names = [o.name for o in self.session.get_outputs()]
        return True

    async def predict(self, payload):
        feeds = {i.name: NumpyCodec.decode_input(i) for i in payload.inputs}
        outs = self.session.run(self.output_names, feeds)
        return InferenceResponse(
            model_name=self.name,
            outputs=[NumpyCodec.encode_output(n, o) for n, o in zip(self.output_names, outs)],
        )
"""

ECHO_SERVER = """
import asyncio, sys
import grpc
from tritonclient.grpc import service_pb2

port, n = int(sys.argv[1]), int(sys.argv[2])
resp = service_pb2.ModelInferResponse(model_name="echo")
out = resp.outputs.add(name="score", datatype="FP32", shape=[n])
resp.raw_output_contents.append(bytes(4 * n))
payload = resp.SerializeToString()

async def infer(request: bytes, context) -> bytes:
    return payload  # the request arrived in full; nothing is decoded

async def ready(request: bytes, context) -> bytes:
    return service_pb2.ServerReadyResponse(ready=True).SerializeToString()

async def main():
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 1 << 28)])
    ident = lambda b: b
    handlers = {
        "ModelInfer": grpc.unary_unary_rpc_method_handler(infer, ident, ident),
        "ServerReady": grpc.unary_unary_rpc_method_handler(ready, ident, ident),
    }
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler("inference.GRPCInferenceService", handlers)]
    )
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print("ready", flush=True)
    await server.wait_for_termination()

asyncio.run(main())
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 180.0) -> None:
    import tritonclient.grpc as tc

    client = tc.InferenceServerClient(url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server at {url} exited with {proc.returncode}")
        with contextlib.suppress(Exception):
            if client.is_server_ready(client_timeout=2.0):
                return
        time.sleep(0.2)
    raise TimeoutError(f"server at {url} not ready in {timeout:.0f} s")


@contextlib.contextmanager
def process(cmd: list[str], url: str, env: dict[str, str] | None = None) -> Iterator[None]:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        wait_ready(url, proc)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def cvscore_server(
    repo: Path, port: int, batching: bool
) -> contextlib.AbstractContextManager[None]:
    cmd = [
        str(ROOT / ".venv" / "bin" / "cvscore"), "serve", "--repository", str(repo),
        "--port", str(port), "--models", "giou,ssim,l1", "--no-progress", "--log-level", "error",
    ]  # fmt: skip
    if not batching:
        cmd.append("--no-batching")
    return process(cmd, f"127.0.0.1:{port}")


def ensure_mlserver() -> Path:
    exe = MLSERVER_VENV / "bin" / "mlserver"
    if not exe.exists():
        print("creating the MLServer environment (first run only) ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(MLSERVER_VENV)], check=True)
        subprocess.run(
            [str(MLSERVER_VENV / "bin" / "pip"), "install", "-q", "mlserver==1.7.1",
             "onnxruntime==1.32.0"],
            check=True,
            env={**os.environ, "PIP_CONSTRAINT": ""},
        )  # fmt: skip
    return exe


def mlserver(repo: Path, work: Path, port: int) -> contextlib.AbstractContextManager[None]:
    exe = ensure_mlserver()
    (work / "runtime.py").write_text(MLSERVER_RUNTIME)
    model = work / "giou"
    model.mkdir(parents=True, exist_ok=True)
    settings = {"name": "giou", "implementation": "runtime.OnnxModel",
                "parameters": {"uri": str(repo / "giou" / "1" / "model.onnx")}}  # fmt: skip
    (model / "model-settings.json").write_text(json.dumps(settings))
    # parallel_workers 0: inference in the server process. MLServer 1.7's worker pool does not
    # start beside the uvloop its own requirements install today (no current event loop).
    server = {"grpc_port": port, "http_port": free_port(), "metrics_port": free_port(),
              "grpc_max_message_length": 1 << 28, "parallel_workers": 0}  # fmt: skip
    (work / "settings.json").write_text(json.dumps(server))
    env = {**os.environ, "PYTHONPATH": str(work)}
    return process([str(exe), "start", str(work)], f"127.0.0.1:{port}", env)


def echo_server(port: int, n: int) -> contextlib.AbstractContextManager[None]:
    return process([sys.executable, "-c", ECHO_SERVER, str(port), str(n)], f"127.0.0.1:{port}")


def load(url: str, model: str, arrays: dict[str, np.ndarray], callers: int, seconds: float):
    """Closed-loop load: each caller sends the next request when the last one returns."""
    import tritonclient.grpc as tc

    def make_inputs() -> list[tc.InferInput]:
        out = []
        for name, arr in arrays.items():
            dtype = "FP32" if arr.dtype == np.float32 else "INT64"
            inp = tc.InferInput(name, list(arr.shape), dtype)
            inp.set_data_from_numpy(arr)
            out.append(inp)
        return out

    nbytes = sum(a.nbytes for a in arrays.values())
    latencies: list[list[float]] = [[] for _ in range(callers)]
    errors: list[str] = []
    start_gate = threading.Barrier(callers + 1)
    stop_at = [0.0]

    def caller(i: int) -> None:
        client = tc.InferenceServerClient(
            url, channel_args=[("grpc.max_send_message_length", 1 << 28)]
        )
        inputs = make_inputs()
        client.infer(model, inputs, client_timeout=60.0)  # warm the connection
        start_gate.wait()
        while time.perf_counter() < stop_at[0]:
            t0 = time.perf_counter()
            try:
                client.infer(model, inputs, client_timeout=60.0)
            except Exception as exc:  # counted, not hidden
                errors.append(str(exc)[:200])
                continue
            latencies[i].append(time.perf_counter() - t0)
        client.close()

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(callers)]
    for t in threads:
        t.start()
    stop_at[0] = time.perf_counter() + seconds + 0.5
    start_gate.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    lat = sorted(x for per in latencies for x in per)
    count = len(lat)
    return {
        "rps": count / elapsed,
        "p50_ms": 1e3 * statistics.median(lat) if lat else float("nan"),
        "p99_ms": 1e3 * lat[min(count - 1, int(0.99 * count))] if lat else float("nan"),
        "mb_s": count * nbytes / elapsed / 1e6,
        "errors": len(errors),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="per measurement")
    parser.add_argument("--skip-mlserver", action="store_true")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from cvscore.exporters import export_many

    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 100, (1000, 2)).astype(np.float32)
    wh = rng.uniform(1, 50, (1000, 2)).astype(np.float32)
    boxes = {
        "preds": np.concatenate([xy, xy + wh], 1),
        "target": np.concatenate([xy + 2, xy + wh + 3], 1).astype(np.float32),
    }
    images = {
        "preds": rng.random((16, 3, 256, 256), dtype=np.float32),
        "target": rng.random((16, 3, 256, 256), dtype=np.float32),
    }
    tiny = {
        "preds": rng.random((1, 16), dtype=np.float32),
        "target": rng.random((1, 16), dtype=np.float32),
    }

    rows: list[list[str]] = []
    results: dict[tuple[str, str, int], dict[str, float]] = {}

    def record(workload: str, server: str, url: str, model: str, arrays, callers_list) -> None:
        # a 25 MB request takes a good part of a second: give those rows a longer window
        seconds = args.seconds * (4 if "ssim" in workload else 1)
        for c in callers_list:
            r = load(url, model, arrays, c, seconds)
            results[(workload, server, c)] = r
            rows.append([workload, server, str(c), f"{r['rps']:.0f}", f"{r['p50_ms']:.2f}",
                         f"{r['p99_ms']:.2f}", f"{r['mb_s']:.1f}", str(r["errors"])])  # fmt: skip
            print(" | ".join(rows[-1]), flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        export_many(["giou", "ssim", "l1"], repo, progress=False)
        port = free_port()
        with cvscore_server(repo, port, batching=True):
            url = f"127.0.0.1:{port}"
            record("giou 1000 pairs", "cvscore", url, "giou", boxes, CALLERS)
            record("ssim 16x3x256x256", "cvscore", url, "ssim", images, (1, 8))
            record("l1 1x16 (tiny)", "cvscore batching", url, "l1", tiny, (32,))
        port = free_port()
        with cvscore_server(repo, port, batching=False):
            record("l1 1x16 (tiny)", "cvscore no batching", f"127.0.0.1:{port}", "l1", tiny, (32,))
        port = free_port()
        with echo_server(port, 16):
            url = f"127.0.0.1:{port}"
            record("ssim 16x3x256x256", "bare gRPC echo", url, "echo", images, (1, 8))
            # the ceiling for the other two workloads, measured the same way
            record("giou 1000 pairs", "bare gRPC echo", url, "echo", boxes, (8,))
            record("l1 1x16 (tiny)", "bare gRPC echo", url, "echo", tiny, (32,))
        if not args.skip_mlserver:
            port = free_port()
            work = Path(tmp) / "mlserver"
            work.mkdir()
            with mlserver(repo, work, port):
                record(
                    "giou 1000 pairs", "MLServer + ORT", f"127.0.0.1:{port}", "giou", boxes, CALLERS
                )

    def ratio(a: tuple[str, str, int], b: tuple[str, str, int], key: str) -> str:
        if a in results and b in results:
            return f"{results[a][key] / results[b][key]:.2f}"
        return "n/a"

    ratios = [
        ("giou, 8 callers: cvscore / MLServer requests/s (target >= 2)",
         ratio(("giou 1000 pairs", "cvscore", 8), ("giou 1000 pairs", "MLServer + ORT", 8), "rps")),
        ("ssim, best of 1/8 callers: cvscore / echo MB/s (target >= 0.70)",
         f"{max(results[('ssim 16x3x256x256', 'cvscore', c)]['mb_s'] for c in (1, 8)) / max(results[('ssim 16x3x256x256', 'bare gRPC echo', c)]['mb_s'] for c in (1, 8)):.2f}"),
        ("tiny l1, 32 callers: batching on / off requests/s (target >= 3)",
         ratio(("l1 1x16 (tiny)", "cvscore batching", 32), ("l1 1x16 (tiny)", "cvscore no batching", 32), "rps")),
    ]  # fmt: skip
    header = ["workload", "server", "callers", "req/s", "p50 ms", "p99 ms", "MB/s in", "errors"]
    table = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    table += ["| " + " | ".join(r) + " |" for r in rows]
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    text = (
        f"# cvscore serving benchmark, {stamp}\n\n"
        f"Machine: {platform.machine()}, {os.cpu_count()} cores; load generator tritonclient.grpc "
        f"in the same machine; {args.seconds:.0f} s per row, closed loop.\n\n"
        + "\n".join(table)
        + "\n\n| ratio | value |\n|---|---|\n"
        + "\n".join(f"| {k} | {v} |" for k, v in ratios)
        + "\n"
    )
    print("\n" + text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"serve-cpu-{stamp}.md"
    out.write_text(text)
    print(f"written to {out}")
    shutil.rmtree(Path(tmp), ignore_errors=True)


if __name__ == "__main__":
    main()
