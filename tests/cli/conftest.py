"""A small server for the client tests (a few zoo models, ONNX and TorchScript)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cvscore.server.app import BackgroundServer, ServerConfig

from ..server.conftest import Events, small_repo, small_server  # noqa: F401


@pytest.fixture(scope="module")
def address(small_repo: Path) -> Iterator[str]:  # noqa: F811
    config = ServerConfig(small_repo, port=0, runtime="onnx,torchscript")
    with BackgroundServer(config) as server:
        yield server.address


@pytest.fixture
def events() -> Events:
    return Events()
