"""Per-sample evidence: what a gate run keeps so that any later run can resample it.

``evidence.npz`` sits beside ``report.json`` (``np.savez_compressed``, no pickled objects,
byte-identical for the same data). Per metric (``dataset/metric``) it holds arrays named
``dataset/metric/ARRAY`` and one JSON header (``__header__``) giving each metric's layout
(``kind``), its parameters and its figures. ``ids`` names the resampled units (image ids,
file names, query indices); a paired bootstrap needs the baseline's to be the same. Layouts:

- ``samples`` (per-sample metrics): ``scores`` float64[N], the unrounded per-sample scores;
- ``confusion`` (mean IoU): ``confusion`` int64[N, K, K], each image's confusion counts;
- ``retrieval`` (recall@k): ``hits`` int64[N, len(ks)] and ``relevant`` int64[N] per query;
- ``coco`` (mAP): per kept detection ``image`` and ``category`` (positions in ``ids`` and
  ``categories``), ``rank``, ``score``, ``tp`` and ``ignore`` bool[D, A, T] (area range, IoU
  threshold), and ``gt`` int64[N, K, A], each image's non-ignored ground truths
  (see :mod:`cvscore.metrics.coco_resample`).

``report.json`` names the file and its sha256 (``evidence``); a baseline written with
``cvscore gate --write-baseline PATH.json`` is that report plus ``PATH.npz``.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

EVIDENCE_FILE = "evidence.npz"
EVIDENCE_FORMAT = "cvscore-gate-evidence/1"
HEADER = "__header__"
Evidence = dict[str, dict[str, Any]]  # metric key -> {"kind", "params", "figures", arrays...}
_META = ("kind", "params", "figures")


def evidence_bytes(evidence: Mapping[str, Mapping[str, Any]]) -> bytes:
    """The ``.npz`` bytes of every metric's evidence (deterministic)."""
    header: dict[str, Any] = {"format": EVIDENCE_FORMAT, "metrics": {}}
    arrays: dict[str, np.ndarray] = {}
    for key in sorted(evidence):
        ev = evidence[key]
        header["metrics"][key] = {
            "kind": ev["kind"],
            "params": ev.get("params", {}),
            "figures": list(ev.get("figures", [])),
            "units": len(ev["ids"]),
        }
        for name, value in ev.items():
            if name not in _META:
                arrays[f"{key}/{name}"] = np.asarray(value)
    text = json.dumps(header, sort_keys=True).encode()
    buf = io.BytesIO()
    named: dict[str, Any] = {HEADER: np.frombuffer(text, dtype=np.uint8), **arrays}
    np.savez_compressed(buf, **named)
    return buf.getvalue()


def load_evidence(path: Path) -> Evidence:
    """Inverse of :func:`evidence_bytes` (``ValueError`` when it is not an evidence file)."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a gate evidence file ({exc})") from None
    if HEADER not in arrays:
        raise ValueError(f"{path}: not a gate evidence file (no header)")
    header = json.loads(arrays.pop(HEADER).tobytes().decode())
    if header.get("format") != EVIDENCE_FORMAT:
        raise ValueError(f"{path}: expected {EVIDENCE_FORMAT}, got {header.get('format')!r}")
    out: Evidence = {}
    for key, meta in header["metrics"].items():
        prefix = f"{key}/"
        ev = {k: meta[k] for k in _META}
        ev.update({k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)})
        out[key] = ev
    return out


def report_section(data: bytes, evidence: Mapping[str, Mapping[str, Any]], name: str) -> dict:
    """The ``evidence`` entry of ``report.json``: the file, its hash, what it covers."""
    import hashlib

    return {
        "file": name,
        "sha256": hashlib.sha256(data).hexdigest(),
        "metrics": {k: {"kind": v["kind"], "units": len(v["ids"])} for k, v in evidence.items()},
    }


def evidence_path(report_path: Path, report: Mapping[str, Any]) -> Path | None:
    """Where a report's evidence lies (None: the report has none)."""
    section = report.get("evidence")
    if not isinstance(section, dict) or not isinstance(section.get("file"), str):
        return None
    return report_path.parent / section["file"]


def write_baseline(out_dir: Path, target: Path) -> Path:
    """Copy a gate run's ``report.json`` to ``target`` and its evidence beside it, as
    ``target`` with the suffix ``.npz``; the copy names its evidence file. Returns the
    evidence path."""
    report = json.loads((out_dir / "report.json").read_text(encoding="utf-8"))
    from .report import dumps_report

    npz = target.with_suffix(".npz")
    target.parent.mkdir(parents=True, exist_ok=True)
    source = evidence_path(out_dir / "report.json", report)
    if source is not None and source.is_file():
        npz.write_bytes(source.read_bytes())
        report["evidence"]["file"] = npz.name
    target.write_text(dumps_report(report), encoding="utf-8")
    return npz
