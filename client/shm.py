"""Large inputs through system shared memory when the server runs on this machine.

A client on one local address (``localhost``, ``127.0.0.1``, ``[::1]``, ``unix:``) writes
each input of at least ``threshold`` bytes (64 KiB by default) into a shared memory object
it created (``/dev/shm/cvscore-<pid>-<id>``, mode 0600), registers that object with the
server once (``RegisterSharedMemory``) and sends only a reference: one copy of the bytes
instead of serialising, sending and parsing them. Regions are pooled: a call takes a free
region large enough (or makes one, retiring a smaller free one), and gives it back when
answered, so concurrent calls never share a region and sequential ones reuse it. ``close``
unregisters and removes every region.

When registering fails (the server does not see this machine's /dev/shm: another
container, another user), the client says so once in a warning and sends bytes from then
on. ``Client(..., shared_memory=False)`` (CLI ``--no-shared-memory``) never tries.
``evaluate`` streams keep sending bytes: a stream's messages are buffered ahead of the
server, so a region could not be reused safely between them.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import threading
import uuid
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from ..v1 import scoring_pb2 as pb
from .convert import wire_array

SHM_ROOT = Path("/dev/shm")
# Where a region starts to pay (ssim to a local server, median round trip, bytes / shared
# memory, 2026-12-02): 27 KiB per input 2.14 / 2.16 ms, 48 KiB 2.88 / 2.81, 108 KiB
# 4.97 / 3.80, 768 KiB 16.1 / 9.7. Below it the region's bookkeeping costs what the copy saves.
THRESHOLD = 64 << 10
ALIGN = 64  # each tensor starts on a cache line
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})


def is_local(addresses: list[str]) -> bool:
    """One address, on this machine."""
    if len(addresses) != 1:
        return False
    address = addresses[0]
    if address.startswith(("unix:", "unix-abstract:")):
        return True
    if address.startswith("ipv4:") or address.startswith("ipv6:"):
        address = address.split(":", 1)[1]
    host = address.rsplit(":", 1)[0] if address.count(":") == 1 or "]" in address else address
    return host in LOCAL_HOSTS


class LocalRegion:
    """A shared memory object this client created and maps."""

    def __init__(self, capacity: int, root: Path = SHM_ROOT) -> None:
        self.name = f"cvscore-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self.path = root / self.name
        self.capacity = capacity
        self.registered = False
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        try:
            os.ftruncate(fd, capacity)
            self.mapping = mmap.mmap(fd, capacity)
        except BaseException:
            os.unlink(self.path)
            raise
        finally:
            os.close(fd)

    def register_request(self) -> pb.RegisterSharedMemoryRequest:
        return pb.RegisterSharedMemoryRequest(
            name=self.name, key=self.name, offset=0, byte_size=self.capacity
        )

    def destroy(self) -> None:
        self.mapping.close()
        self.path.unlink(missing_ok=True)


def _aligned(n: int) -> int:
    return n + (-n) % ALIGN


class SharedInputs:
    """The client's pool of regions, and the choice of which inputs travel through them."""

    def __init__(self, threshold: int = THRESHOLD, root: Path = SHM_ROOT) -> None:
        self.threshold = threshold
        self.root = root
        self.enabled = root.is_dir()
        self._free: list[LocalRegion] = []
        self._lock = threading.Lock()
        self.regions: list[LocalRegion] = []  # every region not destroyed yet

    def placement(
        self, inputs: Mapping[str, Any]
    ) -> dict[str, tuple[pb.DataType, np.ndarray]] | None:
        """The inputs to place (name -> (dtype code, wire array)), or None for none."""
        if not self.enabled:
            return None
        large = {}
        for name, value in inputs.items():
            nbytes = getattr(value, "nbytes", 0)
            if isinstance(nbytes, int) and nbytes >= self.threshold:
                large[name] = wire_array(name, value)
        return large or None

    @staticmethod
    def size(placed: Mapping[str, tuple[pb.DataType, np.ndarray]]) -> int:
        return sum(_aligned(array.nbytes) for _, array in placed.values())

    def take(self, nbytes: int) -> tuple[LocalRegion, list[LocalRegion]]:
        """A free region of at least ``nbytes`` (a new one, unregistered, when none is) and
        the free regions it replaces (to unregister and destroy)."""
        with self._lock:
            fits = [r for r in self._free if r.capacity >= nbytes]
            if fits:
                region = min(fits, key=lambda r: r.capacity)
                self._free.remove(region)
                return region, []
            retired = self._free[:]  # all too small: one larger region grows past them
            self._free.clear()
            grown = max([nbytes, *(2 * r.capacity for r in retired)])
            region = LocalRegion(grown + (-grown) % mmap.PAGESIZE, self.root)
            self.regions = [r for r in self.regions if r not in retired] + [region]
            return region, retired

    def fill(
        self, region: LocalRegion, placed: Mapping[str, tuple[pb.DataType, np.ndarray]]
    ) -> dict[str, pb.Tensor]:
        """Write the placed inputs into ``region``; their messages name it."""
        out = {}
        offset = 0
        for name, (code, array) in placed.items():
            n = array.nbytes
            target = np.frombuffer(region.mapping, np.uint8, count=n, offset=offset)
            target[:] = array.reshape(-1).view(np.uint8)
            ref = pb.SharedMemoryRef(region=region.name, offset=offset, byte_size=n)
            out[name] = pb.Tensor(name=name, dtype=code, shape=list(array.shape), shared_memory=ref)
            offset += _aligned(n)
        return out

    def give(self, region: LocalRegion) -> None:
        with self._lock:
            if region in self.regions:
                self._free.append(region)

    def failed(self, region: LocalRegion, reason: str) -> None:
        """Registering failed: send bytes from now on."""
        with self._lock:
            self.enabled = False
            self.regions = [r for r in self.regions if r is not region]
        region.destroy()
        warnings.warn(
            f"cvscore client: the server cannot use shared memory ({reason}); sending "
            "inputs as bytes (Client(..., shared_memory=False) skips the attempt)",
            RuntimeWarning,
            stacklevel=4,
        )

    def drain(self) -> list[LocalRegion]:
        """Every region, for close: the caller unregisters them, then destroys them."""
        with self._lock:
            regions, self.regions, self._free = self.regions, [], []
            self.enabled = False
        return regions


