"""Metric definitions: pure torch modules returning per-sample scores, and their registry.

Importing the package imports no torch: the registry (and every family with it) loads on
first use, so the torch-free host halves (``aggregators``, ``coco_eval``) can be imported by
a light client. The registry lists the families in one fixed order, whichever module is
imported first (see ``registry.specs``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .registry import MetricSpec, ParamSpec, TensorSpec, get, names, register, select, specs

__all__ = ["MetricSpec", "ParamSpec", "TensorSpec", "get", "names", "register", "select", "specs"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import registry

        return getattr(registry, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
