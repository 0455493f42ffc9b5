"""Triton-style system shared memory: regions a co-located client registers by name.

A client creates a shared memory object (``/dev/shm/<key>``), writes its tensors there and
registers ``(name, key, offset, byte_size)``; requests then name the region instead of
carrying the bytes. The server maps the object once, at registration, and an input in a
region becomes a read-only ``np.frombuffer`` view on that mapping: nothing is copied on
decode. Outputs asked for in a region are written into it.

Lifetime. :meth:`SharedMemoryRegistry.lease` gives each request a :class:`Lease`; the
first time a request names a region the lease counts it as a user. Unregistering removes
the name at once (later requests naming it get INVALID_ARGUMENT), but the mapping of a
region still in use is closed only when its last lease ends, so a request in flight never
reads memory unmapped under it. Should an array over the mapping outlive its request (a
traceback holding a frame), ``mmap.close`` refuses while the buffer is exported, and the
garbage collector unmaps it with the last view: never while something can still read it.
:meth:`SharedMemoryRegistry.close` (server shutdown) unregisters every region. The client
owns the object itself and may unlink it whenever it likes; the server's mapping stays
valid until unregistered. Should it truncate the object below a region, reading the mapping
there would kill the server (SIGBUS): each request checks the object's size first and is
refused (INVALID_ARGUMENT) when the region no longer fits.

Transport-free: the servicers turn the protocol's fields and parameters into calls here.
"""

from __future__ import annotations

import logging
import mmap
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..wire import NUMPY_DTYPES as DTYPES
from ..wire import dtype_name
from .errors import InvalidInputError, NotFoundError, ScoringError, shown

log = logging.getLogger(__name__)

SHM_ROOT = Path("/dev/shm")
# The KServe / Triton tensor parameters that place a tensor in a region.
REGION = "shared_memory_region"
BYTE_SIZE = "shared_memory_byte_size"
OFFSET = "shared_memory_offset"


class RegionExistsError(ScoringError):
    """A region of that name is already registered."""

    code = "ALREADY_EXISTS"


@dataclass
class Region:
    """One registered region: ``byte_size`` bytes from ``offset`` in ``/dev/shm/<key>``."""

    name: str
    key: str
    offset: int
    byte_size: int
    mapping: mmap.mmap
    fd: int  # kept open to see the object's size: reading past its end would be SIGBUS
    users: int = 0
    retired: bool = False

    def status(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "key": self.key,
            "offset": self.offset,
            "byte_size": self.byte_size,
        }

    def shrunk(self) -> bool:
        """The client truncated the object below the region since it was registered."""
        return os.fstat(self.fd).st_size < self.offset + self.byte_size

    def unmap(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        try:
            self.mapping.close()
        except BufferError:  # an array over it is still alive: unmapped with the last view
            log.debug("shared memory region %s: unmapped with its last view", self.name)


def _checked_key(key: str) -> str:
    """The object's file name under /dev/shm (``/input0`` and ``input0`` are the same)."""
    base = key.lstrip("/")
    if not base or "/" in base or base in (".", "..") or "\x00" in base:
        raise InvalidInputError(
            f"Expected `key` to name a shared memory object (like '/cvscore-input'), "
            f"got {shown(key)!r}"
        )
    return base


class SharedMemoryRegistry:
    """Regions by name, shared by every transport of one server."""

    def __init__(self, root: Path = SHM_ROOT) -> None:
        self.root = Path(root)
        self._regions: dict[str, Region] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._regions)

    # -- registration -----------------------------------------------------------------------
    def register(self, name: str, key: str, offset: int = 0, byte_size: int = 0) -> None:
        """Map ``byte_size`` bytes from ``offset`` of ``/dev/shm/<key>`` as region ``name``."""
        if not name:
            raise InvalidInputError("Expected a region `name`, got an empty one")
        if name in self._regions:
            raise RegionExistsError(
                f"Shared memory region `{shown(name)}` is already registered; unregister it "
                "first or choose another name"
            )
        base = _checked_key(key)
        if offset < 0 or byte_size <= 0:
            raise InvalidInputError(
                f"Expected region `{shown(name)}` to have offset >= 0 and byte_size > 0, "
                f"got offset {offset}, byte_size {byte_size}"
            )
        path = self.root / base
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            raise InvalidInputError(
                f"Shared memory object {shown(key)!r} of region `{shown(name)}` does not "
                f"exist ({path}): create it on this machine before registering it"
            ) from None
        except OSError as exc:
            raise InvalidInputError(
                f"Cannot open shared memory object {shown(key)!r} of region "
                f"`{shown(name)}`: {exc.strerror}"
            ) from None
        try:
            size = os.fstat(fd).st_size
            if offset + byte_size > size:
                raise InvalidInputError(
                    f"Expected region `{shown(name)}` to lie within {shown(key)!r} ({size} "
                    f"bytes), got offset {offset} + byte_size {byte_size} = "
                    f"{offset + byte_size}"
                )
            mapping = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except BaseException:
            os.close(fd)
            raise
        region = Region(name, key, offset, byte_size, mapping, fd)
        with self._lock:
            if name in self._regions:  # registered by a concurrent call meanwhile
                region.unmap()
                raise RegionExistsError(
                    f"Shared memory region `{shown(name)}` is already registered"
                )
            self._regions[name] = region
        log.info("shared memory region %s registered: %s, %d bytes", shown(name), key, byte_size)

    def status(self, name: str = "") -> list[dict[str, Any]]:
        """Every region, or the one named (NOT_FOUND when it is not registered)."""
        if not name:
            return [r.status() for r in list(self._regions.values())]
        region = self._regions.get(name)
        if region is None:
            known = ", ".join(sorted(shown(n) for n in self._regions)) or "none"
            raise NotFoundError(
                f"Unknown shared memory region `{shown(name)}`; registered: {known}"
            )
        return [region.status()]

    def unregister(self, name: str = "") -> None:
        """Unregister one region, or every region when ``name`` is empty.

        As in Triton, unregistering a name that is not registered does nothing.
        """
        with self._lock:
            if name:
                regions = [self._regions[name]] if name in self._regions else []
            else:
                regions = list(self._regions.values())
            for region in regions:
                del self._regions[region.name]
                region.retired = True
                if region.users == 0:
                    region.unmap()
        for region in regions:
            log.info("shared memory region %s unregistered", shown(region.name))

    def close(self) -> None:
        """Server shutdown: unregister every region (nothing is in flight any more)."""
        self.unregister()

    # -- requests ---------------------------------------------------------------------------
    def lease(self) -> Lease:
        """The regions one request uses, held until the request is answered (``with``)."""
        return Lease(self)


