"""``cvscore metrics``: the registered metrics, filtered by name or family.

The table comes from a catalog of every spec's JSON, cached in ``$CVSCORE_CACHE`` under a
key made of the cvscore and torch versions and the sha256 of every definition's source: a
run after the first reads the catalog and imports no torch; a changed definition, or a new
torch, builds it again from the registry.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from .common import cache_dir, print_table
from .errors import CliError

SUMMARY_WIDTH = 45


def add_parser(sub: Any) -> None:
    p = sub.add_parser("metrics", help="list the registered metrics (filter by name or family)")
    p.add_argument("patterns", nargs="*", metavar="NAME", help="names or globs (iou, '*_loss')")
    p.add_argument("--family", action="append", default=[], help="only these families")
    p.add_argument("--wide", action="store_true", help="every column: inputs, output, params")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def _catalog_key() -> str:
    """What the catalog depends on: versions and every definition's source bytes."""
    import importlib.util
    from importlib.metadata import PackageNotFoundError, version

    from .. import __version__

    spec = importlib.util.find_spec("cvscore.metrics")
    folders = list(spec.submodule_search_locations or []) if spec else []
    digest = hashlib.sha256(__version__.encode())
    with contextlib.suppress(PackageNotFoundError):
        digest.update(version("torch").encode())
    for folder in folders:
        for path in sorted(Path(folder).glob("*.py")):
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def catalog() -> list[dict[str, Any]]:
    """Every spec's ``to_json()``, from the cache when it is current, else the registry."""
    path = cache_dir() / f"catalog-{_catalog_key()}.json"
    try:
        data = json.loads(path.read_text())
        if isinstance(data, list):
            return data
    except (OSError, ValueError):
        pass
    from ..metrics import registry

    data = [s.to_json() for s in registry.specs()]
    try:  # best effort: a read-only cache only costs the next run its speed
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(path)
    except OSError:
        pass
    return data


def select(
    entries: list[dict[str, Any]], patterns: list[str], families: list[str]
) -> list[dict[str, Any]]:
    known_families = sorted({e["family"] for e in entries})
    unknown = sorted(set(families) - set(known_families))
    if unknown:
        raise CliError(f"Unknown family {unknown}; known families: {', '.join(known_families)}")
    chosen = [
        e
        for e in entries
        if (not families or e["family"] in families)
        and (not patterns or any(fnmatch.fnmatchcase(e["name"], p) for p in patterns))
    ]
    if patterns and not chosen:
        names = ", ".join(e["name"] for e in entries)
        raise CliError(f"No metric matches {patterns}; known metrics: {names}")
    return chosen


def _tensor(t: dict[str, Any]) -> str:
    return f"{t['name']}[{', '.join(str(d) for d in t['shape'])}]:{t['dtype']}"


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def run(args: argparse.Namespace) -> int:
    entries = select(catalog(), args.patterns, args.family)
    if args.json:
        print(json.dumps(entries, indent=2))
        return 0
    better = {True: "higher", False: "lower"}
    rows: list[tuple[Any, ...]]
    if args.wide:
        header: tuple[str, ...] = ("name", "family", "inputs", "output", "params", "better",
                                   "reference")  # fmt: skip
        rows = [
            (
                e["name"],
                e["family"],
                "  ".join(_tensor(t) for t in e["inputs"]),
                "  ".join(_tensor(t) for t in e["outputs"]),
                ", ".join(f"{p['name']}={p['default']}" for p in e["params"]) or "-",
                better[e["higher_is_better"]],
                e.get("oracle", ""),
            )
            for e in entries
        ]
    else:
        header = ("name", "family", "better", "params", "summary")
        rows = [
            (
                e["name"],
                e["family"],
                better[e["higher_is_better"]],
                len(e["params"]) or "-",
                _short(e.get("summary", ""), SUMMARY_WIDTH),
            )
            for e in entries
        ]
    print_table(header, rows)
    if not args.wide:
        print(
            f"\n{len(entries)} metrics; `cvscore metrics NAME --wide` for inputs, outputs, "
            "parameters and references",
            file=sys.stderr,
        )
    return 0
