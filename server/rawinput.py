"""``ModelInferRequest`` off the wire without copying its tensors.

A parsed protobuf message owns copies of its ``bytes`` fields, and reading the repeated
``raw_input_contents`` copies each entry again into a Python ``bytes``: two copies of every
input, each of them fresh memory to fault in. For a request of :data:`LARGE` bytes or more
the deserializer of :class:`InferRequestParser` instead walks the message's top-level
fields once (a few dozen bytes of varints, whatever the payload's size), takes every
``raw_input_contents`` entry as a ``memoryview`` of the received bytes, and parses the
rest, which is small, with protobuf. The views keep the received bytes alive as long as
the arrays over them live.

Anything the walk does not understand (a truncated field, a group, a length past the end)
sends the request through protobuf's own parser unchanged, so a malformed message fails,
or an odd but valid one parses, exactly as it would without this path.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.message import Message

RAW_INPUT_CONTENTS = 7  # the field number in grpc_service.proto
LARGE = 64 << 10  # below this, protobuf's copies cost less than the walk


class InferRequest:
    """A parsed request without its raw contents, and those contents as views."""

    __slots__ = ("message", "raw")

    def __init__(self, message: Message, raw: list[memoryview]) -> None:
        self.message = message
        self.raw = raw

    def __getattr__(self, name: str) -> Any:  # model_name, inputs, parameters, ...
        return getattr(self.message, name)


def raw_contents(request: Any) -> list[bytes | memoryview]:
    """The request's ``raw_input_contents``, in order, however it was parsed."""
    if isinstance(request, InferRequest):
        return list(request.raw)
    return list(request.raw_input_contents)


class Malformed(ValueError):
    """The walk stopped; protobuf's parser gets the bytes instead."""


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise Malformed("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def split(data: bytes) -> tuple[bytes, list[memoryview]]:
    """The message without its ``raw_input_contents`` fields, and those as views of ``data``."""
    view = memoryview(data)
    kept: list[memoryview] = []
    raw: list[memoryview] = []
    pos = start = 0
    end = len(data)
    while pos < end:
        field = pos
        key, pos = _varint(data, pos)
        wire = key & 7
        if wire == 0:
            _, pos = _varint(data, pos)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            length, pos = _varint(data, pos)
            if pos + length > end:
                raise Malformed("length past the end")
            if key >> 3 == RAW_INPUT_CONTENTS:
                kept.append(view[start:field])
                raw.append(view[pos : pos + length])
                start = pos + length
            pos += length
        else:
            raise Malformed(f"wire type {wire}")
    if pos != end:
        raise Malformed("truncated field")
    if not raw:
        return data, raw
    kept.append(view[start:])
    return b"".join(kept), raw


class InferRequestParser:
    """The ``request_deserializer`` of ModelInfer: zero-copy for large requests."""

    def __init__(self, message: type[Message]) -> None:
        self.DESCRIPTOR = message.DESCRIPTOR  # what wire.guarded names the type by
        self._parse = message.FromString

    def parse(self, data: bytes) -> Message | InferRequest:
        if len(data) >= LARGE:
            try:
                rest, raw = split(data)
            except Malformed:
                return self._parse(data)
            if raw:
                return InferRequest(self._parse(rest), raw)
        return self._parse(data)
