"""Seeded COCO segm and keypoints fixtures, and pycocotools' statistics on them.

Both have crowd regions, images without ground truth, images without detections, a
category with detections only, one with ground truth only and one with nothing at all.
"""

from __future__ import annotations

import contextlib
import copy
import io
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval


def _images(rng: np.random.Generator, n: int, h: int, w: int) -> list[dict[str, Any]]:
    ids = rng.permutation(np.arange(1, n + 1) * 5)
    return [{"id": int(i), "height": h, "width": w} for i in ids]


def _cats(k: int) -> list[dict[str, Any]]:
    return [{"id": c, "name": f"thing{c}"} for c in range(1, k + 2)]  # k + 1: nothing at all


def _polygon(rng: np.random.Generator, cx: float, cy: float, r: float) -> list[float]:
    angles = np.sort(rng.uniform(0, 2 * np.pi, int(rng.integers(5, 12))))
    radius = r * rng.uniform(0.5, 1.0, len(angles))
    pts = np.stack([cx + radius * np.cos(angles), cy + radius * np.sin(angles)], 1)
    return [round(float(v), 2) for v in pts.reshape(-1)]


def _score(rng: np.random.Generator, high: bool) -> float:
    """Copies of a ground truth score higher than clutter; a fifth tie on 0.5 or 0.3."""
    if rng.random() < 0.2:
        return float(rng.choice([0.5, 0.3]))
    return round(float(rng.uniform(0.3, 1.0) if high else rng.uniform(0.0, 0.7)), 3)


def uncompressed(rle: dict[str, Any]) -> dict[str, Any]:
    """The uncompressed RLE (run lengths, column-major) of a compressed one."""
    flat = mask_utils.decode(rle).reshape(-1, order="F")
    change = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    counts = np.diff(np.concatenate([[0], change]))
    return {"size": list(rle["size"]), "counts": counts.tolist()}


def segm_fixture(seed: int, images: int = 24, categories: int = 3, h: int = 200, w: int = 240):
    rng = np.random.default_rng(seed)
    imgs = _images(rng, images, h, w)
    only_dt, only_gt = categories, categories - 1
    anns, res = [], []
    for k, im in enumerate(imgs):
        ng = 0 if k % 6 == 1 else int(rng.integers(0, 6))
        nd = 0 if k % 5 == 3 else int(rng.integers(0, 14))
        shapes = []
        for _ in range(ng):
            cat = int(rng.choice([c for c in range(1, categories + 1) if c != only_dt]))
            r = float(rng.choice([4.0, 12.0, 60.0]) * rng.uniform(0.8, 1.3))
            cx, cy = rng.uniform(0, w), rng.uniform(0, h)
            poly = _polygon(rng, cx, cy, r)
            rle = mask_utils.merge(mask_utils.frPyObjects([poly], h, w))
            crowd = int(rng.random() < 0.15)
            kind = rng.random()
            if crowd or kind < 0.3:
                segm: Any = uncompressed(rle)  # COCO's crowd regions are uncompressed RLE
            elif kind < 0.45:
                segm = {"size": [h, w], "counts": rle["counts"].decode()}
            else:
                segm = [poly]
            area = float(mask_utils.area(rle)) * float(rng.uniform(0.8, 1.2))
            anns.append({"id": len(anns) + 1, "image_id": im["id"], "category_id": cat,
                         "segmentation": segm, "area": area, "iscrowd": crowd,
                         "bbox": [float(v) for v in mask_utils.toBbox(rle)]})  # fmt: skip
            shapes.append((poly, r, cat))
        for _ in range(nd):
            if shapes and rng.random() < 0.7:
                poly, r, cat = shapes[int(rng.integers(len(shapes)))]
                jitter = r * float(rng.choice([0.02, 0.08, 0.2]))
                poly = [round(v + float(rng.normal(0, jitter)), 2) for v in poly]
                high = True
                if rng.random() < 0.2:
                    cat = int(rng.integers(1, categories + 1))
            else:
                r = float(rng.choice([4.0, 12.0, 60.0]))
                cx, cy, cat = rng.uniform(0, w), rng.uniform(0, h), int(rng.integers(1, 4))
                poly, high = _polygon(rng, cx, cy, r), False
            cat = only_dt if cat == only_gt else cat
            rle = mask_utils.merge(mask_utils.frPyObjects([poly], h, w))
            score = _score(rng, high)
            res.append({"image_id": im["id"], "category_id": cat, "score": score,
                        "segmentation": {"size": [h, w], "counts": rle["counts"].decode()}})  # fmt: skip
    return {"images": imgs, "annotations": anns, "categories": _cats(categories)}, res


