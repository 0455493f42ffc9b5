"""The Python client library: numpy, grpc and protobuf only (never torch or the server).

``Client`` / ``AsyncClient`` import lazily, so ``import cvscore.client`` costs nothing until
a client is made.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .client import AsyncClient, Client
    from .results import CvscoreError, EvaluateResult, MetricInfo, ScoreResult

__all__ = ["AsyncClient", "Client", "CvscoreError", "EvaluateResult", "MetricInfo", "ScoreResult"]


def __getattr__(name: str) -> Any:
    if name in {"AsyncClient", "Client"}:
        from . import client

        return getattr(client, name)
    if name in __all__:
        from . import results

        return getattr(results, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
