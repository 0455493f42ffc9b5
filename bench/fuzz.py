"""Fuzz and soak benchmark: thousands of bad requests, then a soak, against `cvscore serve`.

The server is a real separate process (``cvscore serve`` on a small exported repository,
ONNX Runtime and TorchScript), so its RSS is read from ``/proc`` and a crash is seen as a
dead process. The requests come from ``tests/server/fuzzing.py``, the oracle the CI fuzz
uses: each bad request carries the statuses its mutation allows, never INTERNAL or UNKNOWN.

1. warm-up: one round of bad and good requests, then the RSS;
2. fuzz: ``--rounds`` rounds of ``--requests`` bad requests, one good request after every
   four, from ``--callers`` threads; per round the RSS (a leak grows every round, a warm-up
   plateaus); good answers are checked against values computed here with eager PyTorch;
3. soak: ``--soak-callers`` callers sending good requests for ``--soak-s`` seconds: errors,
   p50 / p99, RSS every few seconds.

    .venv/bin/python bench/fuzz.py [--requests 5000 --rounds 8 --soak-s 60]

Writes bench/results/fuzz-<date>.md.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import os
import platform
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = Path(__file__).resolve().parent / "results"
MODELS = ("l1", "giou", "cross_entropy", "mse")

from tests.server.fuzzing import MAX_MESSAGE, Case, Fuzzer, Model, send  # noqa: E402


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start(repo: Path, log: Path) -> tuple[subprocess.Popen[str], str]:
    cmd = [
        sys.executable, "-m", "cvscore.cli", "serve", "--repository", str(repo),
        "--port", "0", "--runtime", "onnx,torchscript", "--no-progress", "--log-level", "info",
    ]  # fmt: skip
    err = log.open("w")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("cvscore serving on "):
        raise RuntimeError(f"the server did not start: {log.read_text()[-2000:]}")
    return proc, line.split()[-1]


def models() -> tuple[list[Model], dict[str, np.ndarray]]:
    """Valid samples of each model and their eager scores."""
    import torch

    from cvscore.metrics import registry

    out, expected = [], {}
    for name in MODELS:
        spec = registry.get(name)
        inputs = spec.make_inputs(torch.Generator().manual_seed(7), {"N": 4})
        expected[name] = spec.build()(**inputs).detach().numpy()
        out.append(Model(name, {k: v.numpy() for k, v in spec.canonical(inputs).items()}))
    return out, expected


class Tally:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.codes: collections.Counter[str] = collections.Counter()
        self.wrong: collections.Counter[tuple[str, str, str]] = collections.Counter()
        self.long = 0
        self.good_wrong = 0
        self.good = 0
        self.examples: list[str] = []

    def add(self, case: Case, code: str, message: str) -> None:
        with self.lock:
            self.codes[code] += 1
            if code not in case.allowed:
                self.wrong[(case.api, case.mutation, code)] += 1
                if len(self.examples) < 5:
                    self.examples.append(f"{case.api} {case.mutation}: {code} {message[:200]}")
            self.long += len(message.encode()) > MAX_MESSAGE


def fuzz_round(
    address: str, fuzzer: Fuzzer, expected: dict[str, np.ndarray], n: int, callers: int, seed: int
) -> Tally:
    tally = Tally()
    rng = random.Random(seed)
    mutations = [("v1", m) for m in fuzzer.mutations("v1")] + [
        ("kserve", m) for m in fuzzer.mutations("kserve")
    ]
    plan = [(*rng.choice(mutations), seed * 1_000_003 + i) for i in range(n)]
    lock = threading.Lock()

    def worker() -> None:
        from cvscore.v1 import scoring_pb2 as pb

        with grpc.insecure_channel(address) as channel:
            while True:
                with lock:
                    if not plan:
                        return
                    api, mutation, s = plan.pop()
                case = fuzzer.case(api, mutation, s)
                tally.add(case, *send(channel, case))
                if s % 4 == 0:  # a good request after every fourth bad one
                    model = fuzzer.models[s % len(fuzzer.models)]
                    good = fuzzer.good("v1", model)
                    try:
                        response = pb.ScoreResponse.FromString(
                            channel.unary_unary(good.method)(good.payloads[0], timeout=60)
                        )
                        t = response.outputs[0]
                        got = np.frombuffer(t.data, np.float32).reshape(tuple(t.shape))
                        ok = np.allclose(got, expected[model.name], rtol=1e-4, atol=1e-5)
                        tally.add(good, "OK", "")
                    except grpc.RpcError as error:
                        ok = False
                        tally.add(good, error.code().name, error.details() or "")
                    with tally.lock:
                        tally.good += 1
                        tally.good_wrong += not ok

    threads = [threading.Thread(target=worker) for _ in range(callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return tally


def soak(
    address: str, fuzzer: Fuzzer, pid: int, callers: int, seconds: float
) -> tuple[int, int, list[float], list[tuple[float, float]]]:
    stop = threading.Event()
    latencies: list[float] = []
    errors = collections.Counter()
    lock = threading.Lock()

    def caller(i: int) -> None:
        model = fuzzer.models[i % len(fuzzer.models)]
        case = fuzzer.good("kserve" if i % 2 else "v1", model)
        with grpc.insecure_channel(address) as channel:
            call = channel.unary_unary(case.method)
            mine = []
            while not stop.is_set():
                t0 = time.perf_counter()
                try:
                    call(case.payloads[0], timeout=60)
                    mine.append(time.perf_counter() - t0)
                except grpc.RpcError as error:
                    with lock:
                        errors[error.code().name] += 1
            with lock:
                latencies.extend(mine)

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(callers)]
    start_t = time.monotonic()
    for t in threads:
        t.start()
    samples = []
    while time.monotonic() - start_t < seconds:
        time.sleep(min(5.0, seconds / 12))
        samples.append((time.monotonic() - start_t, rss_mib(pid)))
    stop.set()
    for t in threads:
        t.join()
    return len(latencies), sum(errors.values()), sorted(latencies), samples


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=5000, help="bad requests per round")
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--callers", type=int, default=16)
    p.add_argument("--soak-callers", type=int, default=64)
    p.add_argument("--soak-s", type=float, default=60.0)
    args = p.parse_args()

    from cvscore.exporters import export_many

    work = Path(tempfile.mkdtemp(prefix="cvscore-fuzz-"))
    repo = work / "repo"
    export_many(list(MODELS), repo, formats=("onnx", "torchscript"), progress=False)
    fuzzer_models, expected = models()
    fuzzer = Fuzzer(fuzzer_models)
    log = work / "server.log"
    proc, address = start(repo, log)
    rows: list[str] = []
    try:
        rss0 = rss_mib(proc.pid)
        fuzz_round(address, fuzzer, expected, args.requests // 2, args.callers, seed=1)
        rss_warm = rss_mib(proc.pid)
        tallies, rss_rounds = [], []
        t0 = time.perf_counter()
        for r in range(args.rounds):
            tallies.append(
                fuzz_round(address, fuzzer, expected, args.requests, args.callers, 2 + r)
            )
            rss_rounds.append(rss_mib(proc.pid))
        fuzz_s = time.perf_counter() - t0
        alive = proc.poll() is None
        n, errors, lat, samples = soak(address, fuzzer, proc.pid, args.soak_callers, args.soak_s)
        alive = alive and proc.poll() is None
    finally:
        proc.terminate()
        code = proc.wait(60)
    codes = sum((t.codes for t in tallies), collections.Counter())
    wrong = sum((t.wrong for t in tallies), collections.Counter())
    bad_total = args.requests * args.rounds
    text = log.read_text()
    tracebacks = text.count("Traceback")
    growth = (rss_rounds[-1] - rss_warm) / rss_warm * 100
    rows.append(f"# cvscore fuzz and soak, {dt.date.today().isoformat()}\n")
    rows.append(
        f"Machine: {platform.machine()}, {os.cpu_count()} cores; server `cvscore serve` "
        f"({', '.join(MODELS)}; onnx, torchscript) in its own process; {args.callers} callers; "
        f"oracle tests/server/fuzzing.py. Command: `.venv/bin/python bench/fuzz.py "
        f"--requests {args.requests} --rounds {args.rounds} --soak-s {args.soak_s:g}`.\n"
    )
    rows.append("| fuzz | value |\n|---|---|")
    rows.append(f"| bad requests (after a warm-up round of {args.requests // 2}) | {bad_total} |")
    rows.append(f"| good requests mixed in | {sum(t.good for t in tallies)} |")
    rows.append(f"| seconds | {fuzz_s:.0f} |")
    rows.append(f"| wrong status codes | {sum(wrong.values())} |")
    rows.append(
        f"| good requests with a wrong or failed answer | {sum(t.good_wrong for t in tallies)} |"
    )
    rows.append(f"| status messages over 1 KB | {sum(t.long for t in tallies)} |")
    rows.append(f"| crashes (server process alive at the end) | {0 if alive else 1} |")
    rows.append(f"| server exit code on SIGTERM | {code} |")
    rows.append(f"| server log: lines / tracebacks | {text.count(chr(10))} / {tracebacks} |")
    rows.append(f"| RSS at start / after warm-up (MiB) | {rss0:.0f} / {rss_warm:.0f} |")
    rows.append(
        "| RSS after each fuzz round (MiB) | " + " / ".join(f"{r:.0f}" for r in rss_rounds) + " |"
    )
    rows.append(f"| RSS growth after warm-up | {growth:+.1f}% |\n")
    rows.append("| status (bad and good requests) | requests |\n|---|---|")
    for name, count in codes.most_common():
        rows.append(f"| {name} | {count} |")
    if wrong:
        rows.append("\n| wrong: api, mutation, got | count |\n|---|---|")
        for key, count in wrong.most_common():
            rows.append(f"| {' / '.join(key)} | {count} |")
        rows.append(
            "\nExamples:\n" + "\n".join(f"- {e}" for e in [e for t in tallies for e in t.examples])
        )
    p50 = lat[len(lat) // 2] * 1e3 if lat else float("nan")
    p99 = lat[int(len(lat) * 0.99)] * 1e3 if lat else float("nan")
    rows.append(f"\n| soak: {args.soak_callers} callers x {args.soak_s:g} s | value |\n|---|---|")
    rows.append(f"| requests / errors | {n} / {errors} |")
    rows.append(f"| p50 / p99 ms | {p50:.1f} / {p99:.1f} |")
    rows.append(
        "| RSS over time (s: MiB) | " + ", ".join(f"{t:.0f}: {r:.0f}" for t, r in samples) + " |"
    )
    report = "\n".join(rows) + "\n"
    print(report)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"fuzz-{dt.date.today().isoformat()}.md"
    out.write_text(report)
    print(f"wrote {out}", file=sys.stderr)
    ok = alive and not wrong and not sum(t.long for t in tallies) and errors == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
