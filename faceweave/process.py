"""Settings of the whole process, made only by entry points that own the process: the ``faceweave`` CLI (and the
service it starts) and the segment worker processes. Library functions never call these.

:func:`tune_allocator`: glibc serves allocations ≥ ``M_MMAP_THRESHOLD`` with their own ``mmap`` and gives them back
on free, but by default it *raises* that threshold (up to 32 MiB) after the first such free. A video job then
allocates its 1–11 MB frame and batch buffers from the main heap, which fragments and never shrinks: peak RSS
drifted by 80–320 MB between a 10 s and a 60 s 720p clip with a flat working set (issue 4, measured; see
docs/benchmarks.md §4). A fixed threshold keeps frame-sized buffers on ``mmap``, so memory follows the working set.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

_LOG = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # glibc <malloc.h>
FRAME_BUFFER_MMAP_THRESHOLD = 128 * 1024


def tune_allocator(threshold: int = FRAME_BUFFER_MMAP_THRESHOLD) -> bool:
    """Fix glibc's mmap threshold at ``threshold`` bytes for this process; True when applied.

    A no-op (False) off Linux/glibc, and when the user already chose one with ``MALLOC_MMAP_THRESHOLD_``.
    """
    if not sys.platform.startswith("linux") or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others: no mallopt, nothing to tune
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    applied = bool(mallopt(M_MMAP_THRESHOLD, int(threshold)))
    _LOG.debug("mmap threshold %d bytes: %s", threshold, "applied" if applied else "refused")
    return applied
