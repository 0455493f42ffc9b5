"""The gate's PNG plots: COCO precision-recall curves and per-sample score distributions.

Each plot overlays the baseline (dashed) when the baseline report carries the same curve
or per-sample scores. matplotlib's Agg backend, no display needed; the PNG metadata omits
the software version so that the files do not change with it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

_METADATA = {"Software": None}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def pr_curves(
    path: Path,
    title: str,
    curves: Mapping[str, Sequence[float]],
    baseline: Mapping[str, Sequence[float]] | None,
) -> None:
    """``curves``: ``recall`` (101 points) plus one precision list per IoU label."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=100)
    recall = curves["recall"]
    for i, label in enumerate(k for k in curves if k != "recall"):
        color = f"C{i}"
        ax.plot(recall, curves[label], color=color, label=f"{label}")
        if baseline and label in baseline:
            ax.plot(
                baseline["recall"],
                baseline[label],
                color=color,
                ls="--",
                lw=1,
                label=f"{label} (baseline)",
            )
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, metadata=_METADATA)
    plt.close(fig)


def distribution(
    path: Path, title: str, scores: Sequence[float], baseline: Sequence[float] | None
) -> None:
    """Histogram of per-sample scores, against the baseline's when there is one."""
    import numpy as np

    plt = _pyplot()
    current = np.asarray(scores, dtype=np.float64)
    current = current[np.isfinite(current)]
    base = None if baseline is None else np.asarray(baseline, dtype=np.float64)
    if base is not None:
        base = base[np.isfinite(base)]
    both = current if base is None else np.concatenate([current, base])
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    if both.size:
        lo, hi = float(both.min()), float(both.max())
        bins = np.linspace(lo, hi if hi > lo else lo + 1e-6, 21)
        if base is not None and base.size:
            ax.hist(base, bins=bins, histtype="step", ls="--", color="C7", label="baseline")
        ax.hist(current, bins=bins, alpha=0.6, color="C0", label="this run")
        ax.legend(fontsize=8)
    ax.set(xlabel="per-sample score", ylabel="samples", title=title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, metadata=_METADATA)
    plt.close(fig)
