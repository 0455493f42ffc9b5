"""The ``cvscore`` command line.

Configuration is explicit: argv is parsed in :func:`main`, never at import time. Every
user error (bad argument, unknown metric, invalid input) becomes one line on stderr and a
non-zero exit code, never a traceback.

``cvscore serve`` runs the scoring server; with no ``--repository`` it serves the default
cache (:func:`default_repository`), exporting the zoo there on first start.
``cvscore score METRIC --input NAME=FILE.npy ...`` scores through a server with
``--server ADDR``; without it, it scores in-process from the cached repository (exporting
that one metric first if needed) through the same core the server uses, so the checks,
errors and numbers are the server's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

EXIT_USAGE = 2


class CliError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


def default_repository() -> Path:
    """Where ``serve``, ``demo`` and ``score`` keep the default zoo: $CVSCORE_CACHE or ~/.cache."""
    base = os.environ.get("CVSCORE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "cvscore"
    )
    return Path(base) / "repository"


def parse_params(items: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``NAME.KEY=VALUE`` items -> {metric: {key: typed value}}."""
    from ..metrics import registry

    out: dict[str, dict[str, Any]] = {}
    for item in items:
        head, sep, value = item.partition("=")
        metric, dot, key = head.partition(".")
        if not sep or not dot or not metric or not key:
            raise CliError(f"Expected --param NAME.KEY=VALUE, got {item!r}")
        spec = registry.get(metric)
        by_name = {p.name: p for p in spec.params}
        if key not in by_name:
            raise CliError(
                f"Unknown parameter `{key}` for metric `{metric}`; expected one of {sorted(by_name)}"
            )
        out.setdefault(metric, {})[key] = by_name[key].parse(value)
    return out


# -- metrics ------------------------------------------------------------------------------
def cmd_metrics(args: argparse.Namespace) -> int:
    from ..metrics import registry

    specs = registry.specs()
    if args.json:
        print(json.dumps([s.to_json() for s in specs], indent=2))
        return 0
    rows = [
        (
            s.name,
            s.family,
            "  ".join(t.describe() for t in s.inputs),
            "  ".join(t.describe() for t in s.outputs),
            ", ".join(f"{p.name}={p.default}" for p in s.params) or "-",
            "higher" if s.higher_is_better else "lower",
            s.oracle,
        )
        for s in specs
    ]
    header = ("name", "family", "inputs", "output", "params", "better", "reference")
    print_table(header, rows)
    return 0


def print_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [list(map(str, header))] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for i, row in enumerate(cells):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))


# -- export -------------------------------------------------------------------------------
def cmd_export(args: argparse.Namespace) -> int:
    from ..exporters import FORMATS, export_many

    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise CliError(f"Expected --formats from {sorted(FORMATS)}, got {unknown}")
    results = export_many(
        args.names,
        Path(args.out),
        parse_params(args.param),
        formats,
        force=args.force,
        weights=Path(args.weights) if args.weights else None,
    )
    done = sum(not r.skipped for r in results)
    total = sum(r.seconds for r in results)
    print(
        f"exported {done}, up to date {len(results) - done}, into {args.out} in {total:.1f} s",
        file=sys.stderr,
    )
    return 0


# -- serve --------------------------------------------------------------------------------
def cmd_serve(args: argparse.Namespace) -> int:
    from ..server.app import ServerConfig, main, parse_models
    from ..server.logs import configure_logging

    configure_logging(args.log_level, args.log_format)

    def path(value: str | None) -> Path | None:
        return Path(value) if value else None

    config = ServerConfig(
        repository=Path(args.repository) if args.repository else default_repository(),
        host=args.host,
        port=args.port,
        device=args.device,
        runtime=args.runtime,
        models=parse_models(args.models),
        export_missing=args.export_missing or not args.repository,
        max_batch_size=1 if args.no_batching else args.max_batch_size,
        max_queue_delay_us=0 if args.no_batching else args.max_queue_delay_us,
        max_queue_size=args.max_queue_size,
        max_message_mb=args.max_message_mb,
        max_request_mb=args.max_request_mb,
        max_work_mb=args.max_work_mb,
        align=args.align,
        workers=args.workers,
        grace_s=args.grace_s,
        tls_cert=path(args.tls_cert),
        tls_key=path(args.tls_key),
        tls_client_ca=path(args.tls_client_ca),
        auth_tokens_file=path(args.auth_tokens_file),
        health_port=args.health_port,
        metrics_port=args.metrics_port,
        metrics_host=args.metrics_host,
    )
    return main(config, progress=not args.no_progress)


# -- score --------------------------------------------------------------------------------
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
        inputs[name] = np.load(path, allow_pickle=False)
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

    from .client import Client, CvscoreError

    with Client(address.split(","), timeout=timeout, **(security or {})) as client:
        try:
            result = client.score(metric, inputs, reduction=reduction, runtime=runtime)
        except CvscoreError as exc:
            raise CliError(str(exc)) from None
    value = result.value
    return {
        "metric": metric,
        "runtime": result.runtime,
        "device": result.device,
        "reduction": reduction,
        "value": value.tolist() if isinstance(value, np.ndarray) else value,
        "scores": result.scores.tolist(),
    }


def client_security(args: argparse.Namespace) -> dict[str, Any]:
    """Client options from --tls-ca/--tls-cert/--tls-key, --token-file ($CVSCORE_TOKEN)
    and --request-id."""
    token = os.environ.get("CVSCORE_TOKEN") or None
    if args.token_file:
        try:
            lines = Path(args.token_file).read_text().split()
        except OSError as exc:
            raise CliError(f"Cannot read --token-file {args.token_file}: {exc.strerror}") from None
        if not lines:
            raise CliError(f"--token-file {args.token_file} is empty")
        token = lines[0]
    return {
        "tls": args.tls,
        "tls_ca": args.tls_ca,
        "tls_cert": args.tls_cert,
        "tls_key": args.tls_key,
        "token": token,
        "request_id": args.request_id,
    }


