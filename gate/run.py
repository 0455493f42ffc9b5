"""Run a gate: every dataset through the evaluation drivers, every check, the four outputs.

``report.json`` (figures, samples, curves, checks, artifacts, data hashes, run details),
``junit.xml``, ``summary.md`` (also appended to ``$GITHUB_STEP_SUMMARY``) and the plots.
"""

from __future__ import annotations

import hashlib
import os
import platform
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..evaluate import drivers
from ..evaluate.backends import Backend
from ..evaluate.errors import DataError
from ..evaluate.readers import read_retrieval
from .bootstrap import Bootstrap, PairingError, figure_intervals
from .checks import evaluate_checks
from .config import GateConfig
from .evidence import (
    EVIDENCE_FILE,
    Evidence,
    evidence_bytes,
    evidence_path,
    load_evidence,
    report_section,
)
from .plots import bootstrap_plots
from .report import (
    REPORT_FORMAT,
    CheckResult,
    GateProblem,
    decode,
    dumps_report,
    encode,
    round_sig,
    summary_markdown,
    write_error_outputs,
    write_junit,
)

EXIT_PASS, EXIT_FAIL, EXIT_ERROR = 0, 1, 2


@dataclass
class Evaluation:
    figures: dict[str, float] = field(default_factory=dict)
    samples: dict[str, list[float]] = field(default_factory=dict)
    curves: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    artifacts: dict[str, dict[str, Any]] = field(default_factory=dict)
    evidence: dict[str, dict[str, Any]] = field(default_factory=dict)  # see evidence.py


def evaluate_gate(config: GateConfig, backend: Backend) -> Evaluation:
    """Every metric of every dataset, with the drivers ``cvscore evaluate`` uses."""
    out = Evaluation()
    for ds in config.datasets:
        batches: list[dict[str, Any]] | None = None
        for m in ds.metrics:
            if ds.kind == "coco":
                result = drivers.coco(ds.files["gt"], ds.files["dt"], backend, ds.iou_type)
                out.curves[m.key] = result.curves
            elif ds.kind == "segmentation":
                result = drivers.segmentation(ds.files["pred"], ds.files["gt"], m.params, backend)
            elif ds.kind == "embeddings":
                data = read_retrieval(
                    ds.files["embeddings"],
                    ds.files["labels"],
                    ds.files.get("gallery"),
                    ds.files.get("gallery_labels"),
                )
                result = drivers.retrieval(data, m.params, backend, config.batch_size)
            else:
                if batches is None:
                    batches = drivers.image_batches(
                        ds.files["pred"], ds.files["target"], config.batch_size
                    )
                result = drivers.image_pairs(batches, m.metric, m.params, m.reduce, backend)
            out.artifacts[m.key] = result.artifact
            out.figures.update({f"{m.key}/{k}": v for k, v in result.figures.items()})
            out.samples.update({f"{m.key}/{k}": v for k, v in result.samples.items()})
            if result.evidence:
                out.evidence[m.key] = {
                    **result.evidence,
                    "params": m.params,
                    "figures": list(result.figures),
                }
    return out


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


def shown(path: Path | None) -> str | None:
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
    digest = hashlib.sha256()
    for p in files:
        digest.update(f"{p.relative_to(path).as_posix()}\0{sha256_file(p)}\n".encode())
    return {"sha256": digest.hexdigest(), "files": str(len(files))}


