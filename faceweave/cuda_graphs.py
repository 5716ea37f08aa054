"""CUDA-graph replay of a tensor function with fixed shapes: capture once per key, then replay.

The face work is launch-bound on a GPU: hundreds of small kernels per batch whose Python dispatch and launches
cost more host time than the GPU spends running them. A CUDA graph records the kernels of one call and replays
them with one launch. What a replay needs, and what :class:`GraphCache` provides:

* fixed shapes and no host work inside the function (no ``.item()``, no host→device copies, no data-dependent
  shapes): the caller picks a key that fixes every shape (batch padded to a bucket, crop size, …);
* static input buffers: each call's inputs are copied into them before the replay. Inputs of the same shape and
  dtype share one buffer across keys (a texture of a fixed size serves every crop size);
* outputs copied out after the replay, so results outlive the next replay, and a lock, because the video
  pipeline's two threads may replay the same graph.

Graphs may share one memory pool (:class:`GraphPool`) with other caches of the same engine: safe because replays
copy their outputs out at once and never run at the same time on the device; the pool then holds the largest
graph's intermediates instead of their sum. Replays may come from threads on different CUDA streams (the video
stream swaps on a stream of its own while it detects on another): a replay on a stream other than the last one of
its pool, or of its cache (whose static inputs are shared across keys), first makes its stream wait for the work
queued on that one (:class:`StreamOrder`, a device-side wait), and a capture waits for the whole device.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from faceweave.device import cuda_index, engine_lock

log = logging.getLogger(__name__)


class StreamOrder:
    """Keeps work on shared device memory (a graph pool, static buffers) in one order across CUDA streams: each user
    calls :meth:`follow` before it queues work there; on a stream other than the last one, the current stream first
    waits (on the device, the host does not block) for everything queued on the last one so far."""

    def __init__(self) -> None:
        self._last: torch.cuda.Stream | None = None
        self._lock = threading.Lock()

    def follow(self, device: torch.device) -> None:
        stream = torch.cuda.current_stream(device)
        with self._lock:
            if self._last is not None and self._last != stream:
                stream.wait_stream(self._last)
            self._last = stream


class GraphPool:
    """A CUDA-graph memory pool shared by several :class:`GraphCache` s (``handle``), and the :class:`StreamOrder`
    of their replays: graphs of one pool may share intermediate memory, so two of them must never run at once."""

    def __init__(self) -> None:
        self.handle = torch.cuda.graph_pool_handle()
        self.order = StreamOrder()


@dataclass
class CapturedCall:
    """One CUDA graph of the cached function: replays read ``static_inputs`` and write ``static_outputs`` (the same
    storage every replay)."""

    graph: torch.cuda.CUDAGraph
    static_inputs: tuple[torch.Tensor, ...]
    static_outputs: tuple[torch.Tensor, ...]


class GraphCache:
    """Replays ``fn(*inputs) -> tuple of tensors`` from CUDA graphs, one per key.

    Args:
        fn: a function of CUDA tensors whose kernels depend only on the key and the inputs' shapes, with no host
            synchronisation and no host→device copies (tensor constants it needs must already be on the device).
        pool: a :class:`GraphPool` shared with other caches, or None for a private pool per graph.
    """

    def __init__(self, fn: Callable[..., tuple[torch.Tensor, ...]], pool: GraphPool | None = None) -> None:
        self.fn = fn
        self.pool = pool
        self._order = StreamOrder()  # this cache's static buffers (its graphs' pool has its own order)
        self.captured: dict[Hashable, CapturedCall] = {}
        self.failed: dict[Hashable, str] = {}  # keys whose capture raised: run eagerly, with the reason
        self._buffers: dict[tuple[Any, ...], torch.Tensor] = {}
        self._lock = threading.Lock()

    def __call__(self, key: Hashable, inputs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """``fn(*inputs)``, replayed from the graph of ``key`` (captured on its first call). Returns new tensors.

        A key whose capture fails (an op that cannot be captured: a bug) is logged once and then runs eagerly.
        """
        # the inputs' shapes and dtypes are part of every key: a graph replays fixed shapes only
        key = (key, tuple((tuple(x.shape), x.dtype) for x in inputs))
        with self._lock:
            entry = self.captured.get(key)
            if entry is None and key not in self.failed:
                try:
                    entry = self.captured[key] = self._capture(inputs)
                except RuntimeError as exc:  # a bug (an op that cannot be captured), not bad input: stay correct
                    self.failed[key] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                    log.warning("CUDA-graph capture failed for %s (%s); running it eagerly", key, self.failed[key])
            if entry is None:
                return tuple(self.fn(*inputs))
            device = inputs[0].device
            self._order.follow(device)
            if self.pool is not None:
                self.pool.order.follow(device)
            with torch.inference_mode():
                for buffer, x in zip(entry.static_inputs, inputs, strict=True):
                    buffer.copy_(x)
                entry.graph.replay()
            # outside inference mode the copies are ordinary tensors, whatever mode the caller is in
            return tuple(out.clone() for out in entry.static_outputs)

    def clear(self) -> None:
        """Drop every graph and buffer (their memory returns to the pool / allocator)."""
        with self._lock:
            self.captured.clear()
            self.failed.clear()
            self._buffers.clear()

    def _buffer(self, x: torch.Tensor) -> torch.Tensor:
        """The static buffer for inputs shaped like ``x`` (shared by every graph of this cache)."""
        slot = (tuple(x.shape), x.dtype, x.device)
        if slot not in self._buffers:
            self._buffers[slot] = torch.empty_like(x, memory_format=torch.contiguous_format)
        buffer = self._buffers[slot]
        buffer.copy_(x)
        return buffer

    def _capture(self, inputs: Sequence[torch.Tensor]) -> CapturedCall:
        """Warm ``fn`` up on a side stream (cuDNN plans, allocator, cached constants), then capture it."""
        device = inputs[0].device
        # nothing else may run on the device while it captures (see faceweave.device.engine_lock): an engine's
        # forwards already hold this lock; a cache used outside an engine takes it here
        with engine_lock(device), torch.inference_mode():
            # work of other streams may still read this cache's buffers or the pool's memory: let it finish first
            torch.cuda.synchronize(device)
            static_inputs = tuple(self._buffer(x) for x in inputs)
            side = _side_stream(device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side):
                for _ in range(2):
                    self.fn(*static_inputs)
            torch.cuda.current_stream(device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            # thread_local: the video pipeline's other thread may launch work while this one captures
            pool = None if self.pool is None else self.pool.handle
            with torch.cuda.graph(graph, pool=pool, capture_error_mode="thread_local"):
                static_outputs = tuple(self.fn(*static_inputs))
        return CapturedCall(graph, static_inputs, static_outputs)


@functools.lru_cache(maxsize=256)
def device_constant(values: tuple[Any, ...], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """A small constant tensor (nested tuples of numbers) made once per device and dtype. Read only.

    Making it per call is a host→device copy that waits for the GPU, and cannot happen inside a graph capture.
    Fixed values only (matrices, index lists, crop sizes of the nets): a captured graph reads these tensors by
    address, so a value that varies with the input (an image's size) must not churn this bounded cache.
    """
    return torch.tensor(values, dtype=dtype).to(device)


def _side_stream(device: torch.device) -> torch.cuda.Stream:
    """One warm-up stream per device for every capture. cuBLAS keeps a workspace (32 MiB on Hopper) for each stream
    it has run on, for the life of the process: with a new stream per capture, 544 MB (17 × 32 MiB) was still
    allocated after the engine that had captured its graphs was gone (H200, 2026-12-03)."""
    return _stream_of(cuda_index(device))


@functools.cache
def _stream_of(index: int) -> torch.cuda.Stream:
    return torch.cuda.Stream(device=index)
