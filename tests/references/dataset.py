"""Float64 references for the dataset metrics' per-batch graphs.

coco_map: ``pycocotools.mask.iou`` on (x, y, w, h) boxes with the crowd flags (the library
the COCO numbers come from), -1 across (image, category) groups. coco_oks: ``computeOks``'s
loop, pair by pair. mean_iou: a confusion
matrix by ``np.bincount``. recall_at_k: brute-force ranking with a stable argsort (ties to
the lower gallery index), the excluded item removed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from . import reference


@reference("coco_map")
def coco_map(x: dict[str, np.ndarray], p: dict[str, Any]) -> np.ndarray:
    dt, gt = x["preds"], x["target"]
    n, g = len(dt), len(gt)
    if n == 0 or g == 0:
        return np.zeros((n, g))
    iou = np.asarray(mask_utils.iou(dt.tolist(), gt.tolist(), x["target_crowd"].tolist()))
    iou = iou.reshape(n, g)
    same = x["pred_group"][:, None] == x["target_group"][None, :]
    return np.where(same, iou, -1.0)


@reference("coco_oks")
def coco_oks(x: dict[str, np.ndarray], p: dict[str, Any]) -> np.ndarray:
    """pycocotools' ``COCOeval.computeOks`` inner loop, pair by pair."""
    var = (x["sigmas"] * 2) ** 2
    out = np.zeros(len(x["preds"]))
    for i, (d, g) in enumerate(zip(x["preds"], x["target"], strict=True)):
        xg, yg, vg = g[:, 0], g[:, 1], g[:, 2]
        k1 = np.count_nonzero(vg > 0)
        bx, by, bw, bh = x["target_box"][i]
        x0, x1, y0, y1 = bx - bw, bx + bw * 2, by - bh, by + bh * 2
        xd, yd = d[:, 0], d[:, 1]
        if k1 > 0:
            dx, dy = xd - xg, yd - yg
        else:
            z = np.zeros(len(var))
            dx = np.max((z, x0 - xd), axis=0) + np.max((z, xd - x1), axis=0)
            dy = np.max((z, y0 - yd), axis=0) + np.max((z, yd - y1), axis=0)
        e = (dx**2 + dy**2) / var / (x["target_area"][i] + np.spacing(1)) / 2
        if k1 > 0:
            e = e[vg > 0]
        out[i] = np.sum(np.exp(-e)) / e.shape[0]
    return out


@reference("mean_iou")
def mean_iou(x: dict[str, np.ndarray], p: dict[str, Any]) -> np.ndarray:
    k, ignore = p["num_classes"], p["ignore_index"]
    n = len(x["preds"])
    out = np.zeros((n, k, k), dtype=np.int64)
    for i in range(n):
        t = x["target"][i].ravel()
        q = x["preds"][i].ravel()
        keep = (t != ignore) & (t >= 0) & (t < k) & (q >= 0) & (q < k)
        out[i] = np.bincount(t[keep] * k + q[keep], minlength=k * k).reshape(k, k)
    return out


@reference("recall_at_k")
def recall_at_k(x: dict[str, np.ndarray], p: dict[str, Any]) -> np.ndarray:
    q, g = x["preds"], x["gallery"]
    if p["metric"] == "cosine":
        qn = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        gn = g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-12)
        sim = qn @ gn.T
    else:
        sim = -(((q[:, None, :] - g[None, :, :]) ** 2).sum(-1))
    ks = [int(k) for k in p["ks"]]
    out = np.zeros((len(q), len(ks) + 1))
    for i in range(len(q)):
        items = [j for j in range(len(g)) if j != x["exclude"][i]]
        order = sorted(items, key=lambda j: (-sim[i, j], j))  # ties to the lower index
        rel = x["gallery_target"][order] == x["target"][i]
        out[i, : len(ks)] = [rel[:k].sum() for k in ks]
        out[i, len(ks)] = rel.sum()
    return out
