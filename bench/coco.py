"""COCO box mAP benchmark: cvscore vs pycocotools vs faster-coco-eval, in one run.

Builds a seeded synthetic COCO-format set (default 5,000 images, 80 categories, about 7
ground truths and 100 detections per image, with crowd regions and all three area ranges),
times each evaluator from the in-memory dicts to the twelve statistics, checks that all
agree, prints a table and writes it to bench/results/coco-<date>.md.

    .venv/bin/python bench/coco.py [--images 5000] [--runtime onnx] [--skip-pycocotools]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime as dt
import io
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cvscore.exporters import export_metric
from cvscore.metrics import coco, registry
from cvscore.server import runtimes

RESULTS = Path(__file__).resolve().parent / "results"


def synthetic(images: int, categories: int, gts: float, dets: float, seed: int = 0):
    """Ground truth and detections: noisy copies of the ground truth plus clutter."""
    rng = np.random.default_rng(seed)
    num_gt = rng.poisson(gts, images)
    gt_img = np.repeat(np.arange(1, images + 1), num_gt)
    g = len(gt_img)
    scale = rng.choice([16.0, 60.0, 180.0], g)
    wh = rng.uniform(0.4, 1.6, (g, 2)) * scale[:, None]
    xy = rng.uniform(0, 480, (g, 2))
    gt_box = np.round(np.concatenate([xy, wh], 1), 2)
    gt_cat = rng.integers(1, categories + 1, g)
    crowd = (rng.random(g) < 0.02).astype(int)
    area = gt_box[:, 2] * gt_box[:, 3] * rng.uniform(0.5, 1.0, g)
    num_dt = rng.poisson(dets, images)
    dt_img = np.repeat(np.arange(1, images + 1), num_dt)
    d = len(dt_img)
    # 30% jittered copies of a ground truth of the same image, the rest clutter.
    starts = np.concatenate([[0], np.cumsum(num_gt)[:-1]])
    has_gt = num_gt[dt_img - 1] > 0
    copy_of = starts[dt_img - 1] + (rng.random(d) * np.maximum(num_gt[dt_img - 1], 1)).astype(int)
    is_copy = has_gt & (rng.random(d) < 0.3)
    copy_of = np.where(is_copy, copy_of, 0)
    base = gt_box[copy_of] if g else np.zeros((d, 4))
    jitter = rng.normal(0, 0.12, (d, 4)) * base[:, [2, 3, 2, 3]]
    clutter_scale = rng.choice([16.0, 60.0, 180.0], d)
    clutter = np.concatenate(
        [rng.uniform(0, 480, (d, 2)), rng.uniform(0.4, 1.6, (d, 2)) * clutter_scale[:, None]], 1
    )
    dt_box = np.where(is_copy[:, None], base + jitter, clutter)
    dt_box[:, 2:] = np.maximum(dt_box[:, 2:], 1.0)
    dt_box = np.round(dt_box, 2)
    dt_cat = np.where(is_copy, gt_cat[copy_of] if g else 1, rng.integers(1, categories + 1, d))
    score = np.round(np.where(is_copy, rng.uniform(0.3, 1.0, d), rng.uniform(0.0, 0.7, d)), 3)
    gt = {
        "images": [{"id": int(i), "width": 640, "height": 640} for i in range(1, images + 1)],
        "categories": [{"id": int(c), "name": str(c)} for c in range(1, categories + 1)],
        "annotations": [
            {
                "id": i + 1,
                "image_id": int(gt_img[i]),
                "category_id": int(gt_cat[i]),
                "bbox": gt_box[i].tolist(),
                "area": float(area[i]),
                "iscrowd": int(crowd[i]),
            }
            for i in range(g)
        ],
    }
    res = [
        {
            "image_id": int(dt_img[i]),
            "category_id": int(dt_cat[i]),
            "bbox": dt_box[i].tolist(),
            "score": float(score[i]),
        }
        for i in range(d)
    ]
    return gt, res


def run_pycocotools(gt: dict[str, Any], res: list[dict[str, Any]]) -> np.ndarray:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        ground = COCO()
        ground.dataset = gt
        ground.createIndex()
        e = COCOeval(ground, ground.loadRes(res), "bbox")
        e.evaluate()
        e.accumulate()
        e.summarize()
    return np.asarray(e.stats)


def run_faster(gt: dict[str, Any], res: list[dict[str, Any]]) -> np.ndarray:
    from faster_coco_eval import COCO, COCOeval_faster

    with contextlib.redirect_stdout(io.StringIO()):
        ground = COCO(gt)
        e = COCOeval_faster(ground, ground.loadRes(res), "bbox")
        e.evaluate()
        e.accumulate()
        e.summarize()
    return np.asarray(e.stats[:12])


def run_cvscore(gt: dict[str, Any], res: list[dict[str, Any]], run: Any) -> np.ndarray:
    agg = coco.evaluate(coco.parse_coco(gt, res), run)
    stats = agg.compute()
    return np.array([stats[n] for n in coco.STAT_NAMES])


def timed(fn: Any, *args: Any) -> tuple[np.ndarray, float]:
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--categories", type=int, default=80)
    parser.add_argument("--gts", type=float, default=7.0)
    parser.add_argument("--dets", type=float, default=100.0)
    parser.add_argument("--runtime", default="onnx", choices=runtimes.RUNTIMES)
    parser.add_argument("--skip-pycocotools", action="store_true")
    args = parser.parse_args()

    gt, res = synthetic(args.images, args.categories, args.gts, args.dets)
    print(
        f"{args.images} images, {args.categories} categories, {len(gt['annotations'])} ground "
        f"truths, {len(res)} detections"
    )
    with tempfile.TemporaryDirectory() as tmp:
        export_metric(registry.get("coco_map"), Path(tmp), formats=(args.runtime,))
        model = runtimes.load(Path(tmp), "coco_map", args.runtime)
        rows = []
        ours, ours_s = timed(run_cvscore, copy.deepcopy(gt), copy.deepcopy(res), model.run)
        rows.append((f"cvscore ({args.runtime})", ours_s, ours))
    peers: list[tuple[str, Any]] = [("faster-coco-eval 1.8", run_faster)]
    if not args.skip_pycocotools:
        peers.append(("pycocotools", run_pycocotools))
    for name, fn in peers:
        try:
            stats, seconds = timed(fn, copy.deepcopy(gt), copy.deepcopy(res))
        except ImportError:
            print(f"{name}: not installed, skipped")
            continue
        rows.append((name, seconds, stats))

    ref = next((r for r in rows if r[0] == "pycocotools"), rows[-1])
    lines = [
        f"# COCO bbox mAP benchmark, {dt.date.today().isoformat()}",
        "",
        f"Machine: {platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"numpy {np.__version__}, torch {torch.__version__}.",
        f"Data: seeded synthetic, {args.images} images, {args.categories} categories, "
        f"{len(gt['annotations'])} ground truths, {len(res)} detections. Wall time from "
        "in-memory dicts to the twelve statistics (parse, IoU, matching, accumulate).",
        "",
        f"| evaluator | seconds | vs {ref[0]} | AP | AP50 | max abs diff vs {ref[0]} |",
        "|---|---|---|---|---|---|",
    ]
    for name, seconds, stats in rows:
        diff = float(np.abs(stats - ref[2]).max())
        lines.append(
            f"| {name} | {seconds:.2f} | {ref[1] / seconds:.1f}x | {stats[0]:.4f} | "
            f"{stats[1]:.4f} | {diff:.1e} |"
        )
    table = "\n".join(lines)
    print(table)
    agree = all(np.abs(r[2] - ref[2]).max() <= 1e-6 for r in rows)
    print("all agree to 1e-6" if agree else "DISAGREEMENT above 1e-6")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"coco-{dt.date.today().isoformat()}.md"
    out.write_text(
        table + "\n\n" + ("All agree to 1e-6.\n" if agree else "Disagreement above 1e-6.\n")
    )
    print(f"written to {out}")


if __name__ == "__main__":
    main()
