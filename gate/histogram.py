"""A bootstrap histogram as a PNG, drawn with Pillow in a few milliseconds.

A gate draws one per figure with a ``confidence`` check. matplotlib took 0.1-0.3 s a figure
here (more than the whole resampling of an example gate), so these small, fixed-layout plots
are drawn directly: bars of the resampled values, the interval as a band, the thresholds and
zero as vertical lines, axis ticks and a legend. PNG output carries no timestamp, so reruns
are byte-identical.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

WIDTH, HEIGHT = 850, 400
LEFT, RIGHT, TOP, BOTTOM = 64, 600, 36, 340  # the plot area
BAR, BAND, AXIS, GRID, ZERO = (
    (31, 119, 180),
    (214, 230, 244),
    (40, 40, 40),
    (225, 225, 225),
    (127, 127, 127),
)
LINES = [(214, 39, 40), (148, 103, 189), (140, 86, 75), (227, 119, 194), (188, 189, 34)]


def _ticks(low: float, high: float, n: int = 5) -> list[float]:
    step = (high - low) / (n - 1)
    return [low + i * step for i in range(n)]


def draw(
    path: Path,
    title: str,
    values: np.ndarray,
    interval: tuple[float, float, float],
    thresholds: Sequence[tuple[str, float]],
    xlabel: str,
    zero: bool,
) -> None:
    """Write the histogram of ``values`` with ``interval`` (low, high, level) shaded."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    lo, hi, level = interval
    marks = [t for _, t in thresholds] + ([0.0] if zero else [])
    bounds = [float(m) for m in (*marks, lo, hi) if np.isfinite(m)]
    if v.size:
        bounds += [float(v.min()), float(v.max())]
    left, right = min(bounds, default=0.0), max(bounds, default=1.0)
    if right <= left:
        left, right = left - 0.5, right + 0.5
    pad = 0.03 * (right - left)
    left, right = left - pad, right + pad
    counts, edges = np.histogram(v, bins=40, range=(left, right))
    top = max(1, int(counts.max()))

    def x(value: float) -> int:
        return round(LEFT + (value - left) / (right - left) * (RIGHT - LEFT))

    def y(count: float) -> int:
        return round(BOTTOM - count / (top * 1.05) * (BOTTOM - TOP))

    image = Image.new("RGB", (WIDTH, HEIGHT), "white")
    pen = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    for t in _ticks(0, top):  # grid and y ticks
        pen.line([(LEFT, y(t)), (RIGHT, y(t))], fill=GRID)
        pen.text((LEFT - 6, y(t)), f"{t:.0f}", fill=AXIS, font=font, anchor="rm")
    if np.isfinite(lo) and np.isfinite(hi):
        pen.rectangle([x(lo), TOP, max(x(lo), x(hi)), BOTTOM], fill=BAND)
    for count, a, b in zip(counts, edges[:-1], edges[1:], strict=False):
        if count:
            pen.rectangle([x(a), y(count), max(x(a), x(b) - 1), BOTTOM], fill=BAR)
    legend: list[tuple[tuple[int, int, int], str, bool]] = [
        (BAR, "resamples", False),
        (BAND, f"{level * 100:g}% interval [{lo:.4g}, {hi:.4g}]", False),
    ]
    if zero:
        pen.line([(x(0.0), TOP), (x(0.0), BOTTOM)], fill=ZERO, width=1)
        legend.append((ZERO, "no change", True))
    for i, (label, value) in enumerate(thresholds):
        colour = LINES[i % len(LINES)]
        for start in range(TOP, BOTTOM, 8):  # dotted
            pen.line([(x(value), start), (x(value), min(start + 4, BOTTOM))], fill=colour, width=2)
        legend.append((colour, f"threshold: {label}", True))
    pen.rectangle([LEFT, TOP, RIGHT, BOTTOM], outline=AXIS)
    for t in _ticks(left, right):  # x ticks
        pen.line([(x(t), BOTTOM), (x(t), BOTTOM + 4)], fill=AXIS)
        pen.text((x(t), BOTTOM + 8), f"{t:.4g}", fill=AXIS, font=font, anchor="mt")
    pen.text(((LEFT + RIGHT) // 2, BOTTOM + 30), xlabel, fill=AXIS, font=font, anchor="mt")
    pen.text(((LEFT + RIGHT) // 2, TOP - 14), title, fill=AXIS, font=font, anchor="mm")
    pen.text((8, TOP - 14), "resamples", fill=AXIS, font=font, anchor="lm")
    for i, (colour, label, line) in enumerate(legend):
        row = TOP + 8 + 18 * i
        if line:
            pen.line([(RIGHT + 14, row), (RIGHT + 34, row)], fill=colour, width=2)
        else:
            pen.rectangle([RIGHT + 14, row - 5, RIGHT + 34, row + 5], fill=colour)
        pen.text((RIGHT + 40, row), label, fill=AXIS, font=font, anchor="lm")
    image.save(path, format="PNG", optimize=False)
