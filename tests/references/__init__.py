"""Independent float64 references, one function per registered metric.

Each reference is written from the metric's paper (or the library convention its spec
names) in numpy / scipy / a reference library, never by calling cvscore: it takes the
metric's inputs as float64 numpy arrays in the shapes the eager module takes (int inputs
stay int64) and the resolved parameters, and returns the per-sample scores in float64
(``[N]`` or ``[N, K]``, the graph's first output).

The registry-driven fidelity harness (``tests/test_fidelity.py``) compares every artifact
with these on every input regime; ``bench/fidelity.py`` tabulates the worst error.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

Reference = Callable[[dict[str, np.ndarray], dict[str, Any]], np.ndarray]
REFERENCES: dict[str, Reference] = {}


def reference(*names: str) -> Callable[[Reference], Reference]:
    """Register ``fn`` as the reference of each metric in ``names``."""

    def wrap(fn: Reference) -> Reference:
        for name in names:
            if name in REFERENCES:
                raise ValueError(f"two references for `{name}`")
            REFERENCES[name] = fn
        return fn

    return wrap


def as_numpy(inputs: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """float64 copies of the floating inputs (the exact values the artifacts see)."""
    return {
        k: v.detach().to(torch.float64).numpy() if v.is_floating_point() else v.numpy()
        for k, v in inputs.items()
    }


def compute(name: str, inputs: Mapping[str, torch.Tensor], params: Mapping[str, Any]) -> np.ndarray:
    out = np.asarray(REFERENCES[name](as_numpy(inputs), dict(params)))
    return out.astype(np.float64) if out.dtype.kind == "f" else out


def _load() -> None:
    from . import (  # noqa: F401
        adversarial,
        boxes,
        dataset,
        embeddings,
        features,
        images,
        landmarks,
        masks,
        pixel,
    )


_load()
