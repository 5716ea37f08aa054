"""Live mode's deferred detection (issue 20): a tracked frame whose periodic detection is due is swapped as a
tracked frame and its detection runs after it went out; the faces that detection finds seed the next frame, so a
face entering the view is swapped one frame later than with the detection inline, and none is missed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import av
import cv2
import numpy as np
import pytest
import torch

from faceweave.media.video.frames import FrameBatch
from faceweave.settings import SwapSettings

FRAMES, ENTERS = 13, 7  # the second face enters at frame 7; detections are due at frames 0, 5 and 10


def _canvas(media: Any, with_second: bool) -> np.ndarray:
    """640×480 mid-grey with obama (240×300) on the left and, when ``with_second``, grace_hopper (160×200) on the
    right: a tenth of the frame, so its arrival is not a scene cut."""
    canvas = np.full((480, 640, 3), 128, np.uint8)
    canvas[90:390, 40:280] = cv2.resize(media.rgb("obama.jpg"), (240, 300), interpolation=cv2.INTER_AREA)
    if with_second:
        canvas[140:340, 420:580] = cv2.resize(media.rgb("grace_hopper.jpg"), (160, 200), interpolation=cv2.INTER_AREA)
    return canvas


def _one_frame(rgb: np.ndarray, index: int) -> FrameBatch:
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
    return FrameBatch([frame], np.array([index], np.int64), np.array([index / 30.0]), index)


def _counting(fn: Callable[..., Any], calls: list[str], label: Callable[[], str]) -> Callable[..., Any]:
    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(label())
        return fn(*args, **kwargs)

    return counted


@pytest.fixture(scope="module")
def engines() -> dict[str, Any]:
    """One engine per device, made on first use (loading the models once for the module's tests)."""
    return {}


def _engine(engines: dict[str, Any], device: torch.device) -> Any:
    from faceweave.pipeline.engine import SwapEngine

    if device.type not in engines:
        settings = SwapSettings(device=device.type, detect_every=5, enhancer=None, selector="many")
        engines[device.type] = SwapEngine(settings)
    return engines[device.type]


def _run(engine: Any, media: Any, *, defer: bool | Callable[[], bool], call_pending: bool
         ) -> tuple[list[int], list[str], dict[str, Any]]:
    """Faces swapped per frame, where each detection ran ("frame" inside process_batch, "after" in
    detect_pending), and the processor's stats."""
    from faceweave.media.image import read_image
    from faceweave.pipeline.video_faces import VideoFaceProcessor

    settings = engine.settings
    sources = engine.prepare_sources([read_image(media.path("astronaut.png")).rgb])
    processor = VideoFaceProcessor(engine, sources, None, settings, defer_detection=defer)
    where = ["frame"]
    calls: list[str] = []
    analyze = engine.analyze
    engine.analyze = _counting(analyze, calls, lambda: where[0])
    try:
        per_frame = []
        for k in range(FRAMES):
            before = processor.stats["faces_swapped"]
            where[0] = "frame"
            processor.process_batch(_one_frame(_canvas(media, k >= ENTERS), k))
            per_frame.append(processor.stats["faces_swapped"] - before)
            if call_pending:
                where[0] = "after"
                processor.detect_pending()
    finally:
        del engine.analyze  # the instance attribute: the class's method again
    return per_frame, calls, dict(processor.stats)


def test_deferred_detection_swaps_every_frame_and_finds_a_new_face_one_frame_later(
        engines: dict[str, Any], media: Any, device: torch.device) -> None:
    engine = _engine(engines, device)
    inline, inline_calls, inline_stats = _run(engine, media, defer=False, call_pending=True)
    deferred, deferred_calls, deferred_stats = _run(engine, media, defer=True, call_pending=True)
    # inline: the detection at frame 10 finds the newcomer and swaps it on that frame
    assert inline == [1] * 10 + [2] * (FRAMES - 10)
    assert inline_calls == ["frame"] * 3
    # deferred: the first frame (nothing tracked yet) detects on the frame; the due detections of tracked frames
    # (5 and 10) run after them; frame 10's finds the newcomer, which is swapped from frame 11 on
    assert deferred == [1] * 11 + [2] * (FRAMES - 11)
    assert deferred_calls == ["frame", "after", "after"]
    assert deferred_stats["detections"] == inline_stats["detections"] == 3
    assert deferred_stats["frames_swapped"] == inline_stats["frames_swapped"] == FRAMES
    assert deferred_stats["tracks"] == inline_stats["tracks"] == 2


def test_a_pending_detection_the_caller_skipped_runs_before_the_next_frame(engines: dict[str, Any],
                                                                           media: Any) -> None:
    engine = _engine(engines, torch.device("cpu"))
    called, _, _ = _run(engine, media, defer=True, call_pending=True)
    skipped, calls, stats = _run(engine, media, defer=True, call_pending=False)
    assert skipped == called
    # frame 5's and 10's detections ran at the start of frames 6 and 11, inside process_batch
    assert calls == ["frame"] * 3 and stats["detections"] == 3


def test_a_deferral_predicate_that_says_no_detects_on_the_frame(engines: dict[str, Any], media: Any) -> None:
    engine = _engine(engines, torch.device("cpu"))
    asked: list[bool] = []

    def never() -> bool:
        asked.append(False)
        return False

    per_frame, calls, _ = _run(engine, media, defer=never, call_pending=True)
    assert per_frame == [1] * 10 + [2] * (FRAMES - 10) and calls == ["frame"] * 3
    assert len(asked) == 2  # asked at the due detections of tracked frames (5 and 10), not at the first frame


def test_the_shared_live_engine_defers_while_few_sessions_share_it() -> None:
    from faceweave.live.shared import DEFER_DETECTION_UP_TO, SharedEngine
    from faceweave.pipeline.engine import SwapEngine

    shared = SharedEngine(SwapEngine(SwapSettings(device="cpu", enhancer=None)))
    try:
        answers = []
        for _ in range(DEFER_DETECTION_UP_TO + 2):
            shared.session_started()
            answers.append(shared.defer_detection())
        assert answers == [True] * DEFER_DETECTION_UP_TO + [False, False]
    finally:
        shared.close()
