"""A bounded, seeded property-based fuzz of both APIs against a real server.

Property: whatever the mutation (tests/server/fuzzing.py), the status is one the mutation
allows (never INTERNAL or UNKNOWN), its message fits in 1 KB, and the server still scores a
valid request correctly. ``derandomize=True`` makes the run reproducible; ``bench/fuzz.py``
is the long version.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cvscore.server.app import BackgroundServer, ServerConfig
from cvscore.v1 import scoring_pb2_grpc as pb_grpc

from .conftest import CENTRE_SPEC, assert_serving, sample
from .fuzzing import MAX_MESSAGE, Fuzzer, Model, send

EXAMPLES = 1200  # per API: about 30 s and 15 s on two cores


def fuzz_models() -> list[Model]:
    import torch

    centres = CENTRE_SPEC.make_inputs(torch.Generator().manual_seed(0), {"N": 3})
    models = [
        Model(name, {k: v.numpy() for k, v in sample(name, seed=1, N=3).items()})
        for name in ("l1", "giou", "cross_entropy")
    ]
    models.append(
        Model("centre_distance", {k: v.numpy() for k, v in centres.items()}, outputs=("distance",))
    )
    return models


FUZZER = Fuzzer(fuzz_models())


@pytest.fixture(scope="module")
def fuzz_server(small_repo: Path) -> Iterator[BackgroundServer]:
    config = ServerConfig(small_repo, port=0, runtime="onnx,torchscript")
    with BackgroundServer(config) as running:
        yield running


@pytest.fixture(scope="module")
def channel(fuzz_server: BackgroundServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(fuzz_server.address) as ch:
        yield ch


def _check(channel: grpc.Channel, api: str, mutation: str, seed: int) -> None:
    case = FUZZER.case(api, mutation, seed)
    code, message = send(channel, case)
    assert code in case.allowed, (mutation, seed, code, message[:300])
    assert len(message.encode()) <= MAX_MESSAGE, (mutation, seed, len(message.encode()))


FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@FUZZ
@given(mutation=st.sampled_from(FUZZER.mutations("v1")), seed=st.integers(0, 2**32 - 1))
def test_fuzz_cvscore_v1(channel: grpc.Channel, mutation: str, seed: int) -> None:
    _check(channel, "v1", mutation, seed)


@FUZZ
@given(mutation=st.sampled_from(FUZZER.mutations("kserve")), seed=st.integers(0, 2**32 - 1))
def test_fuzz_kserve(channel: grpc.Channel, mutation: str, seed: int) -> None:
    _check(channel, "kserve", mutation, seed)


def test_after_the_fuzz_every_model_still_scores_correctly(channel: grpc.Channel) -> None:
    """Runs after the two fuzz tests (file order): the server is live and its numbers right."""
    assert_serving(pb_grpc.ScoringStub(channel))
    for model in FUZZER.models:
        for api in ("v1", "kserve"):
            code, message = send(channel, FUZZER.good(api, model))
            assert code == "OK", (model.name, api, message)


def test_the_oracle_refuses_what_it_should() -> None:
    """The fuzz is only as good as its oracle: no mutation may allow INTERNAL or UNKNOWN, and
    most must not allow OK (else the fuzz would check nothing)."""
    allows_ok = total = 0
    for api in ("v1", "kserve"):
        for mutation in FUZZER.mutations(api):
            for seed in range(20):
                case = FUZZER.case(api, mutation, seed)
                assert not case.allowed & {"INTERNAL", "UNKNOWN"}
                total += 1
                allows_ok += "OK" in case.allowed
    assert allows_ok < total * 0.35, (allows_ok, total)