def add_client_security(p: argparse.ArgumentParser) -> None:
    """The TLS, token and request-id flags of commands that talk to a server."""
    p.add_argument("--tls", action="store_true", help="TLS, verified against the system CAs")
    p.add_argument("--tls-ca", metavar="PEM", help="TLS, verified against this CA")
    p.add_argument("--tls-cert", metavar="PEM", help="client certificate (mutual TLS)")
    p.add_argument("--tls-key", metavar="PEM", help="client key (mutual TLS)")
    p.add_argument(
        "--token-file",
        metavar="PATH",
        help="bearer token (first word of the file; default: $CVSCORE_TOKEN)",
    )
    p.add_argument("--request-id", help="sent as x-request-id; the server logs it")


def cmd_score(args: argparse.Namespace) -> int:
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
        repo = Path(args.repository) if args.repository else default_repository()
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


# -- demo ---------------------------------------------------------------------------------
def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(Path(args.repository) if args.repository else default_repository())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cvscore", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("metrics", help="list every registered metric")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_metrics)

    p = sub.add_parser("export", help="export metrics into a model repository")
    p.add_argument("names", nargs="*", help="metric names (default: all)")
    p.add_argument("--out", required=True, help="repository directory")
    p.add_argument("--formats", default="torchscript,onnx,torch_export")
    p.add_argument("--param", action="append", default=[], metavar="NAME.KEY=VALUE")
    p.add_argument("--force", action="store_true", help="re-export even when up to date")
    p.add_argument(
        "--weights",
        metavar="PATH",
        help="torchvision VGG16/VGG19 state dict for the VGG losses (default: $CVSCORE_VGG_WEIGHTS)",
    )
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("serve", help="serve a model repository over gRPC")
    p.add_argument(
        "--repository", help="repository directory (default: the cache, built on first start)"
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8001, help="0 picks a free port")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument(
        "--runtime",
        default="auto",
        help="runtimes to load: auto (every artifact) or a comma list of "
        "torchscript, onnx, torch_export (the first is what requests for auto get)",
    )
    p.add_argument("--models", action="append", default=[], help="serve only these (comma list)")
    p.add_argument(
        "--export-missing",
        action="store_true",
        help="export registered metrics the repository lacks (creating it); "
        "the default with no --repository",
    )
    p.add_argument(
        "--max-request-mb",
        type=float,
        default=256.0,
        help="refuse a request whose decoded inputs exceed this (RESOURCE_EXHAUSTED)",
    )
    p.add_argument(
        "--max-work-mb",
        type=float,
        default=1024.0,
        help="refuse a request whose graph would allocate more than this, estimated "
        "before it runs (RESOURCE_EXHAUSTED)",
    )
    p.add_argument("--max-batch-size", type=int, default=64, help="rows per run; 1: no batching")
    p.add_argument("--max-queue-delay-us", type=int, default=500)
    p.add_argument("--max-queue-size", type=int, default=256, help="requests per queue")
    p.add_argument("--max-message-mb", type=int, default=256)
    p.add_argument(
        "--align",
        type=int,
        default=16,
        help="start each request at a multiple of this many rows, so its scores do not "
        "depend on what it is batched with (1: off)",
    )
    p.add_argument("--workers", type=int, default=2, help="compute threads")
    p.add_argument("--grace-s", type=float, default=30.0, help="drain time on SIGTERM")
    p.add_argument("--no-batching", action="store_true", help="max batch 1, no delay")
    p.add_argument("--no-progress", action="store_true", help="no export progress bar")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    p.add_argument(
        "--log-format", default="text", choices=("text", "json"), help="json: one object a line"
    )
    g = p.add_argument_group("security")
    g.add_argument("--tls-cert", metavar="PEM", help="serve over TLS with this certificate")
    g.add_argument("--tls-key", metavar="PEM", help="the certificate's private key")
    g.add_argument(
        "--tls-client-ca", metavar="PEM", help="require client certificates signed by this CA"
    )
    g.add_argument(
        "--auth-tokens-file",
        metavar="PATH",
        help="require `authorization: Bearer TOKEN`, one token per line (health stays open)",
    )
    g.add_argument(
        "--health-port",
        type=int,
        help="also serve the health service alone, in plaintext, here (kubelet gRPC probes)",
    )
    g = p.add_argument_group("observability")
    g.add_argument("--metrics-port", type=int, help="serve Prometheus /metrics here (0: free)")
    g.add_argument("--metrics-host", default="", help="default: --host")
    p.set_defaults(func=cmd_serve)

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
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("demo", help="serve the zoo and score a sample through two clients")
    p.add_argument("--repository", help="repository directory (default: the cache)")
    p.set_defaults(func=cmd_demo)

    from .evaluate import add_parser as add_evaluate_parser

    add_evaluate_parser(sub)  # cvscore evaluate coco | segmentation | retrieval
    from .gate import add_parser as add_gate_parser

    add_gate_parser(sub)  # cvscore gate GATE.toml: CI quality gate, exit 0 / 1 / 2
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except (CliError, ValueError, KeyError, OSError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"cvscore {args.command}: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    # Run the package's copy of this module, not `__main__`'s: other modules raise
    # `cvscore.client.cli.CliError`, which a `__main__.CliError` handler would not catch.
    from cvscore.client.cli import main as package_main

    sys.exit(package_main())
