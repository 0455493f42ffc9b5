"""The admission plan remembers what a request's headers decided, and nothing more: the
payload of every request is still checked, refusals are never remembered, the memory is
bounded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cvscore.server import admission
from cvscore.server.admission import Limits, Plan
from cvscore.server.core import ScoringCore
from cvscore.server.errors import InvalidInputError, TooLargeError
from cvscore.server.tensors import WireTensor


def _wire(name: str, array: np.ndarray, data: bytes | None = None) -> WireTensor:
    payload = array.tobytes() if data is None else data
    return WireTensor(name, "float32", tuple(array.shape), payload)


@pytest.fixture(scope="module")
def plan(tiny_repo: Path) -> Plan:
    core = ScoringCore(tiny_repo, names=["l1"])
    core.load()
    return core.models["l1"].plan


def test_the_same_headers_are_admitted_once(plan: Plan) -> None:
    a = np.ones((3, 4), np.float32)
    first = plan.admit({"preds": _wire("preds", a), "target": _wire("target", a)})
    again = plan.admit({"preds": _wire("preds", a * 2), "target": _wire("target", a)})
    assert again is first and first.batch_size == 3
    other = plan.admit({"preds": _wire("preds", a[:2]), "target": _wire("target", a[:2])})
    assert other.batch_size == 2


def test_a_remembered_header_still_has_its_payload_checked(plan: Plan) -> None:
    a = np.ones((5, 4), np.float32)
    plan.admit({"preds": _wire("preds", a), "target": _wire("target", a)})
    short = _wire("target", a, data=a.tobytes()[:-4])
    with pytest.raises(InvalidInputError, match="target"):
        plan.admit({"preds": _wire("preds", a), "target": short})


def test_refusals_are_not_remembered(plan: Plan) -> None:
    a = np.ones((7, 4), np.float32)
    good = {"preds": _wire("preds", a), "target": _wire("target", a)}
    tight = Plan(plan.signature, Limits(max_request_bytes=64))
    for _ in range(2):
        with pytest.raises(TooLargeError):
            tight.admit(good)
    assert not tight._admitted
    with pytest.raises(InvalidInputError, match="missing"):
        plan.admit({"preds": _wire("preds", a)})
    with pytest.raises(InvalidInputError, match="unexpected"):
        plan.admit({**good, "extra": _wire("extra", a)})


def test_the_memory_is_bounded(plan: Plan) -> None:
    fresh = Plan(plan.signature)
    for n in range(admission.ADMITTED + 10):
        a = np.ones((n, 4), np.float32)
        fresh.admit({"preds": _wire("preds", a), "target": _wire("target", a)})
        assert len(fresh._admitted) <= admission.ADMITTED
