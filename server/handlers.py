"""Per-method handler layers, applied once when a service registers, not once per call.

grpc.aio runs a server interceptor per call: a coroutine per interceptor to find the
handler, and whatever wrapping it does (a ``_replace`` of the handler, new closures) again
on every call. Two of cvscore's three wrappers (telemetry and the decode guard) depend only
on the method, so they are *layers* here: a function ``(method, handler) -> handler``
applied once per method, the result cached. Per call, only the wrapped behaviours run.
(bench/request_cost.py measures server CPU per request against an earlier commit; see
bench/results/request-cost-*.md.)

:class:`Registrar` stands where generated ``add_*_to_server`` functions expect a server:
every handler they add, generic or registered, reaches the real server with the layers
applied. (``enable_server_reflection`` cannot take it: it picks its servicer by checking
for a ``grpc.aio.Server``; add the aio servicer through the registrar instead.)
Bearer-token authentication stays a grpc interceptor (``server/security.py``): it must
refuse a call before grpc decodes its request.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import grpc

Layer = Callable[[str, grpc.RpcMethodHandler], grpc.RpcMethodHandler]


def compose(layers: Sequence[Layer]) -> Layer:
    """One layer applying ``layers`` outermost first (the first sees what the others do)."""

    def apply(method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        for layer in reversed(layers):
            handler = layer(method, handler)
        return handler

    return apply


class LayeredHandler(grpc.GenericRpcHandler):
    """A generic handler whose method handlers come out of ``layer``, once per method."""

    def __init__(self, inner: grpc.GenericRpcHandler, layer: Layer) -> None:
        self._inner = inner
        self._layer = layer
        # method -> (the inner handler, its layered form); only methods the inner one knows
        self._cache: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Any:
        handler = self._inner.service(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        hit = self._cache.get(method)
        if hit is not None and hit[0] is handler:
            return hit[1]
        layered = self._layer(method, handler)
        self._cache[method] = (handler, layered)
        return layered


class Registrar:
    """A stand-in for a ``grpc.aio.Server`` in registration calls: handlers get ``layer``."""

    def __init__(self, server: grpc.aio.Server, layer: Layer) -> None:
        self.server = server
        self.layer = layer

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self.server.add_generic_rpc_handlers([LayeredHandler(h, self.layer) for h in handlers])

    def add_registered_method_handlers(
        self, service: str, handlers: Mapping[str, grpc.RpcMethodHandler]
    ) -> None:
        layered = {name: self.layer(f"/{service}/{name}", h) for name, h in handlers.items()}
        self.server.add_registered_method_handlers(service, layered)
