"""The client's automatic shared memory path: equal to the plain path, pooled, opt-out."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from cvscore.client import AsyncClient, Client
from cvscore.client.shm import THRESHOLD, is_local
from cvscore.exporters import export_many
from cvscore.server.app import BackgroundServer, ServerConfig

MiB = 1 << 20


@pytest.fixture(scope="module")
def l1_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("l1")
    export_many(["l1"], repo, formats=("onnx",), progress=False)
    return repo


@pytest.fixture(scope="module")
def served(l1_repo: Path) -> Iterator[BackgroundServer]:
    with BackgroundServer(ServerConfig(l1_repo, port=0, runtime="onnx")) as running:
        yield running


def registered(server: BackgroundServer) -> list[dict]:
    assert server.server is not None
    return server.server.plane.shm.status()


def ours() -> set[str]:
    """This process's client regions in /dev/shm."""
    return {p.name for p in Path("/dev/shm").glob(f"cvscore-{os.getpid()}-*")}


def pair(seed: int, n: int = 8, size: int = 128) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    preds = rng.random((n, 3, size, size), dtype=np.float32)  # 1.5 MiB for n=8, size 128
    return {"preds": preds, "target": rng.random(preds.shape, dtype=np.float32)}


def expected_l1(arrays: dict[str, np.ndarray]) -> np.ndarray:
    n = len(arrays["preds"])
    diff = np.abs(arrays["preds"].astype(np.float64) - arrays["target"]).reshape(n, -1)
    return diff.mean(axis=1)


def test_the_automatic_path_equals_the_plain_path(served: BackgroundServer) -> None:
    arrays = pair(seed=0)
    assert arrays["preds"].nbytes >= MiB
    with Client(served.address, shared_memory=False) as plain:
        reference = plain.score("l1", reduction="none", **arrays)
        assert registered(served) == [] and ours() == set()  # opted out: never tried
    with Client(served.address) as client:
        got = client.score("l1", reduction="none", **arrays)
        regions = registered(served)
        assert len(regions) == 1 and {r["name"] for r in regions} == ours()
        assert regions[0]["byte_size"] >= 2 * arrays["preds"].nbytes
        # reused, not re-registered, for the next call
        again = client.score("l1", reduction="none", **pair(seed=1))
        assert registered(served) == regions
    np.testing.assert_array_equal(got.scores, reference.scores)  # bit for bit
    np.testing.assert_allclose(got.scores, expected_l1(arrays), rtol=1e-5)
    np.testing.assert_allclose(again.scores, expected_l1(pair(seed=1)), rtol=1e-5)
    assert registered(served) == [] and ours() == set()  # close unregistered and removed it


def test_small_inputs_travel_as_bytes(served: BackgroundServer) -> None:
    arrays = pair(seed=2, n=2, size=16)
    with Client(served.address) as client:
        got = client.score("l1", reduction="none", **arrays)
        assert registered(served) == [] and ours() == set()
    np.testing.assert_allclose(got.scores, expected_l1(arrays), rtol=1e-5)


def test_the_threshold_is_per_input_and_inclusive(served: BackgroundServer) -> None:
    rng = np.random.default_rng(6)
    floats = THRESHOLD // 4
    under = {k: rng.random((1, floats - 1), dtype=np.float32) for k in ("preds", "target")}
    at = {k: rng.random((1, floats), dtype=np.float32) for k in ("preds", "target")}
    with Client(served.address) as client:
        got_under = client.score("l1", reduction="none", **under)
        assert registered(served) == [] and ours() == set()
        got_at = client.score("l1", reduction="none", **at)
        (region,) = registered(served)
        assert region["byte_size"] >= 2 * THRESHOLD
    np.testing.assert_allclose(got_under.scores, expected_l1(under), rtol=1e-5)
    np.testing.assert_allclose(got_at.scores, expected_l1(at), rtol=1e-5)


def test_a_larger_call_grows_the_region(served: BackgroundServer) -> None:
    with Client(served.address) as client:
        client.score("l1", **pair(seed=3))
        (first,) = registered(served)
        big = pair(seed=4, n=24)
        got = client.score("l1", reduction="none", **big)
        (second,) = registered(served)  # the small one was unregistered
        assert second["byte_size"] >= 2 * big["preds"].nbytes > first["byte_size"]
        assert ours() == {second["name"]}
    np.testing.assert_allclose(got.scores, expected_l1(big), rtol=1e-5)


def test_concurrent_calls_never_share_a_region(served: BackgroundServer) -> None:
    inputs = [pair(seed=10 + i) for i in range(6)]
    with Client(served.address) as client, ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda a: client.score("l1", reduction="none", **a), inputs))
        assert 1 <= len(registered(served)) <= 3
    for arrays, result in zip(inputs, results, strict=True):
        np.testing.assert_allclose(result.scores, expected_l1(arrays), rtol=1e-5)
    assert registered(served) == [] and ours() == set()


def test_the_async_client_takes_the_same_path(served: BackgroundServer) -> None:
    arrays = pair(seed=5)

    async def run() -> tuple[np.ndarray, int]:
        async with AsyncClient(served.address) as client:
            result = await client.score("l1", reduction="none", **arrays)
            return result.scores, len(registered(served))

    scores, count = asyncio.run(run())
    assert count == 1
    np.testing.assert_allclose(scores, expected_l1(arrays), rtol=1e-5)
    assert registered(served) == [] and ours() == set()


def test_a_server_that_cannot_see_the_region_gets_bytes(l1_repo: Path, tmp_path: Path) -> None:
    arrays = pair(seed=6)
    with BackgroundServer(ServerConfig(l1_repo, port=0, runtime="onnx")) as running:
        assert running.server is not None
        running.server.plane.shm.root = tmp_path  # as if in another container
        with Client(running.address) as client:
            with pytest.warns(RuntimeWarning, match="cannot use shared memory"):
                first = client.score("l1", reduction="none", **arrays)
            second = client.score("l1", reduction="none", **arrays)  # no second attempt
            assert registered(running) == [] and ours() == set()
    np.testing.assert_allclose(first.scores, expected_l1(arrays), rtol=1e-5)
    np.testing.assert_array_equal(second.scores, first.scores)


@pytest.mark.parametrize(
    ("addresses", "local"),
    [
        (["127.0.0.1:8001"], True),
        (["localhost:8001"], True),
        (["[::1]:8001"], True),
        (["unix:/tmp/cvscore.sock"], True),
        (["10.0.0.7:8001"], False),
        (["scoring.svc:8001"], False),
        (["dns:///scoring.svc:8001"], False),
        (["127.0.0.1:8001", "127.0.0.1:8002"], False),  # one region registry per server
    ],
)
def test_only_one_address_on_this_machine_is_local(addresses: list[str], local: bool) -> None:
    assert is_local(addresses) is local


def test_the_cli_flag_opts_out(served: BackgroundServer) -> None:
    import argparse

    from cvscore.cli.common import add_client_security, client_security, make_client

    parser = argparse.ArgumentParser()
    add_client_security(parser)
    arrays = pair(seed=7)
    for argv, uses in (([], True), (["--no-shared-memory"], False)):
        options = client_security(parser.parse_args(argv))
        assert options["shared_memory"] is uses
        with make_client(served.address, 30.0, options) as client:
            got = client.score("l1", reduction="none", **arrays)
            assert len(registered(served)) == int(uses)
        np.testing.assert_allclose(got.scores, expected_l1(arrays), rtol=1e-5)
