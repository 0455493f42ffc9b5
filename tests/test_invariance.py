"""Batch invariance: every row of every artifact scores the same bits in any batch.

The server concatenates requests into one run and slices each one's rows back out, with
no padding (``--align 1``), so this is what keeps a request's scores independent of what it
was batched with. Checked here on the artifacts themselves, every runtime, for every metric
whose outputs all carry the batch axis: a batch of 23 rows against every row range of a
set of cuts, typical and extreme inputs. (The server-level check, requests sharing runs,
is ``tests/server/test_batching.py``.)
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from cvscore.metrics import registry
from cvscore.server import runtimes

N = 23
CUTS = [(0, 1), (1, 4), (4, 11), (11, 23), (5, 6), (7, 23), (2, 19), (22, 23)]
RUNTIMES = ("onnx", "torchscript", "torch_export")


def _splittable() -> list[str]:
    return [s.name for s in registry.specs() if all(o.batched for o in s.outputs)]


def _regimes(spec: registry.MetricSpec, seed: int):
    """(regime, canonical numpy inputs of N rows) for typical and, where it has them, extreme."""
    for regime in ("typical", "extreme"):
        if regime not in ("typical", *spec.regimes):
            continue
        generated = spec.make_inputs(torch.Generator().manual_seed(seed), {"N": N}, regime=regime)
        yield regime, {k: v.numpy() for k, v in spec.canonical(generated).items()}


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("name", _splittable())
def test_a_row_scores_the_same_bits_in_any_batch(zoo_repo: Path, name: str, runtime: str) -> None:
    spec = registry.get(name)
    batched = {t.name: t.batched for t in spec.inputs}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = runtimes.load(zoo_repo, name, runtime)
    for regime, inputs in _regimes(spec, 7):
        full = model.run(inputs)
        for a, b in CUTS:
            part = model.run({k: v[a:b] if batched[k] else v for k, v in inputs.items()})
            for key, value in full.items():
                np.testing.assert_array_equal(
                    part[key], value[a:b], err_msg=f"{name} {runtime} {regime} rows [{a}:{b}] {key}"
                )


@pytest.mark.parametrize("name", _splittable())
def test_the_inline_session_scores_the_same_bits_as_the_pooled_one(
    zoo_repo: Path, name: str
) -> None:
    """The server runs small batches on a session without a thread pool (``run_inline``) and
    large ones on the pooled session: a row must not change bits between the two."""
    spec = registry.get(name)
    batched = {t.name: t.batched for t in spec.inputs}
    model = runtimes.load(zoo_repo, name, "onnx")
    assert isinstance(model, runtimes.OnnxRuntime)
    for regime, inputs in _regimes(spec, 8):
        pooled = model.run(inputs)
        single = model.run_inline(inputs)
        for key, value in pooled.items():
            np.testing.assert_array_equal(single[key], value, err_msg=f"{name} {regime} {key}")
        for a, b in CUTS:
            part = model.run_inline({k: v[a:b] if batched[k] else v for k, v in inputs.items()})
            for key, value in pooled.items():
                np.testing.assert_array_equal(
                    part[key], value[a:b], err_msg=f"{name} inline {regime} rows [{a}:{b}] {key}"
                )
