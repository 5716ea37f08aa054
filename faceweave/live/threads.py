"""How many torch intra-op threads a live session's engine work runs on, and pinning that count to one thread.

On the CPU a live session is never alone on the cores: its capture thread decodes the camera at the camera's rate
while the engine works. Torch's default (one OpenMP thread per core) then oversubscribes the machine, and each of
the swap's thousands of small parallel ops waits at its barrier for a thread the scheduler has parked: on the
2-core dev VM, 640×480 at 30 fps in, 11–12 fps swapped (p95 147–157 ms) with 2 threads against 17–19 fps (p95
99–117 ms) with one (docs/benchmarks.md, "CPU goals, session 16:10"). So the engine leaves one core to the rest.

Torch keeps the thread count per thread once a thread has used it (OpenMP's per-thread setting; a new thread
starts from the process default), so the count is set on the thread that runs the engine.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

#: Cores left to the capture thread (decode) and the session's host work.
RESERVED_CORES = 1


def available_cores() -> int:
    """Cores this process may run on (its affinity mask where the OS has one, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


def live_torch_threads(device: torch.device) -> int | None:
    """Torch intra-op threads for a live session's engine work on ``device``: on the CPU every core but
    :data:`RESERVED_CORES` (at least one); None on a GPU (its host threads are
    :func:`~faceweave.pipeline.video.gpu_host_threads`' business)."""
    if device.type != "cpu":
        return None
    return max(1, available_cores() - RESERVED_CORES)


@contextlib.contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Run the block with ``count`` torch intra-op threads on the calling thread, then restore the calling thread's
    count and the process default (threads started inside the block take ``count`` as theirs). None: no change."""
    if count is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


__all__ = ["RESERVED_CORES", "available_cores", "live_torch_threads", "torch_threads"]
