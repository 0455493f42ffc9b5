"""The metric contract and the registry: name -> MetricSpec.

A spec says everything the exporters, the server and the tests need to know about a metric
without running it: its inputs with symbolic shapes and dtypes, its outputs, its frozen
parameters with defaults, whether higher is better, where it comes from and what it is
checked against.

Symbolic shapes
---------------
Each input shape is a list of axis names or fixed sizes. ``"N"`` is the batch axis and comes
first on every batched input. A name shared by several inputs must have the same size in
all of them. The name ``"*"`` (last position only) stands for any number of trailing axes,
including none: eager modules accept them as they are, and :meth:`MetricSpec.canonical`
flattens them into one axis (``"S"``) so an exported graph has a fixed rank.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .params import ParamSpec  # re-exported: `from cvscore.metrics.registry import ParamSpec`
from .shapes import bind_axes, input_name_mismatch

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float64": torch.float64,
    "int64": torch.int64,
    "int32": torch.int32,
    "bool": torch.bool,
}

FLAT = "S"  # name of the axis that a trailing "*" is flattened into

# Input regimes every spec samples: ``typical`` (the spec's ``sample``), ``extreme``
# (confident logits, huge and tiny boxes, saturated images, far-out errors) and
# ``degenerate`` (identical inputs, empty or full masks, flat images, zero-area boxes).
REGIMES = ("typical", "extreme", "degenerate")

# The metric definitions: every first-party source an artifact's graph can depend on.
SOURCE_ROOT = Path(__file__).resolve().parent


def definition_digest() -> str:
    """sha256 over every ``*.py`` of the metrics package (``SOURCE_ROOT``), path and content.

    A metric's graph can call helpers in any family module (``yolo`` calls ``boxes.ciou``,
    ``combo`` calls ``pixel.cross_entropy``, most use ``_utils``), so the whole package is
    hashed: editing any of it changes every identity, which is stale-safe by construction.
    """
    return _digest(SOURCE_ROOT)


@functools.lru_cache(maxsize=8)
def _digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


@dataclass(frozen=True)
class TensorSpec:
    """One named input or output of a metric graph."""

    name: str
    shape: tuple[str | int, ...]
    dtype: str = "float32"
    doc: str = ""

    @property
    def batched(self) -> bool:
        return bool(self.shape) and self.shape[0] == "N"

    @property
    def canonical_shape(self) -> tuple[str | int, ...]:
        """The shape an exported graph sees: a trailing "*" becomes one axis "S"."""
        if self.shape and self.shape[-1] == "*":
            return (*self.shape[:-1], FLAT)
        return self.shape

    def describe(self) -> str:
        return f"{self.name}[{', '.join(str(d) for d in self.shape)}]:{self.dtype}"

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype, "doc": self.doc}


Sampler = Callable[[torch.Generator, Mapping[str, int], torch.dtype], dict[str, Tensor]]
Validator = Callable[[Mapping[str, Any], Mapping[str, Tensor]], None]


@dataclass(frozen=True)
class MetricSpec:
    """Everything known about one registered metric.

    ``module`` is the ``nn.Module`` class (constructor takes the params as keywords),
    ``functional`` the function it wraps. ``sample`` draws fresh valid random inputs for
    given axis sizes; ``validate`` checks the metric's domain (labels in range, ...) on top
    of the shape and dtype checks every metric gets.
    """

    name: str
    family: str
    module: type[nn.Module]
    functional: Callable[..., Tensor]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    params: tuple[ParamSpec, ...]
    higher_is_better: bool
    paper: str
    oracle: str
    sample: Sampler
    summary: str = ""
    differentiable: bool = True
    validate: Validator | None = None
    # Example axis sizes used for export; pick distinct values so no axis is specialised.
    example_sizes: Mapping[str, int] = field(default_factory=dict)
    # Smallest legal size per axis (e.g. SSIM "valid" needs H, W >= kernel size).
    min_sizes: Mapping[str, int] = field(default_factory=dict)
    # Parameters naming a file the module is built from (network weights), each mapped to
    # the environment variable read when the parameter is left empty. The file's sha256 is
    # part of the artifact's identity; exporters skip such a metric when no file is given.
    requires: Mapping[str, str] = field(default_factory=dict)
    # False where the gradient deliberately is not the derivative of the value (CIoU
    # detaches its alpha term, as torchvision does); gradcheck then does not apply.
    exact_gradient: bool = True
    # Dataset-level metrics: a factory taking the resolved params and returning an empty
    # ``aggregators.Aggregator`` that folds the graph's per-batch statistics (None otherwise).
    aggregator: Callable[..., Any] | None = None
    # Samplers for the regimes beyond "typical" (see REGIMES), same signature as ``sample``.
    regimes: Mapping[str, Sampler] = field(default_factory=dict)
    # What the graph allocates: given the bound axis sizes (canonical names, "S" for a
    # flattened "*") and the resolved params, the bytes it holds at its peak beyond its
    # inputs, outputs included. None: a few temporaries the size of the product of every
    # axis, which bounds any broadcast of the inputs against each other. The server checks
    # it against its work budget before running a request (server/admission.py); the
    # figures are calibrated against measured peaks by bench/work.py.
    work: Callable[[Mapping[str, int], Mapping[str, Any]], int] | None = None
    # A fast test of the same domain on host numpy arrays (the server's decoded inputs) and
    # the resolved params: True only when ``validate`` would pass, so the server skips it;
    # False says nothing (``validate`` then runs and names what is wrong, or passes).
    host_check: Callable[[Mapping[str, Any], Mapping[str, np.ndarray]], bool] | None = None

    # -- parameters ---------------------------------------------------------------------
    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.params}

    def resolve_params(self, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        params = self.defaults()
        for key, value in (overrides or {}).items():
            if key not in params:
                raise ValueError(
                    f"Unknown parameter `{key}` for metric `{self.name}`; "
                    f"expected one of {sorted(params)}"
                )
            params[key] = value
        return params

    def build(self, **overrides: Any) -> nn.Module:
        """The metric's module with its parameters frozen, in eval mode."""
        return self.module(**self.resolve_params(overrides)).eval()

    def identity(self, params: Mapping[str, Any]) -> str:
        """sha256 of the definitions and the parameters: what a graph is built from.

        The definitions are every source of the metrics package (:func:`definition_digest`);
        for a metric with ``requires``, the sha256 of each required file is part of it too.
        An artifact's full identity adds the tool versions
        (``cvscore.exporters.repository.artifact_identity``).
        """
        parts: tuple[Any, ...] = (self.name, sorted(params.items()), definition_digest())
        files = {k: _sha256(p) for k, p in self.required_files(params).items() if p}
        if files:
            parts = (*parts, sorted(files.items()))
        blob = repr(parts).encode()
        return hashlib.sha256(blob).hexdigest()

    def required_files(self, params: Mapping[str, Any] | None = None) -> dict[str, str | None]:
        """Each ``requires`` parameter's file: its value, else its environment variable.

        ``None`` where neither names an existing file.
        """
        resolved = self.resolve_params(params)
        out: dict[str, str | None] = {}
        for key, env in self.requires.items():
            path = str(resolved.get(key) or "") or os.environ.get(env, "")
            out[key] = path if path and os.path.isfile(path) else None
        return out

    # -- inputs -------------------------------------------------------------------------
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    def check_inputs(
        self, inputs: Mapping[str, Tensor], params: Mapping[str, Any] | None = None
    ) -> int:
        """Validate names, dtypes, ranks and shared axis sizes; return the batch size.

        Raises ``ValueError`` naming the input and showing expected vs received.
        """
        mismatch = input_name_mismatch(self.name, self.input_names(), inputs)
        if mismatch:
            raise ValueError(mismatch)
        sizes: dict[str, tuple[int, str]] = {}
        trailing_ref: tuple[list[int], str] | None = None
        for spec in self.inputs:
            tensor = inputs[spec.name]
            if not isinstance(tensor, Tensor):
                raise ValueError(
                    f"Expected `{spec.name}` to be a Tensor, got {type(tensor).__name__}"
                )
            want = DTYPES[spec.dtype]
            if tensor.dtype != want and not (
                want.is_floating_point and tensor.dtype.is_floating_point
            ):
                raise ValueError(
                    f"Expected `{spec.name}` to have dtype {spec.dtype}, "
                    f"got {str(tensor.dtype).replace('torch.', '')}"
                )
            shape = list(tensor.shape)
            star = bool(spec.shape) and spec.shape[-1] == "*"
            fixed = spec.shape[:-1] if star else spec.shape
            if (star and len(shape) < len(fixed)) or (not star and len(shape) != len(fixed)):
                raise ValueError(
                    f"Expected `{spec.name}` to have shape [{', '.join(map(str, spec.shape))}], "
                    f"got {shape} (rank {len(shape)})"
                )
            if star:
                trailing = shape[len(fixed) :]
                if trailing_ref is None:
                    trailing_ref = (trailing, spec.name)
                elif trailing != trailing_ref[0]:
                    raise ValueError(
                        f"Expected the trailing axes of `{spec.name}` to match those of "
                        f"`{trailing_ref[1]}` ({trailing_ref[0]}), got {trailing}"
                    )
            bind_axes(spec.name, spec.shape, fixed, shape, sizes, self.min_sizes)
        if self.validate is not None:
            self.validate(self.resolve_params(params), inputs)
        return sizes["N"][0] if "N" in sizes else 0

    def canonical(self, inputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Inputs as exported graphs take them: trailing "*" axes flattened into one."""
        out: dict[str, Tensor] = {}
        for spec in self.inputs:
            tensor = inputs[spec.name]
            if spec.shape and spec.shape[-1] == "*":
                lead = len(spec.shape) - 1
                flat = math.prod(tensor.shape[lead:])
                tensor = tensor.reshape(*tensor.shape[:lead], flat)
            out[spec.name] = tensor
        return out

    def make_inputs(
        self,
        generator: torch.Generator,
        sizes: Mapping[str, int] | None = None,
        dtype: torch.dtype = torch.float32,
        regime: str = "typical",
    ) -> dict[str, Tensor]:
        """Fresh random valid inputs of one regime; axis sizes default to ``example_sizes``."""
        merged = {**self.example_sizes, **(sizes or {})}
        if regime == "typical":
            return self.sample(generator, merged, dtype)
        sampler = self.regimes.get(regime)
        if sampler is None:
            raise ValueError(
                f"Expected `regime` to be one of {[r for r in REGIMES if r == 'typical' or r in self.regimes]} "
                f"for metric `{self.name}`, got {regime!r}"
            )
        return sampler(generator, merged, dtype)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "family": self.family,
            "summary": self.summary,
            "inputs": [t.to_json() for t in self.inputs],
            "outputs": [t.to_json() for t in self.outputs],
            "params": [
                {"name": p.name, "default": p.default, "type": p.type_name, "doc": p.doc}
                for p in self.params
            ],
            "higher_is_better": self.higher_is_better,
            "differentiable": self.differentiable,
            "paper": self.paper,
            "oracle": self.oracle,
            **({"requires": dict(self.requires)} if self.requires else {}),
        }


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


_REGISTRY: dict[str, MetricSpec] = {}


def register(spec: MetricSpec) -> MetricSpec:
    if spec.name in _REGISTRY:
        raise ValueError(f"Metric `{spec.name}` is registered twice")
    if spec.inputs and not all(t.batched for t in spec.inputs[:1]):
        raise ValueError(f"Metric `{spec.name}`: the first input must carry the batch axis N")
    _REGISTRY[spec.name] = spec
    return spec


def get(name: str) -> MetricSpec:
    _load_families()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(
            f"Unknown metric `{name}`; known metrics: {', '.join(sorted(_REGISTRY))}"
        ) from None


def names() -> list[str]:
    return [s.name for s in specs()]


def specs() -> list[MetricSpec]:
    """Every spec, by family module in ``families.ORDER``, then in registration order.

    The order does not depend on which family module happened to be imported first.
    """
    _load_families()
    from .families import ORDER

    def rank(spec: MetricSpec) -> int:
        package, _, module = getattr(spec.module, "__module__", "").rpartition(".")
        return ORDER.index(module) if package == __package__ and module in ORDER else len(ORDER)

    return sorted(_REGISTRY.values(), key=rank)


def _load_families() -> None:
    # Importing the family modules registers their metrics.
    from . import families  # noqa: F401


def select(requested: Sequence[str] | None) -> list[MetricSpec]:
    """Specs for the requested names (all when none), in registry order."""
    if not requested:
        return specs()
    return [get(n) for n in requested]
