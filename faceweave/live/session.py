"""A live session: a source's newest frame → the engine (tracking, smoothing, selection, swap, label) → a sink.

Same engine as video jobs — :class:`~faceweave.pipeline.video.VideoFaceProcessor` on one-frame batches, so
detection runs every ``detect_every`` frames and on track loss, tracks are smoothed by One-Euro filters on the
frames' own clock, and frames without a selected face pass through untouched — but on the camera's clock: a
one-slot :class:`~faceweave.live.mailbox.Mailbox` sits between capture and the engine, so when the engine falls
behind frames are dropped (counted), never queued.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from faceweave.live.mailbox import LiveStats, Mailbox
from faceweave.live.sinks import LiveSink
from faceweave.live.sources import CaptureThread, LiveFrame, open_source
from faceweave.media.video.frames import FrameBatch
from faceweave.provenance.mark import Marking
from faceweave.settings import SwapSettings

FrameProcess = Callable[[FrameBatch], "FrameBatch | np.ndarray"]


def one_frame_batch(item: LiveFrame) -> FrameBatch:
    """A captured frame as the one-frame :class:`FrameBatch` the engine's video path takes."""
    return FrameBatch([item.frame], np.array([item.index], np.int64), np.array([item.time_s], np.float64),
                      item.index)


@dataclass
class LiveSession:
    """Take the newest frame from ``mailbox``, ``process`` it, hand it to ``sink``; until the mailbox closes or
    ``stop`` is set. ``on_frame(latency_s)`` is called after each frame (the service's metrics)."""

    process: FrameProcess
    mailbox: Mailbox[LiveFrame]
    sink: LiveSink
    stats: LiveStats = field(default_factory=LiveStats)
    stop: threading.Event = field(default_factory=threading.Event)
    on_frame: Callable[[float], None] | None = None
    swapped: Callable[[], int] | None = None  # frames swapped so far (the processor's count)
    # work put off until the frame went out (the processor's deferred detection), run before the next frame
    after_output: Callable[[], None] | None = None

    def run(self) -> LiveStats:
        """The engine loop (on the caller's thread). Returns the stats, with ``ended_at`` set."""
        try:
            while not self.stop.is_set():
                item = self.mailbox.get(timeout=0.1)
                if item is None:
                    if self.mailbox.closed:
                        break
                    continue
                out = self.process(one_frame_batch(item))
                latency = self.stats.record(item.captured_at)  # handed to the output now
                self.sink.write(out, item.time_s)
                if self.swapped is not None:
                    self.stats.frames_swapped = self.swapped()
                if self.on_frame is not None:
                    self.on_frame(latency)
                if self.after_output is not None:
                    self.after_output()
        finally:
            self.stats.dropped = self.mailbox.dropped
            self.stats.ended_at = time.perf_counter()
        return self.stats


def prime(engine: Any, prepared: Sequence[Any]) -> None:
    """Run every stage once on the bundled face (detect, landmarks, swap) so the first live frame does not pay
    for lazy model loading and first-call set-up (seconds on a CPU: it would show as the session's worst latency)."""
    from faceweave.data import media_path
    from faceweave.media.image import read_image
    from faceweave.models.tflite_graph import CPU_TRACE_AFTER
    from faceweave.pipeline.engine import to_tensor

    frame = to_tensor(read_image(media_path("astronaut.png")).rgb, engine.device, engine.dtype)
    # on the CPU the analysis nets are traced at their CPU_TRACE_AFTER-th call and profiled at the next: done here
    passes = CPU_TRACE_AFTER + 2 if engine.device.type == "cpu" else 1
    for _ in range(passes):
        faces = engine.analyze(frame)
        if faces[0]:
            engine.refine(frame, faces)
    if faces[0]:
        engine.swap(frame, [[(faces[0][0], 0)]], prepared[:1])


def run_live(
    sources: Sequence[str | PathLike[str]],
    input_spec: str,
    output_spec: str,
    settings: SwapSettings,
    *,
    stats_json: str | PathLike[str] | None = None,
    stop: threading.Event | None = None,
    engine: Any = None,
    process_wrapper: Callable[[FrameProcess], FrameProcess] | None = None,
    on_start: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Swap ``sources`` into the live input ``input_spec`` and write ``output_spec`` until the input ends or
    ``stop`` is set (the CLI sets it on Ctrl-C). Returns the stats summary (also written to ``stats_json``).

    The source photos are analysed first (``NoFaceInSource`` before anything is opened), then the input is opened
    (``InputNotFound`` / ``InputUnreadable``), then the output. ``engine``: an engine to reuse (default: a new
    :class:`~faceweave.pipeline.engine.SwapEngine`); ``process_wrapper`` wraps the per-frame step (tests inject
    a slow engine with it); ``on_start`` is called when frames start to flow.
    """
    from faceweave.live.sinks import open_sink
    from faceweave.live.threads import live_torch_threads, torch_threads
    from faceweave.media.image import read_image
    from faceweave.pipeline.engine import SwapEngine, job_references
    from faceweave.pipeline.video import VideoFaceProcessor, gpu_host_threads, warm_gpu_engine

    images = [read_image(Path(s), max_pixels=settings.max_pixels).rgb for s in sources]
    if engine is None:
        engine = SwapEngine(settings)
    prepared = engine.prepare_sources(images)
    refs = job_references(engine, settings, None, images)
    source = open_source(input_spec)
    try:
        warm_gpu_engine(engine, (source.height, source.width))
        prime(engine, prepared)
        processor = VideoFaceProcessor(engine, prepared, refs, settings, defer_detection=True)
        process: FrameProcess = processor.process_batch
        if process_wrapper is not None:
            process = process_wrapper(process)
        sink = open_sink(output_spec, source.width, source.height, source.fps, Marking.from_settings(settings))
        stats = LiveStats()
        mailbox: Mailbox[LiveFrame] = Mailbox()
        capture = CaptureThread(source, mailbox, stats)
        session = LiveSession(process, mailbox, sink, stats, stop or threading.Event(),
                              swapped=lambda: int(processor.stats["frames_swapped"]),
                              after_output=processor.detect_pending)
        try:
            # the engine runs on this thread: on the CPU it leaves a core to the capture thread's decoding
            with gpu_host_threads(engine.device), torch_threads(live_torch_threads(engine.device)):
                capture.start()
                if on_start is not None:
                    on_start()
                session.run()
        except BaseException:
            capture.stop()
            with contextlib.suppress(Exception):  # keep what was written valid; the first error is the one to report
                sink.close()
            raise
        capture.stop()
        sink.close()
    finally:
        source.close()
    summary = stats.summary()
    summary.update(input=input_spec, output=output_spec, width=source.width, height=source.height,
                   input_fps=round(source.fps, 3), device=str(engine.device),
                   ended="stopped" if session.stop.is_set() else "input ended")
    if capture.error is not None:
        summary["input_error"] = str(capture.error)
    if stats_json is not None:
        Path(stats_json).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


__all__ = ["LiveSession", "one_frame_batch", "run_live"]
