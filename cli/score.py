"""``cvscore score METRIC --input NAME=FILE.npy ...``: one batch, through a server or not.

With ``--server ADDR`` it scores through the client; without, it scores in-process from the
cached repository (exporting that one metric first if needed) through the same core the
server uses, so the checks, errors and numbers are the server's.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .common import add_client_security, client_security, make_client, repository
from .errors import CliError


def add_parser(sub: Any) -> None:
    p = sub.add_parser("score", help="score .npy inputs, through a server or in-process")
    p.add_argument("metric")
    p.add_argument("--input", action="append", default=[], metavar="NAME=FILE.npy", required=True)
    p.add_argument("--server", help="ADDR[,ADDR...]; without it, score in-process from the cache")
    p.add_argument("--repository", help="in-process: repository directory (default: the cache)")
    p.add_argument("--reduction", default="mean", choices=("none", "mean", "sum"))
    p.add_argument(
        "--runtime", default="auto", choices=("auto", "torchscript", "onnx", "torch_export")
    )
    p.add_argument("--timeout", type=float, default=60.0, help="seconds (with --server)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    add_client_security(p)
    p.set_defaults(func=run)


def read_inputs(items: Sequence[str]) -> dict[str, Any]:
    """``NAME=FILE.npy`` items -> {name: array}."""
    import numpy as np

    inputs: dict[str, Any] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise CliError(f"Expected --input NAME=FILE.npy, got {item!r}")
        if name in inputs:
            raise CliError(f"Input `{name}` is given twice")
        try:
            inputs[name] = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            raise CliError(f"--input {item}: no such file") from None
        except (OSError, ValueError) as exc:
            raise CliError(f"--input {item}: not a readable .npy array ({exc})") from None
    return inputs


def score_in_process(
    repo: Path, metric: str, inputs: dict[str, Any], reduction: str, runtime: str
) -> dict[str, Any]:
    """Score with the server's core in this process, from ``repo`` (exporting if needed)."""
    import asyncio

    from ..exporters.repository import list_models
    from ..server.core import CoreOptions, ScoringCore
    from ..server.errors import ScoringError

    if metric not in list_models(repo):
        from ..exporters import export_many
        from ..metrics import registry

        if metric not in registry.names():
            raise CliError(
                f"Unknown metric `{metric}`; known metrics: {', '.join(registry.names())}"
            )
        print(f"exporting {metric} into {repo} ...", file=sys.stderr)
        export_many([metric], repo, progress=False)
    options = CoreOptions(
        runtimes=() if runtime == "auto" else (runtime,), max_queue_delay_us=0, warmup=False
    )
    core = ScoringCore(repo, options, [metric])
    core.load()

    async def run() -> Any:
        await core.start()
        try:
            return await core.score(metric, inputs, runtime=runtime, reduction=reduction)
        finally:
            await core.close()

    try:
        result = asyncio.run(run())
    except ScoringError as exc:
        raise CliError(f"{exc.code}: {exc.message}") from None
    first = next(iter(result.outputs))
    value = result.reduced.get(first)
    return {
        "metric": metric,
        "runtime": result.runtime,
        "device": result.device,
        "reduction": reduction,
        "value": None if value is None else value.tolist(),
        "scores": result.outputs[first].tolist(),
    }


def score_remote(
    address: str,
    metric: str,
    inputs: dict[str, Any],
    reduction: str,
    runtime: str,
    timeout: float | None,
    security: dict[str, Any] | None = None,
) -> dict[str, Any]:
    import numpy as np

    with make_client(address, timeout, security or {}) as client:
        result = client.score(metric, inputs, reduction=reduction, runtime=runtime)
    value = result.value
    return {
        "metric": metric,
        "runtime": result.runtime,
        "device": result.device,
        "reduction": reduction,
        "value": value.tolist() if isinstance(value, np.ndarray) else value,
        "scores": result.scores.tolist(),
    }


def run(args: argparse.Namespace) -> int:
    inputs = read_inputs(args.input)
    if args.server:
        out = score_remote(
            args.server,
            args.metric,
            inputs,
            args.reduction,
            args.runtime,
            args.timeout,
            client_security(args),
        )
    else:
        repo = repository(args)
        out = score_in_process(repo, args.metric, inputs, args.reduction, args.runtime)
    if args.json:
        print(json.dumps(out))
        return 0
    rows = [
        ("metric", out["metric"]),
        ("runtime", f"{out['runtime']} ({out['device']})"),
    ]
    if out["value"] is not None:
        rows.append((out["reduction"], out["value"]))
    rows.append((f"scores (N={len(out['scores'])})", out["scores"]))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key.ljust(width)}  {value}")
    return 0
