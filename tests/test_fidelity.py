"""Fidelity harness: every form of every metric against an independent float64 reference.

For each registered metric and each input regime (``typical``, ``extreme``, ``degenerate``;
see ``registry.REGIMES``), fresh seeded inputs are scored by eager PyTorch in float32 and
float64, by TorchScript, by ONNX Runtime and by torch.export, and each result is compared
with the metric's reference in ``tests/references`` (numpy / scipy / a reference library,
float64, computed on exactly the float32 values the artifacts see). A NaN or inf where the
reference is finite fails, and so does a finite value where it is infinite.

Adding a metric to the registry adds it here; nothing in this file names a metric.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from cvscore.metrics import registry
from cvscore.metrics.registry import REGIMES, MetricSpec
from cvscore.server import runtimes

from . import references

NAMES = registry.names()
FORMS = ("eager", "eager_float64", *runtimes.RUNTIMES)
# Batch sizes per regime: 0 and 1 always; 6 rows mix the regime's cases within one batch.
BATCH_SIZES = {"typical": (0, 1, 6), "extreme": (1, 6), "degenerate": (0, 1, 6)}

# Artifact (or eager) result vs the float64 reference, by the dtype it computes in.
REFERENCE_TOLERANCES: dict[torch.dtype, dict[str, float]] = {
    torch.float32: {"rtol": 1e-4, "atol": 1e-5},
    torch.float64: {"rtol": 1e-9, "atol": 1e-10},
}


def _seed(*parts: object) -> int:
    return zlib.crc32(repr(parts).encode())


def regime_inputs(spec: MetricSpec, n: int, regime: str) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(_seed(spec.name, n, regime))
    inputs = spec.make_inputs(gen, {"N": n}, torch.float32, regime)
    spec.check_inputs(inputs)  # every regime's sampler must produce valid inputs
    return inputs


def compare(actual: np.ndarray, expected: np.ndarray, dtype: torch.dtype, where: str) -> float:
    """Assert ``actual`` matches the reference; return the worst error relative to tolerance."""
    assert actual.shape == expected.shape, f"{where}: shape {actual.shape} != {expected.shape}"
    if expected.dtype.kind in "iub":  # counts are exact
        assert actual.dtype.kind in "iu", f"{where}: counts come back as {actual.dtype}"
        diff = actual.astype(np.int64) != expected
        assert not diff.any(), f"{where}: counts {actual[diff][:3]} != {expected[diff][:3]}"
        return 0.0
    assert not np.isnan(expected).any(), f"{where}: the reference itself is NaN"
    tol = REFERENCE_TOLERANCES[dtype]
    actual = actual.astype(np.float64)
    finite = np.isfinite(expected)
    bad_inf = ~finite & (actual != expected)
    assert not bad_inf.any(), (
        f"{where}: reference {expected[bad_inf][:3]} (infinite), got {actual[bad_inf][:3]}"
    )
    lost = finite & ~np.isfinite(actual)
    assert not lost.any(), (
        f"{where}: got {actual[lost][:3]} where the reference is finite {expected[lost][:3]}"
    )
    err = np.abs(actual - expected)[finite]
    allowed = tol["atol"] + tol["rtol"] * np.abs(expected[finite])
    if err.size == 0:
        return 0.0
    worst = int(np.argmax(err / allowed))
    ratio = float(err[worst] / allowed[worst])
    assert ratio <= 1.0, (
        f"{where}: |actual - reference| = {err[worst]:.3g} at reference "
        f"{expected[finite][worst]:.6g} (allowed {allowed[worst]:.3g})"
    )
    return ratio


class Forms:
    """Each form of one metric, loaded once per test session."""

    def __init__(self, repo: Path) -> None:
        self.repo = repo
        self._cache: dict[tuple[str, str], object] = {}

    def run(self, spec: MetricSpec, form: str, inputs: dict[str, torch.Tensor]) -> np.ndarray:
        key = (spec.name, form)
        if key not in self._cache:
            if form == "eager":
                self._cache[key] = spec.build()
            elif form == "eager_float64":
                self._cache[key] = spec.build().double()
            else:
                self._cache[key] = runtimes.load(self.repo, spec.name, form)
        model = self._cache[key]
        if form == "eager_float64":
            as64 = {k: v.double() if v.is_floating_point() else v for k, v in inputs.items()}
            return model(**as64).detach().numpy()  # type: ignore[operator]
        if form == "eager":
            return model(**inputs).detach().numpy()  # type: ignore[operator]
        flat = {k: v.numpy() for k, v in spec.canonical(inputs).items()}
        out = model.run(flat)  # type: ignore[attr-defined]
        return out[spec.outputs[0].name]


@pytest.fixture(scope="session")
def forms(zoo_repo: Path) -> Forms:
    return Forms(zoo_repo)


def test_every_metric_has_a_reference_and_every_regime() -> None:
    missing = [n for n in NAMES if n not in references.REFERENCES]
    assert not missing, f"metrics without a float64 reference: {missing}"
    for spec in registry.specs():
        absent = [r for r in REGIMES if r != "typical" and r not in spec.regimes]
        assert not absent, f"{spec.name} lacks the regimes {absent}"


@pytest.mark.parametrize("regime", REGIMES)
@pytest.mark.parametrize("name", NAMES)
def test_every_form_matches_the_float64_reference(forms: Forms, name: str, regime: str) -> None:
    spec = registry.get(name)
    if regime != "typical" and regime not in spec.regimes:
        pytest.fail(f"{name} has no {regime} sampler")
    params = spec.defaults()
    for n in BATCH_SIZES[regime]:
        inputs = regime_inputs(spec, n, regime)
        expected = references.compute(name, inputs, params)
        assert expected.shape[:1] == (n,)
        for form in FORMS:
            actual = forms.run(spec, form, inputs)
            dtype = torch.float64 if form == "eager_float64" else compute_dtype(spec)
            compare(actual, expected, dtype, f"{name}/{regime}/N={n}/{form}")


def compute_dtype(spec: MetricSpec) -> torch.dtype:
    """float64 for metrics whose contract is float64 (COCO IoU), else float32."""
    floats = [t.dtype for t in spec.inputs if t.dtype.startswith("float")]
    return torch.float64 if floats and all(d == "float64" for d in floats) else torch.float32
