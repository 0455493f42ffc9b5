"""Serving benchmark: cvscore vs MLServer vs a bare gRPC echo vs in-process ONNX Runtime.

Every server is a real separate process on loopback, and every request is sent by the same
load generator: ``tritonclient.grpc`` (the Open Inference Protocol client) from 1, 8 and 32
concurrent callers, each with its own connection. Reported per row: requests/s, p50 and
p99 latency, and request MB/s; then every ratio the serving targets name, with its target.

- cvscore: ``cvscore serve`` on a repository exported cold by ``cvscore export`` in this
  run (the whole zoo; timed, as is the server's time to ready), with dynamic batching on,
  and off for the batching comparison; ssim also through system shared memory
  (``tritonclient.utils.shared_memory``); giou with ``--workers 1`` and ``--workers 2``
  worker processes.
- in-process ONNX Runtime: the same ``model.onnx`` in an ``InferenceSession`` of this
  process, on the same inputs.
- MLServer: the same ``model.onnx`` artifact through a small MLServer runtime that runs it
  with ONNX Runtime (MLServer lives in its own virtual environment, made on first use in
  ``bench/.mlserver-venv``; its dependencies do not fit beside cvscore's).
- echo: a bare ``grpc.aio`` server that receives the request bytes without decoding them
  and answers with a fixed response: the ceiling of Python gRPC on this machine.
- single-image latency: ssim 1x3x256x256 from one caller, in interleaved rounds (in-process
  ONNX Runtime, cvscore through tritonclient and through its own client, the echo), so that
  each ratio is taken within a round.
- batched == unbatched: every metric of the repository, ragged requests sent together to
  the batching server and one at a time to an unbatched one, compared byte for byte; the
  rows the server computed (its Prometheus ``cvscore_batch_size_sum``) against the rows
  requested give the padding overhead.

A row whose feature the server lacks (shared memory answered UNIMPLEMENTED, ``--workers``
still meaning threads) reads "n/a (not available)" with the reason; the run goes on.

    .venv/bin/python bench/serve.py [--seconds 4] [--skip-mlserver] [--quick]

Writes bench/results/serve-cpu-<date>.md (``--quick``: serve-cpu-<date>-quick.md).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import serve_rows as rows

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


CVSCORE = ROOT / ".venv" / "bin" / "cvscore"


def cvscore_server(
    repo: Path, port: int, batching: bool, models: str | None = "giou,ssim,l1", *extra: str
) -> contextlib.AbstractContextManager[None]:
    """``cvscore serve`` on ``repo``; ``models`` None serves every model in it."""
    cmd = [
        str(CVSCORE), "serve", "--repository", str(repo), "--port", str(port),
        "--no-progress", "--log-level", "error", *extra,
    ]  # fmt: skip
    if models:
        cmd += ["--models", models]
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


def load(
    url: str,
    model: str,
    arrays: dict[str, np.ndarray],
    callers: int,
    seconds: float,
    inputs_from: Callable[[], list[Any]] | None = None,
):
    """Closed-loop load: each caller sends the next request when the last one returns.

    ``inputs_from`` makes a request's inputs (shared memory references); by default the
    arrays travel in the request.
    """
    import tritonclient.grpc as tc

    def make_inputs() -> list[tc.InferInput]:
        if inputs_from is not None:
            return inputs_from()
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
        "count": count,
        "warm": callers,  # one warm-up request per caller, before the clock starts
    }


def workloads() -> dict[str, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 100, (1000, 2)).astype(np.float32)
    wh = rng.uniform(1, 50, (1000, 2)).astype(np.float32)
    image = {k: rng.random((16, 3, 256, 256), dtype=np.float32) for k in ("preds", "target")}
    return {
        "giou": {
            "preds": np.concatenate([xy, xy + wh], 1),
            "target": np.concatenate([xy + 2, xy + wh + 3], 1).astype(np.float32),
        },
        "ssim": image,
        "ssim1": {k: np.ascontiguousarray(v[:1]) for k, v in image.items()},
        "tiny": {k: rng.random((1, 16), dtype=np.float32) for k in ("preds", "target")},
    }


GIOU, SSIM, SSIM1, TINY = (
    "giou 1000 pairs",
    "ssim 16x3x256x256",
    "ssim 1x3x256x256",
    "l1 1x16 (tiny)",
)
SSIM_SHM = "ssim 16x3x256x256 (shared memory)"
QUICK_METRICS = ["giou", "ssim", "l1", "cross_entropy", "mean_iou"]


class Bench:
    """Rows of the load table, the figures the ratios use, and rows that are not there."""

    def __init__(self, seconds: float, quick: bool) -> None:
        self.seconds, self.quick = seconds, quick
        self.rows: list[list[str]] = []
        self.results: dict[tuple[str, str, int], dict[str, float]] = {}
        self.facts: dict[str, float | str] = {}
        # the headline giou comparison, interleaved: server -> req/s per round
        self.rounds: dict[str, list[float]] = {}
        # single-image ssim latency, interleaved: path -> p50 ms per round
        self.latency: dict[str, list[float]] = {}
        self.mlserver_dir: Path | None = None  # MLServer's model folder, once written

    def record(self, workload, server, url, model, arrays, callers_list, inputs_from=None) -> None:
        # a 25 MB request takes a good part of a second: give those rows a longer window
        seconds = self.seconds * (4 if workload in (SSIM, SSIM_SHM) else 1)
        for c in callers_list:
            r = load(url, model, arrays, c, seconds, inputs_from)
            self.add(workload, server, c, r)

    def add(self, workload: str, server: str, callers: int, r: dict[str, float]) -> None:
        self.results[(workload, server, callers)] = r
        p99 = "-" if r["p99_ms"] != r["p99_ms"] else f"{r['p99_ms']:.2f}"  # NaN: not measured
        self.rows.append([workload, server, str(callers), f"{r['rps']:.1f}", f"{r['p50_ms']:.2f}",
                          p99, f"{r['mb_s']:.1f}", str(r["errors"])])  # fmt: skip
        print(" | ".join(self.rows[-1]), flush=True)

    def missing(self, workload: str, server: str, why: str) -> None:
        self.rows.append([workload, server, "-", f"{rows.NA}: {why}", "", "", "", ""])
        print(" | ".join(self.rows[-1]), flush=True)

    def get(self, workload: str, server: str, callers: int, key: str) -> float | None:
        r = self.results.get((workload, server, callers))
        return None if r is None else r[key]

    def best(self, workload: str, server: str, key: str) -> float | None:
        found = [r[key] for (w, s, _), r in self.results.items() if (w, s) == (workload, server)]
        return max(found) if found else None


def paired(b: Bench, a: str, over: str) -> float | None:
    """The median over interleaved rounds of ``a``'s req/s over ``over``'s in that round."""
    x, y = b.rounds.get(a, []), b.rounds.get(over, [])
    pairs = [u / v for u, v in zip(x, y, strict=False) if v]
    return statistics.median(pairs) if pairs else None


def fraction(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or not b else a / b


def ratio_rows(b: Bench, bitwise: dict[str, dict[str, object]]) -> list[list[str]]:
    """(what, value, target, met) for every Done-when figure; n/a where a row is missing."""

    def row(
        what: str, value: float | None, target: str, ok: Callable[[float], bool], fmt: str = ".2f"
    ) -> list[str]:
        if value is None:
            return [what, rows.NA, target, "-"]
        met = "-" if target == "reported" else "yes" if ok(value) else "no"
        return [what, format(value, fmt), target, met]

    ssim_inproc = b.get(SSIM, "in-process onnxruntime", 1, "rps")
    equal = [m for m, r in bitwise.items() if r.get("equal")]
    # metrics whose requests never shared a run (shared inputs differ per request, or no batch
    # axis on an output) count runs in their own units: left out of the overhead
    ragged = [r for r in bitwise.values() if "padding" in r and float(r["batched"]) > 0]  # type: ignore[arg-type]
    rows_asked = sum(int(r["rows"]) for r in ragged)  # type: ignore[call-overload]
    rows_done = sum(float(r["computed"]) for r in ragged)  # type: ignore[arg-type]
    cold, ready = b.facts.get("cold export s"), b.facts.get("ready s")
    rounds = len(next(iter(b.rounds.values()), []))
    interleaved = f" (median of {rounds} interleaved rounds)" if b.rounds else ""
    lat_rounds = (
        f" (median of {min(map(len, b.latency.values()))} interleaved rounds)" if b.latency else ""
    )
    regions = b.facts.get("own client regions")
    shared = "shared memory" if regions else "shared memory NOT used"
    return [
        row(f"giou, 8 callers: cvscore / MLServer req/s{interleaved}",
            paired(b, "cvscore", "MLServer + ORT") if b.rounds else
            fraction(b.get(GIOU, "cvscore", 8, "rps"), b.get(GIOU, "MLServer + ORT", 8, "rps")),
            ">= 2", lambda v: v >= 2, ".3f"),
        row(f"giou, 8 callers: cvscore / bare echo req/s{interleaved}",
            paired(b, "cvscore", "bare gRPC echo") if b.rounds else
            fraction(b.get(GIOU, "cvscore", 8, "rps"), b.get(GIOU, "bare gRPC echo", 8, "rps")),
            ">= 0.60", lambda v: v >= 0.6, ".3f"),
        row(f"ssim 1x3x256x256, 1 caller, cvscore client ({shared}): served p50 / in-process "
            f"onnxruntime p50{lat_rounds}",
            per_round(b, lambda r: r[LATENCY_OWN] / r[LATENCY_INPROC]), "<= 2", lambda v: v <= 2),
        row(f"ssim 1x3x256x256, 1 caller, tritonclient (bytes): served p50 / in-process "
            f"onnxruntime p50{lat_rounds}",
            per_round(b, lambda r: r[LATENCY_TRITON] / r[LATENCY_INPROC]), "<= 2", lambda v: v <= 2),
        row("  its floor: (echo p50 + in-process p50) / in-process p50, a server that spends "
            f"nothing beyond the graph{lat_rounds}",
            per_round(b, lambda r: (r[LATENCY_ECHO] + r[LATENCY_INPROC]) / r[LATENCY_INPROC]),
            "reported", lambda v: True),
        row("ssim 16x3x256x256, shared memory (best of 1/4 callers): served / in-process "
            "onnxruntime images/s", fraction(b.best(SSIM_SHM, "cvscore", "rps"), ssim_inproc),
            ">= 0.85", lambda v: v >= 0.85),
        row(f"batched == unbatched bit for bit: metrics equal, of {len(bitwise)}",
            float(len(equal)) if bitwise else None, f"all {len(bitwise)}",
            lambda v: v == len(bitwise), ".0f"),
        row("padding overhead, giou 1000 pairs x 8 callers: (computed - requested) / requested "
            "rows", b.facts.get("giou padding"), "<= 0.10", lambda v: v <= 0.10),  # type: ignore[arg-type]
        row(f"padding overhead, every metric, ragged requests of {list(rows.ROW_COUNTS)} rows",
            fraction(rows_done - rows_asked, rows_asked) if ragged else None, "<= 0.10",
            lambda v: v <= 0.10),
        row("giou, 8 callers: --workers 2 / --workers 1 req/s",
            fraction(b.get(GIOU, "cvscore --workers 2", 8, "rps"),
                     b.get(GIOU, "cvscore --workers 1", 8, "rps")),
            "reported", lambda v: True),
        row("ssim, best of 1/8 callers: cvscore / echo MB/s",
            fraction(b.best(SSIM, "cvscore", "mb_s"), b.best(SSIM, "bare gRPC echo", "mb_s")),
            ">= 0.70", lambda v: v >= 0.7),
        row("tiny l1, 32 callers: batching on / off req/s",
            fraction(b.get(TINY, "cvscore batching", 32, "rps"),
                     b.get(TINY, "cvscore no batching", 32, "rps")),
            ">= 3", lambda v: v >= 3),
        row(f"cold export of the zoo, s{' (quick: a subset)' if b.quick else ''}",
            cold if isinstance(cold, float) else None, "< 60", lambda v: v < 60),
        row("server ready (every model of the repository), s",
            ready if isinstance(ready, float) else None, "< 10", lambda v: v < 10),
    ]  # fmt: skip


BITWISE_HEADER = ["metric", "bit for bit", "responses batched", "rows requested",
                  "rows computed", "padding overhead"]  # fmt: skip


def bitwise_table(bitwise: dict[str, dict[str, object]]) -> list[list[str]]:
    out = []
    for name, r in bitwise.items():
        if "error" in r:
            out.append([name, f"error: {r['error']}", "", "", "", ""])
            continue
        alone = float(r["batched"]) == 0  # type: ignore[arg-type]
        out.append([name, "yes" if r["equal"] else "NO", f"{float(r['batched']):.0%}",  # type: ignore[arg-type]
                    str(r["rows"]), "n/a (never batched)" if alone else f"{float(r['computed']):.0f}",  # type: ignore[arg-type]
                    "n/a" if alone else f"{float(r['padding']):.2f}"])  # type: ignore[arg-type]  # fmt: skip
    return out


def headline_table(b: Bench) -> str:
    """The interleaved giou rounds, one column per server (empty without rounds)."""
    if not b.rounds:
        return ""
    labels = list(b.rounds)
    body = [[str(k + 1), *(f"{b.rounds[s][k]:.1f}" for s in labels)]
            for k in range(len(b.rounds[labels[0]]))]  # fmt: skip
    return (
        "\n\n## giou 1000 pairs, 8 callers, interleaved\n\nEach round starts each server "
        f"afresh and loads it for {b.seconds:g} s, one after another; the ratios below are "
        "medians of the per-round ratios.\n\n" + markdown(["round", *labels], body)
    )


def latency_table(b: Bench) -> str:
    """The interleaved single-image ssim rounds, one column per path (empty without them)."""
    if not b.latency:
        return ""
    labels = list(b.latency)
    body = [[str(k + 1), *(f"{b.latency[s][k]:.2f}" for s in labels)]
            for k in range(min(map(len, b.latency.values())))]  # fmt: skip
    return (
        "\n\n## ssim 1x3x256x256, 1 caller, p50 ms, interleaved\n\nEach round measures the "
        f"model.onnx in this process, then a fresh `cvscore serve --models ssim` through "
        "tritonclient and through `cvscore.client.Client` (which puts inputs of 64 KiB or more "
        "in shared memory when the server is local), then the bare echo through tritonclient, "
        f"{b.seconds:g} s each.\n\n" + markdown(["round", *labels], body)
    )


def markdown(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in body])


def run_cvscore(b: Bench, repo: Path, w: dict[str, dict[str, np.ndarray]]) -> dict:
    """Every cvscore row: one batching server with every model, one without batching."""
    callers = (1, 8) if b.quick else CALLERS
    port, metrics_port, bare = free_port(), free_port(), free_port()
    url = f"127.0.0.1:{port}"
    t0 = time.perf_counter()
    with cvscore_server(repo, port, True, None, "--metrics-port", str(metrics_port)):
        b.facts["ready s"] = time.perf_counter() - t0
        print(f"server ready (every model) in {b.facts['ready s']:.1f} s", flush=True)
        before = rows.scrape_rows(metrics_port)
        for c in callers:
            r = load(url, "giou", w["giou"], c, b.seconds)
            b.add(GIOU, "cvscore", c, r)
            if c == 8:
                after = rows.scrape_rows(metrics_port)
                asked = int(r["count"] + r["warm"]) * len(w["giou"]["preds"])
                b.facts["giou padding"] = rows.padding(before, after, {"giou": asked})
            before = rows.scrape_rows(metrics_port)
        b.record(SSIM, "cvscore", url, "ssim", w["ssim"], (1,) if b.quick else (1, 8))
        b.record(SSIM1, "cvscore", url, "ssim", w["ssim1"], (1,))
        try:
            with rows.shm_inputs(url, w["ssim"]) as inputs_from:
                b.record(SSIM_SHM, "cvscore", url, "ssim", w["ssim"], (1, 4), inputs_from)
        except rows.NotAvailable as exc:
            b.missing(SSIM_SHM, "cvscore", str(exc))
        b.record(TINY, "cvscore batching", url, "l1", w["tiny"], (32,))
        with cvscore_server(repo, bare, False, None):
            b.record(TINY, "cvscore no batching", f"127.0.0.1:{bare}", "l1", w["tiny"], (32,))
            names = sorted(p.name for p in repo.iterdir() if (p / "manifest.json").is_file())
            print(f"batched vs unbatched, {len(names)} metrics ...", flush=True)
            return rows.bit_for_bit(
                url, metrics_port, f"127.0.0.1:{bare}", names, 1 if b.quick else 3
            )


def run_headline(b: Bench, repo: Path, w: dict[str, dict[str, np.ndarray]], rounds: int) -> None:
    """giou 1000 pairs, 8 callers, on cvscore, the bare echo and MLServer in turn, ``rounds``
    times: drift on a shared machine then hits all three alike, and each ratio is taken
    within a round."""
    Start = Callable[[int], contextlib.AbstractContextManager[None]]
    servers: dict[str, tuple[Start, str]] = {  # label -> (start on a port, model to ask for)
        "cvscore": (lambda port: cvscore_server(repo, port, True, "giou"), "giou"),
        "bare gRPC echo": (lambda port: echo_server(port, 16), "echo"),
    }
    if b.mlserver_dir is not None:
        work = b.mlserver_dir
        servers["MLServer + ORT"] = (lambda port: mlserver(repo, work, port), "giou")
    for k in range(rounds):
        for label, (start, model) in servers.items():
            port = free_port()
            with start(port):
                r = load(f"127.0.0.1:{port}", model, w["giou"], 8, b.seconds)
            b.rounds.setdefault(label, []).append(r["rps"])
            print(f"headline round {k + 1}: giou, 8 callers, {label}: {r['rps']:.1f} req/s",
                  flush=True)  # fmt: skip


LATENCY_INPROC, LATENCY_TRITON, LATENCY_OWN, LATENCY_ECHO = (
    "in-process onnxruntime",
    "cvscore, tritonclient (bytes)",
    "cvscore, cvscore client (shared memory)",
    "bare gRPC echo, tritonclient (bytes)",
)


def run_latency(b: Bench, repo: Path, w: dict[str, dict[str, np.ndarray]], rounds: int) -> None:
    """One ssim 1x3x256x256 caller, ``rounds`` times in turn: the model.onnx in this process,
    cvscore through tritonclient and through its own client, and the echo through tritonclient
    (what the transport alone costs that client)."""
    arrays = w["ssim1"]
    for k in range(rounds):
        got = {LATENCY_INPROC: rows.in_process_ort(repo, "ssim", arrays, b.seconds)["p50_ms"]}
        port = free_port()
        url = f"127.0.0.1:{port}"
        with cvscore_server(repo, port, True, "ssim"):
            load(url, "ssim", arrays, 1, 0.5)  # the first calls warm the session
            got[LATENCY_TRITON] = load(url, "ssim", arrays, 1, b.seconds)["p50_ms"]
            own = rows.own_client_p50(url, "ssim", arrays, b.seconds)
            got[LATENCY_OWN] = own["p50_ms"]
            b.facts["own client regions"] = own["regions"]
        with echo_server(port, 16):
            got[LATENCY_ECHO] = load(url, "echo", arrays, 1, b.seconds)["p50_ms"]
        for label, p50 in got.items():
            b.latency.setdefault(label, []).append(p50)
        print(f"latency round {k + 1}: ssim 1x3x256x256 p50 ms: "
              + ", ".join(f"{label} {p50:.2f}" for label, p50 in got.items()), flush=True)  # fmt: skip


def per_round(b: Bench, fn: Callable[[dict[str, float]], float]) -> float | None:
    """The median over the latency rounds of ``fn`` of that round's p50s."""
    n = min((len(v) for v in b.latency.values()), default=0)
    values = [fn({label: v[k] for label, v in b.latency.items()}) for k in range(n)]
    return statistics.median(values) if values else None


