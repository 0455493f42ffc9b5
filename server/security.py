"""Transport security: TLS / mutual TLS credentials and bearer-token authentication.

- TLS: ``--tls-cert`` and ``--tls-key`` (PEM) serve every service over TLS; adding
  ``--tls-client-ca`` requires and verifies a client certificate signed by that CA (mTLS).
- Tokens: ``--auth-tokens-file`` holds one token per line (blank lines and ``#`` comments
  ignored). Clients send ``authorization: Bearer <token>`` metadata; a call without a valid
  one is answered UNAUTHENTICATED before its request is even parsed. Tokens are compared
  with :func:`hmac.compare_digest` against every configured token (no early exit) and are
  never logged. The standard health service stays open, so load balancers and kubelet
  probes need no secret; reflection is *not* open (it describes the API, so it is treated
  like the API: ``grpcurl -H 'authorization: Bearer ...'``).
"""

from __future__ import annotations

import hmac
import logging
import ssl
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2

from ..client.tls import channel_credentials, read_pem  # noqa: F401 - shared with clients
from .handlers import Layer

log = logging.getLogger(__name__)

HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
OPEN_SERVICES = frozenset({HEALTH_SERVICE})
AUTHORIZATION = "authorization"


def server_credentials(
    cert: str | Path, key: str | Path, client_ca: str | Path | None = None
) -> grpc.ServerCredentials:
    """TLS for the server; with ``client_ca``, clients must present a certificate it signed.

    The pair is checked first (grpc only finds out when the port fails to bind, and says
    so as "address in use"): a key that does not match its certificate is named as such.
    """
    check_key_pair(cert, key)
    return grpc.ssl_server_credentials(
        [(read_pem(key, "TLS key"), read_pem(cert, "TLS certificate"))],
        root_certificates=read_pem(client_ca, "client CA") if client_ca else None,
        require_client_auth=client_ca is not None,
    )


def server_ssl_context(
    cert: str | Path, key: str | Path, client_ca: str | Path | None = None
) -> ssl.SSLContext:
    """The same TLS (and mutual TLS) for the HTTP front end as :func:`server_credentials`."""
    check_key_pair(cert, key)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert), str(key))
    if client_ca is not None:
        read_pem(client_ca, "client CA")
        context.load_verify_locations(cafile=str(client_ca))
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def check_key_pair(cert: str | Path, key: str | Path) -> None:
    """ValueError naming the problem when ``key`` is not the private key of ``cert``."""
    read_pem(cert, "TLS certificate")
    read_pem(key, "TLS key")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(str(cert), str(key))
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in str(exc) or "key values mismatch" in str(exc):
            raise ValueError(
                f"The TLS key {key} does not match the certificate {cert} (--tls-key, --tls-cert)"
            ) from None
        reason = exc.reason or str(exc)
        raise ValueError(
            f"Cannot use the TLS certificate {cert} with the key {key}: {reason}"
        ) from None


def load_tokens(path: str | Path) -> list[str]:
    """Tokens from a file, one per line; blank lines and ``#`` comments are ignored."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise ValueError(f"Cannot read the tokens file {path}: {exc.strerror}") from None
    tokens = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not tokens:
        raise ValueError(f"Expected at least one token in {path}, got none")
    bad = [i for i, t in enumerate(tokens) if any(c.isspace() for c in t)]
    if bad:  # the line number only: the token itself is never echoed
        raise ValueError(f"Expected tokens without whitespace in {path}; token {bad[0] + 1}")
    return tokens


def bearer(metadata: Iterable[Any] | None) -> str | None:
    """The token of an ``authorization: Bearer <token>`` entry, if any."""
    for key, value in metadata or ():
        if key.lower() == AUTHORIZATION:
            text = value.decode() if isinstance(value, bytes) else str(value)
            scheme, _, token = text.strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


class TokenAuthInterceptor(grpc.aio.ServerInterceptor):
    """Refuse calls without a valid bearer token, except to ``open_services``."""

    def __init__(
        self,
        tokens: Sequence[str],
        open_services: Iterable[str] = OPEN_SERVICES,
        layer: Layer | None = None,
    ):
        """``layer``: what the server's handlers get (``server/handlers.py``), applied to the
        refusals too, so that telemetry counts them."""
        if not tokens:
            raise ValueError("Expected at least one token")
        self._tokens = [t.encode() for t in tokens]
        self._open = frozenset(open_services)
        self.layer = layer

    def authorized(self, metadata: Iterable[Any] | None) -> bool:
        token = bearer(metadata)
        if token is None:
            return False
        given = token.encode()
        ok = False
        for known in self._tokens:  # every one, so timing says nothing about which matched
            ok |= hmac.compare_digest(known, given)
        return ok

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = handler_call_details.method
        service = method.split("/")[1] if method.count("/") >= 2 else ""
        if service in self._open or self.authorized(handler_call_details.invocation_metadata):
            return await continuation(handler_call_details)
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler  # UNIMPLEMENTED, as for anyone
        log.warning("unauthenticated call to %s refused", method)
        refusal = _refusal(handler)
        return refusal if self.layer is None else self.layer(method, refusal)


async def _refuse(request: Any, context: grpc.aio.ServicerContext) -> None:
    await context.abort(
        grpc.StatusCode.UNAUTHENTICATED,
        "Missing or invalid credentials: send `authorization: Bearer <token>` metadata",
    )


def _refusal(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """A handler of the same kind that refuses without deserialising the request."""
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(_refuse)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(_refuse)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(_refuse)
    return grpc.unary_unary_rpc_method_handler(_refuse)
