"""``cvscore gate``: may this model ship? A quality gate for CI.

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

import argparse
import json
import math
import os
import platform
import re
import sys
import time
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .cli import CliError, default_repository
from .report import (
    DEFAULT_DIGITS,
    REPORT_FORMAT,
    CheckResult,
    decode,
    dumps_report,
    encode,
    round_sig,
    summary_markdown,
    write_junit,
)

EXIT_PASS, EXIT_FAIL, EXIT_ERROR = 0, 1, 2
GATE_RUNTIMES = ("eager", "torchscript", "onnx")
REDUCTIONS = ("mean", "median", "min", "max", "std")
KINDS: dict[str, dict[str, tuple[str, bool]]] = {
    # kind -> {key: (what it names, required)}
    "coco": {"gt": ("file", True), "dt": ("file", True)},
    "segmentation": {"gt": ("dir", True), "pred": ("dir", True)},
    "images": {"target": ("path", True), "pred": ("path", True)},
    "embeddings": {
        "embeddings": ("file", True),
        "labels": ("file", True),
        "gallery": ("file", False),
        "gallery_labels": ("file", False),
    },
}
DATASET_METRICS = {"coco": "coco_map", "segmentation": "mean_iou", "embeddings": "recall_at_k"}
GATE_KEYS = {"name", "runtime", "digits", "baseline", "batch_size"}
CHECK_KEYS = {"figure", "name", "min", "max", "max_drop", "drop", "higher_is_better"}
Runner = Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]


# -- configuration ------------------------------------------------------------------------
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


@dataclass
class Check:
    name: str
    figure: str
    kind: str  # min | max | max_drop
    threshold: float
    relative: bool
    higher_is_better: bool


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


class _Lines:
    """Line numbers of TOML keys and tables, found by scanning the text (tomllib has none)."""

    _KEY = r'(?:[A-Za-z0-9_-]+|"[^"]*"|\'[^\']*\')'

    def __init__(self, text: str) -> None:
        self.where: dict[tuple[Any, ...], int] = {}
        counts: dict[tuple[Any, ...], int] = {}
        current: tuple[Any, ...] = ()
        dotted = re.compile(rf"^\s*({self._KEY}(?:\s*\.\s*{self._KEY})*)\s*=(.*)$")
        for no, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if m := re.match(r"^\[\[\s*(.+?)\s*\]\]", line):
                path = self._split(m.group(1))
                index = counts.get(path, 0)
                counts[path] = index + 1
                current = (*path, index)
                self.where.setdefault(current, no)
            elif m := re.match(r"^\[\s*(.+?)\s*\]", line):
                current = self._split(m.group(1))
                self.where.setdefault(current, no)
            elif m := dotted.match(line):
                key = (*current, *self._split(m.group(1)))
                self.where.setdefault(key, no)
                rest = m.group(2).strip()
                if rest.startswith("{"):
                    for inner in re.findall(rf"({self._KEY})\s*=", rest):
                        self.where.setdefault((*key, *self._split(inner)), no)

    @staticmethod
    def _split(dotted: str) -> tuple[str, ...]:
        parts = re.findall(r'"[^"]*"|\'[^\']*\'|[^.\s]+', dotted)
        return tuple(p[1:-1] if p[:1] in {'"', "'"} else p for p in parts)

    def line(self, path: Sequence[Any]) -> int | None:
        path = tuple(path)
        while path:
            if path in self.where:
                return self.where[path]
            path = path[:-1]
        return None


class _Problems:
    def __init__(self, source: Path, lines: _Lines | None) -> None:
        self.source, self.lines, self.items = source, lines, []  # type: ignore[var-annotated]

    def add(self, path: Sequence[Any], message: str) -> None:
        line = self.lines.line(path) if self.lines else None
        where = f"{self.source}:{line}" if line else str(self.source)
        label = ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in path)
        label = label.replace(".[", "[")
        self.items.append((line or 0, f"{where}: {label + ': ' if label else ''}{message}"))

    def raise_if_any(self) -> None:
        if self.items:
            lines = [m for _, m in sorted(self.items, key=lambda t: t[0])]
            noun = "problem" if len(lines) == 1 else "problems"
            raise CliError(
                f"{self.source}: {len(lines)} configuration {noun}:\n  " + "\n  ".join(lines)
            )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_param(spec_default: Any, value: Any) -> str | None:
    """None when ``value`` fits the parameter's type, else what was expected."""
    if isinstance(spec_default, bool):
        return None if isinstance(value, bool) else "a boolean"
    if isinstance(spec_default, int):
        return None if isinstance(value, int) and not isinstance(value, bool) else "an integer"
    if isinstance(spec_default, float):
        return None if _is_number(value) else "a number"
    if isinstance(spec_default, str):
        return None if isinstance(value, str) else "a string"
    ok = isinstance(value, list) and all(_is_number(v) for v in value)
    return None if ok else "a list of numbers"


def expected_figures(m: MetricConfig) -> list[str]:
    """The figure names a metric yields, known before it runs."""
    if m.metric == "coco_map":
        from ..metrics.coco import STAT_NAMES

        return list(STAT_NAMES)
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
    if metric == "coco_map":
        return (-1.0, 1.0)  # -1: undefined (no ground truth), as pycocotools
    if metric in {"mean_iou", "recall_at_k"} and not figure.startswith("queries"):
        return (0.0, 1.0)
    if metric in {"ssim", "ms_ssim"} and figure != "std":
        return (-1.0, 1.0)
    return None


