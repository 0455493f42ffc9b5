"""``cvscore evaluate``: dataset metrics over files people already have, in-process.

    cvscore evaluate coco --gt instances.json --dt detections.json [--json OUT]
    cvscore evaluate segmentation --pred DIR --gt DIR --num-classes K [--ignore-index I]
    cvscore evaluate retrieval --embeddings E.npy --labels L.npy [--gallery G.npy
                               --gallery-labels GL.npy] [--k 1 5 10] [--metric cosine]

Each runs the metric's exported artifact (exported into the default cache repository on
first use, then reused) through ``server.runtimes`` and folds the outputs into the metric's
aggregator, so the numbers are those the server gives. Malformed input is reported as one
line naming the file and the problem.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .cli import CliError, default_repository

Runner = Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]


def add_parser(sub: Any) -> None:
    """Register ``evaluate`` and its three subcommands on the top-level subparsers."""
    p = sub.add_parser("evaluate", help="dataset metrics: COCO mAP, mean IoU, recall@k")
    kinds = p.add_subparsers(dest="dataset", required=True)

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--json", metavar="OUT", help="also write the results as JSON to OUT")
        q.add_argument("--runtime", default="onnx", choices=("onnx", "torchscript", "torch_export"))
        q.add_argument("--device", default="cpu", help="cpu, cuda or auto")
        q.add_argument("--repository", help="model repository (default: the cache)")
        q.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    q = kinds.add_parser("coco", help="COCO box mAP: the 12 COCOeval statistics")
    q.add_argument("--gt", required=True, help="COCO instances JSON (ground truth)")
    q.add_argument("--dt", required=True, help="COCO results JSON (list of detections)")
    q.add_argument(
        "--server",
        help="ADDR[,ADDR...]: evaluate on these servers (batches dealt round-robin, states "
        "merged) instead of in-process",
    )
    common(q)
    q.set_defaults(func=cmd_coco)

    q = kinds.add_parser("segmentation", help="per-class and mean IoU of PNG label maps")
    q.add_argument("--pred", required=True, help="directory of predicted label PNGs")
    q.add_argument("--gt", required=True, help="directory of ground-truth label PNGs")
    q.add_argument("--num-classes", type=int, required=True)
    q.add_argument("--ignore-index", type=int, default=255)
    common(q)
    q.set_defaults(func=cmd_segmentation)

    q = kinds.add_parser("retrieval", help="hit rate@k and recall@k of embeddings")
    q.add_argument("--embeddings", required=True, help="query embeddings .npy [N, D]")
    q.add_argument("--labels", required=True, help="query labels .npy [N]")
    q.add_argument("--gallery", help="gallery embeddings .npy [M, D] (default: leave-one-out)")
    q.add_argument("--gallery-labels", help="gallery labels .npy [M]")
    q.add_argument("--k", type=int, nargs="+", default=[1, 5, 10])
    q.add_argument("--metric", default="cosine", choices=("cosine", "euclidean"))
    q.add_argument("--batch-size", type=int, default=256)
    common(q)
    q.set_defaults(func=cmd_retrieval)


# -- shared -------------------------------------------------------------------------------
def _runner(args: argparse.Namespace, metric: str, params: Mapping[str, Any], name: str) -> Runner:
    """Export (or reuse) the artifact for ``metric`` with ``params`` and load it."""
    from ..exporters import export_metric
    from ..metrics import registry
    from ..server import runtimes

    repo = Path(args.repository) if args.repository else default_repository()
    spec = registry.get(metric)
    export_metric(spec, repo, params, formats=(args.runtime,), name=name)
    model = runtimes.load(repo, name, args.runtime, runtimes.resolve_device(args.device))
    return model.run


def _finish(args: argparse.Namespace, doc: dict[str, Any]) -> int:
    if args.json:
        try:
            Path(args.json).write_text(json.dumps(_clean(doc), indent=2) + "\n")
        except OSError as exc:
            raise CliError(f"{args.json}: cannot write ({exc.strerror})") from None
    return 0


def _clean(value: Any) -> Any:
    """JSON has no NaN: undefined figures are written as null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    return value


def _read_json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise CliError(f"{path}: no such file") from None
    except json.JSONDecodeError as exc:
        raise CliError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"{path}: cannot read ({exc})") from None


