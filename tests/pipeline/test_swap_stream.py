"""The video stream's swap thread on a CUDA stream of its own (issue 19): batch n is swapped on the worker's stream
while batch n+1 is planned on the caller's, and the frames equal those of planning and swapping one batch after the
other on one thread. On the CPU there is no stream and the same code runs as is."""

from __future__ import annotations

import concurrent.futures as cf
from typing import Any

import av
import cv2
import numpy as np
import torch

from faceweave.device import record_ready, run_on_stream, worker_stream
from faceweave.media.video.frames import FrameBatch
from faceweave.settings import SwapSettings

BATCH, BATCHES = 8, 3


def _batches(media: Any) -> list[FrameBatch]:
    """The carphone clip ×3 (its face ~120 px), in batches of 8 frames."""
    frames = []
    with av.open(str(media.path("carphone_pristine.mp4"))) as clip:
        for k, frame in enumerate(clip.decode(video=0)):
            if k == BATCH * BATCHES:
                break
            rgb = cv2.resize(frame.to_ndarray(format="rgb24"), (528, 432), interpolation=cv2.INTER_CUBIC)
            frames.append(av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p"))
    out = []
    for b in range(BATCHES):
        index = np.arange(b * BATCH, (b + 1) * BATCH, dtype=np.int64)
        out.append(FrameBatch(frames[b * BATCH : (b + 1) * BATCH], index, index / 30.0, b * BATCH))
    return out


def _planes(batch: Any) -> list[np.ndarray]:
    frames = batch.frames if isinstance(batch, FrameBatch) else list(batch)
    return [f.to_ndarray() if isinstance(f, av.VideoFrame) else np.asarray(f) for f in frames]


def test_swap_on_its_own_stream_equals_one_thread(media: Any, device: torch.device) -> None:
    from faceweave.media.image import read_image
    from faceweave.pipeline.engine import SwapEngine
    from faceweave.pipeline.video_faces import VideoFaceProcessor

    settings = SwapSettings(device=device.type, batch_size=BATCH, enhancer=None)
    engine = SwapEngine(settings)
    sources = engine.prepare_sources([read_image(media.path("astronaut.png")).rgb])
    batches = _batches(media)

    one_thread = VideoFaceProcessor(engine, sources, None, settings)
    expected = [_planes(one_thread.process_batch(b)) for b in batches]

    # as the stream does: plan n+1 here while n is swapped in a worker thread on its own stream
    two_threads = VideoFaceProcessor(engine, sources, None, settings)
    stream = worker_stream(engine.device, "swap")
    assert (stream is None) == (device.type != "cuda")
    got, pending = [], None
    with cf.ThreadPoolExecutor(1) as worker:
        for b in batches:
            planned = two_threads.plan_batch(b)
            ready = record_ready(engine.device)
            if pending is not None:
                got.append(_planes(pending.result()))
            pending = worker.submit(run_on_stream, stream, ready, two_threads.finish_batch, planned)
        got.append(_planes(pending.result()))

    assert two_threads.stats["frames_swapped"] == one_thread.stats["frames_swapped"] == BATCH * BATCHES
    for want, have in zip(expected, got, strict=True):
        for a, b in zip(want, have, strict=True):
            # the same kernels in the same order per stream: equal but for rounding (a race would be garbage)
            assert a.shape == b.shape
            assert int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max()) <= 2
