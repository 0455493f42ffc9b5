"""Tensors on the wire <-> numpy arrays, checked before anything is allocated.

Transport-free: the servicers hand over the declared name, dtype, shape and bytes (or typed
values) of each tensor; a declared shape is checked against hard limits and the byte length
before numpy sees it, so a request that claims a huge shape allocates nothing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..wire import NUMPY_DTYPES as DTYPES
from ..wire import dtype_name
from .errors import InvalidInputError

MAX_RANK = 16
MAX_DIM = 2**31 - 1


def _fmt(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(int(d)) for d in shape) + "]"


def check_shape(name: str, shape: Sequence[int]) -> tuple[int, ...]:
    """Rank and axis sizes within limits; returns the shape as a tuple of ints."""
    if len(shape) > MAX_RANK:
        raise InvalidInputError(
            f"Expected `{name}` to have at most {MAX_RANK} axes, got {len(shape)}"
        )
    dims = tuple(int(d) for d in shape)
    for d in dims:
        if d < 0 or d > MAX_DIM:
            raise InvalidInputError(
                f"Expected every axis of `{name}` to be between 0 and {MAX_DIM}, "
                f"got shape {_fmt(dims)}"
            )
    return dims


def resolve_dtype(name: str, dtype: str) -> np.dtype[Any]:
    try:
        return DTYPES[dtype]
    except KeyError:
        raise InvalidInputError(
            f"Expected `{name}` to have a dtype in {sorted(DTYPES)}, got {dtype or 'none'!r}"
        ) from None


def from_bytes(name: str, dtype: str, shape: Sequence[int], data: bytes) -> np.ndarray:
    """A read-only array over ``data`` (no copy), after checking shape against byte length."""
    np_dtype = resolve_dtype(name, dtype)
    dims = check_shape(name, shape)
    expected = math.prod(dims) * np_dtype.itemsize
    if len(data) != expected:
        raise InvalidInputError(
            f"Expected `{name}` to carry {expected} bytes (shape {_fmt(dims)} x "
            f"{np_dtype.itemsize} bytes of {dtype}), got {len(data)}"
        )
    if np_dtype == np.bool_:
        # Any non-zero byte is True; normalise so torch and ONNX Runtime see 0/1 only.
        return np.frombuffer(data, dtype=np.uint8).reshape(dims).astype(np.bool_)
    return np.frombuffer(data, dtype=np_dtype).reshape(dims)


def from_values(name: str, dtype: str, shape: Sequence[int], values: Sequence[Any]) -> np.ndarray:
    """An array from typed values (KServe ``contents``), after checking their count."""
    np_dtype = resolve_dtype(name, dtype)
    dims = check_shape(name, shape)
    expected = math.prod(dims)
    if len(values) != expected:
        raise InvalidInputError(
            f"Expected `{name}` to carry {expected} values (shape {_fmt(dims)}), got {len(values)}"
        )
    return np.asarray(values, dtype=np_dtype).reshape(dims)


def to_bytes(array: np.ndarray) -> bytes:
    """Raw little-endian C-order bytes."""
    wire = DTYPES.get(dtype_name(array.dtype), array.dtype)
    return np.ascontiguousarray(array, dtype=wire).tobytes()