def keypoints_fixture(seed: int, images: int = 30, categories: int = 3, k: int = 17):
    rng = np.random.default_rng(seed)
    imgs = _images(rng, images, 480, 640)
    only_dt, only_gt = categories, categories - 1
    anns, res = [], []
    for j, im in enumerate(imgs):
        ng = 0 if j % 6 == 1 else int(rng.integers(0, 7))
        nd = 0 if j % 5 == 3 else int(rng.integers(0, 16))
        people = []
        for _ in range(ng):
            cat = int(rng.choice([c for c in range(1, categories + 1) if c != only_dt]))
            size = float(rng.choice([20.0, 60.0, 160.0]) * rng.uniform(0.7, 1.3))
            x, y = rng.uniform(0, 500, 2)
            bw, bh = size * rng.uniform(0.5, 1.0), size
            pts = np.stack([x + rng.uniform(0, bw, k), y + rng.uniform(0, bh, k)], 1)
            vis = rng.integers(0, 3, k) * (rng.random() > 0.15)  # some with none labelled
            kps = np.concatenate([np.round(pts, 1), vis[:, None]], 1)
            kps[vis == 0, :2] = 0
            crowd = int(rng.random() < 0.1)
            anns.append({"id": len(anns) + 1, "image_id": im["id"], "category_id": cat,
                         "keypoints": [float(v) for v in kps.reshape(-1)],
                         "num_keypoints": int((vis > 0).sum()), "iscrowd": crowd,
                         "bbox": [round(float(v), 2) for v in (x, y, bw, bh)],
                         "area": float(bw * bh * rng.uniform(0.5, 0.9))})  # fmt: skip
            people.append((pts, size, cat))
        for _ in range(nd):
            if people and rng.random() < 0.7:
                pts, size, cat = people[int(rng.integers(len(people)))]
                pts = pts + rng.normal(0, size * rng.choice([0.005, 0.02, 0.06]), pts.shape)
                high = True
                if rng.random() < 0.2:
                    cat = int(rng.integers(1, categories + 1))
            else:
                size = float(rng.choice([20.0, 60.0, 160.0]))
                pts = rng.uniform(0, size, (k, 2)) + rng.uniform(0, 500, 2)
                cat, high = int(rng.integers(1, categories + 1)), False
            cat = only_dt if cat == only_gt else cat
            kps = np.concatenate([np.round(pts, 2), np.ones((k, 1))], 1)
            score = _score(rng, high)
            res.append({"image_id": im["id"], "category_id": cat, "score": score,
                        "keypoints": [float(v) for v in kps.reshape(-1)]})  # fmt: skip
    return {"images": imgs, "annotations": anns, "categories": _cats(categories)}, res


def pycocotools_eval(
    gt: dict[str, Any], dt: list[dict[str, Any]], iou_type: str, sigmas: Any = None
) -> COCOeval:
    with contextlib.redirect_stdout(io.StringIO()):
        ground = COCO()
        ground.dataset = copy.deepcopy(gt)
        ground.createIndex()
        evaluator = COCOeval(ground, ground.loadRes(copy.deepcopy(dt)), iou_type)
        if sigmas is not None:
            evaluator.params.kpt_oks_sigmas = np.asarray(sigmas)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator
