"""One warm engine for many live sessions: the engine's face stages run on one thread, and calls that several
sessions make at the same time are merged into one batched call.

Each session keeps its own :class:`~faceweave.pipeline.video.VideoFaceProcessor` (tracks, smoothing, selection)
and calls :class:`SharedEngine` where it would call a :class:`~faceweave.pipeline.engine.SwapEngine`. The
dispatcher thread takes every call waiting, groups those of one stage and one frame size, and runs each group as
one batch (``analyze``, ``refine`` and ``swap``; the sources of a swap batch are concatenated and each plan's
source indices shifted). On a GPU, per-call overhead, not the arithmetic, bounds one frame's cost, so a batch of k
sessions' frames costs far less than k calls; the dispatcher then waits up to ``window_s`` (default 2 ms on CUDA,
0 on the CPU, where batching saves nothing) for the other active sessions' calls before it runs. On the CPU the
engine's thread runs torch on every core but one (:func:`~faceweave.live.threads.live_torch_threads`): the
sessions' capture threads decode on the one left.

On a GPU the swaps can run on a second thread of their own (``swap_thread``), on a CUDA stream of their own: one
session's swap then overlaps another's detection and FaceMesh, as in the video stream (plan thread and swap
thread). At 8 sessions one engine thread was the ceiling, busy 90 % of the wall on per-call host work (launches and
small geometry ops, docs/benchmarks.md §0-24), with the GPU mostly idle.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from faceweave.analysis.face import Face
from faceweave.device import record_ready, run_on_stream, worker_stream
from faceweave.live.threads import live_torch_threads
from faceweave.pipeline.batcher import WindowBatcher
from faceweave.pipeline.engine import PreparedSource, SwapEngine

BATCHED = ("analyze", "refine", "swap")
#: sessions' due detections wait until their frame went out while at most this many sessions share the engine: at 1–2
#: sessions it took p95 from 27–50 ms to 22–34 ms; at 4 it was mixed (p95 67 against 73 ms, more drops), at 8 as good
#: or worse (14.6 against 17.9 fps each: the after-frame detections split the engine's batches; benchmarks.md §0-25)
DEFER_DETECTION_UP_TO = 2
#: whether a shared engine on CUDA runs its swaps on a second thread by default (``SharedEngine(swap_thread=None)``);
#: off the GPU one thread (the CPU's cores are the bound there, not the per-call host work)
SWAP_THREAD_ON_CUDA = False


@dataclass
class _Call:
    op: str
    frames: torch.Tensor | None
    args: tuple[Any, ...]

    def key(self) -> tuple[Any, ...] | None:
        """Calls with one key can be merged (same stage, frame size, dtype, device); None: run alone."""
        if self.op not in BATCHED or self.frames is None:
            return None
        f = self.frames
        recall = self.args if self.op == "analyze" else ()  # a recall pass and a plain detection are not merged
        return (self.op, tuple(f.shape[1:]), f.dtype, f.device, *recall)


class SharedEngine:
    """A :class:`SwapEngine` driven by one thread for many sessions (its face stages are not thread-safe).

    Has the engine methods a :class:`~faceweave.pipeline.video.VideoFaceProcessor` calls (``analyze``, ``refine``,
    ``identify``, ``select``, ``swap``, ``prepare_sources``) and its ``device``, ``dtype`` and ``settings``.
    :attr:`batches` counts the batched calls and :attr:`batched_frames` the frames they held (so
    ``batched_frames / batches`` is the mean batch). The thread and its window are a
    :class:`~faceweave.pipeline.batcher.WindowBatcher` (each active session is a call expected).

    ``torch_threads``: torch intra-op threads of the engine's thread (default
    :func:`~faceweave.live.threads.live_torch_threads`: all cores but one on the CPU, unchanged on a GPU); set on that
    thread only, the process default is left as it was. :attr:`torch_threads` is the count it runs with.

    ``swap_thread``: run the swaps on a second thread (and CUDA stream); default :data:`SWAP_THREAD_ON_CUDA` on CUDA,
    off elsewhere (on a CPU both threads would share the same cores). :attr:`swap_thread` says whether it does.
    """

    def __init__(self, engine: SwapEngine, *, window_s: float | None = None, torch_threads: int | None = None,
                 swap_thread: bool | None = None) -> None:
        self.engine = engine
        self.device, self.dtype, self.settings = engine.device, engine.dtype, engine.settings
        on_gpu = engine.device.type == "cuda"
        self.window_s = (0.002 if on_gpu else 0.0) if window_s is None else window_s
        self.swap_thread = (on_gpu and SWAP_THREAD_ON_CUDA) if swap_thread is None else swap_thread
        self._counts_lock = threading.Lock()
        self.batches = 0
        self.batched_frames = 0
        self._batcher: WindowBatcher[_Call, Any] = WindowBatcher(self._run, window_s=self.window_s,
                                                                 name="the shared live engine")
        # the swaps' own thread and stream; the analysis thread's syncs then do not wait for queued swaps
        self._swap_stream = worker_stream(engine.device, "live-swap") if self.swap_thread else None
        self._swapper: WindowBatcher[_Call, Any] | None = (
            WindowBatcher(self._run_swaps, window_s=self.window_s, name="the shared live engine's swap thread")
            if self.swap_thread else None)
        threads = live_torch_threads(self.device) if torch_threads is None else torch_threads
        if threads is not None:
            # A thread takes the process default at its first use of torch and keeps its own count from then on
            # (so the engine's thread uses torch once before setting it); setting it also sets the process default,
            # which the calling thread then puts back.
            before = torch.get_num_threads()
            self.call(lambda _engine: _pin_threads(threads))
            torch.set_num_threads(before)
        self.torch_threads: int = self.call(lambda _engine: torch.get_num_threads())

    # --- sessions ------------------------------------------------------------------------------------------
    @property
    def active_sessions(self) -> int:
        return self._batcher.expected

    def defer_detection(self) -> bool:
        """Whether a session's due detection should wait until its frame went out (``VideoFaceProcessor``'s
        ``defer_detection``): while at most :data:`DEFER_DETECTION_UP_TO` sessions share the engine."""
        return self.active_sessions <= DEFER_DETECTION_UP_TO

    def session_started(self) -> None:
        for batcher in self._batchers():
            batcher.expect(1)

    def session_ended(self) -> None:
        for batcher in self._batchers():
            batcher.expect(-1)

    def close(self) -> None:
        for batcher in self._batchers():
            batcher.close()

    def _batchers(self) -> list[WindowBatcher[_Call, Any]]:
        return [self._batcher] if self._swapper is None else [self._batcher, self._swapper]

    # --- the engine's face stages, called from session threads ---------------------------------------------
    def analyze(self, frames: torch.Tensor, *, recall: bool = True) -> list[list[Face]]:
        return self._submit(_Call("analyze", frames, (recall,)))  # type: ignore[no-any-return]

    def refine(self, frames: torch.Tensor, faces: list[list[Face]]) -> list[list[Face]]:
        return self._submit(_Call("refine", frames, (faces,)))  # type: ignore[no-any-return]

    def identify(self, frames: torch.Tensor, faces: list[list[Face]]) -> list[list[Face]]:
        return self._submit(_Call("identify", frames, (faces,)))  # type: ignore[no-any-return]

    def swap(self, frames: torch.Tensor, plan: Sequence[Sequence[tuple[Face, int]]],
             sources: Sequence[PreparedSource]) -> torch.Tensor:
        call = _Call("swap", frames, (plan, sources))
        if self._swapper is not None:
            return self._swapper.submit(call)
        return self._submit(call)  # type: ignore[no-any-return]

    def select(self, faces: list[Face], sources: Sequence[PreparedSource],
               reference: Sequence[torch.Tensor] | None = None) -> list[tuple[Face, int]]:
        return self.engine.select(faces, sources, reference)  # pure: no model runs

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(engine, *args)`` on the engine's thread (loading sources, warming up)."""
        return self._submit(_Call("call", None, (fn, *args)))

    def prepare_sources(self, images: Sequence[Any]) -> list[PreparedSource]:
        return self.call(lambda engine, imgs: engine.prepare_sources(imgs), images)  # type: ignore[no-any-return]

    def reference_embeddings(self, images: Sequence[Any]) -> list[torch.Tensor]:
        return self.call(lambda engine, imgs: engine.reference_embeddings(imgs), images)  # type: ignore[no-any-return]

    def _submit(self, call: _Call) -> Any:
        return self._batcher.submit(call)  # after close(): RuntimeError("the shared live engine is closed")

    # --- the engine threads --------------------------------------------------------------------------------
    def _run_swaps(self, calls: list[_Call]) -> list[Any]:
        """The swap thread's batch: on its own stream, once the work queued before it on the analysis side (the
        frames' upload, their FaceMesh) is done on the device; returns when the swaps are done (run_on_stream)."""
        return run_on_stream(self._swap_stream, record_ready(self.device), self._run, calls)

    def _run(self, calls: list[_Call]) -> list[Any]:
        """Every call waiting, grouped by :meth:`_Call.key`, each group as one engine call; a group that fails
        fails its callers only."""
        groups: dict[Any, list[int]] = {}
        for n, call in enumerate(calls):
            groups.setdefault(call.key() or ("alone", n), []).append(n)
        out: list[Any] = [None] * len(calls)
        for members in groups.values():
            try:
                with torch.no_grad():
                    results = self._execute([calls[n] for n in members])
            except Exception as exc:
                results = [exc] * len(members)
            for n, result in zip(members, results, strict=True):
                out[n] = result
        return out

    def _execute(self, group: list[_Call]) -> list[Any]:
        engine, first = self.engine, group[0]
        if first.op == "call":
            fn, *args = first.args
            return [fn(engine, *args)]
        if first.op == "identify":
            assert first.frames is not None
            return [engine.identify(first.frames, first.args[0])]
        frames = [c.frames for c in group if c.frames is not None]  # every batched call has frames (see key())
        counts = [int(f.shape[0]) for f in frames]
        batch = frames[0] if len(frames) == 1 else torch.cat(frames)
        with self._counts_lock:  # two engine threads count
            self.batches += 1
            self.batched_frames += sum(counts)
        if first.op == "analyze":
            return _split_list(engine.analyze(batch, recall=first.args[0]), counts)
        if first.op == "refine":
            return _split_list(engine.refine(batch, [row for c in group for row in c.args[0]]), counts)
        # swap: one source list for the batch, each call's source indices shifted past the earlier calls' sources
        plan: list[list[tuple[Face, int]]] = []
        sources: list[PreparedSource] = []
        for call in group:
            call_plan, call_sources = call.args
            plan.extend([(f, s + len(sources)) for f, s in row] for row in call_plan)
            sources.extend(call_sources)
        out = engine.swap(batch, plan, sources)
        return list(torch.split(out, counts)) if len(group) > 1 else [out]


def _pin_threads(count: int) -> None:
    torch.get_num_threads()  # this thread's first use of torch: it takes the process default now, not later
    torch.set_num_threads(count)


def _split_list(rows: list[Any], counts: list[int]) -> list[list[Any]]:
    out, at = [], 0
    for n in counts:
        out.append(rows[at : at + n])
        at += n
    return out


__all__ = ["SharedEngine"]
