"""Device and dtype selection: never assume CUDA; fp16/bf16 only where the device computes them well."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import TypeVar

import torch

from faceweave.errors import DeviceUnavailable, InvalidOption

_T = TypeVar("_T")
_R = TypeVar("_R")


def resolve_device(name: str = "auto") -> torch.device:
    """Turn ``auto|cpu|cuda|cuda:N|mps`` into a :class:`torch.device`, checking that it exists."""
    if name == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceUnavailable(f"device {name!r} was asked for but CUDA is not available",
                                    hint="use --device cpu or --device auto")
        dev = torch.device(name)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceUnavailable(f"device {name!r} does not exist ({torch.cuda.device_count()} CUDA devices)",
                                    hint="pick an index below the device count")
        return dev
    if name == "mps":
        if not torch.backends.mps.is_available():
            raise DeviceUnavailable("device 'mps' is not available", hint="use --device cpu")
        return torch.device("mps")
    raise InvalidOption(f"unknown device {name!r}", hint="use auto, cpu, cuda or cuda:N")


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``auto`` → float16 on CUDA, float32 elsewhere (fp16 grid_sample on CPU is slow and crashed on torch 2.13)."""
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    table = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    if name not in table:
        raise InvalidOption(f"unknown dtype {name!r}", hint="use auto, float32, float16 or bfloat16")
    if device.type == "cpu" and table[name] is not torch.float32:
        raise InvalidOption(f"dtype {name} is not supported on the CPU", hint="use --dtype float32 or auto on CPU")
    return table[name]


def to_device_async(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``t`` on ``device`` without waiting: a host tensor bound for a GPU is pinned and copied asynchronously (a
    plain copy from pageable memory waits for the device to finish its queued work first). The pinned buffer is
    not reused before the copy completes (PyTorch's host allocator tracks it)."""
    if t.device == device:
        return t
    if device.type == "cuda" and t.device.type == "cpu":
        t = t.pin_memory()
    return t.to(device, non_blocking=True)


def worker_stream(device: torch.device, role: str) -> torch.cuda.Stream | None:
    """A CUDA stream of its own for one pipeline thread's ``role`` (e.g. the video stream's swap thread), so that its
    syncs wait for its own work only, not for the other threads' queued kernels; None off CUDA. One per device and
    role for the process: cuBLAS keeps a workspace for every stream it ran on until the process ends."""
    if device.type != "cuda":
        return None
    return _role_stream(cuda_index(device), role)


@functools.cache
def _role_stream(index: int, role: str) -> torch.cuda.Stream:
    return torch.cuda.Stream(device=index)


def run_on_stream(stream: torch.cuda.Stream | None, ready: torch.cuda.Event | None, fn: Callable[[_T], _R],
                  arg: _T) -> _R:
    """``fn(arg)`` with ``stream`` current (None: as is), once the work recorded in ``ready`` on another stream is
    done on the device (a device-side wait). Waits for ``stream`` before it returns, also on error: ``arg``'s device
    tensors were allocated on the other stream, and once the caller frees them their memory may be reused there."""
    if stream is None:
        return fn(arg)
    with torch.cuda.stream(stream):
        if ready is not None:
            stream.wait_event(ready)
        try:
            return fn(arg)
        finally:
            stream.synchronize()


def record_ready(device: torch.device) -> torch.cuda.Event | None:
    """An event recorded now on ``device``'s current stream (for :func:`run_on_stream`); None off CUDA."""
    if device.type != "cuda":
        return None
    event = torch.cuda.Event()
    event.record(torch.cuda.current_stream(device))
    return event


def cuda_index(device: torch.device) -> int:
    """The index of a CUDA ``device`` (``cuda`` without one: the current device)."""
    return device.index if device.index is not None else torch.cuda.current_device()


def engine_lock(device: torch.device) -> threading.RLock:
    """The lock an engine's forwards hold (see :class:`~faceweave.pipeline.engine.SwapEngine`).

    On CUDA it is one lock per device, shared by every engine on it: a CUDA-graph capture must not overlap another
    thread's work on the device (two engines capturing at once, or one capturing while another ran, failed their
    captures and a request with "operation not permitted when stream is capturing" on an H100, 2026-12-05), and the
    forwards of two engines on one GPU gain nothing from running at once. Elsewhere each engine has its own lock.
    """
    if device.type != "cuda":
        return threading.RLock()
    return _cuda_lock(cuda_index(device))


@functools.cache
def _cuda_lock(index: int) -> threading.RLock:
    # process-wide because the device and its capture state are: one per CUDA device index
    return threading.RLock()


def init_cuda_linalg(device: torch.device) -> None:
    """On CUDA, load torch's linear-algebra library once per device, before any two threads can ask for it: its lazy
    loader is not thread-safe (two :sync slots warping at once raised "lazy wrapper should be called at most once",
    H100). Nothing elsewhere."""
    if device.type == "cuda":
        _load_cuda_linalg(cuda_index(device))


@functools.cache
def _load_cuda_linalg(index: int) -> None:
    with _cuda_lock(index):
        torch.linalg.inv(torch.eye(3, dtype=torch.float64, device=torch.device("cuda", index)))
