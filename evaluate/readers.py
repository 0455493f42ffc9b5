"""Every dataset file format cvscore reads, in one place, each checked with a one-line error.

COCO JSON, ``.npy`` embeddings and labels, PNG label maps (8/16-bit or palette indices)
and PNG images (or one ``.npy [N, C, H, W]``). Errors are :class:`DataError` naming the
file and what is wrong with it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DataError

LABEL_MODES = {"L", "P", "I", "I;16", "I;16B", "I;16L", "1"}
IMAGE_MODES = {"L", "RGB", "I;16", "I;16B", "I;16L"}


def read_json(path: str | Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None


def read_npy(path: str | Path, what: str, ndim: int) -> np.ndarray:
    """Embeddings (``ndim`` 2: finite floats) or labels (``ndim`` 1: integers)."""
    try:
        array = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (ValueError, OSError) as exc:
        raise DataError(f"{path}: not a readable .npy array ({exc})") from None
    if not isinstance(array, np.ndarray) or array.ndim != ndim:
        shape = list(getattr(array, "shape", []))
        raise DataError(f"{path}: expected {what} with {ndim} axes, got shape {shape}")
    if ndim == 2 and not np.issubdtype(array.dtype, np.floating):
        raise DataError(f"{path}: expected float embeddings, got dtype {array.dtype}")
    if ndim == 2 and not np.isfinite(array).all():
        raise DataError(f"{path}: embeddings hold NaN or inf")
    if ndim == 1 and not np.issubdtype(array.dtype, np.integer):
        raise DataError(f"{path}: expected integer labels, got dtype {array.dtype}")
    return array


# -- PNG ----------------------------------------------------------------------------------
def read_label_png(path: Path) -> np.ndarray:
    """An 8- or 16-bit single-channel PNG (or a palette PNG's indices) as int64 [H, W]."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            if image.mode not in LABEL_MODES:
                raise DataError(
                    f"{path}: expected a single-channel label map, got PNG mode {image.mode}"
                )
            return np.asarray(image).astype(np.int64)
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{path}: not a readable image ({exc})") from None


def read_image(path: Path) -> np.ndarray:
    """A PNG as float32 [C, H, W] in [0, 1] (8-bit / 255, 16-bit / 65535)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            scale = 65535.0 if image.mode.startswith("I;16") else 255.0
            ok = image.mode in IMAGE_MODES
            array = np.asarray(image if ok else image.convert("RGB")).astype(np.float32) / scale
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{path}: not a readable image ({exc})") from None
    return array[None] if array.ndim == 2 else np.ascontiguousarray(array.transpose(2, 0, 1))


def png_names(folder: Path) -> list[str]:
    """The ``.png`` file names of a folder, sorted; an error when there is none."""
    if not folder.is_dir():
        raise DataError(f"{folder}: not a directory")
    names = sorted(p.name for p in folder.glob("*.png"))
    if not names:
        raise DataError(f"{folder}: no .png files")
    return names


def label_pair_names(pred_dir: Path, gt_dir: Path) -> list[str]:
    """The ground truth's label maps, each with its prediction of the same name."""
    names = png_names(gt_dir)
    if not pred_dir.is_dir():
        raise DataError(f"{pred_dir}: not a directory")
    missing = [n for n in names if not (pred_dir / n).is_file()]
    if missing:
        raise DataError(f"{pred_dir / missing[0]}: no prediction for {gt_dir / missing[0]}")
    return names


def read_label_pair(
    pred_path: Path, gt_path: Path, num_classes: int, ignore: int
) -> tuple[np.ndarray, np.ndarray]:
    """A predicted and a ground-truth label map, checked: same shape, labels in range."""
    pred, target = read_label_png(pred_path), read_label_png(gt_path)
    if pred.shape != target.shape:
        raise DataError(
            f"{pred_path}: shape {list(pred.shape)} differs from the ground truth's "
            f"{list(target.shape)}"
        )
    k = num_classes
    bad = pred[(pred < 0) | (pred >= k)]
    if bad.size:
        raise DataError(f"{pred_path}: label {int(bad[0])} outside [0, {k - 1}]")
    bad = target[((target < 0) | (target >= k)) & (target != ignore)]
    if bad.size:
        raise DataError(f"{gt_path}: label {int(bad[0])} outside [0, {k - 1}] and not {ignore}")
    return pred, target


def read_images(path: Path) -> tuple[list[str], list[np.ndarray]]:
    """A folder of PNGs (by file name) or one ``.npy [N, C, H, W]``, as float32 [C, H, W]."""
    if path.is_dir():
        names = png_names(path)
        return names, [read_image(path / n) for n in names]
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise DataError(f"{path}: not a readable .npy array ({exc})") from None
    if array.ndim != 4 or not np.issubdtype(array.dtype, np.number):
        raise DataError(f"{path}: expected images [N, C, H, W], got shape {list(array.shape)}")
    return [str(i) for i in range(len(array))], list(array.astype(np.float32))


# -- embeddings -----------------------------------------------------------------------------
@dataclass
class Retrieval:
    """Queries against a gallery (itself, leave-one-out, when none is given)."""

    queries: np.ndarray  # float32 [N, D]
    labels: np.ndarray  # int64 [N]
    gallery: np.ndarray  # float32 [M, D]
    gallery_labels: np.ndarray  # int64 [M]
    exclude: np.ndarray  # int64 [N]: the gallery index left out per query, or -1

    @property
    def leave_one_out(self) -> bool:
        return bool(len(self.exclude)) and bool((self.exclude >= 0).all())


def read_retrieval(
    embeddings: Path | str,
    labels: Path | str,
    gallery: Path | str | None = None,
    gallery_labels: Path | str | None = None,
) -> Retrieval:
    queries = read_npy(embeddings, "embeddings [N, D]", 2).astype(np.float32)
    query_labels = read_npy(labels, "labels [N]", 1).astype(np.int64)
    if len(query_labels) != len(queries):
        raise DataError(f"{labels}: {len(query_labels)} labels for {len(queries)} embeddings")
    if (gallery is None) != (gallery_labels is None):
        raise DataError("Expected a gallery and its labels together")
    if gallery is None or gallery_labels is None:
        exclude = np.arange(len(queries), dtype=np.int64)  # leave-one-out
        out = Retrieval(queries, query_labels, queries, query_labels, exclude)
    else:
        items = read_npy(gallery, "embeddings [M, D]", 2).astype(np.float32)
        item_labels = read_npy(gallery_labels, "labels [M]", 1).astype(np.int64)
        if len(item_labels) != len(items):
            raise DataError(
                f"{gallery_labels}: {len(item_labels)} labels for {len(items)} embeddings"
            )
        if items.shape[1] != queries.shape[1]:
            raise DataError(
                f"{gallery}: dimension {items.shape[1]} differs from the queries' "
                f"{queries.shape[1]}"
            )
        exclude = np.full(len(queries), -1, dtype=np.int64)
        out = Retrieval(queries, query_labels, items, item_labels, exclude)
    if len(out.gallery) == 0:
        raise DataError(f"{gallery or embeddings}: the gallery is empty")
    return out
