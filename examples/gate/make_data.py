"""Build the small seeded synthetic datasets behind the example gates (``pass.toml``,
``fail.toml``) and the baseline report they compare against.

    python examples/gate/make_data.py            # rewrites data/ and baseline.json

Two "models" are simulated against the same ground truth: a *good* one (small box jitter,
few wrong pixels, little image noise, tight embedding clusters) and a *bad* one (worse on
every count). ``pass.toml`` gates the good predictions, ``fail.toml`` the bad ones, both
against ``baseline.json``: the good model's report, written by this script from ``pass.toml``
with its regression checks left out, and ``baseline.npz`` beside it, that run's per-sample
evidence (what ``confidence`` checks resample). Everything is seeded, so a rerun writes the
same bytes.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
SEED = 20240601


def _coco(rng: np.random.Generator) -> None:
    images, anns, cats = [], [], [{"id": c, "name": f"class{c}"} for c in (1, 2, 3)]
    for image_id in range(1, 25):
        images.append({"id": image_id, "width": 160, "height": 120, "file_name": f"{image_id}.jpg"})
        for _ in range(int(rng.integers(1, 5))):
            w, h = rng.uniform(12, 70, size=2)
            x, y = rng.uniform(0, 160 - w), rng.uniform(0, 120 - h)
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": image_id,
                    "category_id": int(rng.integers(1, 4)),
                    "bbox": [round(float(v), 2) for v in (x, y, w, h)],
                    "area": round(float(w * h), 2),
                    "iscrowd": 0,
                }
            )
    gt = {"images": images, "annotations": anns, "categories": cats}
    (DATA / "coco").mkdir(parents=True)
    (DATA / "coco" / "instances.json").write_text(json.dumps(gt, indent=1) + "\n")
    for model, jitter, miss, extra in (("good", 0.04, 0.05, 0.2), ("bad", 0.12, 0.2, 0.8)):
        dets = []
        for ann in anns:
            if rng.random() < miss:
                continue
            x, y, w, h = ann["bbox"]
            dx, dy, dw, dh = rng.normal(0, jitter, size=4) * [w, h, w, h]
            dets.append(
                {
                    "image_id": ann["image_id"],
                    "category_id": ann["category_id"],
                    "bbox": [
                        round(float(v), 2) for v in (x + dx, y + dy, max(w + dw, 1), max(h + dh, 1))
                    ],
                    "score": round(float(rng.uniform(0.5, 1.0)), 4),
                }
            )
        for _ in range(int(extra * len(images))):  # false positives
            w, h = rng.uniform(10, 50, size=2)
            dets.append(
                {
                    "image_id": int(rng.integers(1, len(images) + 1)),
                    "category_id": int(rng.integers(1, 4)),
                    "bbox": [
                        round(float(v), 2) for v in (rng.uniform(0, 110), rng.uniform(0, 70), w, h)
                    ],
                    "score": round(float(rng.uniform(0.05, 0.7)), 4),
                }
            )
        (DATA / "coco" / f"detections_{model}.json").write_text(json.dumps(dets, indent=1) + "\n")


def _segmentation(rng: np.random.Generator) -> None:
    k, shape = 4, (40, 48)
    for d in ("gt", "pred_good", "pred_bad"):
        (DATA / "seg" / d).mkdir(parents=True)
    for i in range(12):
        gt = np.zeros(shape, dtype=np.uint8)
        for c in range(1, k):
            y, x = rng.integers(0, shape[0] - 10), rng.integers(0, shape[1] - 10)
            gt[y : y + int(rng.integers(8, 20)), x : x + int(rng.integers(8, 24))] = c
        gt[0, : int(rng.integers(0, 6))] = 255  # a few ignored pixels
        Image.fromarray(gt).save(DATA / "seg" / "gt" / f"{i:03d}.png")
        for model, flip in (("good", 0.04), ("bad", 0.15)):
            pred = np.where(gt == 255, 0, gt).astype(np.uint8)
            noise = rng.random(shape) < flip
            pred[noise] = rng.integers(0, k, size=int(noise.sum()))
            Image.fromarray(pred).save(DATA / "seg" / f"pred_{model}" / f"{i:03d}.png")


def _images(rng: np.random.Generator) -> None:
    for d in ("target", "pred_good", "pred_bad"):
        (DATA / "images" / d).mkdir(parents=True)
    yy, xx = np.mgrid[0:32, 0:32] / 31.0
    for i in range(10):
        phase = rng.uniform(0, 2 * np.pi, size=3)
        target = np.stack([0.5 + 0.4 * np.sin(4 * xx + 3 * yy + p) for p in phase], -1)
        for name, img in (
            ("target", target),
            ("pred_good", target + rng.normal(0, 0.02, target.shape)),
            ("pred_bad", target + rng.normal(0, 0.045, target.shape)),
        ):
            u8 = np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)
            Image.fromarray(u8, "RGB").save(DATA / "images" / name / f"{i:03d}.png")


def _embeddings(rng: np.random.Generator) -> None:
    (DATA / "embeddings").mkdir(parents=True)
    classes, per_class, dim = 6, 10, 16
    centers = rng.normal(0, 1, size=(classes, dim))
    labels = np.repeat(np.arange(classes), per_class).astype(np.int64)
    np.save(DATA / "embeddings" / "labels.npy", labels)
    for model, spread in (("good", 0.35), ("bad", 0.9)):
        emb = centers[labels] + rng.normal(0, spread, size=(len(labels), dim))
        np.save(DATA / "embeddings" / f"embeddings_{model}.npy", emb.astype(np.float32))


def _candidate(rng: np.random.Generator) -> None:
    """A retrained *candidate* for ``confidence.toml``: the good model's detections
    re-jittered a little (a small, uncertain change) and its images slightly noisier (a
    small but consistent regression)."""
    dets = json.loads((DATA / "coco" / "detections_good.json").read_text())
    for d in dets:
        x, y, w, h = d["bbox"]
        dx, dy, dw, dh = rng.normal(0, 0.03, size=4) * [w, h, w, h]
        d["bbox"] = [round(float(v), 2) for v in (x + dx, y + dy, max(w + dw, 1), max(h + dh, 1))]
    (DATA / "coco" / "detections_candidate.json").write_text(json.dumps(dets, indent=1) + "\n")
    out = DATA / "images" / "pred_candidate"
    out.mkdir(parents=True, exist_ok=True)
    for path in sorted((DATA / "images" / "pred_good").glob("*.png")):
        img = np.asarray(Image.open(path), dtype=np.float64) / 255
        img = img + rng.normal(0, 0.012, img.shape)
        u8 = np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)
        Image.fromarray(u8, "RGB").save(out / path.name)


def make_data() -> None:
    if DATA.exists():
        shutil.rmtree(DATA)
    DATA.mkdir()
    rng = np.random.default_rng(SEED)
    _coco(rng)
    _segmentation(rng)
    _images(rng)
    _embeddings(rng)
    _candidate(np.random.default_rng(SEED + 1))  # its own stream: the files above keep theirs


def make_baseline(repository: Path | None = None) -> Path:
    """Evaluate ``pass.toml`` without its regression checks and keep the report as baseline."""
    from cvscore.cli.common import default_repository
    from cvscore.evaluate.backends import InProcess
    from cvscore.gate.config import load_gate
    from cvscore.gate.report import dumps_report
    from cvscore.gate.run import run_gate

    config = load_gate(HERE / "pass.toml", skip_regressions=True)
    out = HERE / ".baseline-run"
    backend = InProcess(config.runtime, repository or default_repository(), "cpu", progress=False)
    result = run_gate(config, out, backend)
    report = json.loads((out / "report.json").read_text())
    report["run"] = {"note": "written by examples/gate/make_data.py"}
    target = HERE / "baseline.json"
    evidence = target.with_suffix(".npz")
    evidence.write_bytes((out / report["evidence"]["file"]).read_bytes())
    report["evidence"]["file"] = evidence.name
    target.write_text(dumps_report(report))
    shutil.rmtree(out)
    if result.failed:
        sys.exit(f"the baseline run failed {result.failed} checks")
    return target


if __name__ == "__main__":
    make_data()
    print(f"wrote {DATA}", file=sys.stderr)
    print(f"wrote {make_baseline()}", file=sys.stderr)
