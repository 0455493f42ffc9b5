"""What the server learns about one call, for its metrics and its access-log line.

A call's request id (the client's ``x-request-id``, or one made here), the metric and
runtime it names (read from its request message, whichever API it came by) and the closed
set of runtime labels. :mod:`server.telemetry` counts and logs calls with these; the HTTP
front end makes its calls here too.
"""

from __future__ import annotations

import itertools
import re
import time
import uuid
from collections.abc import Iterable
from typing import Any

from ..wire import RUNTIMES
from .errors import shown

REQUEST_ID = "x-request-id"
OTHER = "other"  # the label of a runtime name the server does not have
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:/-]{1,128}$")


def request_id_of(metadata: Iterable[Any] | None) -> str:
    for key, value in metadata or ():
        if key.lower() == REQUEST_ID:
            text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
            if _REQUEST_ID_RE.match(text):
                return text
            break
    return new_request_id()


# A made-up request id: this process's random half and a counter, 32 hex digits like a
# uuid4's, unique across the workers of one server, for a fraction of uuid4's cost.
_ID_PREFIX = uuid.uuid4().hex[:16]
_ID_COUNTER = itertools.count(1)


def new_request_id() -> str:
    return f"{_ID_PREFIX}{next(_ID_COUNTER) & 0xFFFFFFFFFFFFFFFF:016x}"


# Which fields of a request message name its metric and runtime, per message class (a
# getattr of a field a message lacks raises and catches AttributeError: slow per call).
_NAME_FIELDS = ("metric", "model_name", "name")
_FIELDS: dict[type, tuple[tuple[str, ...], bool, bool]] = {}


def _fields_of(message: Any) -> tuple[tuple[str, ...], bool, bool]:
    kind = type(message)
    known = _FIELDS.get(kind)
    if known is None:
        names = tuple(n for n in _NAME_FIELDS if hasattr(message, n))
        known = (names, hasattr(message, "runtime"), hasattr(message, "parameters"))
        _FIELDS[kind] = known
    return known


def _field(message: Any, *names: str) -> Any:
    for name in names:
        value = getattr(message, name, None)
        if value:
            return value
    return None


_RUNTIME_LABELS = frozenset({"auto", *RUNTIMES})


def runtime_label(value: Any) -> str:
    """A label from a closed set: the server's runtimes, ``auto``, or ``other``."""
    if value is None:
        return "auto"
    if isinstance(value, str):
        name = value or "auto"
    else:  # a cvscore.v1 Runtime enum value
        from .servicer import PB_TO_RUNTIME

        try:
            name = PB_TO_RUNTIME.get(int(value), OTHER)
        except (TypeError, ValueError):
            name = OTHER
    return name if name in _RUNTIME_LABELS else OTHER


def loggable(text: str) -> str:
    """A client string for a text log line: control characters escaped, length bounded."""
    return shown(text, limit=128) if text else "-"


class Call:
    """What the interceptor learns about one call while it runs."""

    def __init__(self, method: str, request_id: str) -> None:
        self.method = method
        self.request_id = request_id
        self.metric = ""
        self.runtime: Any = None
        self.start = time.perf_counter()

    def saw_request(self, message: Any) -> None:
        if not self.metric:
            names, has_runtime, has_parameters = _fields_of(message)
            self.metric = str(_field(message, *names) or "")
            self.runtime = (message.runtime or None) if has_runtime else None
            if self.runtime is None and has_parameters and "runtime" in message.parameters:
                self.runtime = message.parameters["runtime"].string_param

    def saw_response(self, message: Any) -> None:
        if _fields_of(message)[1] and message.runtime:
            self.runtime = message.runtime
