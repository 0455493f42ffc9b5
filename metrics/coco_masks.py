"""COCO ``segm``: segmentations to RLE, and mask IoU on the host with ``pycocotools.mask``.

Why the mask IoU is not a graph: a COCO mask travels as a run-length encoding whose length
depends on the shape, not as a fixed-size tensor. A graph would have to decode every mask
to an ``[H, W]`` bitmap (640 x 480 x 1 byte = 300 kB per mask; 100 detections x 7 ground
truths per image is 200 MB of bitmaps and ~200 M pixel operations per image), where the RLE
intersection pycocotools computes costs O(runs), a few hundred per mask, and skips pairs
whose boxes do not overlap. So ``segm`` keeps the RLE arithmetic on the host, in the same C
code pycocotools runs (``maskApi.c``: ``rleIou`` with crowd regions as
``|d ∩ g| / |d|``), one call per (image, category) group, and only the matching, the state
and the summary are shared with boxes and keypoints. ``cvscore evaluate --server`` therefore
computes segm IoU locally and sends nothing to the server.

Conversions as ``COCO.annToRLE``: a list of polygons is rasterised at the image's height and
width and merged, an uncompressed RLE (``counts`` a list) is compressed, a compressed RLE
(``counts`` a string) is used as it is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def _mask_utils() -> Any:
    try:
        from pycocotools import mask
    except ImportError:  # pragma: no cover - a dependency
        raise ValueError("COCO segm needs pycocotools (pip install pycocotools)") from None
    return mask


def image_sizes(images: Sequence[Any], where: str) -> dict[int, tuple[int, int] | None]:
    """Image id -> (height, width), None where the file does not say."""
    out: dict[int, tuple[int, int] | None] = {}
    for im in images:
        h, w = im.get("height"), im.get("width")
        out[int(im["id"])] = (int(h), int(w)) if h is not None and w is not None else None
    return out


def to_rles(
    items: Sequence[Any], image: np.ndarray, sizes: Mapping[int, Any], where: str
) -> list[dict[str, Any]]:
    """One compressed RLE per item, from its ``segmentation`` (polygons or RLE)."""
    mask = _mask_utils()
    out: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        if not isinstance(item, Mapping) or "segmentation" not in item:
            raise ValueError(f"{where}[{i}]: missing key 'segmentation'")
        segm = item["segmentation"]
        if isinstance(segm, Mapping) and isinstance(segm.get("counts"), str | bytes):
            if "size" not in segm:
                raise ValueError(f"{where}[{i}]: an RLE needs `size` [height, width]")
            out.append(dict(segm))
            continue
        size = sizes.get(int(image[i]))
        if size is None:
            raise ValueError(
                f"{where}[{i}]: polygons and uncompressed RLE need the image's height and "
                f"width (image {int(image[i])})"
            )
        h, w = size
        try:
            if isinstance(segm, list):
                if not segm:
                    raise ValueError("no polygon")
                rle = mask.merge(mask.frPyObjects(segm, h, w))
            elif isinstance(segm, Mapping) and isinstance(segm.get("counts"), list):
                rle = mask.frPyObjects(dict(segm), h, w)
            else:
                raise ValueError("not polygons or an RLE")
        except (TypeError, ValueError, IndexError, KeyError) as exc:
            raise ValueError(f"{where}[{i}]: bad segmentation ({exc})") from None
        out.append(rle)
    return out


def areas(rles: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """``pycocotools.mask.area`` of every RLE, as float64 (pycocotools' detection area)."""
    # pycocotools 2.0.11's `area` fails on lists of 256 or more under numpy 2 (it sizes an
    # array as uint8), so it is called on chunks of 255.
    area = _mask_utils().area
    parts = [np.asarray(area(list(rles[i : i + 255])), dtype=np.float64).reshape(-1)
             for i in range(0, len(rles), 255)]  # fmt: skip
    return np.concatenate([np.zeros(0), *parts])


def mask_iou(data: Any, batch: Mapping[str, np.ndarray]) -> np.ndarray:
    """``float64[N, G]``: IoU of every paired detection with the ground truths of its group
    (``|d ∩ g| / |d|`` against a crowd region), -1 across groups, as ``coco_map``'s graph."""
    mask = _mask_utils()
    d_idx, g_idx = batch["pred_index"], batch["target_index"]
    d_group, g_group = batch["pred_group"], batch["target_group"]
    crowd = batch["target_crowd"]
    out = -np.ones((len(d_idx), len(g_idx)))
    if not len(d_idx) or not len(g_idx):
        return out
    d_order = np.argsort(d_group, kind="stable")
    g_order = np.argsort(g_group, kind="stable")
    groups = np.intersect1d(d_group, g_group)
    d_lo, d_hi = (np.searchsorted(d_group[d_order], groups, side=s) for s in ("left", "right"))
    g_lo, g_hi = (np.searchsorted(g_group[g_order], groups, side=s) for s in ("left", "right"))
    dt_rle, gt_rle = data.dt_rle, data.gt_rle
    for a, b, c, e in zip(d_lo.tolist(), d_hi.tolist(), g_lo.tolist(), g_hi.tolist(), strict=True):
        rows, cols = d_order[a:b], g_order[c:e]
        ious = mask.iou(
            [dt_rle[j] for j in d_idx[rows].tolist()],
            [gt_rle[j] for j in g_idx[cols].tolist()],
            crowd[cols].astype(np.uint8).tolist(),
        )
        out[np.ix_(rows, cols)] = np.asarray(ious).reshape(len(rows), len(cols))
    return out
