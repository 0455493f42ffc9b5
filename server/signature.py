"""What the server knows about one model: its artifact's signature, and its spec if any.

The manifest in the repository is the source of truth for what an artifact takes (names,
canonical shapes, dtypes). When the registry still knows the metric the model was exported
from, and its signature agrees with the manifest, the spec adds the original shapes (with a
trailing ``"*"``), the minimum axis sizes and the domain checks of ``MetricSpec.validate``.
Either way, a request's inputs are checked once, by the admission plan built from this
signature (:mod:`server.admission`), before anything is batched or run.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..metrics.registry import MetricSpec

log = logging.getLogger(__name__)


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
