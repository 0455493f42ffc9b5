"""Bad requests get the right status and a message naming the input, expected vs received;
the server goes on serving after every one of them."""

from __future__ import annotations

import logging
from typing import Any

import grpc
import numpy as np
import pytest

from cvscore.server import errors
from cvscore.server.status import to_status
from cvscore.v1 import scoring_pb2 as pb
from cvscore.v1 import scoring_pb2_grpc as pb_grpc

from .conftest import assert_serving, rpc_error, score_request, tensor

BOXES = np.array([[0, 0, 2, 2], [1, 1, 3, 4], [0, 0, 1, 1]], np.float32)


def _boxes(**overrides: Any) -> dict[str, Any]:
    return {"preds": BOXES, "target": BOXES + 0.5, **overrides}


def _raw(name: str, dtype: int, shape: list[int], data: bytes) -> pb.Tensor:
    return pb.Tensor(name=name, dtype=dtype, shape=shape, data=data)


INVALID = {
    "wrong dtype": (
        score_request("giou", _boxes(preds=BOXES.astype(np.int64))),
        "Expected `preds` to have dtype float32, got int64",
    ),
    "wrong rank": (
        score_request("giou", _boxes(preds=BOXES[:, 0])),
        "Expected `preds` to have shape [N, 4], got [3] (rank 1)",
    ),
    "wrong fixed axis": (
        score_request("giou", _boxes(preds=np.zeros((3, 5), np.float32))),
        "Expected `preds` to have shape [N, 4], got [3, 5]",
    ),
    "mismatched batch sizes": (
        score_request("giou", _boxes(target=BOXES[:2])),
        "Expected axis N of `target` to equal axis N of `preds` (3), got 2",
    ),
    "trailing axes differ": (
        score_request(
            "l1",
            {"preds": np.zeros((2, 3, 4), np.float32), "target": np.zeros((2, 4, 3), np.float32)},
        ),
        "Expected the trailing axes of `target` to match those of `preds` ([3, 4]), got [4, 3]",
    ),
    "byte length": (
        pb.ScoreRequest(
            metric="giou",
            inputs=[
                _raw("preds", pb.DATA_TYPE_FLOAT32, [3, 4], BOXES.tobytes()[:-4]),
                tensor("target", BOXES),
            ],
        ),
        "Expected `preds` to carry 48 bytes (shape [3, 4] x 4 bytes of float32), got 44",
    ),
    "negative axis": (
        pb.ScoreRequest(
            metric="giou",
            inputs=[_raw("preds", pb.DATA_TYPE_FLOAT32, [-1, 4], b""), tensor("target", BOXES)],
        ),
        "Expected every axis of `preds` to be between 0 and 2147483647, got shape [-1, 4]",
    ),
    "absurd axis": (
        pb.ScoreRequest(
            metric="giou",
            inputs=[
                _raw("preds", pb.DATA_TYPE_FLOAT32, [2**40, 4], b"x" * 16),
                tensor("target", BOXES),
            ],
        ),
        "Expected every axis of `preds` to be between 0 and 2147483647, got shape [1099511627776, 4]",
    ),
    "absurd axis of an empty tensor": (
        pb.ScoreRequest(
            metric="giou",
            inputs=[_raw("preds", pb.DATA_TYPE_FLOAT32, [0, 2**62], b""), tensor("target", BOXES)],
        ),
        "Expected every axis of `preds` to be between 0 and 2147483647, got shape [0, 4611686018427387904]",
    ),
    "too many axes": (
        pb.ScoreRequest(
            metric="giou",
            inputs=[
                _raw("preds", pb.DATA_TYPE_FLOAT32, [1] * 17, b"x" * 4),
                tensor("target", BOXES),
            ],
        ),
        "Expected `preds` to have at most 16 axes, got 17",
    ),
    "unspecified dtype": (
        pb.ScoreRequest(
            metric="giou",
            inputs=[
                _raw("preds", pb.DATA_TYPE_UNSPECIFIED, [3, 4], BOXES.tobytes()),
                tensor("target", BOXES),
            ],
        ),
        "Expected `preds` to have a dtype in ['bool', 'float16', 'float32', 'float64', 'int32', "
        "'int64', 'uint8'], got DATA_TYPE_UNSPECIFIED",
    ),
    "missing input": (
        score_request("giou", {"preds": BOXES}),
        "Metric `giou` expects inputs ['preds', 'target'], got ['preds']: missing ['target']",
    ),
    "extra input": (
        score_request("giou", _boxes(weight=BOXES)),
        "Metric `giou` expects inputs ['preds', 'target'], got ['preds', 'target', 'weight']: "
        "unexpected ['weight']",
    ),
    "duplicate input": (
        pb.ScoreRequest(metric="giou", inputs=[tensor("preds", BOXES), tensor("preds", BOXES)]),
        "Input `preds` appears more than once",
    ),
    "domain check (labels in range)": (
        score_request(
            "cross_entropy",
            {"preds": np.zeros((2, 3, 4), np.float32), "target": np.array([[0, 1, 2, 7]] * 2)},
        ),
        "Expected `target` to hold class indices in [0, 2] or -100, got 7",
    ),
    "domain check (box corners)": (
        score_request("giou", _boxes(preds=BOXES[:, [2, 3, 0, 1]])),
        "Expected `preds` boxes as (x1, y1, x2, y2) with x2 >= x1 and y2 >= y1, "
        "got [2.0, 2.0, 0.0, 0.0] at index 0",
    ),
    "unknown runtime": (
        score_request("giou", _boxes(), runtime=42),
        "Expected `runtime` to be one of ['auto', 'onnx', 'torch_export', 'torchscript'], got 42",
    ),
    "unknown reduction": (
        score_request("giou", _boxes(), reduction=42),
        "Expected `reduction` to be one of ['mean', 'none', 'sum'], got 42",
    ),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_invalid_input_is_invalid_argument(stub: pb_grpc.ScoringStub, case: str) -> None:
    request, message = INVALID[case]
    error = rpc_error(lambda: stub.Score(request, timeout=30))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == message
    assert_serving(stub)


def test_unknown_metric_is_not_found(stub: pb_grpc.ScoringStub) -> None:
    error = rpc_error(lambda: stub.Score(score_request("nope", {"preds": BOXES}), timeout=30))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details().startswith("Unknown metric `nope`; known metrics: ")
    assert_serving(stub)


def test_a_runtime_that_is_not_loaded_is_failed_precondition(small_server) -> None:
    server = small_server(runtime="onnx")
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.ScoringStub(channel)
        request = score_request("giou", _boxes(), runtime=pb.RUNTIME_TORCHSCRIPT)
        error = rpc_error(lambda: stub.Score(request, timeout=30))
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert error.details() == (
            "Model `giou` has no `torchscript` runtime on this server; available: ['onnx']"
        )
        assert_serving(stub)


def test_unknown_failures_are_internal_with_a_generic_message(
    small_server, caplog: pytest.LogCaptureFixture
) -> None:
    server = small_server()

    def broken(inputs: Any) -> Any:
        raise RuntimeError("secret detail: /srv/models/giou is corrupt")

    batcher = server.core.models["giou"].batchers["onnx"]
    batcher._run_fn = batcher._run_inline = broken  # large runs and runs on the loop
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.ScoringStub(channel)
        with caplog.at_level(logging.ERROR, logger="cvscore.server.status"):
            error = rpc_error(lambda: stub.Score(score_request("giou", _boxes()), timeout=30))
        assert error.code() == grpc.StatusCode.INTERNAL
        assert error.details().startswith("Internal error (incident ")
        assert error.details().endswith("); see the server log")
        assert "secret" not in error.details()
        incident = error.details().split("incident ")[1].split(")")[0]
        logged = [r for r in caplog.records if incident in r.getMessage()]
        assert logged and "secret detail" in str(logged[0].exc_info[1])
        assert_serving(stub)  # other models are unaffected


def test_message_size_limit(small_server) -> None:
    server = small_server(max_message_mb=1)
    big = np.zeros((64, 128, 64), np.float32)  # 2 MiB per input
    with grpc.insecure_channel(
        server.address, options=[("grpc.max_send_message_length", 64 << 20)]
    ) as channel:
        stub = pb_grpc.ScoringStub(channel)
        error = rpc_error(lambda: stub.Score(score_request("l1", {"preds": big, "target": big})))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "larger than max" in error.details()
        assert_serving(stub)


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (errors.NotFoundError("m"), grpc.StatusCode.NOT_FOUND),
        (errors.InvalidInputError("m"), grpc.StatusCode.INVALID_ARGUMENT),
        (errors.RuntimeUnavailableError("m"), grpc.StatusCode.FAILED_PRECONDITION),
        (errors.QueueFullError("m"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (errors.DeadlineExceededError("m"), grpc.StatusCode.DEADLINE_EXCEEDED),
        (errors.NotReadyError("m"), grpc.StatusCode.UNAVAILABLE),
    ],
)
def test_the_status_mapping(exc: errors.ScoringError, code: grpc.StatusCode) -> None:
    assert to_status(exc) == (code, "m")


def test_the_status_mapping_hides_unknown_errors(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="cvscore.server.status"):
        code, message = to_status(KeyError("internal table"))
    assert code == grpc.StatusCode.INTERNAL
    assert "internal table" not in message
    assert "internal table" in str(caplog.records[-1].exc_info[1])
    assert message.split("incident ")[1].split(")")[0] in caplog.records[-1].getMessage()
