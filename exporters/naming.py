"""The one name of every (metric, params) variant in a model repository.

A metric with its default parameters is named after the metric (``mean_iou``); any other
parameters give ``<metric>-<hash>``, the first 12 hex digits of the sha256 of the metric
name and its graph-defining parameters as canonical JSON (``mean_iou-3f1c9a0b2d4e``). Such a
name is a legal Triton model name and a plain folder name on every file system, and it is
stable: it depends on nothing but the metric and the parameter values (not on the torch
version or the definition's source, which the manifest's ``identity`` records instead).
The manifest records the parameters, so ``cvscore metrics`` / ``DescribeMetric`` show what
a hashed name stands for. Export, evaluate, the gate and the server all use this function.

Parameters that name a file (a spec's ``requires``, e.g. the VGG ``weights``) do not name
the variant: the file's sha256 is part of the artifact's identity instead.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..metrics.registry import MetricSpec

HASH_DIGITS = 12


def _canonical(default: Any, value: Any) -> Any:
    """``value`` in the type of its parameter's default, so 1 and 1.0 name one variant."""
    if isinstance(default, bool) or value is None:
        return value
    if isinstance(default, float) and isinstance(value, int | float):
        return float(value)
    if isinstance(default, list | tuple | type(None)) and isinstance(value, list | tuple):
        return [float(v) if isinstance(v, int | float) and not isinstance(v, bool) else v
                for v in value]  # fmt: skip
    return value


def variant_params(spec: MetricSpec, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The parameters that name a variant: every graph-defining one, canonically typed."""
    resolved = spec.resolve_params(params)
    defaults = spec.defaults()
    return {
        k: _canonical(defaults[k], v) for k, v in sorted(resolved.items()) if k not in spec.requires
    }


def variant_name(metric: str | MetricSpec, params: Mapping[str, Any] | None = None) -> str:
    """The repository name of ``metric`` exported with ``params`` (see the module docstring)."""
    if isinstance(metric, str):
        from ..metrics import registry

        spec = registry.get(metric)
    else:
        spec = metric
    named = variant_params(spec, params)
    if named == variant_params(spec):
        return spec.name
    blob = json.dumps({"metric": spec.name, "params": named}, sort_keys=True, separators=(",", ":"))
    return f"{spec.name}-{hashlib.sha256(blob.encode()).hexdigest()[:HASH_DIGITS]}"
