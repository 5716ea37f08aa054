"""A video's crowd recall with the real engine: the small-face tiles run on recall passes only, yet a crowd that
only the tiles find stays found (issue 19 item 3 / issue 21)."""

from __future__ import annotations

import av
import numpy as np

from faceweave.eval.cases import group_grid
from faceweave.media.video.frames import FrameBatch
from faceweave.settings import SwapSettings


def _batch(rgb: np.ndarray, count: int, first: int = 0) -> FrameBatch:
    frames = [av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p") for _ in range(count)]
    index = np.arange(first, first + count, dtype=np.int64)
    return FrameBatch(frames, index, index / 30.0, first)


def test_crowd_in_a_video_is_found_and_kept() -> None:
    from faceweave.data import media_path
    from faceweave.media.image import read_image
    from faceweave.pipeline.engine import SwapEngine
    from faceweave.pipeline.video_faces import VideoFaceProcessor

    grid, expected = group_grid("obama.jpg", 50)  # 20 faces of 50 px at 1280×1200: only the tiles see them
    settings = SwapSettings(device="cpu", detect_every=5, enhancer=None)
    engine = SwapEngine(settings)
    processor = VideoFaceProcessor(engine, engine.prepare_sources([read_image(media_path("astronaut.png")).rgb]),
                                   None, settings)
    processor.plan_batch(_batch(grid, 6))
    # frame 0 (the first detection) is a recall pass and finds the crowd; frame 5's detection is due before
    # RECALL_EVERY, but the crowd keeps it a recall pass, so no face is lost
    assert processor.stats["detections"] == processor.stats["recall_passes"] == 2
    assert len(processor.tracker.tracks) == expected == processor.stats["tracks"]
