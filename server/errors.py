"""The errors the scoring core raises, each naming the status a transport should answer.

Transport-free: the core raises these and knows nothing of gRPC; ``server/status.py`` holds
the one mapping from exception to gRPC status for the whole server. Messages are written
for the client: they name the input, and show what was expected and what was received.
"""

from __future__ import annotations

# Client strings echoed into a message (names, runtimes) are cut to this many characters,
# and a whole status message to MAX_MESSAGE_BYTES: gRPC refuses trailing metadata over 8 KB.
MAX_ECHO = 64
MAX_MESSAGE_BYTES = 1024


def shown(value: object, limit: int = MAX_ECHO) -> str:
    """A client-supplied string as an error message may quote it: cut, control chars escaped."""
    text = str(value)
    cut = text[:limit]
    escaped = cut.encode("unicode_escape").decode("ascii") if not cut.isprintable() else cut
    return escaped + (f"... ({len(text)} chars)" if len(text) > limit else "")


def clip(message: str, limit: int = MAX_MESSAGE_BYTES) -> str:
    """A status message cut to ``limit`` UTF-8 bytes (whole characters), marked when cut."""
    data = message.encode()
    if len(data) <= limit:
        return message
    return data[: limit - 16].decode(errors="ignore") + " ... (truncated)"


class ScoringError(Exception):
    """A failure the client should hear about, with its message, as ``code``."""

    code = "INTERNAL"

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.code


class NotFoundError(ScoringError):
    """An unknown metric (model) or model version."""

    code = "NOT_FOUND"


class InvalidInputError(ScoringError):
    """Bad input: names, dtypes, shapes, byte lengths, domain checks, options."""

    code = "INVALID_ARGUMENT"


class RuntimeUnavailableError(ScoringError):
    """The model exists but the requested runtime is not loaded on this server."""

    code = "FAILED_PRECONDITION"


class QueueFullError(ScoringError):
    """The dynamic batcher's queue is full; the client may retry later."""

    code = "RESOURCE_EXHAUSTED"


class TooLargeError(ScoringError):
    """A well-formed request over the server's size or work budget; split it and retry."""

    code = "RESOURCE_EXHAUSTED"


class DeadlineExceededError(ScoringError):
    """The request's deadline passed before it could be computed."""

    code = "DEADLINE_EXCEEDED"


class NotReadyError(ScoringError):
    """The server is still loading models, or is shutting down."""

    code = "UNAVAILABLE"
