"""The one mapping from exception to gRPC status, for every service of the server.

Errors from :mod:`server.errors` carry the status they should become and a message meant
for the client. Anything else is a bug or an environment failure: the client gets INTERNAL
with a generic message and an incident id, the traceback goes to the log under that id.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from .errors import MAX_MESSAGE_BYTES, ScoringError, clip, shown

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def to_status(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and client-facing message for an exception."""
    if isinstance(exc, ScoringError):
        return grpc.StatusCode[exc.code], clip(exc.message)
    incident = uuid.uuid4().hex[:12]
    log.error("internal error, incident %s", incident, exc_info=exc)
    return grpc.StatusCode.INTERNAL, f"Internal error (incident {incident}); see the server log"


def handle_errors(fn: F) -> F:
    """Decorate an async handler (its last argument is the context) to map its errors."""

    @functools.wraps(fn)
    async def wrapper(*args: Any) -> Any:
        context = args[-1]
        try:
            return await fn(*args)
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception as exc:
            code, message = to_status(exc)
            if code != grpc.StatusCode.INTERNAL:
                log.debug("%s: %s %s", fn.__name__, code.name, shown(message, MAX_MESSAGE_BYTES))
            await context.abort(code, message)

    return wrapper  # type: ignore[return-value]
