"""Rewrite an exported ONNX graph so that a row's outputs do not depend on its batch.

ONNX Runtime's CPU kernels give a row different bits depending on where it sits in the
batch, for two reasons (measured op by op on onnxruntime 1.2x; see ``tests/exporters``):

- Eigen-backed sums (ReduceSum, ReduceMean, ReduceL2 over the trailing axes) peel scalars
  off each row until its address is aligned to the vector width, so a row whose byte offset
  is not a multiple of 64 is summed in another order. A row of 30 floats is summed one way
  at row 0 and another at row 1.
- Eigen-backed elementwise functions (Log, Atan) run the last ``numel mod width`` elements
  through a scalar routine whose result differs from the vector one in the last bit, so
  the same element gives other bits when the batch is one row longer.

Exp, Sigmoid, Tanh, Erf, Softmax, LogSoftmax, ReduceMax, ReduceMin and the exact
arithmetic operators (Add, Mul, Div, Sqrt, Abs, ...) are position-independent already.
The rewrite:

- sums over trailing axes flatten those axes into one of length ``R``, pad it with zeros
  to a multiple of 16 (every row then starts 64-byte aligned and has no tail), and sum;
  a mean divides that sum by ``R``, and ReduceL2 is the square root of a padded sum of
  squares;
- ``Log(x)`` becomes ``ReduceLogSum`` over a new axis of length one: the same ``log(x)``,
  computed element by element with the scalar routine;
- ``Atan(x)`` becomes Cephes' ``atanf`` (range reduction to ``|x| <= tan(π/8)`` and a
  degree-9 odd polynomial, about 2e-7 relative) in Mul / Add / Div / Where.

The graph's inputs, outputs and results (to float32 rounding) are unchanged; the
batch-invariance test in ``tests/server/test_batching.py`` checks every metric at
``--align 1``.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

__all__ = ["make_batch_invariant"]

PAD_TO = 16  # floats: 64 bytes, the widest vector (AVX-512) and a cache line
SUMS = {"ReduceSum", "ReduceMean", "ReduceL2"}
# Cephes atanf: tan(3π/8), tan(π/8) and the polynomial's coefficients, highest first
ATAN_HIGH, ATAN_LOW = 2.414213562373095, 0.4142135623730950
ATAN_COEFFS = (8.05374449538e-2, -1.38776856032e-1, 1.99777106478e-1, -3.33329491539e-1)


class _Builder:
    """Fresh names, constants and nodes for one graph."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.graph = graph
        self.taken = {v for n in graph.node for v in (*n.input, *n.output)}
        self.taken |= {i.name for i in graph.initializer} | {i.name for i in graph.input}
        self.counter = itertools.count()
        self.nodes: list[onnx.NodeProto] = []
        self.constants: dict[tuple[str, bytes], str] = {}

    def name(self, hint: str) -> str:
        while True:
            candidate = f"_inv{next(self.counter)}_{hint}"
            if candidate not in self.taken:
                self.taken.add(candidate)
                return candidate

    def const(self, value: np.ndarray) -> str:
        key = (str(value.dtype), value.tobytes() + str(value.shape).encode())
        if key not in self.constants:
            name = self.name("c")
            self.graph.initializer.append(numpy_helper.from_array(value, name))
            self.constants[key] = name
        return self.constants[key]

    def op(self, op_type: str, inputs: list[str], out: str | None = None, **attrs: Any) -> str:
        out = out or self.name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], **attrs))
        return out


def _static(graph: onnx.GraphProto, name: str) -> np.ndarray | None:
    for init in graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    for node in graph.node:
        if node.op_type == "Constant" and node.output[0] == name:
            return numpy_helper.to_array(node.attribute[0].t)
    return None


FLOATS: dict[int, type] = {onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.DOUBLE: np.float64}


def _types(model: onnx.ModelProto) -> dict[str, tuple[int, type]]:
    """Each float value's rank (-1: unknown) and numpy type, from ONNX shape inference."""
    inferred = onnx.shape_inference.infer_shapes(model)
    out = {}
    for info in itertools.chain(inferred.graph.value_info, inferred.graph.input):
        t = info.type.tensor_type
        if t.elem_type in FLOATS:
            rank = len(t.shape.dim) if t.HasField("shape") else -1
            out[info.name] = (rank, FLOATS[t.elem_type])
    return out