def load_gate(
    path: str | Path,
    runtime: str | None = None,
    baseline: str | Path | None = None,
    skip_regressions: bool = False,
) -> GateConfig:
    """Parse and check a gate file; every problem is reported at once (CliError)."""
    from ..metrics import registry

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CliError(f"{path}: no such gate file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"{path}: cannot read ({exc})") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CliError(f"{path}: not valid TOML ({exc})") from None
    problems = _Problems(path, _Lines(text))
    base_dir = path.resolve().parent

    for key in sorted(set(doc) - {"gate", "datasets", "checks"}):
        problems.add((key,), "unknown key (expected gate, datasets, checks)")

    gate = doc.get("gate", {})
    if not isinstance(gate, dict):
        problems.add(("gate",), "expected a table")
        gate = {}
    for key in sorted(set(gate) - GATE_KEYS):
        problems.add(("gate", key), f"unknown key (expected one of {', '.join(sorted(GATE_KEYS))})")
    name = gate.get("name", path.stem)
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        problems.add(("gate", "name"), f"expected letters, digits, '_', '-', '.', got {name!r}")
        name = path.stem
    chosen_runtime = runtime or gate.get("runtime", "onnx")
    if chosen_runtime not in GATE_RUNTIMES:
        problems.add(
            ("gate", "runtime"),
            f"expected one of {', '.join(GATE_RUNTIMES)}, got {chosen_runtime!r}",
        )
    digits = gate.get("digits", DEFAULT_DIGITS)
    if not isinstance(digits, int) or isinstance(digits, bool) or not 2 <= digits <= 15:
        problems.add(("gate", "digits"), f"expected an integer in [2, 15], got {digits!r}")
        digits = DEFAULT_DIGITS
    batch_size = gate.get("batch_size", 16)
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        problems.add(("gate", "batch_size"), f"expected a positive integer, got {batch_size!r}")
        batch_size = 16

    # -- datasets and their metrics
    datasets: list[DatasetConfig] = []
    raw_sets = doc.get("datasets", {})
    if not isinstance(raw_sets, dict) or not raw_sets:
        problems.add(("datasets",), "expected at least one [datasets.NAME] table")
        raw_sets = {}
    for ds_name, ds in raw_sets.items():
        where: tuple[Any, ...] = ("datasets", ds_name)
        if not isinstance(ds, dict):
            problems.add(where, "expected a table")
            continue
        if "/" in ds_name:
            problems.add(where, "a dataset name cannot contain '/'")
        kind = ds.get("kind")
        if kind not in KINDS:
            problems.add((*where, "kind"), f"expected one of {', '.join(KINDS)}, got {kind!r}")
            continue
        allowed = {"kind", "metrics", *KINDS[kind]}
        for key in sorted(set(ds) - allowed):
            problems.add((*where, key), f"unknown key for kind {kind} (expected {sorted(allowed)})")
        files: dict[str, Path] = {}
        for key, (what, required) in KINDS[kind].items():
            value = ds.get(key)
            if value is None:
                if required:
                    problems.add(where, f"missing key `{key}` ({what})")
                continue
            if not isinstance(value, str):
                problems.add((*where, key), f"expected a path string, got {value!r}")
                continue
            full = base_dir / value
            if not full.exists():
                problems.add(
                    (*where, key), f"{full}: no such {'directory' if what == 'dir' else 'file'}"
                )
            elif what == "dir" and not full.is_dir():
                problems.add((*where, key), f"{full}: not a directory")
            elif what == "file" and not full.is_file():
                problems.add((*where, key), f"{full}: not a file")
            files[key] = full
        if kind == "embeddings" and ("gallery" in ds) != ("gallery_labels" in ds):
            problems.add(where, "expected `gallery` and `gallery_labels` together")
        metrics: list[MetricConfig] = []
        raw_metrics = ds.get("metrics", {})
        if not isinstance(raw_metrics, dict) or not raw_metrics:
            problems.add(where, f"expected at least one [datasets.{ds_name}.metrics.METRIC] table")
            raw_metrics = {}
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
                if metric != DATASET_METRICS[kind]:
                    problems.add(
                        mwhere,
                        f"a {kind} dataset takes metric {DATASET_METRICS[kind]}, not {metric}",
                    )
                    continue
            elif spec.aggregator is not None or spec.input_names() != ["preds", "target"]:
                problems.add(
                    mwhere,
                    f"an images dataset takes per-sample metrics of (preds, target); {metric} is not one",
                )
                continue
            reduce: tuple[str, ...] = ()
            params = dict(params)
            if kind == "images":
                raw_reduce = params.pop("reduce", ["mean"])
                if isinstance(raw_reduce, str):
                    raw_reduce = [raw_reduce]
                bad = (
                    [r for r in raw_reduce if r not in REDUCTIONS]
                    if isinstance(raw_reduce, list)
                    else [raw_reduce]
                )
                if bad or not raw_reduce:
                    problems.add(
                        (*mwhere, "reduce"),
                        f"expected a list from {list(REDUCTIONS)}, got {raw_reduce!r}",
                    )
                    raw_reduce = ["mean"]
                reduce = tuple(dict.fromkeys(raw_reduce))
            defaults = spec.defaults()
            ok = True
            for key, value in params.items():
                if key not in defaults:
                    extra = ", reduce" if kind == "images" else ""
                    problems.add(
                        (*mwhere, key),
                        f"unknown parameter for {metric} (expected {', '.join(sorted(defaults))}{extra})",
                    )
                    ok = False
                elif (want := _check_param(defaults[key], value)) is not None:
                    problems.add((*mwhere, key), f"expected {want}, got {value!r}")
                    ok = False
            # Keep the metric with its valid parameters, so checks on it are still checked.
            resolved = spec.resolve_params({k: v for k, v in params.items() if k in defaults})
            if not ok:
                metrics.append(MetricConfig(ds_name, metric, spec.defaults(), reduce))
                continue
            if metric == "mean_iou" and resolved["num_classes"] < 2:
                problems.add((*mwhere, "num_classes"), "expected at least 2 classes")
                continue
            if metric == "recall_at_k" and (
                not resolved["ks"] or any(k < 1 or k != int(k) for k in resolved["ks"])
            ):
                problems.add(
                    (*mwhere, "ks"), f"expected positive whole numbers, got {resolved['ks']}"
                )
                continue
            metrics.append(MetricConfig(ds_name, metric, resolved, reduce))
        datasets.append(DatasetConfig(ds_name, kind, files, metrics))

    known: dict[str, MetricConfig] = {}
    for d in datasets:
        for m in d.metrics:
            for fig in expected_figures(m):
                known[f"{m.key}/{fig}"] = m

    # -- baseline
    baseline_doc: dict[str, Any] | None = None
    baseline_path: Path | None = None
    if baseline is not None:
        baseline_path = Path(baseline)
    elif "baseline" in gate:
        if isinstance(gate["baseline"], str):
            baseline_path = base_dir / gate["baseline"]
        else:
            problems.add(("gate", "baseline"), f"expected a path string, got {gate['baseline']!r}")
    if skip_regressions:
        baseline_path = None
    if baseline_path is not None:
        try:
            baseline_doc = json.loads(baseline_path.read_text(encoding="utf-8"))
            if not isinstance(baseline_doc, dict) or not isinstance(
                baseline_doc.get("figures"), dict
            ):
                raise ValueError("no `figures` object")
        except FileNotFoundError:
            problems.add(("gate", "baseline"), f"{baseline_path}: no such baseline report")
            baseline_doc = None
        except (OSError, ValueError) as exc:
            problems.add(("gate", "baseline"), f"{baseline_path}: not a gate report ({exc})")
            baseline_doc = None

    # -- checks
    checks: list[Check] = []
    raw_checks = doc.get("checks", [])
    if not isinstance(raw_checks, list) or not raw_checks:
        problems.add(("checks",), "expected at least one [[checks]] table")
        raw_checks = []
    for i, c in enumerate(raw_checks):
        cwhere: tuple[Any, ...] = ("checks", i)
        if not isinstance(c, dict):
            problems.add(cwhere, "expected a table")
            continue
        for key in sorted(set(c) - CHECK_KEYS):
            problems.add(
                (*cwhere, key), f"unknown key (expected one of {', '.join(sorted(CHECK_KEYS))})"
            )
        figure = c.get("figure")
        metric_cfg = known.get(figure) if isinstance(figure, str) else None
        if figure is None:
            problems.add(cwhere, "missing key `figure` (dataset/metric/figure)")
            continue
        if metric_cfg is None:
            prefix = figure.rsplit("/", 1)[0] + "/" if isinstance(figure, str) else ""
            hint = sorted(k for k in known if k.startswith(prefix)) or sorted(known)
            shown = ", ".join(hint[:12]) + (f", ... ({len(hint)} in all)" if len(hint) > 12 else "")
            problems.add(
                (*cwhere, "figure"), f"unknown figure {figure!r} (known: {shown or 'none'})"
            )
            continue
        bounds = {k: c[k] for k in ("min", "max", "max_drop") if k in c}
        if not bounds:
            problems.add(cwhere, "no threshold: expected min, max and/or max_drop")
            continue
        numeric = True
        for k, v in bounds.items():
            if not _is_number(v) or not math.isfinite(v):
                problems.add((*cwhere, k), f"expected a finite number, got {v!r}")
                numeric = False
        if not numeric:
            continue
        if "min" in bounds and "max" in bounds and bounds["min"] > bounds["max"]:
            problems.add(
                (*cwhere, "min"), f"min {bounds['min']} > max {bounds['max']}: can never pass"
            )
        span = figure_range(metric_cfg.metric, figure.rsplit("/", 1)[1])
        if span is not None:
            if "min" in bounds and bounds["min"] > span[1]:
                problems.add(
                    (*cwhere, "min"),
                    f"min {bounds['min']} can never pass: {figure} lies in [{span[0]:g}, {span[1]:g}]",
                )
            if "max" in bounds and bounds["max"] < span[0]:
                problems.add(
                    (*cwhere, "max"),
                    f"max {bounds['max']} can never pass: {figure} lies in [{span[0]:g}, {span[1]:g}]",
                )
        drop = c.get("drop", "absolute")
        if drop not in {"absolute", "relative"}:
            problems.add((*cwhere, "drop"), f"expected absolute or relative, got {drop!r}")
        elif "max_drop" not in bounds:
            if "drop" in c:
                problems.add((*cwhere, "drop"), "`drop` without `max_drop`")
        elif bounds["max_drop"] < 0:
            problems.add((*cwhere, "max_drop"), f"expected max_drop >= 0, got {bounds['max_drop']}")
        elif drop == "relative" and bounds["max_drop"] > 1:
            problems.add(
                (*cwhere, "max_drop"),
                f"a relative drop is a fraction in [0, 1], got {bounds['max_drop']}",
            )
        hib = c.get("higher_is_better", registry.get(metric_cfg.metric).higher_is_better)
        if not isinstance(hib, bool):
            problems.add((*cwhere, "higher_is_better"), f"expected true or false, got {hib!r}")
            continue
        label = c.get("name")
        if label is not None and not isinstance(label, str):
            problems.add((*cwhere, "name"), f"expected a string, got {label!r}")
            label = None
        if "max_drop" in bounds and not skip_regressions:
            if baseline_path is None:
                problems.add(
                    (*cwhere, "max_drop"),
                    "a regression check needs a baseline: set [gate] baseline or pass --baseline",
                )
            elif baseline_doc is not None and figure not in baseline_doc["figures"]:
                problems.add(
                    (*cwhere, "figure"), f"{figure} is not in the baseline {baseline_path}"
                )
        for kind in ("min", "max", "max_drop"):
            if kind not in bounds or (kind == "max_drop" and skip_regressions):
                continue
            relative = kind == "max_drop" and drop == "relative"
            default_label = {
                "min": f"{figure} >= {bounds[kind]:g}",
                "max": f"{figure} <= {bounds[kind]:g}",
                "max_drop": f"{figure} drop <= {bounds[kind]:g}{' relative' if relative else ''}",
            }[kind]
            checks.append(
                Check(
                    f"{label} ({kind})" if label else default_label,
                    figure,
                    kind,
                    float(bounds[kind]),
                    relative,
                    hib,
                )
            )
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
    )


