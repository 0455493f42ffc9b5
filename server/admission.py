"""One admission check per request, planned once per signature, before any allocation.

A request's tensors arrive as declarations (:class:`tensors.WireTensor`: name, dtype, shape,
payload) or, in-process, as numpy arrays. :meth:`Plan.admit` checks, in this order and
without decoding anything:

1. the input names (missing, unexpected);
2. each tensor's declared shape (rank, axis bounds) against its payload's length;
3. each input's dtype (equal, or on the cvscore.v1 API a float the server may cast) and
   its shape against the signature: fixed axes, shared symbolic axes, trailing ``"*"``;
4. the request's size: decoded bytes, casts included, against ``max_request_bytes``;
5. the work the graph will do: an estimate of the bytes it allocates (the spec's
   ``work`` function, e.g. N·G for ``coco_map``'s IoU matrix, or a few temporaries the size
   of the product of every axis), outputs and the inputs' copies included, against
   ``max_work_bytes``.

Failing 1-3 is INVALID_ARGUMENT naming the input; failing 4-5 is RESOURCE_EXHAUSTED
(:class:`errors.TooLargeError`): the request is well formed but over this server's budget,
and the client should split it.

:meth:`Plan.prepare` then decodes the admitted inputs (views over the request's bytes, no
copy), runs the metric's domain checks (``MetricSpec.validate``: finite boxes, labels in
range; the only checks that need the values) and brings the inputs into the artifact's
canonical shapes and dtypes. Nothing the plan checked is checked again. It times itself
(:meth:`Plan.cheap`): most metrics' checks read no values, so a megabyte image pair
prepares in microseconds and the server need not hand it to a thread. Transport-free:
nothing here knows about gRPC.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..metrics.shapes import bind_axes, input_name_mismatch
from .errors import InvalidInputError, TooLargeError, shown
from .tensors import DTYPES, WireTensor, dtype_name

if TYPE_CHECKING:
    from .signature import Signature, TensorInfo

# Arrays decoded from request bytes are read-only views; torch warns when a domain check
# wraps one. Nothing here or in the runtimes writes to its inputs. (Installed once, at
# import: ``warnings.catch_warnings`` per request is neither cheap nor thread-safe.)
warnings.filterwarnings("ignore", message="The given NumPy array is not writable")

MiB = 1 << 20
FLOATS = frozenset({"float16", "float32", "float64"})
# Temporaries the size of the largest broadcast a graph without a ``work`` estimate holds
# (element-wise losses measure 2-5, see bench/work.py).
LIVE = 6
# The inputs are held twice while a request runs: as decoded and as the runtime's copy
# (batch concatenation, alignment padding, device transfer).
INPUT_COPIES = 2

Tensorish = np.ndarray | WireTensor
WorkFn = Callable[[Mapping[str, int], Mapping[str, Any]], int]


@dataclass(frozen=True)
class Limits:
    """The server's per-request budget (``--max-request-mb``, ``--max-work-mb``)."""

    max_request_bytes: int = 256 * MiB
    max_work_bytes: int = 1024 * MiB

    @classmethod
    def from_mb(cls, request_mb: float, work_mb: float) -> Limits:
        return cls(int(request_mb * MiB), int(work_mb * MiB))


@dataclass(frozen=True)
class Prepared:
    """Inputs checked and in the artifact's canonical shapes and dtypes."""

    inputs: dict[str, np.ndarray]
    batch_size: int


@dataclass(frozen=True)
class Admission:
    """What admission learned: axis sizes, the batch size and the request's cost."""

    sizes: dict[str, int]
    batch_size: int
    request_bytes: int
    work_bytes: int


def declared(value: Tensorish) -> tuple[str, tuple[int, ...], int, int]:
    """(dtype name, checked shape, element count, bytes) of a declaration or an array."""
    if isinstance(value, WireTensor):
        shape = value.check()
        count = math.prod(shape)
        return value.dtype, shape, count, count * DTYPES[value.dtype].itemsize
    shape = tuple(int(d) for d in value.shape)
    return dtype_name(value.dtype), shape, int(value.size), int(value.nbytes)


def _count(t: TensorInfo, sizes: Mapping[str, int]) -> int:
    """Elements of ``t`` for bound axis sizes (an unbound axis counts as 1)."""
    return math.prod(d if isinstance(d, int) else sizes.get(d, 1) for d in t.canonical)


