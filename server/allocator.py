"""glibc malloc settings for a server process that moves megabyte messages.

Every large request is copied a few times on its way in (gRPC's buffer, the Python bytes,
the protobuf arena). glibc serves each allocation over its mmap threshold with a fresh
``mmap`` and returns it with ``munmap`` when freed, so every copy of a 1.5 MB image pair
page-faults its way through new memory: measured on this project's 2-core machine, an echo
server that only parses a 1×3×256×256 pair answered in 9.6 ms at p50 with glibc's defaults
and in 4.1 ms with large blocks kept in the heap; served single-image ssim went from 14–17
to 11–12.5 ms (bench/results/serve-cpu-*.md has the current figures).

So ``cvscore serve`` (and each of its ``--workers``) raises the mmap threshold to 64 MiB
and the trim threshold to 256 MiB: freed blocks are reused, at the cost of the process
keeping up to that much free memory mapped. A user's own ``MALLOC_MMAP_THRESHOLD_`` or
``MALLOC_TRIM_THRESHOLD_`` in the environment wins (glibc read it at start; we leave it).
Only the server's own processes call this: a library user's process is theirs to tune.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1  # glibc's <malloc.h>
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 64 << 20
TRIM_THRESHOLD = 256 << 20
ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


def tune() -> bool:
    """Apply the thresholds above; False when not on glibc or the environment sets them."""
    if any(name in os.environ for name in ENV):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl, macOS: no mallopt, nothing to tune
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    ok = bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)) and ok
    log.debug(
        "malloc thresholds: mmap %d MiB, trim %d MiB (%s)",
        MMAP_THRESHOLD >> 20,
        TRIM_THRESHOLD >> 20,
        ok,
    )
    return ok
