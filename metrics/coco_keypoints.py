"""COCO ``keypoints`` files: the keypoint arrays, ``num_keypoints``, sigmas, detection areas.

pycocotools' rules: a ground truth with ``num_keypoints == 0`` is ignored (as a crowd
region is, but it matches only once); a detection's area and box are the extent of all its
keypoints (``COCO.loadRes``); one set of sigmas for every category.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .coco_json import boxes, column, field_of

# COCO's 17 person keypoints (pycocotools ``Params.kpt_oks_sigmas``).
COCO_SIGMAS = (
    np.array([0.26, 0.25, 0.25, 0.35, 0.35, 0.79, 0.79, 0.72, 0.72, 0.62, 0.62, 1.07, 1.07,
              0.87, 0.87, 0.89, 0.89]) / 10.0
)  # fmt: skip


def keypoints(items: Sequence[Any], where: str, k: int | None) -> np.ndarray:
    try:
        arr = np.array([it["keypoints"] for it in items], dtype=np.float64)
        shape_ok = arr.ndim == 2 and arr.shape[1] % 3 == 0
        if shape_ok and (k is None or arr.shape[1] == 3 * k) and np.isfinite(arr).all():
            return arr.reshape(len(items), -1, 3)
    except (KeyError, TypeError, ValueError):
        pass
    width = None if k is None else 3 * k
    for i, item in enumerate(items):
        value = field_of(item, "keypoints", f"{where}[{i}]")
        try:
            row = np.asarray(value, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            row = np.zeros(1)
        width = width or len(row)
        if len(row) != width or width % 3 or not np.isfinite(row).all():
            raise ValueError(
                f"{where}[{i}]: bad keypoints, expected {width or '3K'} numbers "
                "[x1, y1, v1, x2, ...], got "
                f"{len(row)}"
            )
    return np.zeros((0, (k or 0), 3))


def parse_keypoints(
    out: Any,
    anns: Sequence[Any],
    dets: Sequence[Any],
    gt_where: str,
    dt_where: str,
    cats: Sequence[Any],
    sigmas: Sequence[float] | None,
) -> None:
    if sigmas is None:
        found = {tuple(c["sigmas"]) for c in cats if isinstance(c, Mapping) and "sigmas" in c}
        if len(found) > 1:
            raise ValueError(f"{gt_where}: categories carry different `sigmas`; pass one set")
        sigmas = list(found.pop()) if found else COCO_SIGMAS.tolist()
    sig = np.asarray(sigmas, dtype=np.float64).reshape(-1)
    if not len(sig) or not np.isfinite(sig).all() or (sig <= 0).any():
        raise ValueError(f"Expected positive keypoint `sigmas`, got {list(sigmas)}")
    k = len(sig)
    out.sigmas = sig
    out.gt_keypoints = keypoints(anns, gt_where, k)
    out.dt_keypoints = keypoints(dets, dt_where, k)
    out.gt_box = boxes(anns, gt_where)
    num = column(anns, "num_keypoints", gt_where, int)
    out.gt_ignore = (num == 0).astype(np.int64)
    x, y = out.dt_keypoints[..., 0], out.dt_keypoints[..., 1]
    if len(x):  # loadRes: the keypoints' extent, over every keypoint
        out.dt_area = (x.max(1) - x.min(1)) * (y.max(1) - y.min(1))
        out.dt_box = np.stack([x.min(1), y.min(1), x.max(1) - x.min(1), y.max(1) - y.min(1)], 1)
    else:
        out.dt_area = np.zeros(0)
