"""``--workers 2 --threads 1`` against ``--workers 1 --threads 2``, in one run.

Starts ``cvscore serve`` on a small repository (l1, giou; ONNX) in each configuration, sends
`l1` scores from several client threads, each on its own connection (so SO_REUSEPORT can
spread them), for a fixed time, and prints requests per second and their ratio. The load
generator runs on the same machine and competes for its cores: read the ratio, not the
absolute figures. Writes ``bench/results/workers.txt``.

    python bench/workers.py [--seconds 8] [--clients 8] [--rows 64]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
import numpy as np

from cvscore.exporters import export_many
from cvscore.v1 import scoring_pb2 as pb
from cvscore.v1 import scoring_pb2_grpc as pb_grpc

READY = "cvscore serving on "


def _request(rows: int) -> pb.ScoreRequest:
    rng = np.random.default_rng(0)
    tensors = []
    for name in ("preds", "target"):
        array = rng.normal(size=(rows, 256)).astype(np.float32)
        tensors.append(
            pb.Tensor(
                name=name, dtype=pb.DATA_TYPE_FLOAT32, shape=list(array.shape), data=array.tobytes()
            )
        )
    return pb.ScoreRequest(metric="l1", inputs=tensors)


def measure(repo: Path, flags: list[str], args: argparse.Namespace) -> float:
    cmd = [sys.executable, "-m", "cvscore.cli", "serve", "--repository", str(repo), "--port",
           "0", "--runtime", "onnx", "--no-progress", "--log-level", "warning", *flags]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith(READY), line
        address = line.strip()[len(READY) :]
        request = _request(args.rows)
        done = [0] * args.clients
        stop = time.perf_counter() + args.seconds

        def client(i: int) -> None:
            with grpc.insecure_channel(address) as channel:
                stub = pb_grpc.ScoringStub(channel)
                stub.Score(request, timeout=30)  # warm
                while time.perf_counter() < stop:
                    stub.Score(request, timeout=30)
                    done[i] += 1

        threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return sum(done) / (time.perf_counter() - start)
    finally:
        proc.terminate()
        proc.wait(60)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--rows", type=int, default=64)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp)
        export_many(["l1", "giou"], repo, formats=("onnx",), progress=False)
        one = measure(repo, ["--workers", "1", "--threads", "2"], args)
        two = measure(repo, ["--workers", "2", "--threads", "1"], args)
    table = (
        f"l1 [{args.rows}, 256] fp32, {args.clients} client threads, {args.seconds:.0f} s each\n"
        f"| server | requests/s |\n|---|---|\n"
        f"| --workers 1 --threads 2 | {one:.0f} |\n| --workers 2 --threads 1 | {two:.0f} |\n"
        f"ratio (2 workers / 1): {two / one:.2f}\n"
    )
    print(table)
    out = Path(__file__).parent / "results" / "workers.txt"
    out.parent.mkdir(exist_ok=True)
    out.write_text(table)


if __name__ == "__main__":
    main()
