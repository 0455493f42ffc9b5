"""Gate files: parsed, checked against the schema (``schema.py``), resolved into a config.

``cvscore gate``: may this model ship? A quality gate for CI.

    cvscore gate GATE.toml [--server ADDR] [--baseline REPORT.json] [--out DIR]
                           [--runtime eager|torchscript|onnx] [--repository DIR] [--quiet]

A gate file (TOML) names datasets in the formats people have, the metrics to compute on
each, and checks on the resulting figures. Paths are relative to the gate file::

    [gate]
    name = "detector-v2"
    runtime = "onnx"            # eager | torchscript | onnx (default onnx)
    digits = 5                  # significant digits figures are rounded to (default 5)
    baseline = "baseline.json"  # a previous report.json, for max_drop checks

    [datasets.boxes]            # kind: coco | segmentation | images | embeddings
    kind = "coco"
    gt = "data/instances.json"  # COCO instances JSON
    dt = "data/detections.json" # COCO results JSON
    [datasets.boxes.metrics.coco_map]

    [datasets.masks]
    kind = "segmentation"
    gt = "data/seg/gt"          # folders of PNG label maps, same file names
    pred = "data/seg/pred"
    [datasets.masks.metrics.mean_iou]
    num_classes = 4             # the metric's parameters, as in `cvscore metrics`

    [datasets.pairs]
    kind = "images"
    target = "data/target"      # a folder of PNGs, or one .npy [N, C, H, W]
    pred = "data/pred"
    [datasets.pairs.metrics.psnr]
    reduce = ["mean", "min"]    # per-sample metrics: mean | median | min | max | std

    [datasets.emb]
    kind = "embeddings"
    embeddings = "data/emb.npy" # [N, D]; optional gallery / gallery_labels
    labels = "data/labels.npy"  # [N] (leave-one-out retrieval without a gallery)
    [datasets.emb.metrics.recall_at_k]
    ks = [1.0, 5.0]

    [[checks]]
    figure = "boxes/coco_map/AP"      # dataset/metric/figure
    min = 0.5                          # and/or max
    max_drop = 0.02                    # against the baseline, in the worse direction
    drop = "absolute"                  # or "relative" (a fraction of the baseline)

Every threshold is one check (one JUnit testcase). Exit codes: 0 every check passed, 1 a
check failed, 2 the gate could not be evaluated (bad configuration, unreachable server,
unreadable data). Configuration problems are all reported together, each with its line.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .checks import Check, parse_checks
from .report import DEFAULT_DIGITS
from .schema import (
    DATASET_COMMON,
    DATASET_METRICS,
    DATASETS,
    GATE,
    KEYPOINT_METRIC,
    REDUCE,
    TOP,
    ConfigError,
    Lines,
    Problem,
    Problems,
)


@dataclass
class MetricConfig:
    dataset: str
    metric: str
    params: dict[str, Any]  # resolved: every parameter of the metric
    reduce: tuple[str, ...] = ()  # per-sample metrics only

    @property
    def key(self) -> str:
        return f"{self.dataset}/{self.metric}"


@dataclass
class DatasetConfig:
    name: str
    kind: str
    files: dict[str, Path]
    metrics: list[MetricConfig]
    iou_type: str = "bbox"  # coco only


@dataclass
class GateConfig:
    path: Path
    name: str
    runtime: str
    digits: int
    batch_size: int
    datasets: list[DatasetConfig]
    checks: list[Check]
    baseline_path: Path | None = None
    baseline: dict[str, Any] | None = None
    seed: int = 0  # the bootstrap's
    resamples: int = 1000  # for every figure's interval in the report (0: none)
    confidence: float = 0.95

    def variants(self) -> list[tuple[str, dict[str, Any]]]:
        """Every (metric, params) the gate runs, once each, in gate-file order."""
        seen: dict[str, tuple[str, dict[str, Any]]] = {}
        for ds in self.datasets:
            for m in ds.metrics:
                seen.setdefault(
                    json.dumps([m.metric, m.params], sort_keys=True), (m.metric, m.params)
                )
        return list(seen.values())


def expected_figures(m: MetricConfig) -> list[str]:
    """The figure names a metric yields, known before it runs."""
    if m.metric in ("coco_map", KEYPOINT_METRIC):
        from ..metrics.coco_eval import PARAMS

        return list(PARAMS["keypoints" if m.metric == KEYPOINT_METRIC else "bbox"].stat_names)
    if m.metric == "mean_iou":
        k = int(m.params["num_classes"])
        return [*(f"iou_{c}" for c in range(k)), "mean_iou", "pixel_accuracy", "mean_accuracy"]
    if m.metric == "recall_at_k":
        ks = sorted({int(k) for k in m.params["ks"]})
        return [
            "queries",
            "queries_without_relevant",
            *(f"hit_rate@{k}" for k in ks),
            *(f"recall@{k}" for k in ks),
        ]
    return list(m.reduce)


def figure_range(metric: str, figure: str) -> tuple[float, float] | None:
    """Where a figure can lie, when that is known (to refuse thresholds that never pass)."""
    if metric in ("coco_map", KEYPOINT_METRIC):
        return (-1.0, 1.0)  # -1: undefined (no ground truth), as pycocotools
    if metric in {"mean_iou", "recall_at_k"} and not figure.startswith("queries"):
        return (0.0, 1.0)
    if metric in {"ssim", "ms_ssim"} and figure != "std":
        return (-1.0, 1.0)
    return None


def _check_param(default: Any, value: Any) -> str | None:
    """None when ``value`` fits the parameter's type, else what was expected."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if isinstance(default, bool):
        return None if isinstance(value, bool) else "a boolean"
    if isinstance(default, int):
        return None if isinstance(value, int) and not isinstance(value, bool) else "an integer"
    if isinstance(default, float):
        return None if number else "a number"
    if isinstance(default, str):
        return None if isinstance(value, str) else "a string"
    ok = isinstance(value, list) and all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in value
    )
    return None if ok else "a list of numbers"