# -- coco ---------------------------------------------------------------------------------
def format_coco_stats(stats: Mapping[str, float]) -> list[str]:
    """The twelve lines ``COCOeval.summarize`` prints, in its layout."""
    from ..metrics.coco import _SUMMARY, IOU_THRESHOLDS, STAT_NAMES

    lines = []
    for name, (is_ap, iou, area, max_det) in zip(STAT_NAMES, _SUMMARY, strict=True):
        title = "Average Precision" if is_ap else "Average Recall"
        kind = "(AP)" if is_ap else "(AR)"
        iou_str = (
            f"{IOU_THRESHOLDS[0]:0.2f}:{IOU_THRESHOLDS[-1]:0.2f}" if iou is None else f"{iou:0.2f}"
        )
        lines.append(
            f" {title:<18} {kind} @[ IoU={iou_str:<9} | area={area:>6s} | "
            f"maxDets={max_det:>3d} ] = {stats[name]:0.3f}"
        )
    return lines


def cmd_coco(args: argparse.Namespace) -> int:
    from ..metrics import coco

    gt = _read_json(args.gt)
    dt = _read_json(args.dt)
    data = coco.parse_coco(gt, dt, args.gt, args.dt)
    if args.server:
        agg = _coco_on_servers(args, data)
    else:
        run = _runner(args, "coco_map", {}, "coco_map")
        agg = coco.evaluate(data, run, progress=not args.no_progress)
    stats = agg.compute()
    print("\n".join(format_coco_stats(stats)))
    return _finish(
        args,
        {
            "metric": "coco_map",
            "stats": stats,
            "per_category_ap": agg.per_category_ap(),
            "images": len(data.image_ids),
            "detections": len(data.dt_score),
        },
    )


def _coco_on_servers(args: argparse.Namespace, data: Any) -> Any:
    """Stream whole-image batches to the server(s); rebuild the merged aggregator state."""
    from ..metrics import coco
    from .client import Client, CvscoreError

    addresses = [a.strip() for a in args.server.split(",") if a.strip()]
    try:
        with Client(addresses) as client:
            result = client.evaluate(
                "coco_map",
                coco.coco_batches(data),
                runtime=args.runtime,
                progress=not args.no_progress,
                shard=len(addresses) > 1,
            )
    except CvscoreError as exc:
        raise CliError(f"server {args.server}: {exc}") from None
    return coco.CocoAggregator.from_bytes(result.aggregator_state)


