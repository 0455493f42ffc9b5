"""``cvscore gate GATE.toml``: may this model ship? Exit 0 passed, 1 a check failed, 2 error.

    cvscore gate GATE.toml [--server ADDR] [--baseline REPORT.json] [--out DIR]
                           [--runtime eager|torchscript|onnx] [--repository DIR] [--quiet]
                           [--write-baseline PATH.json]

``--write-baseline PATH.json`` keeps this run as the next run's baseline: ``report.json``
copied to ``PATH.json`` and its per-sample evidence to ``PATH.npz``, which ``confidence``
checks need to pair the two runs on the same resampled images.

Exit 2 means the gate could not be evaluated (a bad gate file, a server that is down or
lacks a variant, unreadable data, or a bug); the outputs then still say why: ``junit.xml``
holds one ``<error>`` test case per problem and ``summary.md`` lists them with their lines.
A bug is never reported as 0 or 1: its traceback is printed and the gate exits 2.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from .common import add_client_security, client_security, repository
from .errors import CliError, is_user_error

GATE_RUNTIMES = ("eager", "torchscript", "onnx")
EXIT_ERROR = 2


def add_parser(sub: Any) -> None:
    p = sub.add_parser("gate", help="CI quality gate: evaluate a gate file, exit 0 / 1 / 2")
    p.add_argument("gate_file", metavar="GATE.toml")
    p.add_argument("--server", help="ADDR[,ADDR...]: evaluate through a server")
    p.add_argument("--baseline", metavar="REPORT.json", help="a previous report.json")
    p.add_argument("--out", default="gate-out", metavar="DIR", help="output folder (gate-out)")
    p.add_argument("--runtime", choices=GATE_RUNTIMES, help="override the gate file's runtime")
    p.add_argument("--repository", help="in-process: model repository (default: the cache)")
    p.add_argument("--device", default="cpu", help="in-process: cpu, cuda or auto")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per call (--server)")
    p.add_argument("--quiet", action="store_true", help="no progress bars, no table")
    p.add_argument(
        "--write-baseline",
        metavar="PATH.json",
        help="also write this run as a baseline: PATH.json and its evidence PATH.npz",
    )
    add_client_security(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Every outcome is 0, 1 or 2, and every outcome writes junit.xml and summary.md."""
    import logging

    from ..gate.run import write_problems

    if args.quiet:
        logging.disable(logging.WARNING)
    started = time.perf_counter()
    named = {"gate": Path(args.gate_file).stem}  # the gate file's name, once it is read
    try:
        return _gate(args, named)
    except Exception as exc:
        problems = _problems(exc, args)
        if not is_user_error(exc):  # a bug in cvscore: keep its traceback
            traceback.print_exc()
        write_problems(Path(args.out), named["gate"], problems, time.perf_counter() - started)
        print(f"cvscore gate: error: {exc}", file=sys.stderr)
        print(
            f"cvscore gate {named['gate']}: not evaluated; outputs in {args.out}", file=sys.stderr
        )
        return EXIT_ERROR


def _problems(exc: Exception, args: argparse.Namespace) -> list[Any]:
    from ..gate.report import GateProblem
    from ..gate.schema import ConfigError

    if isinstance(exc, ConfigError):
        return [
            GateProblem(f"{p.source}:{p.line}" if p.line else p.source, p.key, p.message)
            for p in exc.problems
        ]
    if isinstance(exc, MissingVariants):
        return [GateProblem(f"server {args.server}", name, exc.hint) for name in exc.names]
    where = f"server {args.server}" if args.server else args.gate_file
    if is_user_error(exc):
        return [GateProblem(where, "", str(exc))]
    return [GateProblem(where, "", f"internal error {type(exc).__name__}: {exc}")]


class MissingVariants(CliError):
    """The server lacks artifacts the gate needs; the message names the export command."""

    def __init__(self, server: str, names: list[str], gate_file: str) -> None:
        self.names = names
        self.hint = (
            "not served; build it into the server's repository with "
            f"`cvscore export --for-gate {gate_file} --out REPOSITORY` and restart the server"
        )
        super().__init__(
            f"server {server} lacks {len(names)} variant(s) the gate needs: "
            f"{', '.join(names)}; export them with "
            f"`cvscore export --for-gate {gate_file} --out REPOSITORY`"
        )


def _gate(args: argparse.Namespace, named: dict[str, str]) -> int:
    from ..evaluate.backends import Backend, InProcess, Remote
    from ..gate.config import load_gate
    from ..gate.run import run_gate

    config = load_gate(args.gate_file, runtime=args.runtime, baseline=args.baseline)
    named["gate"] = config.name
    backend: Backend
    device = "cpu"
    if args.server:
        remote = Remote(
            args.server, config.runtime, not args.quiet, args.timeout, client_security(args)
        )
        backend = remote
        try:
            missing = remote.missing(config.variants())
        except BaseException:
            remote.close()
            raise
        if missing:
            remote.close()
            raise MissingVariants(args.server, missing, args.gate_file)
    else:
        from ..server.runtimes import resolve_device

        device = resolve_device(args.device)
        backend = InProcess(config.runtime, repository(args), device, progress=not args.quiet)
    try:
        result = run_gate(config, Path(args.out), backend, server=args.server, device=device)
    finally:
        backend.close()
    if args.write_baseline:
        from ..gate.evidence import write_baseline

        target = Path(args.write_baseline)
        npz = write_baseline(result.out_dir, target)
        print(f"cvscore gate: baseline written to {target} and {npz}", file=sys.stderr)
    if not args.quiet:
        for c in result.checks:
            print(f"{'PASS' if c.passed else 'FAIL'}  {c.explain()}")
    verdict = (
        "passed"
        if not result.failed
        else f"FAILED ({result.failed} of {len(result.checks)} checks)"
    )
    print(f"cvscore gate {config.name}: {verdict}; outputs in {result.out_dir}", file=sys.stderr)
    return result.exit_code