def read_gate(path: Path) -> tuple[str, dict[str, Any]]:
    """The text and the parsed TOML of a gate file (ConfigError when it is neither)."""
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(source, [Problem(source, None, "", "no such gate file")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(source, [Problem(source, None, "", f"cannot read ({exc})")]) from None
    try:
        return text, tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line = getattr(exc, "lineno", None)
        problem = Problem(source, line, "", f"not valid TOML ({exc})")
        raise ConfigError(source, [problem]) from None


def load_gate(
    path: str | Path,
    runtime: str | None = None,
    baseline: str | Path | None = None,
    skip_regressions: bool = False,
) -> GateConfig:
    """Parse and check a gate file; every problem is reported at once (ConfigError)."""
    path = Path(path)
    text, doc = read_gate(path)
    problems = Problems(str(path), Lines(text))
    base_dir = path.resolve().parent
    top = problems.table((), doc, TOP)
    gate = problems.table(("gate",), top.get("gate", {}), GATE)
    name = gate.get("name", path.stem)
    chosen_runtime = runtime or gate.get("runtime", "onnx")
    if runtime is not None and (problem := GATE["runtime"].problem(runtime)) is not None:
        problems.add((), f"--runtime: {problem}")
    digits = gate.get("digits", DEFAULT_DIGITS)
    batch_size = gate.get("batch_size", 16)
    datasets = _datasets(problems, top.get("datasets"), base_dir)
    known: dict[str, tuple[str, tuple[float, float] | None, bool]] = {}
    for d in datasets:
        for m in d.metrics:
            hib = _higher_is_better(m.metric)
            for fig in expected_figures(m):
                known[f"{m.key}/{fig}"] = (m.metric, figure_range(m.metric, fig), hib)
    baseline_path, baseline_doc = _baseline(problems, gate, base_dir, baseline)
    if skip_regressions:
        baseline_path, baseline_doc = None, None
    checks = parse_checks(
        problems, top.get("checks"), known, baseline_path, baseline_doc, skip_regressions,
        _evidence_keys(baseline_path, baseline_doc),
    )  # fmt: skip
    problems.raise_if_any()
    return GateConfig(
        path,
        name,
        str(chosen_runtime),
        digits,
        batch_size,
        datasets,
        checks,
        baseline_path,
        baseline_doc,
        seed=int(gate.get("seed", 0)),
        resamples=int(gate.get("resamples", 1000)),
        confidence=float(gate.get("confidence", 0.95)),
    )


def _evidence_keys(path: Path | None, doc: dict[str, Any] | None) -> dict[str, Any]:
    """The metric keys a baseline's evidence covers (none when its file is missing)."""
    from .evidence import evidence_path

    found = None if path is None or doc is None else evidence_path(path, doc)
    if found is None or not found.is_file():
        return {}
    return dict(doc["evidence"].get("metrics", {})) if doc else {}


def _datasets(problems: Problems, raw: Any, base_dir: Path) -> list[DatasetConfig]:
    from ..metrics import registry

    if raw is None:  # missing or not a table: the schema has said so
        return []
    if not raw:
        problems.add(("datasets",), "expected at least one [datasets.NAME] table")
        return []
    datasets: list[DatasetConfig] = []
    for ds_name, ds in raw.items():
        where: tuple[Any, ...] = ("datasets", ds_name)
        if not isinstance(ds, dict):
            problems.add(where, f"expected a table, got {ds!r}")
            continue
        if "/" in ds_name:
            problems.add(where, "a dataset name cannot contain '/'")
        kind = ds.get("kind")
        if kind not in DATASETS:
            problems.add((*where, "kind"), DATASET_COMMON["kind"].problem(kind) or "")
            continue
        fields = {**DATASET_COMMON, **DATASETS[kind]}
        good = problems.table(where, ds, fields, what=f" for kind {kind}")
        files: dict[str, Path] = {}
        for key, field in DATASETS[kind].items():
            if key not in good or field.type != "path":
                continue
            full = base_dir / good[key]
            what = field.doc
            if not full.exists():
                noun = "directory" if what == "dir" else "file"
                problems.add((*where, key), f"{full}: no such {noun}")
            elif what == "dir" and not full.is_dir():
                problems.add((*where, key), f"{full}: not a directory")
            elif what == "file" and not full.is_file():
                problems.add((*where, key), f"{full}: not a file")
            files[key] = full
        if kind == "embeddings" and ("gallery" in ds) != ("gallery_labels" in ds):
            problems.add(where, "expected `gallery` and `gallery_labels` together")
        raw_metrics = good.get("metrics", {})
        if "metrics" in good and not raw_metrics:
            problems.add(where, f"expected at least one [datasets.{ds_name}.metrics.METRIC] table")
        metrics: list[MetricConfig] = []
        for metric, params in raw_metrics.items():
            mwhere = (*where, "metrics", metric)
            if not isinstance(params, dict):
                problems.add(mwhere, "expected a table of the metric's parameters")
                continue
            try:
                spec = registry.get(metric)
            except KeyError as exc:
                problems.add(mwhere, str(exc.args[0]))
                continue
            if kind in DATASET_METRICS:
                wanted = DATASET_METRICS[kind]
                if kind == "coco" and good.get("iou_type") == "keypoints":
                    wanted = KEYPOINT_METRIC
                if metric != wanted:
                    what = f"a {kind} dataset" + (
                        f" with iou_type {good['iou_type']!r}" if "iou_type" in good else ""
                    )
                    problems.add(mwhere, f"{what} takes metric {wanted}, not {metric}")
                    continue
            elif spec.aggregator is not None or spec.input_names() != ["preds", "target"]:
                problems.add(
                    mwhere,
                    f"an images dataset takes per-sample metrics of (preds, target); "
                    f"{metric} is not one",
                )
                continue
            config = _metric(problems, mwhere, ds_name, kind, spec, dict(params))
            if config is not None:
                metrics.append(config)
        iou_type = str(good.get("iou_type", "bbox"))
        datasets.append(DatasetConfig(ds_name, kind, files, metrics, iou_type))
    return datasets


def _metric(
    problems: Problems, where: tuple[Any, ...], dataset: str, kind: str, spec: Any, params: dict
) -> MetricConfig | None:
    """One metric of a dataset, its parameters checked and resolved (None: unusable)."""
    reduce: tuple[str, ...] = ()
    if kind == "images":
        raw_reduce = params.pop("reduce", ["mean"])
        problem = REDUCE.problem(raw_reduce)
        if problem is not None:
            problems.add((*where, "reduce"), problem)
            raw_reduce = ["mean"]
        reduce = tuple(dict.fromkeys([raw_reduce] if isinstance(raw_reduce, str) else raw_reduce))
    defaults = spec.defaults()
    ok = True
    for key, value in params.items():
        if key not in defaults:
            extra = ", reduce" if kind == "images" else ""
            expected = ", ".join(sorted(defaults)) + extra
            problems.add((*where, key), f"unknown parameter for {spec.name} (expected {expected})")
            ok = False
        elif (want := _check_param(defaults[key], value)) is not None:
            problems.add((*where, key), f"expected {want}, got {value!r}")
            ok = False
    if not ok:  # keep the metric with its defaults, so checks on it are still checked
        return MetricConfig(dataset, spec.name, spec.defaults(), reduce)
    resolved = spec.resolve_params(params)
    if spec.name == "mean_iou" and resolved["num_classes"] < 2:
        problems.add((*where, "num_classes"), "expected at least 2 classes")
        return None
    if spec.name == "recall_at_k" and (
        not resolved["ks"] or any(k < 1 or k != int(k) for k in resolved["ks"])
    ):
        problems.add((*where, "ks"), f"expected positive whole numbers, got {resolved['ks']}")
        return None
    return MetricConfig(dataset, spec.name, resolved, reduce)


def _baseline(
    problems: Problems,
    gate: dict[str, Any],
    base_dir: Path,
    override: str | Path | None,
) -> tuple[Path | None, dict[str, Any] | None]:
    if override is not None:
        path = Path(override)
    elif "baseline" in gate:
        path = base_dir / gate["baseline"]
    else:
        return None, None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(doc, dict) or not isinstance(doc.get("figures"), dict):
            raise ValueError("no `figures` object")
    except FileNotFoundError:
        problems.add(("gate", "baseline"), f"{path}: no such baseline report")
        return path, None
    except (OSError, ValueError) as exc:
        problems.add(("gate", "baseline"), f"{path}: not a gate report ({exc})")
        return path, None
    return path, doc


def _higher_is_better(metric: str) -> bool:
    from ..metrics import registry

    return registry.get(metric).higher_is_better
