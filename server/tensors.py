"""Tensors on the wire <-> numpy arrays, checked before anything is allocated.

Transport-free: the servicers hand over the declared name, dtype, shape and bytes (or typed
values) of each tensor; a declared shape is checked against hard limits and the byte length
before numpy sees it, so a request that claims a huge shape allocates nothing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..wire import NUMPY_DTYPES as DTYPES
from ..wire import dtype_name
from .errors import InvalidInputError, shown

MAX_RANK = 16
MAX_DIM = 2**31 - 1
# The product of a shape's non-zero axes: numpy refuses a shape whose nominal size
# overflows even when an axis is 0 ("array is too big"), so this bounds empty tensors too.
MAX_NOMINAL = 2**40


def _fmt(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(int(d)) for d in shape) + "]"


def check_shape(name: str, shape: Sequence[int]) -> tuple[int, ...]:
    """Rank and axis sizes within limits; returns the shape as a tuple of ints."""
    name = shown(name)
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
    if math.prod(d for d in dims if d) > MAX_NOMINAL:
        raise InvalidInputError(
            f"Expected the non-zero axes of `{name}` to multiply to at most {MAX_NOMINAL}, "
            f"got shape {_fmt(dims)}"
        )
    return dims


@dataclass(slots=True)
class WireTensor:
    """A tensor as a request declares it, not decoded yet: checked before numpy sees it.

    ``data`` holds raw little-endian bytes (or a view on a shared memory region), or
    ``values`` typed values (KServe contents). :meth:`decode` after :meth:`check` does not
    check again.
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    data: bytes | memoryview | None = None
    values: Sequence[Any] | None = None
    _checked: tuple[np.dtype[Any], tuple[int, ...]] | None = field(
        default=None, repr=False, compare=False
    )

    def check(self) -> tuple[int, ...]:
        """The shape, after checking it and the payload's length (allocates nothing)."""
        np_dtype = resolve_dtype(self.name, self.dtype)
        dims = check_shape(self.name, self.shape)
        if self.values is not None:
            _check_count(self.name, dims, len(self.values))
        else:
            _check_length(self.name, self.dtype, np_dtype, dims, len(self.data or b""))
        self._checked = (np_dtype, dims)
        return dims

    def decode(self) -> np.ndarray:
        if self._checked is None:
            self.check()
        assert self._checked is not None
        np_dtype, dims = self._checked
        if self.values is not None:
            return np.asarray(self.values, dtype=np_dtype).reshape(dims)
        return _array(np_dtype, dims, self.data or b"")


def resolve_dtype(name: str, dtype: str) -> np.dtype[Any]:
    try:
        return DTYPES[dtype]
    except KeyError:
        raise InvalidInputError(
            f"Expected `{shown(name)}` to have a dtype in {sorted(DTYPES)}, "
            f"got {shown(dtype or 'none')!r}"
        ) from None


def _check_length(
    name: str, dtype: str, np_dtype: np.dtype[Any], dims: tuple[int, ...], got: int
) -> None:
    expected = math.prod(dims) * np_dtype.itemsize
    if got != expected:
        raise InvalidInputError(
            f"Expected `{shown(name)}` to carry {expected} bytes (shape {_fmt(dims)} x "
            f"{np_dtype.itemsize} bytes of {dtype}), got {got}"
        )


def _check_count(name: str, dims: tuple[int, ...], got: int) -> None:
    expected = math.prod(dims)
    if got != expected:
        raise InvalidInputError(
            f"Expected `{shown(name)}` to carry {expected} values (shape {_fmt(dims)}), got {got}"
        )


def from_bytes(name: str, dtype: str, shape: Sequence[int], data: bytes | memoryview) -> np.ndarray:
    """A read-only array over ``data`` (no copy when aligned), after checking its length."""
    np_dtype = resolve_dtype(name, dtype)
    dims = check_shape(name, shape)
    _check_length(name, dtype, np_dtype, dims, len(data))
    return _array(np_dtype, dims, data)


def _array(np_dtype: np.dtype[Any], dims: tuple[int, ...], data: bytes | memoryview) -> np.ndarray:
    """The array of checked bytes."""
    if np_dtype == np.bool_:
        # Any non-zero byte is True; normalise so torch and ONNX Runtime see 0/1 only.
        return np.frombuffer(data, dtype=np.uint8).reshape(dims).astype(np.bool_)
    array = np.frombuffer(data, dtype=np_dtype).reshape(dims)
    # a view into a protobuf message (server/rawinput.py) can start anywhere: the runtimes
    # get aligned memory, as they would from a bytes object
    return array if array.flags.aligned else array.copy()


def from_values(name: str, dtype: str, shape: Sequence[int], values: Sequence[Any]) -> np.ndarray:
    """An array from typed values (KServe ``contents``), after checking their count."""
    np_dtype = resolve_dtype(name, dtype)
    dims = check_shape(name, shape)
    _check_count(name, dims, len(values))
    return np.asarray(values, dtype=np_dtype).reshape(dims)


def to_bytes(array: np.ndarray) -> bytes:
    """Raw little-endian C-order bytes."""
    wire = DTYPES.get(dtype_name(array.dtype), array.dtype)
    return np.ascontiguousarray(array, dtype=wire).tobytes()
