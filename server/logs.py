"""Logging for the server: text or JSON lines, each record carrying the request id.

The telemetry interceptor sets :data:`request_id` for the duration of a call, so every
line logged while serving it (by the servicers, the core, the status mapping) names the
request; ``x-request-id`` metadata from the client sets it, otherwise the server makes one.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from typing import Any

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s%(request_tag)s: %(message)s"
FORMATS = ("text", "json")
# LogRecord attributes that are not the caller's `extra=` fields.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "request_tag"}


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` (and ``request_tag``, `` [id]`` or empty, for text) to records."""

    def filter(self, record: logging.LogRecord) -> bool:
        rid = getattr(record, "request_id", "") or request_id.get()
        record.request_id = rid
        record.request_tag = f" [{rid}]" if rid else ""
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id, extras."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = getattr(record, "request_id", "")
        if rid:
            doc["request_id"] = rid
        for key, value in vars(record).items():
            if key not in _STANDARD and key != "request_id" and not key.startswith("_"):
                doc[key] = value
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def configure_logging(level: str = "info", fmt: str = "text") -> None:
    """Route the root logger to stderr as ``fmt`` ("text" or "json") lines."""
    if fmt not in FORMATS:
        raise ValueError(f"Expected `log_format` to be one of {list(FORMATS)}, got {fmt!r}")
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()))
