"""Metric definitions: pure torch modules returning per-sample scores, and their registry."""

from .registry import MetricSpec, ParamSpec, TensorSpec, get, names, register, select, specs

__all__ = ["MetricSpec", "ParamSpec", "TensorSpec", "get", "names", "register", "select", "specs"]