def _padded_sum(b: _Builder, node: onnx.NodeProto, rank: int, lead: int, dtype: type) -> None:
    """``node`` (a sum over axes ``lead..rank-1``) as a padded sum of one flat axis."""
    x = node.input[0]
    keep = next((a.i for a in node.attribute if a.name == "keepdims"), 1)
    if node.op_type == "ReduceL2":
        x = b.op("Mul", [x, x])
    shape = b.op("Shape", [x])
    head = b.op("Slice", [shape, b.const(np.array([0])), b.const(np.array([lead]))])
    if rank - lead == 1:
        flat, length = x, b.op("Shape", [x], start=lead, end=rank)
    else:  # R = the product of the trailing sizes (not -1: a batch of 0 rows has no R)
        tail = b.op("Shape", [x], start=lead, end=rank)
        length = b.op("ReduceProd", [tail, b.const(np.array([0]))], keepdims=1)
        flat = b.op("Reshape", [x, b.op("Concat", [head, length], axis=0)])
    pad = b.op("Mod", [b.op("Neg", [length]), b.const(np.array([PAD_TO]))], fmod=0)
    zeros = b.const(np.zeros(lead + 1, dtype=np.int64))
    pads = b.op("Concat", [zeros, b.const(np.zeros(lead, dtype=np.int64)), pad], axis=0)
    padded = b.op("Pad", [flat, pads, b.const(np.array(0, dtype=dtype))])
    total = b.op("ReduceSum", [padded, b.const(np.array([lead]))], keepdims=0)
    if node.op_type == "ReduceMean":
        count = b.op("Cast", [b.op("Squeeze", [length])], to=_onnx_type(dtype))
        total = b.op("Div", [total, count])
    elif node.op_type == "ReduceL2":
        total = b.op("Sqrt", [total])
    if keep:
        ones = b.const(np.ones(rank - lead, dtype=np.int64))
        total = b.op("Reshape", [total, b.op("Concat", [head, ones], axis=0)])
    b.op("Identity", [total], out=node.output[0])


def _onnx_type(dtype: type) -> int:
    return onnx.TensorProto.DOUBLE if dtype is np.float64 else onnx.TensorProto.FLOAT


def _log(b: _Builder, node: onnx.NodeProto) -> None:
    axis = b.const(np.array([-1]))
    column = b.op("Unsqueeze", [node.input[0], axis])
    b.op("ReduceLogSum", [column, axis], out=node.output[0], keepdims=0)


def _atan(b: _Builder, node: onnx.NodeProto, dtype: type) -> None:
    def c(v: float) -> str:
        return b.const(np.array(v, dtype=dtype))

    x = node.input[0]
    a = b.op("Abs", [x])
    high = b.op("Greater", [a, c(ATAN_HIGH)])
    low = b.op("Greater", [a, c(ATAN_LOW)])
    # |x| > tan(3π/8): π/2 + atan(-1/|x|); > tan(π/8): π/4 + atan((|x|-1)/(|x|+1))
    inv = b.op("Neg", [b.op("Div", [c(1.0), a])])
    mid = b.op("Div", [b.op("Sub", [a, c(1.0)]), b.op("Add", [a, c(1.0)])])
    r = b.op("Where", [high, inv, b.op("Where", [low, mid, a])])
    base = b.op("Where", [high, c(np.pi / 2), b.op("Where", [low, c(np.pi / 4), c(0.0)])])
    z = b.op("Mul", [r, r])
    poly = c(ATAN_COEFFS[0])
    for k in ATAN_COEFFS[1:]:
        poly = b.op("Add", [b.op("Mul", [poly, z]), c(k)])
    p = b.op("Add", [b.op("Mul", [b.op("Mul", [poly, z]), r]), r])
    b.op("Mul", [b.op("Sign", [x]), b.op("Add", [base, p])], out=node.output[0])  # atan(-0) = +0


def make_batch_invariant(model: onnx.ModelProto) -> onnx.ModelProto:
    """Return ``model`` with its position-dependent operators rewritten (see above)."""
    graph = model.graph
    types = _types(model)
    b = _Builder(graph)
    for node in list(graph.node):
        before = len(b.nodes)
        if not node.input or node.input[0] not in types:
            b.nodes.append(node)  # integer sums are exact in any order
            continue
        rank, dtype = types[node.input[0]]
        if node.op_type in SUMS and len(node.input) >= 2 and rank >= 2:
            axes = _static(graph, node.input[1])
            if axes is not None and axes.size:
                wanted = sorted(int(a) % rank for a in np.atleast_1d(axes))
                if wanted[0] >= 1 and wanted == list(range(wanted[0], rank)):
                    _padded_sum(b, node, rank, wanted[0], dtype)
        elif node.op_type == "Log":
            _log(b, node)
        elif node.op_type == "Atan":
            _atan(b, node, dtype)
        if len(b.nodes) == before:
            b.nodes.append(node)
    del graph.node[:]
    graph.node.extend(b.nodes)
    used = {v for n in graph.node for v in n.input}
    kept = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    onnx.checker.check_model(model)
    return model