class Lease:
    """Views on registered regions for one request; :meth:`release` (or leaving its
    ``with``) ends the request's use."""

    __slots__ = ("held", "registry")

    def __init__(self, registry: SharedMemoryRegistry) -> None:
        self.registry = registry
        self.held: dict[str, Region] = {}

    def _region(self, name: str, what: str) -> Region:
        region = self.held.get(name)
        if region is not None:
            return region
        registry = self.registry
        with registry._lock:
            region = registry._regions.get(name)
            if region is None:
                known = ", ".join(sorted(shown(n) for n in registry._regions)) or "none"
                raise InvalidInputError(
                    f"{what} names shared memory region `{shown(name)}`, which is not "
                    f"registered; registered: {known}"
                )
            if region.shrunk():
                raise InvalidInputError(
                    f"{what} names shared memory region `{shown(name)}`, whose object "
                    f"{shown(region.key)!r} is now smaller than the region; register it again"
                )
            region.users += 1
        self.held[name] = region
        return region

    def view(
        self, name: str, offset: int, byte_size: int, what: str, writable: bool = False
    ) -> memoryview:
        """``byte_size`` bytes from ``offset`` in region ``name`` (read-only for inputs)."""
        region = self._region(name, what)
        if offset < 0 or byte_size < 0 or offset + byte_size > region.byte_size:
            raise InvalidInputError(
                f"Expected {what} to lie within shared memory region `{shown(name)}` "
                f"({region.byte_size} bytes), got offset {offset} + byte_size {byte_size}"
            )
        start = region.offset + offset
        view = memoryview(region.mapping)[start : start + byte_size]
        return view if writable else view.toreadonly()

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def release(self) -> None:
        if not self.held:
            return
        with self.registry._lock:
            for region in self.held.values():
                region.users -= 1
                if region.retired and region.users == 0:
                    region.unmap()
        self.held.clear()


# -- the protocol's tensor parameters ---------------------------------------------------------
def _int(parameters: Mapping[str, Any], key: str, what: str) -> int:
    if key not in parameters:
        return 0
    kind = parameters[key].WhichOneof("parameter_choice")
    if kind not in ("int64_param", "uint64_param"):
        raise InvalidInputError(f"Expected parameter {key} of {what} to be an integer, got {kind}")
    return int(getattr(parameters[key], kind))


def tensor_ref(parameters: Mapping[str, Any], kind: str, name: str) -> tuple[str, int, int] | None:
    """(region, offset, byte_size) from the parameters of a KServe tensor (``kind`` "Input"
    or "Output", ``name``), or None when the tensor is not in shared memory."""
    if not parameters:
        return None  # the common case: nothing to read, no message to build
    what = f"{kind} `{shown(name)}`"
    if REGION not in parameters:
        if BYTE_SIZE in parameters or OFFSET in parameters:
            raise InvalidInputError(f"{what} has shared memory parameters but no {REGION}")
        return None
    p = parameters[REGION]
    if p.WhichOneof("parameter_choice") != "string_param" or not p.string_param:
        raise InvalidInputError(f"Expected parameter {REGION} of {what} to name a region")
    if BYTE_SIZE not in parameters:
        raise InvalidInputError(f"{what} is in shared memory but has no {BYTE_SIZE}")
    return p.string_param, _int(parameters, OFFSET, what), _int(parameters, BYTE_SIZE, what)


def write_output(
    lease: Lease, name: str, array: np.ndarray, region: str, offset: int, byte_size: int
) -> None:
    """Write an output's little-endian C-order bytes at ``offset`` in ``region``."""
    what = f"Output `{shown(name)}`"
    wire = np.ascontiguousarray(array, dtype=DTYPES.get(dtype_name(array.dtype), array.dtype))
    if wire.nbytes > byte_size:
        raise InvalidInputError(
            f"Expected the shared memory of {what} to hold its {wire.nbytes} bytes (shape "
            f"{list(wire.shape)} x {wire.itemsize} bytes of {dtype_name(wire.dtype)}), got "
            f"byte_size {byte_size}"
        )
    view = lease.view(region, offset, wire.nbytes, what, writable=True)
    np.frombuffer(view, dtype=np.uint8)[:] = wire.reshape(-1).view(np.uint8)
