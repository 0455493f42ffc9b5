"""Helpers shared by the commands: the default repository, tables, --param, client flags."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import CliError


def default_repository() -> Path:
    """Where ``serve``, ``demo`` and ``score`` keep the default zoo: $CVSCORE_CACHE or ~/.cache."""
    return cache_dir() / "repository"


def cache_dir() -> Path:
    base = os.environ.get("CVSCORE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "cvscore"
    )
    return Path(base)


def repository(args: argparse.Namespace) -> Path:
    return Path(args.repository) if getattr(args, "repository", None) else default_repository()


def print_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [list(map(str, header))] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for i, row in enumerate(cells):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))


def parse_params(items: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``NAME.KEY=VALUE`` items -> {metric: {key: typed value}}."""
    from ..metrics import registry

    out: dict[str, dict[str, Any]] = {}
    for item in items:
        head, sep, value = item.partition("=")
        metric, dot, key = head.partition(".")
        if not sep or not dot or not metric or not key:
            raise CliError(f"Expected --param NAME.KEY=VALUE, got {item!r}")
        try:
            spec = registry.get(metric)
        except KeyError as exc:
            raise CliError(exc.args[0]) from None
        by_name = {p.name: p for p in spec.params}
        if key not in by_name:
            raise CliError(
                f"Unknown parameter `{key}` for metric `{metric}`; expected one of {sorted(by_name)}"
            )
        try:
            out.setdefault(metric, {})[key] = by_name[key].parse(value)
        except ValueError as exc:
            raise CliError(f"--param {item}: {exc}") from None
    return out


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
    p.add_argument(
        "--no-shared-memory",
        action="store_true",
        help="send inputs as bytes even to a server on this machine (default: inputs of "
        "64 KiB or more go through /dev/shm)",
    )


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
        "shared_memory": not getattr(args, "no_shared_memory", False),
    }


def make_client(address: str, timeout: float | None, security: dict[str, Any]) -> Any:
    """A :class:`cvscore.client.Client` on ``ADDR[,ADDR...]``; bad TLS files are user errors."""
    from ..client import Client

    addresses = [a.strip() for a in address.split(",") if a.strip()]
    try:
        return Client(addresses, timeout=timeout, **security)
    except ValueError as exc:  # unreadable PEM, half a key pair, a bad token
        raise CliError(str(exc)) from None
