"""Handler layers (server/handlers.py): applied once per method, to every way a service
registers, and still seeing every call: telemetry counts refusals by authentication and by
the decode guard on a real server."""

from __future__ import annotations

import asyncio
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from cvscore.client import Client, CvscoreError
from cvscore.server.app import BackgroundServer, ServerConfig
from cvscore.server.handlers import LayeredHandler, Registrar, compose

from .conftest import TOKENS

PREDS = np.arange(12, dtype=np.float32).reshape(3, 4)


class Details:
    def __init__(self, method: str) -> None:
        self.method = method
        self.invocation_metadata = ()


async def _echo(request: Any, context: Any) -> Any:
    return request


def _tagging(tag: str, seen: list[str]) -> Any:
    """A layer that records the methods it wraps and tags what the behaviour returns."""

    def layer(method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        seen.append(method)
        inner = handler.unary_unary

        async def tagged(request: Any, context: Any) -> Any:
            return f"{tag}({await inner(request, context)})"

        return handler._replace(unary_unary=tagged)  # type: ignore[attr-defined]

    return layer


def test_a_generic_handler_is_layered_once_per_method() -> None:
    seen: list[str] = []
    handlers = {"A": grpc.unary_unary_rpc_method_handler(_echo)}
    inner = grpc.method_handlers_generic_handler("svc", handlers)
    layered = LayeredHandler(inner, _tagging("t", seen))
    first = layered.service(Details("/svc/A"))
    for _ in range(50):
        assert layered.service(Details("/svc/A")) is first
    assert seen == ["/svc/A"]
    assert layered.service(Details("/svc/Missing")) is None
    assert seen == ["/svc/A"]  # an unknown method is never layered (nor cached)


def test_layers_compose_outermost_first() -> None:
    seen: list[str] = []
    layer = compose([_tagging("outer", seen), _tagging("inner", seen)])
    handler = layer("/svc/A", grpc.unary_unary_rpc_method_handler(_echo))
    assert asyncio.run(handler.unary_unary("x", None)) == "outer(inner(x))"


def test_the_registrar_layers_generic_and_registered_handlers() -> None:
    class Server:
        def __init__(self) -> None:
            self.generic: list[Any] = []
            self.registered: dict[str, Any] = {}

        def add_generic_rpc_handlers(self, handlers: Any) -> None:
            self.generic.extend(handlers)

        def add_registered_method_handlers(self, service: str, handlers: Any) -> None:
            self.registered[service] = handlers

    seen: list[str] = []
    server = Server()
    registrar = Registrar(server, _tagging("t", seen))  # type: ignore[arg-type]
    handlers = {"A": grpc.unary_unary_rpc_method_handler(_echo)}
    registrar.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("svc", handlers)])
    registrar.add_registered_method_handlers("svc", handlers)
    assert seen == ["/svc/A"]  # the registered one, at once
    assert server.registered["svc"]["A"] is not handlers["A"]
    [generic] = server.generic
    assert isinstance(generic, LayeredHandler)
    generic.service(Details("/svc/A"))
    assert seen == ["/svc/A", "/svc/A"]


def _requests_total(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    counts: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("cvscore_requests_total{"):
            labels, value = line.rsplit(" ", 1)
            counts[labels] = counts.get(labels, 0.0) + float(value)
    return counts


def test_refusals_are_counted_by_telemetry(tiny_repo: Path, tokens_file: Path) -> None:
    config = ServerConfig(tiny_repo, port=0, metrics_port=0, auth_tokens_file=tokens_file)
    server = BackgroundServer(config).start()
    try:
        with Client(server.address, token="wrong", timeout=10, retries=0) as client:
            with pytest.raises(CvscoreError) as info:
                client.score("l1", preds=PREDS, target=PREDS)
            assert info.value.code == grpc.StatusCode.UNAUTHENTICATED
        metadata = [("authorization", f"Bearer {TOKENS[0]}")]
        with grpc.insecure_channel(server.address) as channel:
            score = channel.unary_unary("/cvscore.v1.Scoring/Score")
            with pytest.raises(grpc.RpcError) as bad:
                score(b"\xff\xff\xff", timeout=10, metadata=metadata)  # not a ScoreRequest
            assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with Client(server.address, token=TOKENS[0], timeout=10, retries=0) as client:
            assert client.score("l1", preds=PREDS, target=PREDS).outputs
        counts = _requests_total(server.server.metrics_port)
        by_code: dict[str, float] = {}
        for labels, value in counts.items():
            if 'method="Score"' in labels:
                code = labels.split('code="')[1].split('"')[0]
                by_code[code] = by_code.get(code, 0.0) + value
        assert by_code == {"UNAUTHENTICATED": 1.0, "INVALID_ARGUMENT": 1.0, "OK": 1.0}
    finally:
        server.stop()
