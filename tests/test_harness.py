"""Registry-driven harness: every metric through every runtime, against eager and float64.

Adding a metric to the registry adds it here; nothing in this file names a metric.
"""

from __future__ import annotations

import inspect
import zlib
from pathlib import Path

import pytest
import torch

from cvscore.exporters.formats import script
from cvscore.metrics import registry
from cvscore.metrics.registry import MetricSpec
from cvscore.server import runtimes

from .conftest import tol

NAMES = registry.names()
BATCH_SIZES = (0, 1, 7, 64)


def _seed(*parts: object) -> int:
    return zlib.crc32(repr(parts).encode())


def _sizes(spec: MetricSpec, n: int) -> dict[str, int]:
    """Axis sizes for a check; at N=7 every other axis differs from the export example too."""
    sizes = {**spec.example_sizes, "N": n}
    if n == 7:
        sizes = {k: (v if k == "N" else v + 2) for k, v in sizes.items()}
    return sizes


def _inputs(spec: MetricSpec, n: int, dtype: torch.dtype = torch.float32, tag: str = ""):
    gen = torch.Generator().manual_seed(_seed(spec.name, n, tag))
    inputs = spec.make_inputs(gen, _sizes(spec, n), dtype)
    spec.check_inputs(inputs)  # the sampler itself must produce valid inputs
    return inputs


def _assert_scores(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype) -> None:
    assert actual.shape == expected.shape
    torch.testing.assert_close(
        actual.to(expected.dtype), expected, equal_nan=True, check_dtype=False, **tol(dtype)
    )


@pytest.mark.parametrize("runtime", runtimes.RUNTIMES)
@pytest.mark.parametrize("n", BATCH_SIZES)
@pytest.mark.parametrize("name", NAMES)
def test_artifact_matches_eager(zoo_repo: Path, name: str, n: int, runtime: str) -> None:
    spec = registry.get(name)
    inputs = _inputs(spec, n)
    expected = spec.build()(**inputs)
    model = runtimes.load(zoo_repo, name, runtime)
    flat = {k: v.numpy() for k, v in spec.canonical(inputs).items()}
    out = model.run(flat)
    for o in spec.outputs:
        actual = torch.from_numpy(out[o.name])
        assert actual.shape[:1] == (n,), f"{name}/{runtime}: output {o.name} {actual.shape}"
    _assert_scores(torch.from_numpy(out[spec.outputs[0].name]), expected, torch.float32)


@pytest.mark.parametrize("n", (1, 7))
@pytest.mark.parametrize("name", NAMES)
def test_eager_float32_matches_float64_reference(name: str, n: int) -> None:
    spec = registry.get(name)
    inputs64 = _inputs(spec, n, torch.float64, "f64")
    inputs32 = {k: v.float() if v.is_floating_point() else v for k, v in inputs64.items()}
    module = spec.build()
    reference = module.double()(**inputs64)
    actual = spec.build()(**inputs32)
    if spec.outputs[0].dtype == "int64":  # counts: exact and integer in every dtype
        assert reference.dtype == actual.dtype == torch.int64
        assert torch.equal(actual, reference)
        return
    assert reference.dtype == torch.float64
    assert actual.dtype == torch.float32
    _assert_scores(actual, reference, torch.float32)


@pytest.mark.parametrize("name", NAMES)
def test_scripted_matches_eager(name: str) -> None:
    spec = registry.get(name)
    scripted = script(spec.build())
    for n in (1, 7):
        inputs = _inputs(spec, n, tag="script")
        _assert_scores(scripted(**inputs), spec.build()(**inputs), torch.float32)


@pytest.mark.parametrize("name", NAMES)
def test_module_equals_functional(name: str) -> None:
    spec = registry.get(name)
    inputs = _inputs(spec, 5, torch.float64, "functional")
    accepted = inspect.signature(spec.functional).parameters
    params = {k: v for k, v in spec.defaults().items() if k in accepted and v is not None}
    expected = spec.functional(**inputs, **params)
    torch.testing.assert_close(spec.build().double()(**inputs), expected, equal_nan=True)


@pytest.mark.parametrize(
    "name", [n for n in NAMES if registry.get(n).differentiable and registry.get(n).exact_gradient]
)
def test_gradcheck_float64(name: str) -> None:
    spec = registry.get(name)
    inputs = _inputs(spec, 2, torch.float64, "grad")
    keys = [k for k, v in inputs.items() if v.is_floating_point()]
    module = spec.build().double()

    def fn(*floats: torch.Tensor) -> torch.Tensor:
        return module(**{**inputs, **dict(zip(keys, floats, strict=True))})

    leaves = tuple(inputs[k].clone().requires_grad_(True) for k in keys)
    # fast mode checks the Jacobian along random directions: the same check, affordable for
    # image-sized inputs
    assert torch.autograd.gradcheck(fn, leaves, eps=1e-6, atol=1e-5, rtol=1e-4, fast_mode=True)


@pytest.mark.parametrize("name", NAMES)
def test_per_sample_scores_are_independent_of_the_batch(name: str) -> None:
    """Scoring a batch equals scoring each sample alone: what dynamic batching relies on."""
    spec = registry.get(name)
    inputs = _inputs(spec, 4, tag="split")
    module = spec.build()
    whole = module(**inputs)
    batched = {t.name for t in spec.inputs if t.batched}
    alone = torch.cat(
        [
            module(**{k: v[i : i + 1] if k in batched else v for k, v in inputs.items()})
            for i in range(4)
        ]
    )
    _assert_scores(alone, whole, torch.float32)


@pytest.mark.parametrize("name", NAMES)
def test_bad_inputs_are_rejected_with_the_input_named(name: str) -> None:
    spec = registry.get(name)
    inputs = _inputs(spec, 3, tag="bad")
    first = spec.inputs[0].name
    with pytest.raises(ValueError, match=f"`{first}`"):
        spec.check_inputs({**inputs, first: inputs[first][0]})  # batch axis dropped
    with pytest.raises(ValueError, match=first):
        spec.check_inputs({k: v for k, v in inputs.items() if k != first})
    with pytest.raises(ValueError, match="bogus"):
        spec.check_inputs({**inputs, "bogus": inputs[first]})
    if len(spec.inputs) > 1 and spec.inputs[1].batched:
        second = spec.inputs[1].name
        shorter = inputs[second][:2]
        with pytest.raises(ValueError, match=f"`{second}`"):
            spec.check_inputs({**inputs, second: shorter})
    with pytest.raises(ValueError, match=f"`{first}`.*dtype"):
        spec.check_inputs({**inputs, first: torch.ones(inputs[first].shape, dtype=torch.bool)})


def test_registry_lists_part_one_zoo() -> None:
    part_one = {
        "l1", "mse", "smooth_l1", "cross_entropy", "binary_cross_entropy", "bce_with_logits",
        "balanced_bce", "focal", "kl_div", "iou", "giou", "diou", "ciou", "unitbox",
        "soft_dice", "combo", "ssim", "psnr", "total_variation",
    }  # fmt: skip
    assert part_one <= set(NAMES)
    for spec in registry.specs():
        assert spec.inputs[0].shape[0] == "N"
        assert spec.outputs[0].shape[0] == "N"
        assert spec.paper and spec.oracle and spec.family
