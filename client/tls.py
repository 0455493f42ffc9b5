"""TLS credentials for clients: PEM files read and checked, gRPC channel credentials.

The server reads its own certificates with the same :func:`read_pem`.
"""

from __future__ import annotations

from pathlib import Path

import grpc


def read_pem(path: str | Path, what: str) -> bytes:
    """A PEM file's bytes; a ValueError naming ``what`` and the path when it is not one."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"Cannot read {what} {path}: {exc.strerror}") from None
    if b"-----BEGIN" not in data:
        raise ValueError(f"Expected {what} {path} to be PEM, got no '-----BEGIN' line")
    return data


def channel_credentials(
    ca: str | Path | None = None, cert: str | Path | None = None, key: str | Path | None = None
) -> grpc.ChannelCredentials:
    """TLS for a client: ``ca`` verifies the server (default: system roots); ``cert`` +
    ``key`` identify the client for mutual TLS."""
    if (cert is None) != (key is None):
        raise ValueError("Expected both `tls_cert` and `tls_key` for mutual TLS, or neither")
    return grpc.ssl_channel_credentials(
        root_certificates=read_pem(ca, "TLS CA") if ca else None,
        private_key=read_pem(key, "TLS key") if key else None,
        certificate_chain=read_pem(cert, "TLS certificate") if cert else None,
    )
