"""The ``cvscore`` command line: the parser, and how errors end.

Every command lives in its own module (``cvscore.cli.metrics``, ``export``, ``serve``,
``score``, ``evaluate``, ``gate``, ``demo``), each with ``add_parser`` and ``run``; none
imports torch, grpc or the server until it runs. A user error (bad argument, file, gate,
or a server that refuses a call) is one line on stderr and exit 2; anything else is a bug
and keeps its traceback (exit 1). ``--debug`` shows the traceback of user errors too.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence

from . import demo, evaluate, export, gate, metrics, score, serve
from .errors import EXIT_USAGE, CliError, is_user_error

__all__ = ["CliError", "build_parser", "main"]

COMMANDS = (metrics, export, serve, score, demo, evaluate, gate)
EXIT_BUG = 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cvscore",
        description="Computer-vision metrics, exported and served with the same numbers "
        "everywhere.",
    )
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback of every error, user errors too"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if is_user_error(exc):
            if args.debug:
                traceback.print_exc()
            print(f"cvscore {args.command}: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        traceback.print_exc()
        print(
            f"cvscore {args.command}: internal error ({type(exc).__name__}); this is a bug in "
            "cvscore, please report it with the traceback above",
            file=sys.stderr,
        )
        return EXIT_BUG


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
