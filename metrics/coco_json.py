"""Reading COCO JSON items into arrays: a fast path per field, and a slow one that names
the first bad item (``instances.json: annotations[3]: missing key 'bbox'``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def field_of(item: Any, key: str, where: str) -> Any:
    if not isinstance(item, Mapping):
        raise ValueError(f"{where}: expected an object, got {type(item).__name__}")
    if key not in item:
        raise ValueError(f"{where}: missing key {key!r}")
    return item[key]


def column(items: Sequence[Any], key: str, where: str, kind: type) -> np.ndarray:
    """One scalar field of every item: a fast path, and a slow one naming a bad item."""
    dtype = np.int64 if kind is int else np.float64
    try:
        return np.array([it[key] for it in items], dtype=dtype).reshape(len(items))
    except (KeyError, TypeError, ValueError, IndexError):
        pass
    out = []
    for i, it in enumerate(items):
        value = field_of(it, key, f"{where}[{i}]")
        try:
            out.append(kind(value))
        except (TypeError, ValueError):
            raise ValueError(f"{where}[{i}]: bad {key} {value!r}") from None
    return np.array(out, dtype=dtype)


def boxes(items: Sequence[Any], where: str, key: str = "bbox") -> np.ndarray:
    try:
        arr = np.array([it[key] for it in items], dtype=np.float64).reshape(len(items), -1)
        if arr.shape[1:] == (4,) and np.isfinite(arr).all() and (arr[:, 2:] >= 0).all():
            return arr
    except (KeyError, TypeError, ValueError, IndexError):
        pass
    out = np.zeros((len(items), 4))
    for i, item in enumerate(items):
        box = field_of(item, key, f"{where}[{i}]")
        try:
            row = np.asarray(box, dtype=np.float64)
        except (TypeError, ValueError):
            row = np.zeros(0)
        if row.shape != (4,) or not np.isfinite(row).all() or (row[2:] < 0).any():
            raise ValueError(f"{where}[{i}]: bad box {box!r}, expected [x, y, w, h] with w, h >= 0")
        out[i] = row
    return out
