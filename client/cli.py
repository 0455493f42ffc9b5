"""The ``cvscore`` command line.

Configuration is explicit: argv is parsed in :func:`main`, never at import time. Every
user error (bad argument, unknown metric, invalid input) becomes one line on stderr and a
non-zero exit code, never a traceback.
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
        args.names, Path(args.out), parse_params(args.param), formats, force=args.force
    )
    done = sum(not r.skipped for r in results)
    total = sum(r.seconds for r in results)
    print(
        f"exported {done}, up to date {len(results) - done}, into {args.out} in {total:.1f} s",
        file=sys.stderr,
    )
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
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("demo", help="export the zoo and score a sample in every runtime")
    p.add_argument("--repository", help="repository directory (default: the cache)")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except (CliError, ValueError, KeyError, FileNotFoundError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"cvscore {args.command}: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
