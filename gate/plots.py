"""The gate's PNG plots: COCO precision-recall curves, per-sample score distributions and
the bootstrap distributions behind the ``confidence`` checks.

Each plot overlays the baseline (dashed) when the baseline report carries the same curve
or per-sample scores, and draws the gate's thresholds: the PR legend gives each curve's AP
(with the baseline's AP and the check on it), the distributions mark every ``min`` /
``max`` threshold on a reduction of the scores. Legends sit outside the axes, so they
never cover a curve; axes carry units (PSNR in dB). matplotlib's Agg backend, no display
needed; the PNG metadata omits the software version so the files do not change with it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

_METADATA = {"Software": None}
# PR curve label -> the COCO figure that is its AP
PR_FIGURES = {"IoU=0.50:0.95": "AP", "IoU=0.50": "AP50", "IoU=0.75": "AP75"}
# what a per-sample score is, by metric (axis labels)
UNITS = {
    "psnr": "PSNR (dB)",
    "ssim": "SSIM (1 = identical)",
    "ms_ssim": "MS-SSIM (1 = identical)",
    "mean_iou": "mean IoU of the image",
    "recall_at_k": "recall of the query",
}


def unit_of(metric: str) -> str:
    return UNITS.get(metric, f"{metric} per sample")


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _ap(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def pr_curves(
    path: Path,
    title: str,
    curves: Mapping[str, Sequence[float]],
    baseline: Mapping[str, Sequence[float]] | None,
    ap: Mapping[str, float | None] | None = None,
    baseline_ap: Mapping[str, float | None] | None = None,
    thresholds: Mapping[str, str] | None = None,
) -> None:
    """``curves``: ``recall`` (101 points) plus one precision list per IoU label; ``ap``
    the AP of each label, ``thresholds`` the gate's checks on it (``"min 0.5"``)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8.5, 4.5), dpi=100)
    recall = curves["recall"]
    for i, label in enumerate(k for k in curves if k != "recall"):
        color = f"C{i}"
        text = f"{label}  AP {_ap((ap or {}).get(label))}"
        if thresholds and label in thresholds:
            text += f"  (check: {thresholds[label]})"
        ax.plot(recall, curves[label], color=color, label=text)
        if baseline and label in baseline:
            ax.plot(
                baseline["recall"],
                baseline[label],
                color=color,
                ls="--",
                lw=1,
                label=f"{label}  baseline AP {_ap((baseline_ap or {}).get(label))}",
            )
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, borderaxespad=0)
    fig.tight_layout()
    fig.savefig(path, metadata=_METADATA)
    plt.close(fig)


def distribution(
    path: Path,
    title: str,
    scores: Sequence[float],
    baseline: Sequence[float] | None,
    thresholds: Sequence[tuple[str, float]] = (),
    unit: str = "per-sample score",
) -> None:
    """Histogram of per-sample scores against the baseline's, with the gate's thresholds."""
    import numpy as np

    plt = _pyplot()
    current = np.asarray(scores, dtype=np.float64)
    current = current[np.isfinite(current)]
    base = None if baseline is None else np.asarray(baseline, dtype=np.float64)
    if base is not None:
        base = base[np.isfinite(base)]
    both = current if base is None else np.concatenate([current, base])
    fig, ax = plt.subplots(figsize=(8.5, 4), dpi=100)
    if both.size:
        lo = min([float(both.min()), *(t for _, t in thresholds)])
        hi = max([float(both.max()), *(t for _, t in thresholds)])
        bins = np.linspace(lo, hi if hi > lo else lo + 1e-6, 21)
        if base is not None and base.size:
            ax.hist(base, bins=bins, histtype="step", ls="--", color="C7", label="baseline")
            ax.axvline(float(base.mean()), color="C7", ls="--", lw=1, label="baseline mean")
        ax.hist(current, bins=bins, alpha=0.6, color="C0", label="this run")
        if current.size:
            ax.axvline(float(current.mean()), color="C0", lw=1, label="this run mean")
    for i, (label, value) in enumerate(thresholds):
        ax.axvline(value, color=f"C{3 + i}", ls=":", lw=1.5, label=f"threshold: {label}")
    ax.set(xlabel=unit, ylabel="samples", title=title)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, borderaxespad=0)
    fig.tight_layout()
    fig.savefig(path, metadata=_METADATA)
    plt.close(fig)


def bootstrap_plots(out_dir: Path, checks: Sequence[tuple[Any, Any]], boot: Any) -> list[str]:
    """One plot per figure with a ``confidence`` check: the bootstrap distribution of the
    paired change from the baseline (for ``max_drop``; else of the figure), its interval and
    the thresholds. Drawn by :mod:`gate.histogram` (milliseconds, not matplotlib's tenths of
    a second). ``checks``: (Check, CheckResult) pairs. Returns the file names."""
    from .bootstrap import change, percentile_interval
    from .histogram import draw

    by_figure: dict[str, list[Any]] = {}
    results: dict[int, Any] = {}
    for c, r in checks:
        if r.interval is not None:
            by_figure.setdefault(c.figure, []).append(c)
            results[id(c)] = r
    made = []
    for figure, group in by_figure.items():
        first = results[id(group[0])].interval
        values = boot.values(figure, first.resamples)
        drops = [c for c in group if c.kind == "max_drop"]
        lines: list[tuple[str, float]] = []
        if drops:
            base = boot.baseline_values(figure, first.resamples)
            rel = drops[0].relative
            diff = change(values, base)
            if rel:
                diff = diff / np.where(base != 0, np.abs(base), np.nan)
            values = diff
            what = "relative change" if rel else "change"
            xlabel = f"{what} from the baseline (candidate - baseline)"
            for c in drops:
                if c.relative == rel:
                    edge = -c.threshold if c.higher_is_better else c.threshold
                    lines.append((f"max_drop {c.threshold:g}", edge))
        else:
            xlabel = figure
            lines = [(f"{c.kind} {c.threshold:g}", c.threshold) for c in group]
        name = f"boot_{figure.replace('/', '_').replace('@', '_at_')}.png"
        lo, hi = percentile_interval(values, first.confidence)
        draw(
            out_dir / name,
            f"{figure}: paired bootstrap, {first.resamples} resamples ({first.verdict})",
            values,
            (lo, hi, first.confidence),
            lines,
            xlabel,
            zero=bool(drops),
        )
        made.append(name)
    return made
