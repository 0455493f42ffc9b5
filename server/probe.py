"""A gRPC health probe: ``python -m cvscore.server.probe [ADDRESS] [--service NAME]``.

Exit 0 when the standard health service reports SERVING, 1 otherwise (the container
HEALTHCHECK and exec probes use it; kubelet's native gRPC probes need no helper). With
``--tls-ca`` (and ``--tls-cert``/``--tls-key`` for mutual TLS) it speaks TLS. Health needs
no token: the server leaves it open.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cvscore.server.probe")
    parser.add_argument("address", nargs="?", default="127.0.0.1:8001")
    parser.add_argument("--service", default="", help="a metric name, or '' for the server")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds")
    parser.add_argument("--tls-ca", help="PEM CA that signed the server certificate")
    parser.add_argument("--tls-cert", help="client certificate (mutual TLS)")
    parser.add_argument("--tls-key", help="client key (mutual TLS)")
    return parser


def check(
    address: str,
    service: str = "",
    timeout: float = 3.0,
    credentials: grpc.ChannelCredentials | None = None,
) -> str:
    """The health status name ("SERVING", "NOT_SERVING", ...) of ``service`` at ``address``."""
    channel = (
        grpc.secure_channel(address, credentials)
        if credentials is not None
        else grpc.insecure_channel(address)
    )
    with channel:
        response = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=timeout
        )
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    credentials = None
    if args.tls_ca or args.tls_cert:
        from .security import channel_credentials

        credentials = channel_credentials(args.tls_ca, args.tls_cert, args.tls_key)
    try:
        status = check(args.address, args.service, args.timeout, credentials)
    except grpc.RpcError as error:
        print(f"{args.address}: {error.code().name}: {error.details()}", file=sys.stderr)
        return 1
    print(f"{args.address}: {status}")
    return 0 if status == "SERVING" else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
