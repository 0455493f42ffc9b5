"""The model repository: Triton's layout plus a manifest per model.

```
REPO/<name>/config.pbtxt        inference.ModelConfig text (ONNX Runtime backend)
REPO/<name>/manifest.json       spec, frozen params, signature, sha256 per file, versions
REPO/<name>/1/model.onnx        ONNX (dynamo exporter, opset 18)
REPO/<name>/1/model.pt          TorchScript
REPO/<name>/1/model.pt2         torch.export program
```

Re-exporting a model whose definition, parameters, tool versions and files are unchanged
is skipped: the manifest records all four.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
import torch

from .. import __version__
from ..metrics import registry
from ..metrics.registry import MetricSpec, TensorSpec
from ..wire import TRITON_DTYPES
from . import formats as fmt
from .naming import variant_name

log = logging.getLogger(__name__)

VERSION = "1"
MANIFEST = "manifest.json"
CONFIG = "config.pbtxt"
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def check_model_name(name: str) -> str:
    """Refuse names that could escape the repository (``..``, separators, absolute paths)."""
    if not _NAME_RE.match(name) or ".." in name:
        raise ValueError(
            f"Expected a model name of letters, digits, '_', '-', '.' (no '..'), got {name!r}"
        )
    return name


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def tool_versions() -> dict[str, Any]:
    return {
        "cvscore": __version__,
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "opset": fmt.ONNX_OPSET,
        "writers": _writers_digest(),
    }


@functools.cache
def _writers_digest() -> str:
    """sha256 of the code that writes and rewrites artifacts (formats, invariance)."""
    here = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for name in ("formats.py", "invariance.py"):
        digest.update(name.encode() + b"\0" + (here / name).read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def artifact_identity(spec: MetricSpec, params: Mapping[str, Any]) -> str:
    """The one identity of an artifact: definitions, parameters and tool versions.

    ``spec.identity`` covers every source of the metrics package, the parameters and any
    weights file; this adds the cvscore, torch, onnx and opset versions. Export, evaluate,
    gate and server all compare manifests with this function.
    """
    blob = repr((spec.identity(params), sorted(tool_versions().items()))).encode()
    return hashlib.sha256(blob).hexdigest()


def staleness(model_dir: Path, manifest: Mapping[str, Any] | None = None) -> str | None:
    """Why the artifacts in ``model_dir`` no longer match the installed definitions, or None.

    A model whose manifest names an unregistered metric or unknown parameters is stale too:
    nothing installed can rebuild it.
    """
    manifest = manifest if manifest is not None else read_manifest(model_dir)
    if manifest is None:
        return f"{model_dir / MANIFEST} is missing or unreadable"
    metric = manifest.get("metric", "")
    try:
        spec = registry.get(str(metric))
        resolved = spec.resolve_params(manifest.get("params") or {})
    except (KeyError, ValueError) as exc:
        return str(exc.args[0] if exc.args else exc)
    expected = artifact_identity(spec, resolved)
    if manifest.get("identity") != expected:
        return (
            f"built from other definitions or tool versions (identity "
            f"{str(manifest.get('identity', ''))[:12]}..., installed {expected[:12]}...)"
        )
    return None


def _dims(tensor: TensorSpec) -> list[int]:
    return [d if isinstance(d, int) else -1 for d in tensor.canonical_shape]


def onnx_dims(path: Path) -> dict[str, list[int]]:
    """Each ONNX graph input's and output's dims, -1 where the axis is dynamic."""
    graph = onnx.load(str(path), load_external_data=False).graph
    return {
        v.name: [
            d.dim_value if d.HasField("dim_value") else -1 for d in v.type.tensor_type.shape.dim
        ]
        for v in [*graph.input, *graph.output]
    }


# Triton's dynamic batcher concatenates requests on the first axis, up to this many rows; a
# request larger than max_batch_size is refused by Triton, so it is generous.
TRITON_MAX_BATCH = 1 << 16


def triton_batchable(spec: MetricSpec) -> bool:
    """Whether Triton may batch the model: every input and output carries the batch axis.

    An input without it (a shared centre matrix, COCO's ground truths) would be
    concatenated too, which changes its meaning, so such models keep ``max_batch_size: 0``.
    """
    return all(t.batched for t in (*spec.inputs, *spec.outputs))


def config_pbtxt(
    name: str, spec: MetricSpec, dims: Mapping[str, Sequence[int]] | None = None
) -> str:
    """Triton ``ModelConfig`` in text format.

    A model whose inputs and outputs all carry the batch axis gets ``max_batch_size:
    TRITON_MAX_BATCH``, dims without that axis and ``dynamic_batching { }``: per-sample
    scores make batching exact. Others keep ``max_batch_size: 0`` and explicit batch axes.
    ``dims`` (from the ONNX graph, when there is one) wins over the spec's symbolic shapes:
    a parameter can fix an axis the spec leaves symbolic (``mean_iou``'s classes).
    """
    batched = triton_batchable(spec)

    def block(kind: str, tensors: Sequence[TensorSpec]) -> str:
        items = []
        for t in tensors:
            shape = list(dims[t.name] if dims and t.name in dims else _dims(t))
            if batched:
                shape = shape[1:]
            dims_text = ", ".join(str(d) for d in shape)
            items.append(
                f'  {{\n    name: "{t.name}"\n    data_type: {TRITON_DTYPES[t.dtype]}\n'
                f"    dims: [ {dims_text} ]\n  }}"
            )
        return f"{kind} [\n" + ",\n".join(items) + "\n]\n"

    return (
        f'name: "{name}"\n'
        'backend: "onnxruntime"\n'
        f"max_batch_size: {TRITON_MAX_BATCH if batched else 0}\n"
        + block("input", spec.inputs)
        + block("output", spec.outputs)
        + ("dynamic_batching { }\n" if batched else "")
        + "version_policy: { latest: { num_versions: 1 } }\n"
        + "instance_group [ { kind: KIND_AUTO } ]\n"
    )


@dataclass(frozen=True)
class ExportResult:
    name: str
    path: Path
    skipped: bool
    seconds: float


def load_manifest(model_dir: Path) -> dict[str, Any]:
    """A model's manifest; ValueError saying what is wrong with it (no path, no traceback)."""
    path = model_dir / MANIFEST
    if not path.is_file():
        raise ValueError(f"it has no {MANIFEST}")
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise ValueError(f"its {MANIFEST} cannot be read ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise ValueError(f"its {MANIFEST} is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"its {MANIFEST} is not valid JSON ({exc.msg} at line {exc.lineno})"
        ) from None
    if not isinstance(data, dict):
        raise ValueError(f"its {MANIFEST} holds a {type(data).__name__}, not an object")
    return data


def read_manifest(model_dir: Path) -> dict[str, Any] | None:
    """A model's manifest, or None when it is missing or unreadable."""
    try:
        return load_manifest(model_dir)
    except ValueError:
        return None


def _up_to_date(
    manifest: Mapping[str, Any] | None, identity: str, wanted: Sequence[str], model_dir: Path
) -> bool:
    if manifest is None or manifest.get("identity") != identity:
        return False
    files = manifest.get("files", {})
    for f in wanted:
        entry = files.get(fmt.FORMATS[f])
        path = model_dir / VERSION / fmt.FORMATS[f]
        if entry is None or not path.is_file() or sha256_file(path) != entry["sha256"]:
            return False
    return True


def is_current(
    spec: MetricSpec,
    repo: Path,
    params: Mapping[str, Any] | None = None,
    formats: Sequence[str] = tuple(fmt.FORMATS),
    name: str | None = None,
) -> bool:
    """Whether :func:`export_metric` would skip this model: nothing to rebuild."""
    name = check_model_name(name or variant_name(spec, params))
    identity = artifact_identity(spec, spec.resolve_params(params))
    return _up_to_date(read_manifest(repo / name), identity, formats, repo / name)


def export_metric(
    spec: MetricSpec,
    repo: Path,
    params: Mapping[str, Any] | None = None,
    formats: Sequence[str] = tuple(fmt.FORMATS),
    force: bool = False,
    name: str | None = None,
) -> ExportResult:
    """Write one model's artifacts, config and manifest; skip when nothing changed.

    The model is named by :func:`~.naming.variant_name` unless ``name`` says otherwise.
    """
    start = time.perf_counter()
    name = check_model_name(name or variant_name(spec, params))
    unknown = [f for f in formats if f not in fmt.FORMATS]
    if unknown:
        raise ValueError(f"Expected formats from {sorted(fmt.FORMATS)}, got {unknown}")
    resolved = spec.resolve_params(params)
    identity = artifact_identity(spec, resolved)
    model_dir = repo / name
    manifest = read_manifest(model_dir)
    if not force and _up_to_date(manifest, identity, formats, model_dir):
        return ExportResult(name, model_dir, True, time.perf_counter() - start)

    module = spec.build(**resolved)
    gen = torch.Generator().manual_seed(0)
    example = spec.canonical(spec.make_inputs(gen))
    spec.check_inputs(spec.make_inputs(gen), resolved)  # the example itself must be valid
    version_dir = model_dir / VERSION
    version_dir.mkdir(parents=True, exist_ok=True)

    keep: dict[str, Any] = {}
    if manifest is not None and manifest.get("identity") == identity:
        keep = {
            k: v
            for k, v in manifest.get("files", {}).items()
            if k not in {fmt.FORMATS[f] for f in formats}
            and (version_dir / k).is_file()
            and sha256_file(version_dir / k) == v["sha256"]
        }
    files = dict(keep)
    targets = {f: version_dir / fmt.FORMATS[f] for f in formats}
    temps = {f: p.with_suffix(p.suffix + ".tmp") for f, p in targets.items()}
    try:
        fmt.write_all(formats, module, example, spec, temps)
    except Exception as exc:
        for tmp in temps.values():
            tmp.unlink(missing_ok=True)
        raise RuntimeError(f"exporting `{name}` failed: {exc}") from exc
    for f, target in targets.items():
        temps[f].replace(target)  # atomic: a reader never sees a half-written artifact
        files[target.name] = {"sha256": sha256_file(target), "bytes": target.stat().st_size}

    onnx_path = version_dir / fmt.FORMATS["onnx"]
    graph_dims = onnx_dims(onnx_path) if onnx_path.name in files else None
    (model_dir / CONFIG).write_text(config_pbtxt(name, spec, graph_dims))
    doc = {
        "name": name,
        "metric": spec.name,
        "family": spec.family,
        "version": int(VERSION),
        "params": resolved,
        "identity": identity,
        "higher_is_better": spec.higher_is_better,
        # "shape" is what every artifact takes; "declared_shape" is the spec's, where a
        # trailing "*" (any trailing axes) is flattened into the one axis "S"
        "inputs": [
            {
                "name": t.name,
                "shape": list(t.canonical_shape),
                "declared_shape": list(t.shape),
                "dtype": t.dtype,
            }
            for t in spec.inputs
        ],
        "outputs": [
            {"name": t.name, "shape": list(t.canonical_shape), "dtype": t.dtype}
            for t in spec.outputs
        ],
        "files": files,
        "versions": tool_versions(),
    }
    resources = {k: p for k, p in spec.required_files(resolved).items() if p}
    if resources:  # the weights file an artifact was built from, for provenance
        doc["resources"] = {
            k: {"path": str(Path(p).resolve()), "sha256": sha256_file(Path(p))}
            for k, p in resources.items()
        }
    tmp_manifest = model_dir / (MANIFEST + ".tmp")
    tmp_manifest.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    tmp_manifest.replace(model_dir / MANIFEST)
    return ExportResult(name, model_dir, False, time.perf_counter() - start)


def list_models(repo: Path) -> list[str]:
    """Model names in a repository: folders holding a manifest."""
    if not repo.is_dir():
        return []
    return sorted(p.name for p in repo.iterdir() if (p / MANIFEST).is_file())
