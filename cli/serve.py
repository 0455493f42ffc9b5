"""``cvscore serve``: the scoring server; with no ``--repository`` it serves the default
cache, exporting the zoo there on first start."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .common import repository
from .errors import CliError


def add_parser(sub: Any) -> None:
    p = sub.add_parser("serve", help="serve a model repository over gRPC (and HTTP)")
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
        default=1,
        help="start each request at a multiple of this many rows (default 1: no padding; "
        "the exported graphs give a row the same bits in any batch without it)",
    )
    p.add_argument("--threads", type=int, default=2, help="compute threads per process")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="server processes sharing the ports (SO_REUSEPORT; Linux), each loading the "
        "repository once; worker i serves metrics on --metrics-port + i",
    )
    p.add_argument("--grace-s", type=float, default=30.0, help="drain time on SIGTERM")
    p.add_argument("--no-batching", action="store_true", help="max batch 1, no delay")
    p.add_argument("--no-progress", action="store_true", help="no export progress bar")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    p.add_argument(
        "--log-format", default="text", choices=("text", "json"), help="json: one object a line"
    )
    p.add_argument(
        "--http-port",
        type=int,
        help="also serve KServe v2 over HTTP/REST here (Triton's is 8000; 0 picks a free "
        "port; default: off)",
    )
    p.add_argument(
        "--model-control",
        default="none",
        choices=("none", "explicit", "poll"),
        help="none: serve what is found at start; explicit: RepositoryModelLoad / Unload "
        "(gRPC and HTTP) load and unload models; poll: rescan the repository periodically",
    )
    p.add_argument(
        "--repository-poll-secs",
        type=float,
        default=15.0,
        help="with --model-control poll: seconds between rescans",
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
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..server.app import ServerConfig, main, parse_models
    from ..server.logs import configure_logging

    configure_logging(args.log_level, args.log_format)

    def path(value: str | None) -> Path | None:
        return Path(value) if value else None

    try:
        config = ServerConfig(
            repository=repository(args),
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
            threads=args.threads,
            workers=args.workers,
            grace_s=args.grace_s,
            tls_cert=path(args.tls_cert),
            tls_key=path(args.tls_key),
            tls_client_ca=path(args.tls_client_ca),
            auth_tokens_file=path(args.auth_tokens_file),
            health_port=args.health_port,
            metrics_port=args.metrics_port,
            metrics_host=args.metrics_host,
            http_port=args.http_port,
            model_control=args.model_control,
            repository_poll_s=args.repository_poll_secs,
        )
    except ValueError as exc:  # a flag out of range, half a TLS pair
        raise CliError(str(exc)) from exc
    try:
        if config.workers > 1:
            from ..server import workers

            return workers.main(config, not args.no_progress, (args.log_level, args.log_format))
        return main(config, progress=not args.no_progress)
    except (ValueError, OSError) as exc:
        # What the server reports while starting: unreadable TLS or token files, a port
        # in use. (--debug shows the traceback.)
        raise CliError(str(exc)) from exc
