"""The ONNX rewrite of exporters/invariance.py: same values, and no dependence on the batch."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from cvscore.exporters.invariance import make_batch_invariant

CUTS = [(0, 1), (1, 4), (3, 10), (5, 37), (2, 35), (36, 37)]


def _session(node: onnx.NodeProto, rank: int, inits=(), dtype=TensorProto.FLOAT, out_rank=None):
    dims = ["N"] + [f"d{i}" for i in range(rank - 1)]
    out_dims = dims[: rank if out_rank is None else out_rank]
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", dtype, dims)],
        [helper.make_tensor_value_info("y", dtype, out_dims)],
        initializer=list(inits),
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    rewritten = make_batch_invariant(model)
    assert node.op_type not in {n.op_type for n in rewritten.graph.node} or node.op_type in (
        "ReduceSum",  # the padded sum is itself a ReduceSum
    )
    return ort.InferenceSession(rewritten.SerializeToString(), providers=["CPUExecutionProvider"])


def _assert_rows_invariant(session: ort.InferenceSession, x: np.ndarray) -> np.ndarray:
    full = session.run(None, {"x": x})[0]
    for a, b in CUTS:
        part = session.run(None, {"x": np.ascontiguousarray(x[a:b])})[0]
        np.testing.assert_array_equal(part, full[a:b], err_msg=f"rows [{a}:{b}]")
    return full


def _axes(values: list[int]) -> onnx.TensorProto:
    return helper.make_tensor("axes", TensorProto.INT64, [len(values)], values)


@pytest.mark.parametrize("op", ["ReduceSum", "ReduceMean", "ReduceL2"])
@pytest.mark.parametrize("keepdims", [0, 1])
@pytest.mark.parametrize("shape", [(37, 30), (37, 31), (37, 3, 17), (37, 1), (37, 257)])
def test_trailing_sums_keep_their_value_and_do_not_depend_on_the_batch(op, keepdims, shape):
    rank = len(shape)
    node = helper.make_node(op, ["x", "axes"], ["y"], keepdims=keepdims)
    session = _session(node, rank, [_axes(list(range(1, rank)))], out_rank=rank if keepdims else 1)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    got = _assert_rows_invariant(session, x)
    flat = x.astype(np.float64).reshape(shape[0], -1)
    want = {
        "ReduceSum": flat.sum(1),
        "ReduceMean": flat.mean(1),
        "ReduceL2": np.sqrt((flat**2).sum(1)),
    }[op]
    if keepdims:
        want = want.reshape((shape[0],) + (1,) * (rank - 1))
    assert got.shape == want.shape
    # float32 summation error: a few ulps of the sum of magnitudes (of squares, for L2)
    scale = np.abs(flat).sum(1) if op != "ReduceL2" else np.sqrt((flat**2).sum(1))
    if op == "ReduceMean":
        scale = scale / flat.shape[1]
    err = np.abs(got.reshape(shape[0]) - want.reshape(shape[0]))
    assert (err <= 4 * 2**-23 * scale + 1e-30).all(), (err / scale).max()
    empty = session.run(None, {"x": np.zeros((0, *shape[1:]), np.float32)})[0]
    assert empty.shape == (0, *want.shape[1:])


def test_a_sum_over_a_leading_or_middle_axis_is_left_alone():
    node = helper.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=0)
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])],
        initializer=[_axes([1])],
    )
    model = make_batch_invariant(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    )
    assert [n.op_type for n in model.graph.node] == ["ReduceSum"]


def test_log_is_the_same_function_and_does_not_depend_on_the_batch():
    session = _session(helper.make_node("Log", ["x"], ["y"]), 2)
    rng = np.random.default_rng(1)
    x = np.exp(rng.uniform(-80, 80, (37, 29))).astype(np.float32)
    x[0, :6] = [0.0, 1.0, np.inf, np.nan, -1.0, np.float32(1e-45)]
    got = _assert_rows_invariant(session, x)
    with np.errstate(divide="ignore", invalid="ignore"):
        want = np.log(x.astype(np.float64))
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    finite = np.isfinite(want)
    assert (
        got[~finite & ~np.isnan(want)] == want[~finite & ~np.isnan(want)]
    ).all()  # log 0, log inf
    np.testing.assert_allclose(got[finite], want[finite], rtol=2e-7, atol=1e-30)


def test_atan_matches_float64_across_its_range_and_does_not_depend_on_the_batch():
    session = _session(helper.make_node("Atan", ["x"], ["y"]), 2)
    rng = np.random.default_rng(2)
    magnitude = np.exp(rng.uniform(-40, 40, (37, 29)))
    x = (magnitude * rng.choice([-1.0, 1.0], magnitude.shape)).astype(np.float32)
    x[0, :9] = [0.0, -0.0, np.inf, -np.inf, np.nan, 0.41421357, 2.4142137, 1.0, -1.0]
    got = _assert_rows_invariant(session, x)
    want = np.arctan(x.astype(np.float64))
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    ok = ~np.isnan(want)
    # Cephes' atanf: within a few float32 ulps of the float64 value everywhere
    np.testing.assert_allclose(got[ok], want[ok], rtol=4e-7, atol=1e-38)
    assert got[0, 2] == np.float32(np.pi / 2) and got[0, 3] == -np.float32(np.pi / 2)


def test_integer_sums_and_float64_graphs_are_handled():
    node = helper.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=0)
    session = _session(node, 2, [_axes([1])], dtype=TensorProto.INT64, out_rank=1)
    x = np.arange(37 * 5, dtype=np.int64).reshape(37, 5)
    np.testing.assert_array_equal(session.run(None, {"x": x})[0], x.sum(1))
    node = helper.make_node("ReduceMean", ["x", "axes"], ["y"], keepdims=0)
    session = _session(node, 2, [_axes([1])], dtype=TensorProto.DOUBLE, out_rank=1)
    y = np.random.default_rng(3).standard_normal((37, 30))
    got = _assert_rows_invariant(session, y)
    np.testing.assert_allclose(got, y.mean(1), rtol=1e-14)
