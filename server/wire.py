"""Undecodable messages: INVALID_ARGUMENT on every method, one rate-limited log line.

grpc decodes a request with the handler's ``request_deserializer``; when that raises (bytes
that are not the method's protobuf message), grpc answers UNKNOWN with the exception's text
and logs a traceback per call, and inside a client stream the failure surfaces as INTERNAL.
:class:`DecodeGuard` replaces every handler's deserializer with one that returns
an :class:`Undecodable` marker instead of raising, and wraps the handler so that the marker,
as a unary request or as any message of a stream, is answered INVALID_ARGUMENT naming the
message type (and its index in a stream). Each such call logs at most one WARNING line per
``interval_s`` seconds, counting those it did not log.
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Undecodable:
    """What the guarded deserializer returns for bytes it cannot parse."""

    type_name: str
    size: int
    reason: str


class RateLimitedLog:
    """At most one line per ``interval_s``; the next one says how many were left out."""

    def __init__(self, logger: logging.Logger, interval_s: float = 10.0) -> None:
        self.logger = logger
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._last = -float("inf")
        self._skipped = 0

    def warning(self, message: str, *args: Any) -> bool:
        """Log unless one was logged less than ``interval_s`` ago; True when logged."""
        now = time.monotonic()
        with self._lock:
            if now - self._last < self.interval_s:
                self._skipped += 1
                return False
            skipped, self._skipped, self._last = self._skipped, 0, now
        suffix = f" ({skipped} more since the last such line)" if skipped else ""
        self.logger.warning(message + suffix, *args)
        return True


def _type_name(deserializer: Callable[[bytes], Any] | None) -> str:
    owner = getattr(deserializer, "__self__", None)
    descriptor = getattr(owner, "DESCRIPTOR", None)
    return str(getattr(descriptor, "full_name", "") or "request")


def guarded(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """A deserializer that returns :class:`Undecodable` rather than raising."""
    if deserializer is None:
        return None
    type_name = _type_name(deserializer)

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as exc:  # DecodeError, or anything a parser raises on bad bytes
            return Undecodable(type_name, len(data), type(exc).__name__)

    return deserialize


async def _responses(result: Any) -> AsyncIterator[Any]:
    """What a streaming handler yields; nothing when it writes with ``context.write``."""
    if inspect.isasyncgen(result):
        async for response in result:
            yield response
    elif inspect.isawaitable(result):
        await result


def describe(bad: Undecodable, index: int | None = None) -> str:
    where = "" if index is None else f"Message {index} of the stream: "
    return (
        f"{where}Cannot decode {bad.size} bytes as a `{bad.type_name}` message "
        f"({bad.reason}); is the client using this server's .proto files?"
    )


class DecodeGuard:
    """Answers undecodable requests INVALID_ARGUMENT on every service: a handler layer
    (``server/handlers.py``), the innermost, so that it sees requests as grpc decoded them."""

    def __init__(self, interval_s: float = 10.0) -> None:
        self.log = RateLimitedLog(log, interval_s)
        self.count = 0

    def __call__(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        replace: dict[str, Any] = {"request_deserializer": guarded(handler.request_deserializer)}
        if handler.unary_unary is not None:
            replace["unary_unary"] = self._unary(handler.unary_unary, method)
        elif handler.unary_stream is not None:
            replace["unary_stream"] = self._unary_stream(handler.unary_stream, method)
        elif handler.stream_unary is not None:
            replace["stream_unary"] = self._stream(handler.stream_unary, method, False)
        elif handler.stream_stream is not None:
            replace["stream_stream"] = self._stream(handler.stream_stream, method, True)
        return handler._replace(**replace)  # type: ignore[attr-defined, no-any-return]

    async def _refuse(self, context: grpc.aio.ServicerContext, method: str, message: str) -> None:
        self.count += 1
        self.log.warning("%s: INVALID_ARGUMENT %s", method, message)
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, message)

    def _unary(self, behaviour: Callable[..., Any], method: str) -> Any:
        async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if isinstance(request, Undecodable):
                await self._refuse(context, method, describe(request))
            return await behaviour(request, context)

        return wrapper

    def _unary_stream(self, behaviour: Callable[..., Any], method: str) -> Any:
        async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if isinstance(request, Undecodable):
                await self._refuse(context, method, describe(request))
            async for response in _responses(behaviour(request, context)):
                yield response

        return wrapper

    def _stream(self, behaviour: Callable[..., Any], method: str, streaming: bool) -> Any:
        def checked(
            requests: AsyncIterator[Any], context: grpc.aio.ServicerContext
        ) -> AsyncIterator[Any]:
            async def iterate() -> AsyncIterator[Any]:
                index = 0
                async for message in requests:
                    if isinstance(message, Undecodable):
                        await self._refuse(context, method, describe(message, index))
                    yield message
                    index += 1

            return iterate()

        if streaming:

            async def stream_wrapper(requests: Any, context: grpc.aio.ServicerContext) -> Any:
                async for response in _responses(behaviour(checked(requests, context), context)):
                    yield response

            return stream_wrapper

        async def wrapper(requests: Any, context: grpc.aio.ServicerContext) -> Any:
            return await behaviour(checked(requests, context), context)

        return wrapper
