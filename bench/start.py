"""How fast cvscore starts: a cold `cvscore export` of the default zoo, then `cvscore serve`
on that repository until it is ready; optionally against another install in the same run.

Ready means what a load balancer or `make demo` waits for: the standard health service
reports SERVING for the whole server ("") and KServe v2 `ServerReady` answers true. Each
figure is timed from the command's start, so imports count.

    .venv/bin/python bench/start.py                                  # this checkout
    .venv/bin/python bench/start.py --peer /work/main/.venv/bin/cvscore  # against another

The runs alternate (this one, the peer, this one, ...) so that both see the same load on a
shared machine; the table gives each run and the ratio of the medians. Written to
``bench/results/start-<date>.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
HERE = Path(sys.executable).with_name("cvscore")


def cold_export(cvscore: Path, repo: Path, extra: list[str]) -> float:
    shutil.rmtree(repo, ignore_errors=True)
    t0 = time.perf_counter()
    subprocess.run(
        [str(cvscore), "export", "--out", str(repo), *extra],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - t0


def _ready(address: str) -> bool:
    import grpc
    import tritonclient.grpc as triton
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    try:
        with grpc.insecure_channel(address) as channel:
            status = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=1.0
            )
        if status.status != health_pb2.HealthCheckResponse.SERVING:
            return False
        return bool(triton.InferenceServerClient(address).is_server_ready(client_timeout=1.0))
    except Exception:  # not listening yet, or not ready
        return False


def serve_ready(cvscore: Path, repo: Path, port: int, timeout: float) -> float:
    """Seconds from `cvscore serve` starting until it is ready; then it is stopped."""
    address = f"127.0.0.1:{port}"
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [str(cvscore), "serve", "--repository", str(repo), "--port", str(port), "--no-progress"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while not _ready(address):
            if proc.poll() is not None:
                raise RuntimeError(f"{cvscore} serve exited with {proc.returncode}")
            if time.perf_counter() - t0 > timeout:
                raise TimeoutError(f"{cvscore} serve not ready after {timeout:.0f} s")
            time.sleep(0.05)
        return time.perf_counter() - t0
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cvscore", type=Path, default=HERE, help="the install to measure")
    parser.add_argument("--peer", type=Path, help="another install's cvscore, measured alike")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds for serve")
    parser.add_argument("metrics", nargs="*", help="export only these (default: the zoo)")
    args = parser.parse_args()
    installs = [("this", args.cvscore)] + ([("peer", args.peer)] if args.peer else [])
    times: dict[str, dict[str, list[float]]] = {k: {"export": [], "ready": []} for k, _ in installs}
    with tempfile.TemporaryDirectory(prefix="cvscore-start-") as tmp:
        for _ in range(args.repeat):
            for label, cvscore in installs:
                repo = Path(tmp) / label
                exported = cold_export(cvscore, repo, args.metrics)
                ready = serve_ready(cvscore, repo, free_port(), args.timeout)
                times[label]["export"].append(exported)
                times[label]["ready"].append(ready)
                print(f"{label}: export {exported:.1f} s, ready {ready:.1f} s", flush=True)
    load = os.getloadavg()[0]
    lines = [
        f"# Start-up, {dt.date.today().isoformat()}",
        "",
        f"`{' '.join(['bench/start.py', *sys.argv[1:]])}` on {platform.node()} "
        f"({os.cpu_count()} cores, load {load:.1f} at the end), Python "
        f"{platform.python_version()}; metrics: {' '.join(args.metrics) or 'the default zoo'}.",
        "",
        "| install | cold export (s) | serve ready (s) |",
        "|---|--:|--:|",
    ]
    for label, cvscore in installs:
        export = ", ".join(f"{t:.1f}" for t in times[label]["export"])
        ready = ", ".join(f"{t:.1f}" for t in times[label]["ready"])
        lines.append(f"| {label} (`{cvscore}`) | {export} | {ready} |")
    if args.peer:
        med = {k: {f: statistics.median(v) for f, v in t.items()} for k, t in times.items()}
        lines.append(
            f"| this / peer (medians) | {med['this']['export'] / med['peer']['export']:.2f} "
            f"| {med['this']['ready'] / med['peer']['ready']:.2f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"start-{dt.date.today().isoformat()}.md"
    out.write_text(text)
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
