"""Client interceptors that add the client's metadata (bearer token, request id) to calls."""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

import grpc

MetadataFn = Callable[[], list[tuple[str, str]]]


class _CallDetails(
    collections.namedtuple(
        "_CallDetails",
        ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression"),
    ),
    grpc.ClientCallDetails,
):
    pass


class SyncMetadata(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds the client's metadata to every call of a blocking channel."""

    def __init__(self, extra: MetadataFn) -> None:
        self._extra = extra

    def _details(self, d: Any) -> _CallDetails:
        metadata = [*(d.metadata or ()), *self._extra()]
        return _CallDetails(
            d.method,
            d.timeout,
            metadata or None,
            d.credentials,
            getattr(d, "wait_for_ready", None),
            getattr(d, "compression", None),
        )

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)


def _aio_details(details: Any, extra: MetadataFn) -> Any:
    added = extra()
    if not added:
        return details
    metadata = grpc.aio.Metadata(*(details.metadata or ()), *added)
    return details._replace(metadata=metadata)


class AsyncUnaryMetadata(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, extra: MetadataFn) -> None:
        self._extra = extra

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(_aio_details(details, self._extra), request)


class AsyncStreamMetadata(grpc.aio.StreamUnaryClientInterceptor):
    def __init__(self, extra: MetadataFn) -> None:
        self._extra = extra

    async def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(_aio_details(details, self._extra), requests)