def _fmt(shape: Sequence[Any]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _mib(nbytes: int) -> str:
    return f"{nbytes / MiB:,.1f} MiB" if nbytes < 10 * MiB else f"{nbytes / MiB:,.0f} MiB"


# Admissions remembered per plan, by the headers that decide them (dtypes and shapes): a
# server sees the same few shapes again and again. Cleared when full.
ADMITTED = 256

# A prepare expected to take less than this (its own timing) runs on the event loop: the
# hop to a thread and back costs about as much.
INLINE_S = 200e-6


class Plan:
    """The admission check of one signature, planned once when the model loads; what it
    learns from a request's headers is remembered for the next one with the same headers
    (the payload lengths are still checked per request)."""

    def __init__(self, signature: Signature, limits: Limits | None = None) -> None:
        self.signature = signature
        self.limits = limits or Limits()
        spec = signature.spec
        self.work: WorkFn | None = spec.work if spec is not None else None
        self.params = dict(signature.params)
        self.min_sizes: dict[str, int] = dict(spec.min_sizes) if spec is not None else {}
        # the domain checks, with the parameters resolved once (they do not change)
        self.validate: Callable[[Mapping[str, Any], Mapping[str, Any]], None] | None = None
        self.host_check: Callable[[Mapping[str, Any], Mapping[str, Any]], bool] | None = None
        self.resolved: dict[str, Any] = {}
        self._s_per_byte: float | None = None  # what prepare() took lately, per request byte
        if spec is not None and spec.validate is not None:
            self.validate = spec.validate
            self.host_check = spec.host_check
            self.resolved = dict(spec.resolve_params(self.params))
        # (input, dtype, leading axes kept) for inputs that reach the graph reshaped / cast
        self.targets = {
            t.name: (DTYPES[t.dtype], len(t.shape) - 1 if t.shape and t.shape[-1] == "*" else -1)
            for t in signature.inputs
        }
        self.names = frozenset(signature.input_names())
        # (exact_dtypes, (name, dtype, shape) per input) -> its Admission; only for requests
        # without extra tensors, and only admissions that passed (errors are raised anew)
        self._admitted: dict[tuple[Any, ...], Admission] = {}
        tensors = [*signature.inputs, *signature.outputs]
        # the compute dtype: the widest float the graph takes or returns
        self.itemsize = max(
            (DTYPES[t.dtype].itemsize for t in tensors if t.dtype in FLOATS), default=4
        )

    # -- the check ------------------------------------------------------------------------
    def admit(
        self,
        inputs: Mapping[str, Tensorish],
        exact_dtypes: bool = False,
        extra: Sequence[Tensorish] = (),
    ) -> Admission:
        """Check a request; ``extra`` are tensors it carries beside the graph's inputs
        (an aggregator's host-side inputs), counted in its size."""
        s = self.signature
        if len(inputs) != len(self.names) or not self.names.issuperset(inputs):
            got = [shown(n) for n in inputs]
            mismatch = input_name_mismatch(shown(s.name), s.input_names(), got)
            if mismatch:
                raise InvalidInputError(mismatch)
        headers = {name: declared(value) for name, value in inputs.items()}  # payloads checked
        key: tuple[Any, ...] | None = None
        if not extra:
            key = (exact_dtypes, *((n, h[0], h[1]) for n, h in headers.items()))
            known = self._admitted.get(key)
            if known is not None:
                return known
        request_bytes = sum(declared(value)[3] for value in extra)
        input_bytes = 0  # as the graph takes them
        sizes: dict[str, tuple[int, str]] = {}
        trailing_ref: tuple[list[int], str] | None = None
        for t in s.inputs:
            dtype, shape, count, nbytes = headers[t.name]
            self._check_dtype(t, dtype, exact_dtypes)
            trailing = self._bind(t, shape, sizes, self.min_sizes)
            if trailing is not None:
                if trailing_ref is None:
                    trailing_ref = (trailing, t.name)
                elif trailing != trailing_ref[0]:
                    raise InvalidInputError(
                        f"Expected the trailing axes of `{t.name}` to match those of "
                        f"`{trailing_ref[1]}` ({trailing_ref[0]}), got {trailing}"
                    )
                sizes.setdefault(str(t.canonical[-1]), (math.prod(trailing), t.name))
            request_bytes += nbytes
            input_bytes += count * DTYPES[t.dtype].itemsize
            if dtype != t.dtype:  # a cast: the converted copy too
                request_bytes += count * DTYPES[t.dtype].itemsize
        bound = {axis: size for axis, (size, _) in sizes.items()}
        limits = self.limits
        if request_bytes > limits.max_request_bytes:
            raise TooLargeError(
                f"The inputs of `{shown(s.name)}` take {_mib(request_bytes)}, over this "
                f"server's limit of {_mib(limits.max_request_bytes)} (--max-request-mb); "
                "split the request into smaller batches"
            )
        work_bytes = INPUT_COPIES * input_bytes + self.graph_bytes(bound)
        if work_bytes > limits.max_work_bytes:
            axes = ", ".join(f"{k}={v}" for k, v in bound.items())
            raise TooLargeError(
                f"Scoring `{shown(s.name)}` with {axes or 'these inputs'} needs about "
                f"{_mib(work_bytes)} of working memory, over this server's limit of "
                f"{_mib(limits.max_work_bytes)} (--max-work-mb); split the request into "
                "smaller batches"
            )
        admission = Admission(bound, bound.get("N", 0), request_bytes, work_bytes)
        if key is not None:
            if len(self._admitted) >= ADMITTED:
                self._admitted.clear()
            self._admitted[key] = admission
        return admission

    def prepare(self, inputs: Mapping[str, Tensorish], admission: Admission) -> Prepared:
        """Decode admitted inputs, run the domain checks, reshape and cast for the graph."""
        start = time.perf_counter()
        arrays = decode(inputs)
        if self.validate is not None and not (
            self.host_check is not None and self.host_check(self.resolved, arrays)
        ):  # the spec's numpy test passed them, or its torch checks decide
            import torch

            tensors = {name: torch.from_numpy(array) for name, array in arrays.items()}
            try:
                self.validate(self.resolved, tensors)
            except ValueError as exc:
                raise InvalidInputError(str(exc)) from None
        out: dict[str, np.ndarray] = {}
        for name, (want, lead) in self.targets.items():
            array = arrays[name]
            if lead >= 0 and array.ndim != lead + 1:  # trailing "*" axes -> one axis
                array = array.reshape(*array.shape[:lead], math.prod(array.shape[lead:]))
            out[name] = array if array.dtype == want else array.astype(want)
        rate = (time.perf_counter() - start) / max(1, admission.request_bytes)
        last = self._s_per_byte  # a moving average; threads racing here lose an update, no more
        self._s_per_byte = rate if last is None else 0.75 * last + 0.25 * rate
        return Prepared(out, admission.batch_size)

    def cheap(self, admission: Admission) -> bool:
        """Whether :meth:`prepare` should take under :data:`INLINE_S` on this request, going
        by the ones before it (False before the first)."""
        rate = self._s_per_byte
        return rate is not None and rate * admission.request_bytes < INLINE_S

    def graph_bytes(self, sizes: Mapping[str, int]) -> int:
        """What the graph allocates beyond its inputs, outputs included (an estimate)."""
        if self.work is not None:
            return int(self.work(sizes, self.params))
        outputs = sum(_count(t, sizes) for t in self.signature.outputs)
        # fixed axes count too: the broadcast is at least as large as any input
        broadcast = max(
            math.prod(sizes.values()), *(_count(t, sizes) for t in self.signature.inputs)
        )
        return self.itemsize * (LIVE * broadcast + outputs)

    # -- pieces ---------------------------------------------------------------------------
    @staticmethod
    def _check_dtype(t: TensorInfo, got: str, exact: bool) -> None:
        if got == t.dtype:
            return
        if not exact and got in FLOATS and t.dtype in FLOATS:
            return
        hint = " (this API does not convert between dtypes)" if exact and got in FLOATS else ""
        raise InvalidInputError(f"Expected `{t.name}` to have dtype {t.dtype}, got {got}{hint}")

    @staticmethod
    def _bind(
        t: TensorInfo,
        shape: tuple[int, ...],
        sizes: dict[str, tuple[int, str]],
        min_sizes: Mapping[str, int],
    ) -> list[int] | None:
        """Bind ``t``'s symbolic axes; return its trailing ``"*"`` axes (None: no star)."""
        star = bool(t.shape) and t.shape[-1] == "*"
        fixed = t.shape[:-1] if star else t.canonical
        if (star and len(shape) < len(fixed)) or (not star and len(shape) != len(fixed)):
            alternative = f" (or {_fmt(t.canonical)})" if t.shape != t.canonical else ""
            raise InvalidInputError(
                f"Expected `{t.name}` to have shape {_fmt(t.shape)}{alternative}, "
                f"got {list(shape)} (rank {len(shape)})"
            )
        # a star input's flattened axis is bound by the caller, after the trailing check
        trailing = list(shape[len(fixed) :]) if star else None
        try:
            bind_axes(t.name, t.shape, fixed, shape, sizes, min_sizes)
        except ValueError as exc:
            raise InvalidInputError(str(exc)) from None
        return trailing


def decode(inputs: Mapping[str, Tensorish]) -> dict[str, np.ndarray]:
    """Arrays for admitted inputs (no copy for raw bytes)."""
    return {k: v.decode() if isinstance(v, WireTensor) else v for k, v in inputs.items()}
