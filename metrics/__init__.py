"""Metric definitions: pure torch modules returning per-sample scores, and their registry."""

# Register every family now, in families.py's order, whichever module is imported first:
# the registry's order (what `cvscore metrics` lists) must not depend on import order.
from . import families  # noqa: F401
from .registry import MetricSpec, ParamSpec, TensorSpec, get, names, register, select, specs

__all__ = ["MetricSpec", "ParamSpec", "TensorSpec", "get", "names", "register", "select", "specs"]
