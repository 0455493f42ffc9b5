"""``cvscore evaluate``: dataset metrics over files people already have.

    cvscore evaluate coco --gt instances.json --dt detections.json [--json OUT]
                          [--iou-type bbox|segm|keypoints] [--sigmas S ...] [--per-category]
    cvscore evaluate segmentation --pred DIR --gt DIR --num-classes K [--ignore-index I]
    cvscore evaluate retrieval --embeddings E.npy --labels L.npy [--gallery G.npy
                               --gallery-labels GL.npy] [--k 1 5 10] [--metric cosine]

Each runs a driver of ``cvscore.evaluate`` (the gate runs the same ones) on the metric's
exported artifact, in-process (exported into the repository on first use) or through
``--server ADDR[,ADDR...]``, and prints the figures. Malformed input is reported as one
line naming the file and the problem.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from .common import add_client_security, client_security, repository
from .errors import CliError


def add_parser(sub: Any) -> None:
    """Register ``evaluate`` and its three subcommands on the top-level subparsers."""
    p = sub.add_parser("evaluate", help="dataset metrics: COCO mAP, mean IoU, recall@k")
    kinds = p.add_subparsers(dest="dataset", required=True)

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--json", metavar="OUT", help="also write the results as JSON to OUT")
        q.add_argument("--runtime", default="onnx", choices=("onnx", "torchscript", "torch_export"))
        q.add_argument("--device", default="cpu", help="in-process: cpu, cuda or auto")
        q.add_argument("--repository", help="in-process: model repository (default: the cache)")
        q.add_argument(
            "--server",
            help="ADDR[,ADDR...]: run the graphs on these servers (calls balanced "
            "round-robin) instead of in-process",
        )
        q.add_argument("--timeout", type=float, default=60.0, help="seconds per call (--server)")
        q.add_argument("--no-progress", action="store_true", help="hide the progress bar")
        add_client_security(q)

    q = kinds.add_parser("coco", help="COCO mAP of boxes, masks or keypoints (COCOeval)")
    q.add_argument("--gt", required=True, help="COCO instances JSON (ground truth)")
    q.add_argument("--dt", required=True, help="COCO results JSON (list of detections)")
    q.add_argument(
        "--iou-type",
        default="bbox",
        choices=("bbox", "segm", "keypoints"),
        help="pycocotools' iouType (default bbox)",
    )
    q.add_argument(
        "--sigmas",
        type=float,
        nargs="+",
        help="keypoints: OKS sigma per keypoint (default: the categories' `sigmas`, else "
        "COCO's 17)",
    )
    q.add_argument(
        "--per-category", action="store_true", help="also print every statistic per category"
    )
    common(q)
    q.set_defaults(func=run_coco)

    q = kinds.add_parser("segmentation", help="per-class and mean IoU of PNG label maps")
    q.add_argument("--pred", required=True, help="directory of predicted label PNGs")
    q.add_argument("--gt", required=True, help="directory of ground-truth label PNGs")
    q.add_argument("--num-classes", type=int, required=True)
    q.add_argument("--ignore-index", type=int, default=255)
    common(q)
    q.set_defaults(func=run_segmentation)

    q = kinds.add_parser("retrieval", help="hit rate@k and recall@k of embeddings")
    q.add_argument("--embeddings", required=True, help="query embeddings .npy [N, D]")
    q.add_argument("--labels", required=True, help="query labels .npy [N]")
    q.add_argument("--gallery", help="gallery embeddings .npy [M, D] (default: leave-one-out)")
    q.add_argument("--gallery-labels", help="gallery labels .npy [M]")
    q.add_argument("--k", type=int, nargs="+", default=[1, 5, 10])
    q.add_argument("--metric", default="cosine", choices=("cosine", "euclidean"))
    q.add_argument("--batch-size", type=int, default=256)
    common(q)
    q.set_defaults(func=run_retrieval)


# -- shared -------------------------------------------------------------------------------
def backend(args: argparse.Namespace) -> Any:
    from ..evaluate.backends import InProcess, Remote

    progress = not args.no_progress
    if args.server:
        return Remote(args.server, args.runtime, progress, args.timeout, client_security(args))
    from ..server.runtimes import resolve_device

    return InProcess(args.runtime, repository(args), resolve_device(args.device), progress)


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


def _fmt(value: float) -> str:
    return "nan (absent)" if math.isnan(value) else f"{value:0.4f}"


# -- coco ---------------------------------------------------------------------------------
def format_coco_stats(stats: dict[str, float], iou_type: str = "bbox") -> list[str]:
    """The lines ``COCOeval.summarize`` prints, in its layout."""
    from ..metrics.coco_eval import IOU_THRESHOLDS, coco_params

    lines = []
    for name, is_ap, iou, area, max_det in coco_params(iou_type).summary:
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


def format_per_category(rows: list[dict[str, Any]], iou_type: str = "bbox") -> list[str]:
    """A per-category table (detectron2 / mmdet style): AP columns in percent, ``nan``
    where a category has no ground truth."""
    from ..metrics.coco_eval import coco_params

    names = [n for n, is_ap, *_ in coco_params(iou_type).summary if is_ap]
    width = max([len("category"), *(len(str(r["name"])) for r in rows)])
    head = f"| {'category':<{width}} | " + " | ".join(f"{n:>9}" for n in names) + " |"
    rule = f"|{'-' * (width + 2)}|" + "|".join("-" * 11 for _ in names) + "|"
    out = [head, rule]
    for row in rows:
        cells = [f"{100 * row[n]:9.3f}" if row[n] >= 0 else f"{'nan':>9}" for n in names]
        out.append(f"| {row['name']!s:<{width}} | " + " | ".join(cells) + " |")
    return out


def run_coco(args: argparse.Namespace) -> int:
    from ..evaluate import drivers

    with_backend = backend(args)
    try:
        result = drivers.coco(args.gt, args.dt, with_backend, args.iou_type, args.sigmas)
    finally:
        with_backend.close()
    print("\n".join(format_coco_stats(result.figures, args.iou_type)))
    if args.per_category:
        print()
        print("\n".join(format_per_category(result.extra["per_category"], args.iou_type)))
    return _finish(
        args,
        {
            "metric": result.metric,
            "model": result.artifact.get("model"),
            "stats": result.figures,
            **result.extra,
        },
    )


# -- segmentation -------------------------------------------------------------------------
def run_segmentation(args: argparse.Namespace) -> int:
    from ..evaluate import drivers

    if args.num_classes < 2:
        raise CliError(f"Expected --num-classes to be at least 2, got {args.num_classes}")
    params = {"num_classes": args.num_classes, "ignore_index": args.ignore_index}
    with_backend = backend(args)
    try:
        result = drivers.segmentation(Path(args.pred), Path(args.gt), params, with_backend)
    finally:
        with_backend.close()
    figures = result.figures
    rows = [(f"class {c}", _fmt(figures[f"iou_{c}"])) for c in range(args.num_classes)]
    rows += [(n, _fmt(figures[n])) for n in ("mean_iou", "pixel_accuracy", "mean_accuracy")]
    width = max(len(r[0]) for r in rows)
    print("\n".join(f"{label:<{width}}  {value}" for label, value in rows))
    doc = {"metric": "mean_iou", "model": result.artifact.get("model"), **result.extra}
    return _finish(args, {**doc, "results": figures, **params})


# -- retrieval ----------------------------------------------------------------------------
def run_retrieval(args: argparse.Namespace) -> int:
    from ..evaluate import drivers, readers

    data = readers.read_retrieval(args.embeddings, args.labels, args.gallery, args.gallery_labels)
    if any(k < 1 for k in args.k) or args.batch_size < 1:
        raise CliError(f"Expected positive --k and --batch-size, got {args.k}, {args.batch_size}")
    ks = sorted(set(args.k))
    params = {"ks": [float(k) for k in ks], "metric": args.metric}
    with_backend = backend(args)
    try:
        result = drivers.retrieval(data, params, with_backend, args.batch_size)
    finally:
        with_backend.close()
    figures = result.figures
    print(f"{'k':>6}  {'hit_rate@k':>10}  {'recall@k':>10}")
    for k in ks:
        print(f"{k:>6}  {figures[f'hit_rate@{k}']:>10.4f}  {figures[f'recall@{k}']:>10.4f}")
    print(
        f"queries {int(figures['queries'])}, without a relevant item "
        f"{int(figures['queries_without_relevant'])} (left out), "
        f"{'leave-one-out' if args.gallery is None else 'gallery ' + str(len(data.gallery))}",
        file=sys.stderr,
    )
    doc = {"metric": "recall_at_k", "model": result.artifact.get("model")}
    return _finish(args, {**doc, "results": figures, **params})
