"""Freezing one metric module into each artifact format.

Each writer takes the eager module, example inputs in canonical form (see
``MetricSpec.canonical``) and the spec, and writes one file. Every symbolic axis of the
spec becomes a dynamic axis of the artifact; axes with the same name share one dimension.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import Tensor, nn

from ..metrics.registry import MetricSpec
from .invariance import make_batch_invariant

FORMATS = {
    "torchscript": "model.pt",
    "onnx": "model.onnx",
    "torch_export": "model.pt2",
}
ONNX_OPSET = 18


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence the exporters' deprecation warnings and progress chatter."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(io.StringIO()),
        ):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def dynamic_shapes(spec: MetricSpec) -> dict[str, dict[int, torch.export.Dim]]:
    """One ``torch.export.Dim`` per symbolic axis name, shared across inputs."""
    dims: dict[str, torch.export.Dim] = {}
    out: dict[str, dict[int, torch.export.Dim]] = {}
    for tensor in spec.inputs:
        axes: dict[int, torch.export.Dim] = {}
        for i, axis in enumerate(tensor.canonical_shape):
            if isinstance(axis, int):
                continue
            if axis not in dims:
                low = spec.min_sizes.get(axis, 0)
                dims[axis] = torch.export.Dim(axis, min=low)
            axes[i] = dims[axis]
        out[tensor.name] = axes
    return out


def script(module: nn.Module) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.script is deprecated; it still works
        return torch.jit.script(module)


def write_torchscript(module: nn.Module, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(script(module), str(path))


def export_program(
    module: nn.Module, example: Mapping[str, Tensor], spec: MetricSpec
) -> torch.export.ExportedProgram:
    """The torch.export program, with every symbolic axis dynamic.

    Both the ``.pt2`` artifact and the ONNX graph are made from this one program: tracing
    is most of an export's time, so it is done once per metric.
    """
    with quiet():
        return torch.export.export(
            module, args=(), kwargs=dict(example), dynamic_shapes=dynamic_shapes(spec)
        )


def write_torch_export(program: torch.export.ExportedProgram, path: Path) -> None:
    with quiet():
        torch.export.save(program, str(path))


@functools.cache
def _onnx_registry(opset: int) -> Any:
    """torch.onnx's table of ATen -> ONNX functions, built once per process.

    ``torch.onnx.export`` rebuilds it on every call (about 1.5 s of CPU: it parses the
    source of every onnxscript function), which was most of a small metric's export.
    """
    from torch.onnx._internal.exporter import _registration

    return _registration.ONNXRegistry.from_torchlib(opset_version=opset)


def _onnx_program(program: torch.export.ExportedProgram, spec: MetricSpec) -> Any:
    """The ONNX program of ``program``, translated with the one cached registry.

    This is what ``torch.onnx.export(program, dynamo=True)`` does for an ExportedProgram,
    less the rebuilt registry; with a torch whose private exporter module moved, it falls
    back to the public call (slower, same graph).
    """
    try:
        from torch.onnx._internal.exporter import _core

        registry = _onnx_registry(ONNX_OPSET)
    except (ImportError, AttributeError):  # pragma: no cover - another torch
        return torch.onnx.export(
            program,
            (),
            input_names=spec.input_names(),
            output_names=[o.name for o in spec.outputs],
            opset_version=ONNX_OPSET,
            dynamo=True,
            verbose=False,
        )
    return _core.export(
        program,
        registry=registry,
        input_names=spec.input_names(),
        output_names=[o.name for o in spec.outputs],
        opset_version=ONNX_OPSET,
        verbose=False,
    )


def write_onnx(program: torch.export.ExportedProgram, spec: MetricSpec, path: Path) -> None:
    with quiet():
        proto = _onnx_program(program, spec).model_proto
    # ONNX Runtime's sums and Log / Atan give a row other bits in another batch: rewrite them
    onnx.save(make_batch_invariant(proto), str(path))


def write_all(
    formats: Sequence[str],
    module: nn.Module,
    example: Mapping[str, Tensor],
    spec: MetricSpec,
    paths: Mapping[str, Path],
) -> None:
    """Write each requested format to ``paths[format]``."""
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ValueError(f"Expected formats from {sorted(FORMATS)}, got {unknown}")
    program = None
    for fmt in formats:
        if fmt == "torchscript":
            write_torchscript(module, paths[fmt])
            continue
        if program is None:
            program = export_program(module, example, spec)
        if fmt == "onnx":
            write_onnx(program, spec, paths[fmt])
        else:
            write_torch_export(program, paths[fmt])
