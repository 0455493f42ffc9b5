"""The serving benchmark's rows beyond plain load: bench/serve.py runs them.

- In-process ONNX Runtime: the repository's ``model.onnx`` in an
  ``onnxruntime.InferenceSession`` of this process, on the inputs the server gets.
- The cvscore client: ``Client.score`` one call after another (it puts large inputs in
  shared memory by itself when the server is local).
- System shared memory: inputs placed in a region with ``tritonclient.utils.shared_memory``,
  registered with ``SystemSharedMemoryRegister`` and referenced by each request.
- ``cvscore serve --workers N`` as worker processes (present once ``--threads`` names the
  compute threads).
- Batched against unbatched, bit for bit, for every metric of the repository, with the rows
  the server computed (Prometheus ``cvscore_batch_size_sum``) against the rows requested.
- Cold export and time to ready.

A feature the server does not have yet (UNIMPLEMENTED, an unknown flag) gives its row
"n/a (not available)" and the reason, never a failure of the run.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

NA = "n/a (not available)"


# -- in-process ONNX Runtime ------------------------------------------------------------------
def onnx_feed(repo: Path, model: str, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Inputs as the artifact takes them, following its manifest ("*" axes flattened)."""
    manifest = json.loads((repo / model / "manifest.json").read_text())
    feed = {}
    for spec in manifest["inputs"]:
        value = np.ascontiguousarray(arrays[spec["name"]], dtype=spec["dtype"])
        declared = spec["declared_shape"]
        if declared and declared[-1] == "*":
            value = value.reshape(*value.shape[: len(declared) - 1], -1)
        feed[spec["name"]] = value
    return feed


def in_process_ort(
    repo: Path, model: str, arrays: dict[str, np.ndarray], seconds: float
) -> dict[str, float]:
    """p50 latency and calls/s of the same model.onnx run here, one call after another."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(repo / model / "1" / "model.onnx"))
    feed = onnx_feed(repo, model, arrays)
    for _ in range(2):
        session.run(None, feed)
    times: list[float] = []
    stop = time.perf_counter() + seconds
    while time.perf_counter() < stop or len(times) < 5:
        t0 = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - t0)
    return {"p50_ms": 1e3 * statistics.median(times), "calls_s": len(times) / sum(times)}


def own_client_p50(url: str, model: str, arrays: dict[str, np.ndarray], seconds: float) -> dict:
    """p50 latency of ``cvscore.client.Client.score`` (reduction none), one call after another,
    and how many shared memory regions the client registered (its default for a local server)."""
    from cvscore.client import Client

    with Client(url) as client:
        for _ in range(3):
            client.score(model, reduction="none", **arrays)
        times: list[float] = []
        stop = time.perf_counter() + seconds
        while time.perf_counter() < stop or len(times) < 5:
            t0 = time.perf_counter()
            client.score(model, reduction="none", **arrays)
            times.append(time.perf_counter() - t0)
        shared = client._shared  # the bench asks which path the calls took
        regions = len(shared.regions) if shared is not None else 0
    return {"p50_ms": 1e3 * statistics.median(times), "regions": regions}


# -- system shared memory ---------------------------------------------------------------------
@contextlib.contextmanager
def shm_inputs(url: str, arrays: dict[str, np.ndarray]) -> Iterator[Callable[[], list[Any]]]:
    """Put ``arrays`` in one registered region; yield what makes a request's inputs from it.

    Raises ``NotAvailable`` when the server does not implement system shared memory.
    """
    import tritonclient.grpc as tc
    import tritonclient.utils.shared_memory as shm
    from tritonclient.utils import InferenceServerException

    name, key = f"bench-{time.monotonic_ns()}", f"/cvscore-bench-{time.monotonic_ns()}"
    size = sum(a.nbytes for a in arrays.values())
    handle = shm.create_shared_memory_region(name, key, size)
    client = tc.InferenceServerClient(url)
    registered = False
    try:
        shm.set_shared_memory_region(handle, [np.ascontiguousarray(a) for a in arrays.values()])
        try:
            client.register_system_shared_memory(name, key, size)
        except InferenceServerException as exc:
            raise NotAvailable(f"SystemSharedMemoryRegister: {exc.status()}") from exc
        registered = True

        def make_inputs() -> list[Any]:
            out, offset = [], 0
            for arr_name, arr in arrays.items():
                inp = tc.InferInput(arr_name, list(arr.shape), "FP32")
                inp.set_shared_memory(name, arr.nbytes, offset=offset)
                offset += arr.nbytes
                out.append(inp)
            return out

        yield make_inputs
    finally:
        if registered:
            with contextlib.suppress(Exception):
                client.unregister_system_shared_memory(name)
        client.close()
        shm.destroy_shared_memory_region(handle)


class NotAvailable(Exception):
    """The server lacks a feature a row needs; the row says n/a and why."""


# -- worker processes -------------------------------------------------------------------------
def has_worker_processes(cvscore: Path) -> bool:
    """``--workers`` means processes once ``--threads`` names the compute threads."""
    out = subprocess.run([str(cvscore), "serve", "--help"], capture_output=True, text=True)
    return out.returncode == 0 and "--threads" in out.stdout


# -- Prometheus -------------------------------------------------------------------------------
def scrape_rows(metrics_port: int) -> dict[str, float]:
    """Rows computed so far per metric (``cvscore_batch_size_sum``, every runtime summed)."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as r:
        text = r.read().decode()
    rows: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "cvscore_batch_size_sum":
                rows[s.labels["metric"]] = rows.get(s.labels["metric"], 0.0) + s.value
    return rows