# -- the calls around a region, for the blocking and the asyncio client ------------------------
Placed = tuple[LocalRegion | None, dict[str, pb.Tensor]]


def place(
    shared: SharedInputs | None, stub: Any, inputs: Mapping[str, Any], timeout: Any
) -> Placed:
    """Blocking: the region a call uses (registered) and its placed inputs' messages."""
    placed = shared.placement(inputs) if shared is not None else None
    if shared is None or placed is None:
        return None, {}
    region, retired = shared.take(shared.size(placed))
    for old in retired:
        with contextlib.suppress(grpc.RpcError):  # else unmapped at the server's shutdown
            stub.UnregisterSharedMemory(
                pb.UnregisterSharedMemoryRequest(name=old.name), timeout=timeout
            )
        old.destroy()
    if not region.registered:
        try:
            stub.RegisterSharedMemory(region.register_request(), timeout=timeout)
        except grpc.RpcError as error:
            shared.failed(region, error.details() if hasattr(error, "details") else str(error))
            return None, {}
        region.registered = True
    return region, shared.fill(region, placed)


async def place_async(
    shared: SharedInputs | None, stub: Any, inputs: Mapping[str, Any], timeout: Any
) -> Placed:
    """asyncio: as :func:`place`."""
    placed = shared.placement(inputs) if shared is not None else None
    if shared is None or placed is None:
        return None, {}
    region, retired = shared.take(shared.size(placed))
    for old in retired:
        with contextlib.suppress(grpc.RpcError):
            await stub.UnregisterSharedMemory(
                pb.UnregisterSharedMemoryRequest(name=old.name), timeout=timeout
            )
        old.destroy()
    if not region.registered:
        try:
            await stub.RegisterSharedMemory(region.register_request(), timeout=timeout)
        except grpc.RpcError as error:
            shared.failed(region, error.details() if hasattr(error, "details") else str(error))
            return None, {}
        region.registered = True
    return region, shared.fill(region, placed)


def close(shared: SharedInputs | None, stub: Any) -> None:
    """Unregister (best effort, briefly) and remove every region."""
    for region in shared.drain() if shared is not None else []:
        if region.registered:
            with contextlib.suppress(grpc.RpcError):  # a server gone has unmapped it
                stub.UnregisterSharedMemory(
                    pb.UnregisterSharedMemoryRequest(name=region.name), timeout=5.0
                )
        region.destroy()


async def close_async(shared: SharedInputs | None, stub: Any) -> None:
    for region in shared.drain() if shared is not None else []:
        if region.registered:
            with contextlib.suppress(grpc.RpcError):
                await stub.UnregisterSharedMemory(
                    pb.UnregisterSharedMemoryRequest(name=region.name), timeout=5.0
                )
        region.destroy()
