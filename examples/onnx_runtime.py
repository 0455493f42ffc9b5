"""Score with a cvscore artifact in plain ONNX Runtime: no cvscore, no torch.

Every artifact of a metric takes the shapes its ``manifest.json`` lists under ``inputs``
(``shape``). Where the metric accepts any trailing axes (``declared_shape`` ending in
``"*"``, e.g. ``l1`` on ``[N, C, H, W]`` images), those axes are flattened into the one axis
``"S"``: reshape to ``(*leading, -1)`` before feeding the graph. Outputs are per-sample
scores; reduce them (mean, sum) yourself. Dataset metrics emit per-batch statistics (for
``mean_iou``, int64 confusion matrices) that you sum and turn into figures.

    python examples/onnx_runtime.py REPO        # REPO from `cvscore export --out REPO`
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort


def load(model_dir: Path) -> tuple[ort.InferenceSession, dict]:
    manifest = json.loads((model_dir / "manifest.json").read_text())
    session = ort.InferenceSession(str(model_dir / "1" / "model.onnx"))
    return session, manifest


def feed(manifest: dict, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Arrays in the shapes the graph takes: trailing "*" axes flattened, dtypes as listed."""
    out = {}
    for spec in manifest["inputs"]:
        value = np.ascontiguousarray(arrays[spec["name"]], dtype=spec["dtype"])
        declared = spec.get("declared_shape", spec["shape"])
        if declared and declared[-1] == "*":
            lead = len(declared) - 1
            value = value.reshape(*value.shape[:lead], -1)
        out[spec["name"]] = value
    return out


def score(model_dir: Path, arrays: dict[str, np.ndarray]) -> np.ndarray:
    session, manifest = load(model_dir)
    first = manifest["outputs"][0]["name"]
    return session.run([first], feed(manifest, arrays))[0]


def mean_iou(confusion: np.ndarray) -> float:
    """Mean IoU over classes present in target or predictions, from summed counts."""
    c = confusion.sum(0).astype(np.float64)
    tp = np.diag(c)
    union = c.sum(0) + c.sum(1) - tp
    return float((tp[union > 0] / union[union > 0]).mean())


def main(repo: Path) -> None:
    rng = np.random.default_rng(0)
    images = rng.random((2, 3, 64, 64), dtype=np.float32)
    noisy = np.clip(images + rng.normal(0, 0.05, images.shape), 0, 1).astype(np.float32)
    print("ssim", score(repo / "ssim", {"preds": noisy, "target": images}))
    print("l1  ", score(repo / "l1", {"preds": noisy, "target": images}))
    boxes = np.array([[0, 0, 10, 10], [5, 5, 20, 30]], dtype=np.float32)
    shifted = boxes + np.float32(2.0)
    print("giou", score(repo / "giou", {"preds": shifted, "target": boxes}))
    labels = rng.integers(0, 21, (2, 32, 32))
    guess = np.where(rng.random(labels.shape) < 0.8, labels, 0)
    confusion = score(repo / "mean_iou", {"preds": guess, "target": labels})
    print("mean_iou", round(mean_iou(confusion), 6))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
