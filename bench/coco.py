"""COCO benchmark, bbox / segm / keypoints: cvscore vs faster-coco-eval vs pycocotools.

Builds a seeded synthetic COCO-format set (default 5,000 images, 80 categories, about 7
ground truths and 100 detections per image, with crowd regions and all three area ranges;
for segm each box becomes an octagon polygon (ground truth) or compressed RLE (detection);
for keypoints each box a person with 17 keypoints), times each evaluator from the in-memory
dicts to the statistics (12, 12, 10), checks that all agree, prints a table and writes it
to bench/results/coco-<date>.md. faster-coco-eval comes with the `bench` extra:
``pip install -c constraints.txt -e '.[bench]'``.

    .venv/bin/python bench/coco.py [--images 5000] [--iou-types bbox segm keypoints]
        [--runtime onnx] [--skip-pycocotools]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime as dt
import io
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cvscore.exporters import export_metric
from cvscore.metrics import coco_files, registry
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


def as_segm(gt: dict[str, Any], res: list[dict[str, Any]]) -> tuple[dict, list]:
    """Octagons inscribed in every box: polygons for the ground truth (crowd regions as
    uncompressed RLE, as COCO has them), compressed RLE for the detections."""
    from pycocotools import mask as mask_utils

    def octagon(b: list[float]) -> list[float]:
        x, y, w, h = b
        t = np.linspace(0, 2 * np.pi, 9)[:-1]
        return (
            np.stack([x + w / 2 * (1 + np.cos(t)), y + h / 2 * (1 + np.sin(t))], 1).ravel().tolist()
        )

    gt = copy.deepcopy(gt)
    for a in gt["annotations"]:
        poly = octagon(a["bbox"])
        if a["iscrowd"]:
            rle = mask_utils.merge(mask_utils.frPyObjects([poly], 640, 640))
            flat = mask_utils.decode(rle).reshape(-1, order="F")
            edges = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
            a["segmentation"] = {
                "size": [640, 640],
                "counts": np.diff(np.concatenate([[0], edges])).tolist(),
            }
        else:
            a["segmentation"] = [poly]
    polys = [octagon(d["bbox"]) for d in res]
    rles = mask_utils.frPyObjects(polys, 640, 640) if polys else []
    dets = [{"image_id": d["image_id"], "category_id": d["category_id"], "score": d["score"],
             "segmentation": {"size": r["size"], "counts": r["counts"].decode()}}
            for d, r in zip(res, rles, strict=True)]  # fmt: skip
    return gt, dets


def as_keypoints(gt: dict[str, Any], res: list[dict[str, Any]], seed: int = 1):
    """17 keypoints per box at fixed relative places, a fifth unlabelled; detections the
    same places in their own box, so a jittered box gives a jittered person."""
    rng = np.random.default_rng(seed)
    places = rng.uniform(0.1, 0.9, (17, 2))

    def kps(b: list[float], vis: np.ndarray) -> list[float]:
        pts = np.asarray(b[:2]) + places * np.asarray(b[2:])
        out = np.concatenate([np.round(pts, 2), vis[:, None]], 1)
        out[vis == 0, :2] = 0
        return out.ravel().tolist()

    gt = copy.deepcopy(gt)
    for a in gt["annotations"]:
        vis = rng.choice([0, 1, 2], 17, p=[0.2, 0.3, 0.5]) * (rng.random() > 0.05)
        a["keypoints"], a["num_keypoints"] = kps(a["bbox"], vis), int((vis > 0).sum())
    ones = np.ones(17)
    dets = [{"image_id": d["image_id"], "category_id": d["category_id"], "score": d["score"],
             "keypoints": kps(d["bbox"], ones)} for d in res]  # fmt: skip
    return gt, dets


def run_pycocotools(gt: dict[str, Any], res: list[dict[str, Any]], iou_type: str) -> np.ndarray:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        ground = COCO()
        ground.dataset = gt
        ground.createIndex()
        e = COCOeval(ground, ground.loadRes(res), iou_type)
        e.evaluate()
        e.accumulate()
        e.summarize()
    return np.asarray(e.stats)


def run_faster(gt: dict[str, Any], res: list[dict[str, Any]], iou_type: str) -> np.ndarray:
    from faster_coco_eval import COCO, COCOeval_faster

    with contextlib.redirect_stdout(io.StringIO()):
        ground = COCO(gt)
        e = COCOeval_faster(ground, ground.loadRes(res), iou_type)
        e.evaluate()
        e.accumulate()
        e.summarize()
    return np.asarray(e.stats[: 10 if iou_type == "keypoints" else 12])


def run_cvscore(gt: dict[str, Any], res: list[dict[str, Any]], iou_type: str, run: Any):
    data = coco_files.parse_coco(gt, res, iou_type=iou_type)
    return np.array(list(coco_files.evaluate(data, run).compute().values()))


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
    parser.add_argument("--iou-types", nargs="+", default=["bbox", "segm", "keypoints"])
    parser.add_argument("--runtime", default="onnx", choices=runtimes.RUNTIMES)
    parser.add_argument("--skip-pycocotools", action="store_true")
    args = parser.parse_args()

    boxes_gt, boxes_res = synthetic(args.images, args.categories, args.gts, args.dets)
    lines = [
        f"# COCO benchmark, {args.images} images, {dt.date.today().isoformat()}",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} "
        f"torch threads, numpy {np.__version__}, torch {torch.__version__}.",
        f"Data: seeded synthetic, {args.images} images, {args.categories} categories, "
        f"{len(boxes_gt['annotations'])} ground truths, {len(boxes_res)} detections. Wall "
        "time from in-memory dicts to the statistics (parse, IoU / OKS, matching, accumulate, "
        f"summarize). cvscore runs its graphs in {args.runtime} (segm IoU on the host).",
        "",
        "| iou type | evaluator | seconds | vs faster-coco-eval | AP | AP50 | max abs diff vs "
        + ("faster-coco-eval" if args.skip_pycocotools else "pycocotools")
        + " |",
        "|---|---|---|---|---|---|---|",
    ]
    agree = True
    for iou_type in args.iou_types:
        if iou_type == "segm":
            gt, res = as_segm(boxes_gt, boxes_res)
        elif iou_type == "keypoints":
            gt, res = as_keypoints(boxes_gt, boxes_res)
        else:
            gt, res = boxes_gt, boxes_res
        rows: list[tuple[str, float, np.ndarray]] = []
        with tempfile.TemporaryDirectory() as tmp:
            metric = coco_files.GRAPH_METRIC[iou_type]
            run = None
            if metric is not None:
                export_metric(registry.get(metric), Path(tmp), formats=(args.runtime,))
                run = runtimes.load(Path(tmp), metric, args.runtime).run
            stats, seconds = timed(
                run_cvscore, copy.deepcopy(gt), copy.deepcopy(res), iou_type, run
            )
            rows.append((f"cvscore ({args.runtime})", seconds, stats))
        peers: list[tuple[str, Any]] = [("faster-coco-eval", run_faster)]
        if not args.skip_pycocotools:
            peers.append(("pycocotools", run_pycocotools))
        for name, fn in peers:
            try:
                stats, seconds = timed(fn, copy.deepcopy(gt), copy.deepcopy(res), iou_type)
            except ImportError:
                print(f"{name}: not installed, skipped (pip install -e '.[bench]')")
                continue
            rows.append((name, seconds, stats))
        ref = next((r for r in rows if r[0] == "pycocotools"), rows[-1])
        peer = next((r for r in rows if r[0] == "faster-coco-eval"), rows[0])
        for name, seconds, stats in rows:
            diff = float(np.abs(stats - ref[2]).max())
            agree &= diff <= 1e-12
            lines.append(
                f"| {iou_type} | {name} | {seconds:.2f} | {peer[1] / seconds:.2f}x | "
                f"{stats[0]:.4f} | {stats[1]:.4f} | {diff:.1e} |"
            )
            print(lines[-1], flush=True)
    table = "\n".join(lines)
    print(table)
    verdict = "All statistics agree to 1e-12.\n" if agree else "Disagreement above 1e-12.\n"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    verdict += f"Load average at the end of the run: {load:.1f} on {os.cpu_count()} cores.\n"
    print(verdict)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"coco-{args.images}-{dt.date.today().isoformat()}.md"
    out.write_text(table + "\n\n" + verdict)
    print(f"written to {out}")


if __name__ == "__main__":
    main()