def run_gate(
    config: GateConfig,
    out_dir: Path,
    backend: Backend,
    server: str | None = None,
    device: str = "cpu",
) -> GateResult:
    """Evaluate every dataset on ``backend``, check every threshold, write the outputs."""
    from ..metrics import registry

    started = time.time()
    t0 = time.perf_counter()
    evaluation = evaluate_gate(config, backend)
    d = config.digits
    figures = {k: round_sig(v, d) for k, v in evaluation.figures.items()}
    samples = {k: [round_sig(x, d) for x in v] for k, v in evaluation.samples.items()}
    curves = {
        k: {name: [round_sig(x, d) for x in values] for name, values in c.items()}
        for k, c in evaluation.curves.items()
    }
    base_figures = (
        {k: decode(v) for k, v in config.baseline["figures"].items()} if config.baseline else None
    )
    boot = Bootstrap(evaluation.evidence, _baseline_evidence(config), config.seed)
    try:
        checks = evaluate_checks(config.checks, figures, base_figures, d, boot)
        intervals = (
            figure_intervals(boot, list(figures), config.resamples, config.confidence, d)
            if config.resamples
            else {}
        )
    except PairingError as exc:
        raise DataError(str(exc)) from None
    seconds = time.perf_counter() - t0

    out_dir.mkdir(parents=True, exist_ok=True)
    evidence_data = evidence_bytes(evaluation.evidence)
    (out_dir / EVIDENCE_FILE).write_bytes(evidence_data)
    plots = _plots(config, out_dir, samples, curves, figures)
    plots += bootstrap_plots(out_dir, list(zip(config.checks, checks, strict=True)), boot)
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
        "evidence": report_section(evidence_data, evaluation.evidence, EVIDENCE_FILE),
        "bootstrap": {
            "method": "percentile, paired (the same resampled units for run and baseline)",
            "seed": config.seed,
            "resamples": config.resamples,
            "confidence": config.confidence,
            "intervals": intervals,
        },
        "passed": not any(not c.passed for c in checks),
        "baseline": shown(config.baseline_path),
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
        **({"baseline": str(shown(config.baseline_path))} if config.baseline_path else {}),
    }
    write_junit(out_dir / "junit.xml", config.name, checks, seconds, properties)
    summary = summary_markdown(
        config.name, checks, config.runtime, d, evaluation.artifacts, plots,
        shown(config.baseline_path),
    )  # fmt: skip
    (out_dir / "summary.md").write_text(summary, encoding="utf-8")
    append_step_summary(summary)
    return GateResult(checks, report, out_dir, plots)


def _baseline_evidence(config: GateConfig) -> Evidence | None:
    """The baseline's evidence, when it has an evidence file (else None: nothing pairs)."""
    if config.baseline_path is None or config.baseline is None:
        return None
    path = evidence_path(config.baseline_path, config.baseline)
    if path is None or not path.is_file():
        return None
    try:
        return load_evidence(path)
    except ValueError as exc:
        raise DataError(str(exc)) from None


def write_problems(
    out_dir: Path, gate: str, problems: Sequence[GateProblem], seconds: float = 0.0
) -> None:
    """The exit-2 outputs (``junit.xml`` with ``<error>`` cases, ``summary.md``)."""
    append_step_summary(write_error_outputs(out_dir, gate, problems, seconds))


def append_step_summary(summary: str) -> None:
    step_summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if step_summary:
        with open(step_summary, "a", encoding="utf-8") as f:
            f.write(summary)


def _plots(
    config: GateConfig,
    out_dir: Path,
    samples: Mapping[str, list[float]],
    curves: Mapping[str, Mapping[str, list[float]]],
    figures: Mapping[str, float],
) -> list[str]:
    from . import plots

    base = config.baseline or {}
    base_figures = {k: decode(v) for k, v in base.get("figures", {}).items()}
    made = []
    for key, curve in curves.items():
        name = f"pr_{key.replace('/', '_')}.png"
        ap = {label: figures.get(f"{key}/{fig}") for label, fig in plots.PR_FIGURES.items()}
        base_ap = {
            label: base_figures.get(f"{key}/{fig}") for label, fig in plots.PR_FIGURES.items()
        }
        limits = {
            label: ", ".join(
                f"{c.kind.replace('_', ' ')} {c.threshold:g}{' rel.' if c.relative else ''}"
                for c in config.checks
                if c.figure == f"{key}/{fig}"
            )
            for label, fig in plots.PR_FIGURES.items()
        }
        plots.pr_curves(
            out_dir / name,
            f"{key}: precision-recall",
            curve,
            base.get("curves", {}).get(key),
            ap,
            base_ap,
            {k: v for k, v in limits.items() if v},
        )
        made.append(name)
    base_samples = base.get("samples", {})
    for key, values in samples.items():
        name = f"dist_{key.replace('/', '_').replace('@', '_at_')}.png"
        prior = base_samples.get(key)
        metric_key = key.rsplit("/", 1)[0]
        plots.distribution(
            out_dir / name,
            key,
            values,
            None if prior is None else [decode(v) for v in prior],
            thresholds=_score_thresholds(config, metric_key),
            unit=plots.unit_of(metric_key.rsplit("/", 1)[-1]),
        )
        made.append(name)
    return made


def _score_thresholds(config: GateConfig, metric_key: str) -> list[tuple[str, float]]:
    """The min / max thresholds on reductions of a per-sample series (``pairs/psnr/min``),
    to draw on its distribution."""
    out = []
    for c in config.checks:
        head, _, how = c.figure.rpartition("/")
        if head == metric_key and c.kind in {"min", "max"} and how in drivers.REDUCTIONS:
            out.append((f"{how} {'≥' if c.kind == 'min' else '≤'} {c.threshold:g}", c.threshold))
    return out
