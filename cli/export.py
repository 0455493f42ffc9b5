"""``cvscore export``: metrics into a model repository, or exactly what a gate file needs.

Every artifact is named by :func:`cvscore.exporters.naming.variant_name`: the metric for
its default parameters, ``<metric>-<hash>`` for others (``--param`` or ``--for-gate``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .common import parse_params
from .errors import CliError


def add_parser(sub: Any) -> None:
    p = sub.add_parser("export", help="export metrics into a model repository")
    p.add_argument("names", nargs="*", help="metric names (default: all)")
    p.add_argument("--out", required=True, help="repository directory")
    p.add_argument("--formats", default="torchscript,onnx,torch_export")
    p.add_argument("--param", action="append", default=[], metavar="NAME.KEY=VALUE")
    p.add_argument(
        "--for-gate",
        metavar="GATE.toml",
        help="export exactly the (metric, params) variants this gate file runs",
    )
    p.add_argument("--force", action="store_true", help="re-export even when up to date")
    p.add_argument(
        "--jobs",
        type=int,
        metavar="N",
        help="worker processes exporting at once (default: $CVSCORE_EXPORT_JOBS, else the "
        "number of usable cores)",
    )
    p.add_argument(
        "--weights",
        metavar="PATH",
        help="torchvision VGG16/VGG19 state dict for the VGG losses (default: $CVSCORE_VGG_WEIGHTS)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..exporters import FORMATS

    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise CliError(f"Expected --formats from {sorted(FORMATS)}, got {unknown}")
    out = Path(args.out)
    if args.jobs is not None and args.jobs < 1:
        raise CliError(f"Expected --jobs to be a positive integer, got {args.jobs}")
    if args.for_gate:
        if args.names or args.param:
            raise CliError("--for-gate exports what the gate file names; drop NAMES and --param")
        results = export_for_gate(Path(args.for_gate), out, formats, args.force)
    else:
        from ..exporters import export_many

        try:
            results = export_many(
                args.names,
                out,
                parse_params(args.param),
                formats,
                force=args.force,
                weights=Path(args.weights) if args.weights else None,
                jobs=args.jobs,
            )
        except KeyError as exc:  # an unknown metric name
            raise CliError(exc.args[0]) from None
        except ValueError as exc:  # a parameter the metric refuses, a missing weights file
            raise CliError(str(exc)) from None
    done = sum(not r.skipped for r in results)
    total = sum(r.seconds for r in results)
    named = ", ".join(r.name for r in results) if len(results) <= 12 else f"{len(results)} models"
    print(
        f"exported {done}, up to date {len(results) - done} ({named}), into {out} in {total:.1f} s",
        file=sys.stderr,
    )
    return 0


def export_for_gate(gate_file: Path, out: Path, formats: list[str], force: bool) -> list[Any]:
    from ..exporters import export_metric
    from ..gate.config import load_gate
    from ..metrics import registry

    config = load_gate(gate_file, skip_regressions=True)
    results = []
    for metric, params in config.variants():
        try:
            results.append(export_metric(registry.get(metric), out, params, formats, force))
        except ValueError as exc:
            raise CliError(f"{gate_file}: {metric} {params}: {exc}") from None
    return results