def run_workers(b: Bench, repo: Path, w: dict[str, dict[str, np.ndarray]]) -> None:
    if not rows.has_worker_processes(CVSCORE):
        for n in (1, 2):
            b.missing(GIOU, f"cvscore --workers {n}", "--workers means threads here (no --threads)")
        return
    for n in (1, 2):
        port = free_port()
        with cvscore_server(repo, port, True, "giou", "--workers", str(n)):
            b.record(GIOU, f"cvscore --workers {n}", f"127.0.0.1:{port}", "giou", w["giou"], (8,))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, help="per measurement (default 4; quick 0.5)")
    parser.add_argument("--skip-mlserver", action="store_true")
    parser.add_argument(
        "--rounds", type=int, help="interleaved rounds of the giou comparison (default 3; quick 1)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: a few metrics, short rows, no MLServer"
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the .md table")
    args = parser.parse_args()
    b = Bench(args.seconds or (0.5 if args.quick else 4.0), args.quick)
    w = workloads()

    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        b.facts["cold export s"] = rows.cold_export(
            CVSCORE, repo, QUICK_METRICS if b.quick else None
        )
        print(f"cold export: {b.facts['cold export s']:.1f} s", flush=True)
        for workload, key in ((SSIM1, "ssim1"), (SSIM, "ssim")):
            r = rows.in_process_ort(repo, "ssim", w[key], b.seconds * 2)
            b.add(workload, "in-process onnxruntime", 1, {
                "rps": r["calls_s"], "p50_ms": r["p50_ms"], "p99_ms": float("nan"),
                "mb_s": r["calls_s"] * sum(a.nbytes for a in w[key].values()) / 1e6, "errors": 0})  # fmt: skip
        bitwise = run_cvscore(b, repo, w)
        run_workers(b, repo, w)
        port = free_port()
        with echo_server(port, 16):
            url = f"127.0.0.1:{port}"
            b.record(SSIM, "bare gRPC echo", url, "echo", w["ssim"], (1,) if b.quick else (1, 8))
            # the ceiling for the other two workloads, measured the same way
            b.record(GIOU, "bare gRPC echo", url, "echo", w["giou"], (8,))
            b.record(TINY, "bare gRPC echo", url, "echo", w["tiny"], (32,))
        if args.skip_mlserver or args.quick:
            b.missing(GIOU, "MLServer + ORT", "skipped (--skip-mlserver or --quick)")
        else:
            port = free_port()
            b.mlserver_dir = Path(tmp) / "mlserver"
            b.mlserver_dir.mkdir()
            with mlserver(repo, b.mlserver_dir, port):
                b.record(GIOU, "MLServer + ORT", f"127.0.0.1:{port}", "giou", w["giou"], CALLERS)
        rounds = args.rounds if args.rounds is not None else (1 if b.quick else 3)
        run_headline(b, repo, w, rounds)
        run_latency(b, repo, w, rounds)

    header = ["workload", "server", "callers", "req/s", "p50 ms", "p99 ms", "MB/s in", "errors"]
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    text = (
        f"# cvscore serving benchmark{' (quick)' if b.quick else ''}, {stamp}\n\n"
        f"Machine: {platform.machine()}, {os.cpu_count()} cores; load generator tritonclient.grpc "
        f"in the same machine; {b.seconds:g} s per row (ssim 16x3x256x256 rows 4x), closed loop. "
        "In-process onnxruntime: the repository's ssim model.onnx in an InferenceSession of the "
        "bench process, calls one after another (req/s = calls/s; images/s = 16 x that).\n"
        f"Command: `.venv/bin/python bench/serve.py{' --quick' if b.quick else ''}`\n\n"
        + markdown(header, b.rows)
        + headline_table(b)
        + latency_table(b)
        + "\n\n## Ratios and targets\n\n"
        + markdown(["figure", "value", "target", "met"], ratio_rows(b, bitwise))
        + "\n\n## Batched == unbatched, every metric\n\n"
        f"Per metric, {len(rows.ROW_COUNTS)} requests of {list(rows.ROW_COUNTS)} rows sent together "
        "to the batching server and one at a time to a `--no-batching` one; every output compared "
        "byte for byte. Rows computed: the server's `cvscore_batch_size_sum` (Prometheus) over "
        "the run.\n\n" + markdown(BITWISE_HEADER, bitwise_table(bitwise)) + "\n"
    )
    print("\n" + text)
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"serve-cpu-{stamp}{'-quick' if b.quick else ''}.md"
    out.write_text(text)
    print(f"written to {out}")


if __name__ == "__main__":
    main()
