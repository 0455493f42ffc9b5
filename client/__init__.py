"""Python client and command-line interface.

``Client`` / ``AsyncClient`` import lazily, so ``cvscore metrics`` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .client import AsyncClient, Client, CvscoreError, EvaluateResult, ScoreResult

__all__ = ["AsyncClient", "Client", "CvscoreError", "EvaluateResult", "ScoreResult"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import client

        return getattr(client, name)
    raise AttributeError(name)
