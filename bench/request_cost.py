"""What one served request costs: server CPU per request against a bare gRPC echo, and the
KServe ModelInfer handler alone, in-process, without gRPC.

Rows, interleaved ``--rounds`` times so the machine's drift hits every server alike:

- the bare ``grpc.aio`` echo of bench/serve.py (the floor of Python gRPC here);
- ``cvscore serve`` on asyncio's event loop (``CVSCORE_EVENT_LOOP=asyncio``) and on uvloop;
- with ``--baseline PATH``, the ``cvscore`` executable of another checkout (an earlier
  commit in its own virtual environment, say) on the same repository, for a before / after
  in one run.

Each row is giou 1000 pairs from 8 tritonclient callers (bench/serve.py's ``load``). Server
CPU is the utime + stime of the server process (from /proc) over the row, divided by the
requests answered. Then the handler alone: ``KServeServicer.ModelInfer`` awaited on parsed
requests with a stub context, with and without its handler layers. Read the ratios: the
machine is shared and the load generator competes for its cores.

    .venv/bin/python bench/request_cost.py [--seconds 3] [--rounds 2] [--calls 3000]
        [--baseline OTHER/.venv/bin/cvscore]

Linux only (/proc). Writes bench/results/request-cost-<date>.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
import serve as S
import serve_rows as rows

RESULTS = Path(__file__).resolve().parent / "results"
CALLERS = 8


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def served(cmd: list[str], model: str, seconds: float, env: dict[str, str]) -> dict[str, float]:
    port = S.free_port()
    url = f"127.0.0.1:{port}"
    proc = subprocess.Popen(
        [*cmd, "--port", str(port)] if model != "echo" else [*cmd, str(port), "16"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        S.wait_ready(url, proc)
        giou = S.workloads()["giou"]
        S.load(url, model, giou, CALLERS, 1.0)  # warm
        before = cpu_seconds(proc.pid)
        r = S.load(url, model, giou, CALLERS, seconds)
        used = cpu_seconds(proc.pid) - before
        return {"rps": r["rps"], "cpu_us": 1e6 * used / max(1, r["count"]), "errors": r["errors"]}
    finally:
        proc.terminate()
        proc.wait(30)


def handler_cost(repo: Path, calls: int) -> dict[str, float]:
    """µs per ModelInfer call in-process: the servicer, and with its telemetry and decode
    guard layers (server/handlers.py)."""
    from tritonclient.grpc import service_pb2

    from cvscore.server.app import Server
    from cvscore.server.config import ServerConfig
    from cvscore.server.core import ScoringCore
    from cvscore.server.handlers import compose
    from cvscore.server.kserve import KServeServicer
    from cvscore.server.rawinput import InferRequestParser
    from cvscore.server.telemetry import TelemetryLayer
    from cvscore.server.wire import DecodeGuard

    request = service_pb2.ModelInferRequest(model_name="giou")
    for name, array in S.workloads()["giou"].items():
        request.inputs.add(name=name, datatype="FP32", shape=list(array.shape))
        request.raw_input_contents.append(array.tobytes())
    data = request.SerializeToString()

    class Context:  # what the handlers read of a grpc.aio context
        def time_remaining(self) -> None:
            return None

        def set_trailing_metadata(self, metadata: Any) -> None:
            pass

        def code(self) -> None:
            return None

        def invocation_metadata(self) -> tuple[()]:
            return ()

        async def abort(self, code: Any, details: str = "", metadata: Any = ()) -> None:
            raise RuntimeError(details)

    async def main() -> dict[str, float]:
        config = ServerConfig(repository=repo, models=("giou",), metrics_port=0, port=0)
        core = ScoringCore(config.repository, config.core_options(), config.models)
        server = Server(config, core)
        await server.listen()
        await server.load()
        try:
            servicer = KServeServicer(server.plane, server.plane.m)
            parse = InferRequestParser(servicer.m.ModelInferRequest).parse
            # the handler as the server registers it: telemetry and the decode guard layered
            method = "/inference.GRPCInferenceService/ModelInfer"
            plain = grpc.unary_unary_rpc_method_handler(servicer.ModelInfer)
            layer = compose([TelemetryLayer(server.telemetry, core), DecodeGuard()])
            wrapped = layer(method, plain).unary_unary
            context = Context()
            out = {}
            for label, fn in (("servicer", servicer.ModelInfer), ("with its layers", wrapped)):
                for _ in range(calls // 10):
                    await fn(parse(data), context)
                start = time.perf_counter()
                for _ in range(calls):
                    await fn(parse(data), context)
                out[label] = 1e6 * (time.perf_counter() - start) / calls
            return out
        finally:
            await server.stop()

    return asyncio.run(main())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--baseline", type=Path, help="another checkout's cvscore executable")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        rows.cold_export(S.CVSCORE, repo, ["giou"])
        flags = ["serve", "--repository", str(repo), "--models", "giou",
                 "--no-progress", "--log-level", "error"]  # fmt: skip
        cvscore = [str(S.CVSCORE), *flags]
        servers = {
            "bare gRPC echo": ([sys.executable, "-c", S.ECHO_SERVER], "echo", {}),
            "cvscore, asyncio loop": (cvscore, "giou", {"CVSCORE_EVENT_LOOP": "asyncio"}),
            "cvscore, uvloop": (cvscore, "giou", {"CVSCORE_EVENT_LOOP": "uvloop"}),
        }
        if args.baseline is not None:
            servers[f"baseline {args.baseline}"] = ([str(args.baseline), *flags], "giou", {})
        runs: dict[str, list[dict[str, float]]] = {k: [] for k in servers}
        for round_ in range(args.rounds):
            for label, (cmd, model, extra) in servers.items():
                r = served(cmd, model, args.seconds, {**os.environ, **extra})
                runs[label].append(r)
                print(f"round {round_ + 1} {label}: {r['rps']:.0f} req/s, "
                      f"{r['cpu_us']:.0f} µs CPU/request", flush=True)  # fmt: skip
        handler = handler_cost(repo, args.calls)
    echo_rps = statistics.median(r["rps"] for r in runs["bare gRPC echo"])
    lines = [
        f"# What one served request costs, {dt.datetime.now(dt.UTC):%Y-%m-%d}",
        "",
        f"giou 1000 pairs, {CALLERS} tritonclient callers, {args.seconds:g} s per row, "
        f"{args.rounds} interleaved rounds (medians). Command: "
        "`.venv/bin/python bench/request_cost.py`",
        "",
        "| server | req/s | server CPU µs/request | req/s / echo | errors |",
        "|---|---|---|---|---|",
    ]
    for label, rs in runs.items():
        rps = statistics.median(r["rps"] for r in rs)
        cpu = statistics.median(r["cpu_us"] for r in rs)
        errors = sum(int(r["errors"]) for r in rs)
        lines.append(f"| {label} | {rps:.0f} | {cpu:.0f} | {rps / echo_rps:.2f} | {errors} |")
    lines += [
        "",
        f"KServe ModelInfer in-process (no gRPC), {args.calls} calls: "
        + ", ".join(f"{k} {v:.0f} µs/call" for k, v in handler.items()),
        "",
    ]
    text = "\n".join(lines)
    print("\n" + text)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"request-cost-{dt.datetime.now(dt.UTC):%Y-%m-%d}.md"
    out.write_text(text)
    print(f"written to {out}")


if __name__ == "__main__":
    main()
