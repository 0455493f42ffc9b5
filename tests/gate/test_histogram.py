"""gate/histogram.py: the bootstrap plot, on ordinary and degenerate resamples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cvscore.gate.histogram import BAND, BAR, BOTTOM, HEIGHT, LEFT, RIGHT, TOP, WIDTH, draw

NAN = float("nan")


@pytest.mark.parametrize(
    ("values", "interval"),
    [
        (np.random.default_rng(0).normal(-0.05, 0.02, 1000), (-0.09, -0.01, 0.95)),
        (np.full(100, 2.0), (2.0, 2.0, 0.95)),  # every resample equal
        (np.array([NAN, np.inf]), (NAN, NAN, 0.95)),  # nothing finite
        (np.array([]), (NAN, NAN, 0.9)),
    ],
)
def test_every_resample_set_gives_a_png_the_same_bytes_twice(
    tmp_path: Path, values: np.ndarray, interval: tuple[float, float, float]
) -> None:
    thresholds = [("max_drop 0.05", -0.05)]
    for name in ("a.png", "b.png"):
        draw(tmp_path / name, "title", values, interval, thresholds, "change", zero=True)
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    with Image.open(tmp_path / "a.png") as image:
        assert image.size == (WIDTH, HEIGHT)
        plot = image.crop((LEFT + 1, TOP + 1, RIGHT, BOTTOM))  # the legend's swatches are outside
        colours = {c for _, c in plot.getcolors(WIDTH * HEIGHT)}
    finite = np.isfinite(values)
    assert (BAR in colours) == bool(finite.any())  # bars only for finite resamples
    assert (BAND in colours) == bool(np.isfinite(interval[0]))
    assert (214, 39, 40) in colours  # the threshold line
