"""What the server knows about one model: its artifact's signature, and its spec if any.

The manifest in the repository is the source of truth for what an artifact takes (names,
canonical shapes, dtypes). When the registry still knows the metric the model was exported
from, and its signature agrees with the manifest, the spec adds the original shapes (with a
trailing ``"*"``), the shared-axis and minimum-size checks of ``MetricSpec.check_inputs``
and the domain checks of ``MetricSpec.validate``. Either way, a request's inputs are
checked here, before anything is batched or run, and every error names the input and
shows what was expected and what was received.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..metrics.registry import input_name_mismatch
from .errors import InvalidInputError
from .tensors import DTYPES, dtype_name

if TYPE_CHECKING:
    from ..metrics.registry import MetricSpec

log = logging.getLogger(__name__)

# Arrays decoded from request bytes are read-only views; torch warns when it wraps one.
# Nothing here or in the runtimes writes to its inputs.
warnings.filterwarnings("ignore", message="The given NumPy array is not writable")

FLOATS = {"float16", "float32", "float64"}


@dataclass(frozen=True)
class TensorInfo:
    """One input or output: original (symbolic) shape, canonical shape and dtype."""

    name: str
    shape: tuple[str | int, ...]
    canonical: tuple[str | int, ...]
    dtype: str
    doc: str = ""

    @property
    def batched(self) -> bool:
        return bool(self.canonical) and self.canonical[0] == "N"

    def dims(self) -> list[int]:
        """Canonical shape with -1 for every symbolic axis (Triton's convention)."""
        return [d if isinstance(d, int) else -1 for d in self.canonical]


@dataclass(frozen=True)
class ParamInfo:
    name: str
    type: str
    value: Any
    default: Any
    doc: str = ""


@dataclass(frozen=True)
class Prepared:
    """Inputs checked and in the artifact's canonical shapes and dtypes."""

    inputs: dict[str, np.ndarray]
    batch_size: int


def _fmt(shape: Sequence[Any]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _axis(value: Any) -> str | int:
    return value if isinstance(value, str) else int(value)


@dataclass(frozen=True)
class Signature:
    """A served model: manifest facts, plus the registry spec when it agrees."""

    name: str
    metric: str
    family: str
    version: int
    identity: str
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    params: dict[str, Any]
    summary: str = ""
    higher_is_better: bool = False
    paper: str = ""
    oracle: str = ""
    param_info: tuple[ParamInfo, ...] = ()
    spec: MetricSpec | None = field(default=None, repr=False, compare=False)

    # -- construction -------------------------------------------------------------------
    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any], spec: MetricSpec | None) -> Signature:
        def tensors(key: str) -> tuple[TensorInfo, ...]:
            out = []
            for t in manifest[key]:
                canonical = tuple(_axis(d) for d in t["shape"])
                out.append(TensorInfo(t["name"], canonical, canonical, t["dtype"]))
            return tuple(out)

        inputs, outputs = tensors("inputs"), tensors("outputs")
        params = dict(manifest.get("params", {}))
        base = cls(
            name=manifest["name"],
            metric=manifest.get("metric", manifest["name"]),
            family=manifest.get("family", ""),
            version=int(manifest.get("version", 1)),
            identity=manifest.get("identity", ""),
            inputs=inputs,
            outputs=outputs,
            params=params,
            higher_is_better=bool(manifest.get("higher_is_better", False)),
            param_info=tuple(
                ParamInfo(k, type(v).__name__, v, None) for k, v in sorted(params.items())
            ),
        )
        if spec is None:
            return base
        problem = _disagreement(spec, inputs, outputs, params)
        if problem:
            log.warning(
                "model %s: the registered metric %s no longer matches the artifact (%s); "
                "serving it from its manifest alone, without the metric's domain checks",
                base.name,
                spec.name,
                problem,
            )
            return base
        return cls(
            name=base.name,
            metric=base.metric,
            family=spec.family,
            version=base.version,
            identity=base.identity,
            inputs=tuple(
                TensorInfo(t.name, tuple(t.shape), tuple(t.canonical_shape), t.dtype, t.doc)
                for t in spec.inputs
            ),
            outputs=tuple(
                TensorInfo(t.name, tuple(t.shape), tuple(t.canonical_shape), t.dtype, t.doc)
                for t in spec.outputs
            ),
            params=params,
            summary=spec.summary,
            higher_is_better=spec.higher_is_better,
            paper=spec.paper,
            oracle=spec.oracle,
            param_info=tuple(
                ParamInfo(p.name, p.type_name, params.get(p.name, p.default), p.default, p.doc)
                for p in spec.params
            ),
            spec=spec,
        )

    # -- checks -------------------------------------------------------------------------
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    @property
    def splittable(self) -> bool:
        """Whether outputs can be split back per request (every output has the batch axis)."""
        return all(t.batched for t in self.outputs)

    def prepare(self, arrays: Mapping[str, np.ndarray]) -> Prepared:
        """Check a request's inputs and bring them into the artifact's canonical form.

        Accepts original shapes (trailing ``"*"`` axes as they are) or canonical ones.
        Raises :class:`InvalidInputError` naming the input, expected vs received.
        """
        mismatch = input_name_mismatch(self.name, self.input_names(), arrays)
        if mismatch:
            raise InvalidInputError(mismatch)
        if self.spec is not None:
            arrays = self._check_with_spec(self.spec, arrays)
        inputs: dict[str, np.ndarray] = {}
        sizes: dict[str, tuple[int, str]] = {}
        for t in self.inputs:
            array = arrays[t.name]
            got = dtype_name(array.dtype)
            if got != t.dtype and not (got in FLOATS and t.dtype in FLOATS):
                raise InvalidInputError(f"Expected `{t.name}` to have dtype {t.dtype}, got {got}")
            if array.ndim != len(t.canonical):
                raise InvalidInputError(
                    f"Expected `{t.name}` to have shape {_fmt(t.shape)}"
                    + (f" (or {_fmt(t.canonical)})" if t.shape != t.canonical else "")
                    + f", got {list(array.shape)} (rank {array.ndim})"
                )
            for axis, size in zip(t.canonical, array.shape, strict=True):
                if isinstance(axis, int):
                    if size != axis:
                        raise InvalidInputError(
                            f"Expected `{t.name}` to have shape {_fmt(t.canonical)}, "
                            f"got {list(array.shape)}"
                        )
                elif axis in sizes and sizes[axis][0] != size:
                    other_size, other = sizes[axis]
                    raise InvalidInputError(
                        f"Expected axis {axis} of `{t.name}` to equal axis {axis} of "
                        f"`{other}` ({other_size}), got {size}"
                    )
                else:
                    sizes.setdefault(str(axis), (int(size), t.name))
            want = DTYPES[t.dtype]
            inputs[t.name] = array if array.dtype == want else array.astype(want)
        batch = sizes["N"][0] if "N" in sizes else 0
        return Prepared(inputs, batch)

    def _check_with_spec(
        self, spec: MetricSpec, arrays: Mapping[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        import torch

        with warnings.catch_warnings():  # read-only request buffers; nothing writes to them
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            tensors = {name: torch.from_numpy(array) for name, array in arrays.items()}
        try:
            spec.check_inputs(tensors, self.params)
        except ValueError as exc:
            raise InvalidInputError(str(exc)) from None
        return {name: t.numpy() for name, t in spec.canonical(tensors).items()}

    # -- descriptions -------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        def tensor(t: TensorInfo) -> dict[str, Any]:
            return {
                "name": t.name,
                "shape": list(t.shape),
                "canonical_shape": list(t.canonical),
                "dtype": t.dtype,
                "doc": t.doc,
            }

        return {
            "name": self.name,
            "metric": self.metric,
            "family": self.family,
            "summary": self.summary,
            "inputs": [tensor(t) for t in self.inputs],
            "outputs": [tensor(t) for t in self.outputs],
            "params": {p.name: p.value for p in self.param_info},
            "higher_is_better": self.higher_is_better,
            "paper": self.paper,
            "oracle": self.oracle,
            "identity": self.identity,
            "version": self.version,
        }


def _disagreement(
    spec: MetricSpec,
    inputs: Sequence[TensorInfo],
    outputs: Sequence[TensorInfo],
    params: Mapping[str, Any],
) -> str:
    """Why the spec cannot describe the artifact, or "" when it can."""
    for kind, ours, theirs in (("inputs", inputs, spec.inputs), ("outputs", outputs, spec.outputs)):
        a = [(t.name, list(t.canonical), t.dtype) for t in ours]
        b = [(t.name, list(t.canonical_shape), t.dtype) for t in theirs]
        if a != b:
            return f"{kind} {json.dumps(a)} vs {json.dumps(b)}"
    try:
        spec.resolve_params(params)
    except ValueError as exc:
        return str(exc)
    return ""