# -- runtimes: in-process or through a server --------------------------------------------
def model_name(metric: str, params: Mapping[str, Any]) -> str:
    """The repository name of a metric's artifact: the metric, or metric-<hash> for non-defaults."""
    from ..metrics import registry

    spec = registry.get(metric)
    if dict(params) == spec.defaults():
        return metric
    return f"{metric}-{spec.identity(spec.resolve_params(params))[:12]}"


class InProcess:
    """Eager modules, or exported artifacts from a repository (exported on first use)."""

    def __init__(self, runtime: str, repository: Path, device: str, progress: bool) -> None:
        self.runtime, self.repository, self.device, self.progress = (
            runtime,
            repository,
            device,
            progress,
        )

    def runner(self, metric: str, params: Mapping[str, Any]) -> tuple[Runner, dict[str, Any]]:
        from ..metrics import registry

        spec = registry.get(metric)
        resolved = spec.resolve_params(params)
        if self.runtime == "eager":
            import torch

            from .. import __version__

            module = spec.build(**resolved).to(self.device)
            names = [o.name for o in spec.outputs]

            def run(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
                with torch.inference_mode():
                    out = module(
                        **{
                            k: torch.from_numpy(np.ascontiguousarray(v)).to(self.device)
                            for k, v in inputs.items()
                        }
                    )
                outs = out if isinstance(out, tuple | list) else (out,)
                return {n: t.detach().cpu().numpy() for n, t in zip(names, outs, strict=True)}

            info: dict[str, Any] = {
                "metric": metric,
                "params": resolved,
                "identity": spec.identity(resolved),
                "runtime": "eager",
                "versions": {"cvscore": __version__, "torch": torch.__version__},
            }
            return run, info

        from ..exporters import export_metric, read_manifest
        from ..exporters.formats import FORMATS
        from ..server import runtimes

        name = model_name(metric, resolved)
        export_metric(spec, self.repository, resolved, formats=(self.runtime,), name=name)
        model = runtimes.load(self.repository, name, self.runtime, self.device)
        manifest = read_manifest(self.repository / name) or {}
        file = FORMATS[self.runtime]
        info = {
            "metric": metric,
            "model": name,
            "params": resolved,
            "identity": manifest.get("identity"),
            "runtime": self.runtime,
            "file": file,
            "sha256": manifest.get("files", {}).get(file, {}).get("sha256"),
            "versions": manifest.get("versions", {}),
        }
        return model.run, info

    def per_sample(
        self, metric: str, params: Mapping[str, Any], batches: Sequence[Mapping[str, np.ndarray]]
    ) -> tuple[np.ndarray, dict[str, Any]]:
        from tqdm import tqdm

        run, info = self.runner(metric, params)
        parts = [
            next(iter(run(b).values()))
            for b in tqdm(batches, desc=metric, unit="batch", disable=not self.progress)
        ]
        return np.concatenate(parts) if parts else np.zeros(0), info

    def close(self) -> None:
        pass


class Remote:
    """Through a cvscore server: per-sample metrics stream via ``Client.evaluate``; dataset
    metrics send each batch via ``Client.score`` and fold the returned statistics here."""

    def __init__(self, address: str, runtime: str, progress: bool, timeout: float) -> None:
        from .client import Client, CvscoreError

        if runtime == "eager":
            raise CliError("runtime eager runs in-process only; a server runs torchscript or onnx")
        self.runtime, self.progress, self.address = runtime, progress, address
        self.client = Client(address.split(","), timeout=timeout)
        try:
            self.client.health("", timeout=min(timeout, 10.0))
        except CvscoreError as exc:
            self.client.close()
            raise CliError(f"server {address} is unreachable ({exc})") from None

    def _info(self, metric: str, params: Mapping[str, Any]) -> dict[str, Any]:
        from ..metrics import registry

        spec = registry.get(metric)
        resolved = spec.resolve_params(params)
        name = model_name(metric, resolved)
        described = self.client.describe(name)
        return {
            "metric": metric,
            "model": name,
            "params": resolved,
            "identity": spec.identity(resolved),
            "runtime": self.runtime,
            "server": self.address,
            "server_params": described.params,
        }

    def runner(self, metric: str, params: Mapping[str, Any]) -> tuple[Runner, dict[str, Any]]:
        info = self._info(metric, params)

        def run(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
            result = self.client.score(
                info["model"], dict(inputs), reduction="none", runtime=self.runtime
            )
            return dict(result.outputs)

        return run, info

    def per_sample(
        self, metric: str, params: Mapping[str, Any], batches: Sequence[Mapping[str, np.ndarray]]
    ) -> tuple[np.ndarray, dict[str, Any]]:
        info = self._info(metric, params)
        result = self.client.evaluate(
            info["model"],
            list(batches),
            runtime=self.runtime,
            return_scores=True,
            progress=self.progress,
        )
        scores = result.scores if result.scores is not None else np.zeros(0)
        return np.asarray(scores), info

    def close(self) -> None:
        self.client.close()


Backend = InProcess | Remote


# -- data ----------------------------------------------------------------------------------
def _read_image(path: Path) -> np.ndarray:
    """A PNG as float32 [C, H, W] in [0, 1] (8-bit / 255, 16-bit / 65535)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            scale = 65535.0 if image.mode.startswith("I;16") else 255.0
            ok = image.mode in {"L", "RGB", "I;16", "I;16B", "I;16L"}
            array = np.asarray(image if ok else image.convert("RGB")).astype(np.float32) / scale
    except (UnidentifiedImageError, OSError) as exc:
        raise CliError(f"{path}: not a readable image ({exc})") from None
    return array[None] if array.ndim == 2 else np.ascontiguousarray(array.transpose(2, 0, 1))


def _images(path: Path) -> tuple[list[str], list[np.ndarray]]:
    if path.is_dir():
        names = sorted(p.name for p in path.glob("*.png"))
        if not names:
            raise CliError(f"{path}: no .png files")
        return names, [_read_image(path / n) for n in names]
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise CliError(f"{path}: not a readable .npy array ({exc})") from None
    if array.ndim != 4 or not np.issubdtype(array.dtype, np.number):
        raise CliError(f"{path}: expected images [N, C, H, W], got shape {list(array.shape)}")
    return [str(i) for i in range(len(array))], list(array.astype(np.float32))


def image_batches(ds: DatasetConfig, batch_size: int) -> list[dict[str, np.ndarray]]:
    """Pairs in file-name order, batched by runs of equal shape."""
    pred_names, preds = _images(ds.files["pred"])
    target_names, targets = _images(ds.files["target"])
    if pred_names != target_names:
        missing = sorted(set(target_names) ^ set(pred_names))
        raise CliError(
            f"{ds.files['pred']} and {ds.files['target']} do not pair up "
            f"({len(pred_names)} vs {len(target_names)} items; first unmatched {missing[:1]})"
        )
    batches: list[dict[str, np.ndarray]] = []
    start = 0
    while start < len(preds):
        stop = start
        while (
            stop < len(preds)
            and stop - start < batch_size
            and preds[stop].shape == preds[start].shape
        ):
            if preds[stop].shape != targets[stop].shape:
                raise CliError(
                    f"{ds.files['pred']}: {pred_names[stop]} has shape {list(preds[stop].shape)}, "
                    f"its target {list(targets[stop].shape)}"
                )
            stop += 1
        batches.append(
            {"preds": np.stack(preds[start:stop]), "target": np.stack(targets[start:stop])}
        )
        start = stop
    return batches


@dataclass
class Evaluation:
    figures: dict[str, float] = field(default_factory=dict)
    samples: dict[str, list[float]] = field(default_factory=dict)
    curves: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    artifacts: dict[str, dict[str, Any]] = field(default_factory=dict)


def _reduce(scores: np.ndarray, how: str) -> float:
    values = np.asarray(scores, dtype=np.float64).reshape(-1)
    if values.size == 0:
        return math.nan
    if how == "mean":
        return math.fsum(values.tolist()) / values.size  # exact sum: order-independent
    if how == "median":
        return float(np.median(values))
    if how == "min":
        return float(values.min())
    if how == "max":
        return float(values.max())
    return float(values.std())


def _eval_coco(ds: DatasetConfig, m: MetricConfig, backend: Backend, out: Evaluation) -> None:
    from ..metrics import coco
    from .evaluate import _read_json

    gt_path, dt_path = str(ds.files["gt"]), str(ds.files["dt"])
    data = coco.parse_coco(_read_json(gt_path), _read_json(dt_path), gt_path, dt_path)
    run, info = backend.runner(m.metric, m.params)
    progress = backend.progress
    agg = coco.evaluate(data, run, progress=progress)
    out.artifacts[m.key] = info
    for name, value in agg.compute().items():
        out.figures[f"{m.key}/{name}"] = value
    precision, _, _ = agg.accumulate()
    curve = precision[:, :, :, 0, -1]  # [T, R, K] all areas, 100 detections

    def mean_over_categories(p: np.ndarray) -> list[float]:
        # mean over the categories with ground truth (-1 marks none), 0 where there is none
        valid = p > -1
        count = valid.sum(axis=-1)
        total = np.where(valid, p, 0.0).sum(axis=-1)
        mean = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
        return [float(v) for v in mean.reshape(-1)]

    iou = list(coco.IOU_THRESHOLDS.round(2))
    out.curves[m.key] = {
        "recall": [float(r) for r in coco.RECALL_THRESHOLDS],
        "IoU=0.50:0.95": mean_over_categories(curve.mean(axis=0)),
        "IoU=0.50": mean_over_categories(curve[iou.index(0.5)]),
        "IoU=0.75": mean_over_categories(curve[iou.index(0.75)]),
    }


def _eval_segmentation(
    ds: DatasetConfig, m: MetricConfig, backend: Backend, out: Evaluation
) -> None:
    from tqdm import tqdm

    from ..metrics.segmentation import SegmentationAggregator, iou_from_confusion
    from .evaluate import read_label_pair

    gt_dir, pred_dir = ds.files["gt"], ds.files["pred"]
    names = sorted(p.name for p in gt_dir.glob("*.png"))
    if not names:
        raise CliError(f"{gt_dir}: no .png files")
    k, ignore = int(m.params["num_classes"]), int(m.params["ignore_index"])
    run, info = backend.runner(m.metric, m.params)
    out.artifacts[m.key] = info
    agg = SegmentationAggregator(**m.params)
    per_image: list[float] = []
    for name in tqdm(names, desc=f"{ds.name}", unit="img", disable=not backend.progress):
        if not (pred_dir / name).is_file():
            raise CliError(f"{pred_dir / name}: no prediction for {gt_dir / name}")
        pred, target = read_label_pair(pred_dir / name, gt_dir / name, k, ignore)
        outputs = run({"preds": pred.reshape(1, -1), "target": target.reshape(1, -1)})
        agg.update(outputs)
        confusion = np.rint(next(iter(outputs.values()))[0]).astype(np.int64)
        ious = iou_from_confusion(confusion)
        per_image.append(float(np.nanmean(ious)) if not np.isnan(ious).all() else math.nan)
    for name, value in agg.compute().items():
        out.figures[f"{m.key}/{name}"] = value
    out.samples[f"{m.key}/image_mean_iou"] = per_image


def _eval_embeddings(
    ds: DatasetConfig, m: MetricConfig, backend: Backend, out: Evaluation, batch_size: int
) -> None:
    from tqdm import tqdm

    from ..metrics.retrieval import RetrievalAggregator
    from .evaluate import _read_npy

    def npy(key: str, what: str, ndim: int) -> np.ndarray:
        return _read_npy(str(ds.files[key]), what, ndim)

    queries = npy("embeddings", "embeddings [N, D]", 2).astype(np.float32)
    labels = npy("labels", "labels [N]", 1).astype(np.int64)
    if len(labels) != len(queries):
        raise CliError(f"{ds.files['labels']}: {len(labels)} labels for {len(queries)} embeddings")
    if "gallery" in ds.files:
        gallery = npy("gallery", "embeddings [M, D]", 2).astype(np.float32)
        gallery_labels = npy("gallery_labels", "labels [M]", 1).astype(np.int64)
        if len(gallery_labels) != len(gallery) or gallery.shape[1] != queries.shape[1]:
            raise CliError(f"{ds.files['gallery']}: does not match its labels or the queries")
        exclude = np.full(len(queries), -1, dtype=np.int64)
    else:
        gallery, gallery_labels = queries, labels
        exclude = np.arange(len(queries), dtype=np.int64)  # leave-one-out
    run, info = backend.runner(m.metric, m.params)
    out.artifacts[m.key] = info
    agg = RetrievalAggregator(**m.params)
    per_query: list[np.ndarray] = []
    starts = range(0, len(queries), batch_size)
    for start in tqdm(starts, desc=ds.name, unit="batch", disable=not backend.progress):
        stop = start + batch_size
        outputs = run(
            {
                "preds": queries[start:stop],
                "target": labels[start:stop],
                "gallery": gallery,
                "gallery_target": gallery_labels,
                "exclude": exclude[start:stop],
            }
        )
        agg.update(outputs)
        counts = np.rint(outputs["counts"]).astype(np.int64)
        per_query.append(counts)
    for name, value in agg.compute().items():
        out.figures[f"{m.key}/{name}"] = value
    if per_query:
        counts = np.concatenate(per_query)
        k_max = max(int(k) for k in m.params["ks"])
        keep = counts[:, -1] > 0
        out.samples[f"{m.key}/query_recall@{k_max}"] = (
            counts[keep, -2] / counts[keep, -1]
        ).tolist()


def evaluate_gate(config: GateConfig, backend: Backend) -> Evaluation:
    out = Evaluation()
    for ds in config.datasets:
        batches: list[dict[str, np.ndarray]] | None = None
        for m in ds.metrics:
            if ds.kind == "coco":
                _eval_coco(ds, m, backend, out)
            elif ds.kind == "segmentation":
                _eval_segmentation(ds, m, backend, out)
            elif ds.kind == "embeddings":
                _eval_embeddings(ds, m, backend, out, config.batch_size)
            else:
                if batches is None:
                    batches = image_batches(ds, config.batch_size)
                scores, info = backend.per_sample(m.metric, m.params, batches)
                if scores.ndim != 1:
                    raise CliError(
                        f"{m.key}: per-sample scores of shape {list(scores.shape)}; "
                        "a gate reduces scalar scores only"
                    )
                out.artifacts[m.key] = info
                out.samples[f"{m.key}/score"] = scores.astype(np.float64).tolist()
                for how in m.reduce:
                    out.figures[f"{m.key}/{how}"] = _reduce(scores, how)
    return out


# -- checks and outputs --------------------------------------------------------------------
def evaluate_checks(
    config: GateConfig, figures: Mapping[str, float], baseline: Mapping[str, float] | None
) -> list[CheckResult]:
    results = []
    d = config.digits
    for c in config.checks:
        value = figures[c.figure]
        base: float | None = None
        measured: float | None = None
        if c.kind == "min":
            passed = value >= c.threshold  # NaN fails
            delta = value - c.threshold
        elif c.kind == "max":
            passed = value <= c.threshold
            delta = value - c.threshold
        else:
            assert baseline is not None
            base = baseline[c.figure]
            delta = value - base if not (math.isinf(value) and value == base) else 0.0
            drop = -delta if c.higher_is_better else delta
            if c.relative:
                measured = drop / abs(base) if base != 0 else (0.0 if drop <= 0 else math.inf)
            else:
                measured = drop
            passed = not math.isnan(measured) and measured <= c.threshold
            measured = round_sig(measured, d)
        results.append(
            CheckResult(
                c.name,
                c.figure,
                c.kind,
                c.threshold,
                c.relative,
                value,
                base,
                round_sig(delta, d),
                measured,
                bool(passed),
            )
        )
    return results


@dataclass
class GateResult:
    checks: list[CheckResult]
    report: dict[str, Any]
    out_dir: Path
    plots: list[str]

    @property
    def failed(self) -> int:
        return sum(not c.passed for c in self.checks)

    @property
    def exit_code(self) -> int:
        return EXIT_FAIL if self.failed else EXIT_PASS


def _shown(path: Path | None) -> str | None:
    """A path as written in outputs: relative to the working directory when below it."""
    if path is None:
        return None
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return str(path)


def _file_sha256(path: Path) -> dict[str, str]:
    from ..exporters.repository import sha256_file

    if path.is_file():
        return {"sha256": sha256_file(path)}
    files = sorted(p for p in path.rglob("*") if p.is_file())
    import hashlib

    digest = hashlib.sha256()
    for p in files:
        digest.update(f"{p.relative_to(path).as_posix()}\0{sha256_file(p)}\n".encode())
    return {"sha256": digest.hexdigest(), "files": str(len(files))}


def run_gate(
    config: GateConfig,
    out_dir: Path,
    server: str | None = None,
    repository: Path | None = None,
    device: str = "cpu",
    quiet: bool = False,
    timeout: float = 60.0,
) -> GateResult:
    """Evaluate every dataset, check every threshold, write the four outputs."""
    from ..metrics import registry

    started = time.time()
    t0 = time.perf_counter()
    backend: Backend
    if server:
        backend = Remote(server, config.runtime, not quiet, timeout)
    else:
        backend = InProcess(
            config.runtime, repository or default_repository(), device, progress=not quiet
        )
    try:
        evaluation = evaluate_gate(config, backend)
    finally:
        backend.close()
    d = config.digits
    figures = {k: round_sig(v, d) for k, v in evaluation.figures.items()}
    samples = {k: [round_sig(x, d) for x in v] for k, v in evaluation.samples.items()}
    curves = {
        k: {name: [round_sig(x, d) for x in values] for name, values in c.items()}
        for k, c in evaluation.curves.items()
    }
    baseline_figures = (
        {k: decode(v) for k, v in config.baseline["figures"].items()} if config.baseline else None
    )
    checks = evaluate_checks(config, figures, baseline_figures)
    seconds = time.perf_counter() - t0

    out_dir.mkdir(parents=True, exist_ok=True)
    plots = _plots(config, out_dir, samples, curves)
    report: dict[str, Any] = {
        "format": REPORT_FORMAT,
        "gate": config.name,
        "runtime": config.runtime,
        "precision": {
            "significant_digits": d,
            "note": (
                f"every figure is rounded to {d} significant digits before it is checked or "
                "written; eager, TorchScript, ONNX Runtime and the server agree to ~1e-6 "
                "relative before rounding, so the figures are identical across them unless "
                "one lies within that distance of a rounding boundary"
            ),
        },
        "figures": {k: encode(v) for k, v in figures.items()},
        "higher_is_better": {
            m.key: registry.get(m.metric).higher_is_better
            for ds in config.datasets
            for m in ds.metrics
        },
        "samples": {k: [encode(x) for x in v] for k, v in samples.items()},
        "curves": curves,
        "artifacts": evaluation.artifacts,
        "data": {
            f"{ds.name}/{key}": {
                "path": os.path.relpath(p, config.path.resolve().parent),
                **_file_sha256(p),
            }
            for ds in config.datasets
            for key, p in ds.files.items()
        },
        "checks": [c.to_json() for c in checks],
        "passed": not any(not c.passed for c in checks),
        "baseline": _shown(config.baseline_path),
        "run": {
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "seconds": round(seconds, 3),
            "gate_file": str(config.path),
            "server": server,
            "device": device if not server else None,
            "host": platform.node(),
            "python": platform.python_version(),
            "argv": sys.argv[1:],
        },
    }
    (out_dir / "report.json").write_text(dumps_report(report), encoding="utf-8")
    properties = {
        "runtime": config.runtime,
        "significant_digits": str(d),
        **({"server": server} if server else {}),
        **({"baseline": str(_shown(config.baseline_path))} if config.baseline_path else {}),
    }
    write_junit(out_dir / "junit.xml", config.name, checks, seconds, properties)
    summary = summary_markdown(
        config.name,
        checks,
        config.runtime,
        d,
        evaluation.artifacts,
        plots,
        _shown(config.baseline_path),
    )
    (out_dir / "summary.md").write_text(summary, encoding="utf-8")
    step_summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if step_summary:
        with open(step_summary, "a", encoding="utf-8") as f:
            f.write(summary)
    return GateResult(checks, report, out_dir, plots)


def _plots(
    config: GateConfig,
    out_dir: Path,
    samples: Mapping[str, list[float]],
    curves: Mapping[str, Mapping[str, list[float]]],
) -> list[str]:
    from . import plots

    base = config.baseline or {}
    made = []
    for key, curve in curves.items():
        name = f"pr_{key.replace('/', '_')}.png"
        plots.pr_curves(
            out_dir / name, f"{key}: precision-recall", curve, base.get("curves", {}).get(key)
        )
        made.append(name)
    base_samples = base.get("samples", {})
    for key, values in samples.items():
        name = f"dist_{key.replace('/', '_').replace('@', '_at_')}.png"
        prior = base_samples.get(key)
        plots.distribution(
            out_dir / name,
            key,
            values,
            None if prior is None else [decode(v) for v in prior],
        )
        made.append(name)
    return made


# -- command line ---------------------------------------------------------------------------
def add_parser(sub: Any) -> None:
    p = sub.add_parser("gate", help="CI quality gate: evaluate a gate file, exit 0 / 1 / 2")
    p.add_argument("gate_file", metavar="GATE.toml")
    p.add_argument("--server", help="ADDR[,ADDR...]: evaluate through a server")
    p.add_argument("--baseline", metavar="REPORT.json", help="a previous report.json")
    p.add_argument("--out", default="gate-out", metavar="DIR", help="output folder (gate-out)")
    p.add_argument("--runtime", choices=GATE_RUNTIMES, help="override the gate file's runtime")
    p.add_argument("--repository", help="in-process: model repository (default: the cache)")
    p.add_argument("--device", default="cpu", help="in-process: cpu, cuda or auto")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per call (--server)")
    p.add_argument("--quiet", action="store_true", help="no progress bars, no table")
    p.set_defaults(func=cmd_gate)


def cmd_gate(args: argparse.Namespace) -> int:
    """Exit 0 (passed), 1 (a check failed); errors raise CliError, which ``main`` maps to 2."""
    import logging

    if args.quiet:
        logging.disable(logging.WARNING)
    try:
        return _gate(args)
    except CliError as exc:
        # Reported here rather than by ``cli.main``: under ``python -m cvscore.client.cli``
        # that module is ``__main__`` and its CliError is not the class raised here.
        print(f"cvscore gate: error: {exc}", file=sys.stderr)
        return EXIT_ERROR


def _gate(args: argparse.Namespace) -> int:
    config = load_gate(args.gate_file, runtime=args.runtime, baseline=args.baseline)
    try:
        from ..server.runtimes import resolve_device

        device = resolve_device(args.device)
        result = run_gate(
            config,
            Path(args.out),
            server=args.server,
            repository=Path(args.repository) if args.repository else None,
            device=device,
            quiet=args.quiet,
            timeout=args.timeout,
        )
    except CliError:
        raise
    except Exception as exc:  # the gate could not be evaluated: exit 2, never 0 or 1
        raise CliError(
            f"could not evaluate {args.gate_file}: {type(exc).__name__}: {exc}"
        ) from None
    if not args.quiet:
        for c in result.checks:
            print(f"{'PASS' if c.passed else 'FAIL'}  {c.explain()}")
    verdict = (
        "passed"
        if not result.failed
        else f"FAILED ({result.failed} of {len(result.checks)} checks)"
    )
    print(f"cvscore gate {config.name}: {verdict}; outputs in {result.out_dir}", file=sys.stderr)
    return result.exit_code