# -- segmentation -------------------------------------------------------------------------
def read_label_png(path: Path) -> np.ndarray:
    """An 8- or 16-bit single-channel PNG (or a palette PNG's indices) as int64 [H, W]."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            if image.mode not in {"L", "P", "I", "I;16", "I;16B", "I;16L", "1"}:
                raise CliError(
                    f"{path}: expected a single-channel label map, got PNG mode {image.mode}"
                )
            return np.asarray(image).astype(np.int64)
    except (UnidentifiedImageError, OSError) as exc:
        raise CliError(f"{path}: not a readable image ({exc})") from None


def read_label_pair(
    pred_path: Path, gt_path: Path, num_classes: int, ignore: int
) -> tuple[np.ndarray, np.ndarray]:
    """A predicted and a ground-truth label map, checked: same shape, labels in range."""
    pred, target = read_label_png(pred_path), read_label_png(gt_path)
    if pred.shape != target.shape:
        raise CliError(
            f"{pred_path}: shape {list(pred.shape)} differs from the ground truth's "
            f"{list(target.shape)}"
        )
    k = num_classes
    bad = pred[(pred < 0) | (pred >= k)]
    if bad.size:
        raise CliError(f"{pred_path}: label {int(bad[0])} outside [0, {k - 1}]")
    bad = target[((target < 0) | (target >= k)) & (target != ignore)]
    if bad.size:
        raise CliError(f"{gt_path}: label {int(bad[0])} outside [0, {k - 1}] and not {ignore}")
    return pred, target


def cmd_segmentation(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..metrics.segmentation import SegmentationAggregator

    pred_dir, gt_dir = Path(args.pred), Path(args.gt)
    for d in (pred_dir, gt_dir):
        if not d.is_dir():
            raise CliError(f"{d}: not a directory")
    if args.num_classes < 2:
        raise CliError(f"Expected --num-classes to be at least 2, got {args.num_classes}")
    names = sorted(p.name for p in gt_dir.glob("*.png"))
    if not names:
        raise CliError(f"{gt_dir}: no .png files")
    missing = [n for n in names if not (pred_dir / n).is_file()]
    if missing:
        raise CliError(f"{pred_dir / missing[0]}: no prediction for {gt_dir / missing[0]}")
    k, ignore = args.num_classes, args.ignore_index
    params = {"num_classes": k, "ignore_index": ignore}
    run = _runner(args, "mean_iou", params, f"mean_iou-k{k}-i{ignore}".replace("-i-", "-im"))
    agg = SegmentationAggregator(**params)
    for name in tqdm(names, desc="segmentation", unit="img", disable=args.no_progress):
        pred, target = read_label_pair(pred_dir / name, gt_dir / name, k, ignore)
        agg.update(run({"preds": pred.reshape(1, -1), "target": target.reshape(1, -1)}))
    figures = agg.compute()
    rows = [(f"class {c}", _fmt(figures[f"iou_{c}"])) for c in range(k)]
    rows += [
        (name, _fmt(figures[name])) for name in ("mean_iou", "pixel_accuracy", "mean_accuracy")
    ]
    width = max(len(r[0]) for r in rows)
    print("\n".join(f"{label:<{width}}  {value}" for label, value in rows))
    return _finish(args, {"metric": "mean_iou", "images": len(names), "results": figures, **params})


def _fmt(value: float) -> str:
    return "nan (absent)" if math.isnan(value) else f"{value:0.4f}"


# -- retrieval ----------------------------------------------------------------------------
def _read_npy(path: str, what: str, ndim: int) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise CliError(f"{path}: no such file") from None
    except (ValueError, OSError) as exc:
        raise CliError(f"{path}: not a readable .npy array ({exc})") from None
    if not isinstance(array, np.ndarray) or array.ndim != ndim:
        shape = list(getattr(array, "shape", []))
        raise CliError(f"{path}: expected {what} with {ndim} axes, got shape {shape}")
    if ndim == 2 and not np.issubdtype(array.dtype, np.floating):
        raise CliError(f"{path}: expected float embeddings, got dtype {array.dtype}")
    if ndim == 2 and not np.isfinite(array).all():
        raise CliError(f"{path}: embeddings hold NaN or inf")
    if ndim == 1 and not np.issubdtype(array.dtype, np.integer):
        raise CliError(f"{path}: expected integer labels, got dtype {array.dtype}")
    return array


def cmd_retrieval(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..metrics.retrieval import RetrievalAggregator

    queries = _read_npy(args.embeddings, "embeddings [N, D]", 2).astype(np.float32)
    labels = _read_npy(args.labels, "labels [N]", 1).astype(np.int64)
    if len(labels) != len(queries):
        raise CliError(f"{args.labels}: {len(labels)} labels for {len(queries)} embeddings")
    if (args.gallery is None) != (args.gallery_labels is None):
        raise CliError("Expected --gallery and --gallery-labels together")
    if args.gallery is None:
        gallery, gallery_labels = queries, labels
        exclude = np.arange(len(queries), dtype=np.int64)  # leave-one-out
    else:
        gallery = _read_npy(args.gallery, "embeddings [M, D]", 2).astype(np.float32)
        gallery_labels = _read_npy(args.gallery_labels, "labels [M]", 1).astype(np.int64)
        if len(gallery_labels) != len(gallery):
            raise CliError(
                f"{args.gallery_labels}: {len(gallery_labels)} labels for {len(gallery)} embeddings"
            )
        if gallery.shape[1] != queries.shape[1]:
            raise CliError(
                f"{args.gallery}: dimension {gallery.shape[1]} differs from the queries' "
                f"{queries.shape[1]}"
            )
        exclude = np.full(len(queries), -1, dtype=np.int64)
    if len(gallery) == 0:
        raise CliError(f"{args.gallery or args.embeddings}: the gallery is empty")
    if any(k < 1 for k in args.k) or args.batch_size < 1:
        raise CliError(f"Expected positive --k and --batch-size, got {args.k}, {args.batch_size}")
    ks = sorted(set(args.k))
    params = {"ks": [float(k) for k in ks], "metric": args.metric}
    run = _runner(
        args, "recall_at_k", params, f"recall_at_k-{args.metric}-k{'_'.join(map(str, ks))}"
    )
    agg = RetrievalAggregator(**params)
    starts = range(0, len(queries), args.batch_size)
    for start in tqdm(starts, desc="retrieval", unit="batch", disable=args.no_progress):
        stop = start + args.batch_size
        agg.update(
            run(
                {
                    "preds": queries[start:stop],
                    "target": labels[start:stop],
                    "gallery": gallery,
                    "gallery_target": gallery_labels,
                    "exclude": exclude[start:stop],
                }
            )
        )
    figures = agg.compute()
    print(f"{'k':>6}  {'hit_rate@k':>10}  {'recall@k':>10}")
    for k in ks:
        print(f"{k:>6}  {figures[f'hit_rate@{k}']:>10.4f}  {figures[f'recall@{k}']:>10.4f}")
    print(
        f"queries {int(figures['queries'])}, without a relevant item "
        f"{int(figures['queries_without_relevant'])} (left out), "
        f"{'leave-one-out' if args.gallery is None else 'gallery ' + str(len(gallery))}",
        file=sys.stderr,
    )
    return _finish(args, {"metric": "recall_at_k", "results": figures, **params})


def main(argv: Sequence[str] | None = None) -> int:  # pragma: no cover - convenience
    from .cli import main as cli_main

    return cli_main(["evaluate", *(argv or sys.argv[1:])])