def padding(before: dict[str, float], after: dict[str, float], requested: dict[str, int]) -> float:
    """(rows computed - rows requested) / rows requested, over the metrics in ``requested``."""
    computed = sum(after.get(m, 0.0) - before.get(m, 0.0) for m in requested)
    asked = sum(requested.values())
    return (computed - asked) / asked if asked else float("nan")


# -- batched == unbatched, every metric -------------------------------------------------------
ROW_COUNTS = (1, 3, 5, 2, 7, 4, 9, 16)


def metric_requests(name: str) -> list[dict[str, np.ndarray]]:
    """Ragged requests of one metric: ``ROW_COUNTS`` rows at its example sizes."""
    import torch

    from cvscore.metrics import registry

    spec = registry.get(name)
    out = []
    for i, n in enumerate(ROW_COUNTS):
        sample = spec.make_inputs(torch.Generator().manual_seed(i), {"N": n})
        out.append({k: v.numpy() for k, v in sample.items()})
    return out


def bit_for_bit(
    batched_url: str, metrics_port: int, unbatched_url: str, names: list[str], rounds: int
) -> dict[str, dict[str, Any]]:
    """Per metric: equal bits, share of responses that were batched, padding overhead."""
    from cvscore.client import Client

    results: dict[str, dict[str, Any]] = {}
    with Client(batched_url) as batched, Client(unbatched_url) as alone:
        pool = ThreadPoolExecutor(len(ROW_COUNTS))
        for name in names:
            requests = metric_requests(name)
            try:
                want = [alone.score(name, r, reduction="none", timeout=120) for r in requests]
            except Exception as exc:  # reported beside the metric, not hidden
                results[name] = {"error": f"unbatched: {str(exc)[:120]}"}
                continue
            before = scrape_rows(metrics_port)
            equal, shared, total, asked = True, 0, 0, 0
            for _ in range(rounds):
                futures = [
                    pool.submit(batched.score, name, r, reduction="none", timeout=120)
                    for r in requests
                ]
                for future, w in zip(futures, want, strict=True):
                    got = future.result()
                    total += 1
                    shared += got.timing.batch_requests > 1
                    asked += int(got.scores.shape[0]) if got.scores.ndim else 0
                    equal &= got.outputs.keys() == w.outputs.keys() and all(
                        got.outputs[k].dtype == w.outputs[k].dtype
                        and got.outputs[k].shape == w.outputs[k].shape
                        and got.outputs[k].tobytes() == w.outputs[k].tobytes()
                        for k in w.outputs
                    )
            after = scrape_rows(metrics_port)
            results[name] = {
                "equal": equal,
                "batched": shared / total,
                "padding": padding(before, after, {name: asked}),
                "rows": asked,
                "computed": after.get(name, 0.0) - before.get(name, 0.0),
            }
        pool.shutdown()
    return results


# -- start-up ---------------------------------------------------------------------------------
def cold_export(cvscore: Path, repo: Path, names: list[str] | None) -> float:
    """Seconds for ``cvscore export`` into an empty repository, in a fresh process."""
    t0 = time.perf_counter()
    subprocess.run(
        [str(cvscore), "export", *(names or []), "--out", str(repo)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - t0
