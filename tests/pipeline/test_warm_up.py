"""Deferred warm-up (issue 19 goal 4): a video job that owns its engine on the GPU warms only its models before the
first frame and runs the rest of :meth:`SwapEngine.warm_up` in a background thread, one step per hold of the engine
lock, stopped with the job. On the CPU ``warm_up="deferred"`` runs the same machinery (its steps are the analysis
nets at the warm-up batch sizes), so these tests drive the real thread, lock and stream."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from test_video_pipeline import TinyEngine, decode_all, upscale_carphone

from faceweave.models.tflite_graph import GraphNet
from faceweave.pipeline.engine import SwapEngine
from faceweave.pipeline.video import swap_video, warm_up_plan
from faceweave.pipeline.warm_up import BackgroundWarmUp
from faceweave.settings import SwapSettings
from faceweave.swapper.geometry import CROP_SIZES

FRAMES = 24  # six batches of 4: the background warm-up starts after the first and runs beside the others
SIZE = (288, 352)  # carphone ×2 (height, width)


def _settings() -> SwapSettings:
    # no watermark or C2PA: each job marks its own random id into the pixels, and two jobs' frames must compare
    return SwapSettings(device="cpu", batch_size=4, detect_every=3, preset="ultrafast", crf=16, watermark=False,
                        c2pa=False)


@pytest.fixture(scope="module")
def clip(media: type, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("warm") / "car2.mp4"
    upscale_carphone(media, path, FRAMES)
    return path


@pytest.fixture(scope="module")
def full_job(media: type, clip: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, dict[str, Any]]:
    """The reference: the same job with the whole warm-up before its first frame."""
    out = tmp_path_factory.mktemp("full") / "full.mp4"
    result = swap_video([media.path("astronaut.png")], clip, out, _settings(), warm_up="full")
    return decode_all(out), result.stats


def _warm_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "faceweave-warm-up"]


def test_deferred_job_gives_the_full_warm_up_jobs_frames(media: type, clip: Path, tmp_path: Path,
                                                         full_job: tuple[np.ndarray, dict[str, Any]]) -> None:
    frames_full, stats_full = full_job
    out = tmp_path / "deferred.mp4"
    result = swap_video([media.path("astronaut.png")], clip, out, _settings(), warm_up="deferred")
    warm = result.stats["warm_up"]
    assert stats_full["warm_up"]["mode"] == "full" and "background" not in stats_full["warm_up"]
    assert warm["mode"] == "deferred"
    background = warm["background"]
    # it started (after the first frames) and ended with the job, by itself or stopped, never failed
    assert background["state"] in ("done", "stopped") and background["error"] is None, background
    assert background["start_s"] is not None and background["end_s"] is not None
    assert not _warm_threads()
    # the up-front warm-up ran the analysis before the first frame; the deferred one did not
    assert stats_full["warm_up"]["critical_s"] - stats_full["warm_up"]["engine_s"] > \
        warm["critical_s"] - warm["engine_s"]
    assert result.stats["frames_swapped"] >= 0.9 * FRAMES
    frames = decode_all(out)
    assert frames.shape == frames_full.shape
    assert np.array_equal(frames, frames_full)


def test_background_warm_up_is_stopped_with_the_job(media: type, clip: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A warm-up longer than the job: the job ends it (its generator closed, its thread gone) and nothing runs on
    the engine afterwards."""
    ran: list[str] = []

    def endless(self: SwapEngine, frame_size: tuple[int, int] | None = None) -> Generator[str, None, None]:
        try:
            while True:
                time.sleep(0.01)
                ran.append("step")
                yield "step"
        except GeneratorExit:
            ran.append("closed")
            raise

    monkeypatch.setattr(SwapEngine, "warm_up_steps", endless)
    result = swap_video([media.path("astronaut.png")], clip, tmp_path / "o.mp4", _settings(), warm_up="deferred")
    background = result.stats["warm_up"]["background"]
    assert background["state"] == "stopped" and background["error"] is None
    assert ran and ran[-1] == "closed"
    assert not _warm_threads()
    count = len(ran)
    time.sleep(0.2)
    assert len(ran) == count  # no step after the job


def test_background_warm_up_error_is_logged_and_the_job_goes_on(
        media: type, clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        full_job: tuple[np.ndarray, dict[str, Any]]) -> None:
    def failing(self: SwapEngine, frame_size: tuple[int, int] | None = None) -> Generator[str, None, None]:
        self.analyze(torch.zeros(1, 3, 64, 64))
        yield "analysis x1"
        raise RuntimeError("CUDA out of memory (a stand-in)")

    monkeypatch.setattr(SwapEngine, "warm_up_steps", failing)
    caplog.set_level(logging.WARNING, logger="faceweave")
    out = tmp_path / "o.mp4"
    result = swap_video([media.path("astronaut.png")], clip, out, _settings(), warm_up="deferred")
    background = result.stats["warm_up"]["background"]
    assert background["state"] == "failed" and background["steps"] == 1
    assert "CUDA out of memory (a stand-in)" in background["error"]
    assert "background warm-up failed after 1 steps" in caplog.text and "RuntimeError" in caplog.text
    assert not _warm_threads()
    assert np.array_equal(decode_all(out), full_job[0])  # the job's frames are not affected


def test_background_warm_up_finishes_one_step_per_lock_hold() -> None:
    """By itself it runs every step of the engine's warm-up, each with the engine lock held (another thread cannot
    take it meanwhile) and released between steps, then marks the frame size warm."""
    engine = SwapEngine(_settings())
    real = engine.warm_up_steps
    held: list[bool] = []

    def lock_free_elsewhere() -> bool:
        got: list[bool] = []

        def probe() -> None:
            ok = engine.lock.acquire(blocking=False)
            if ok:
                engine.lock.release()
            got.append(ok)

        prober = threading.Thread(target=probe)
        prober.start()
        prober.join()
        return got[0]

    def watched(frame_size: tuple[int, int] | None = None) -> Generator[str, None, None]:
        for name in real(frame_size):
            held.append(not lock_free_elsewhere())
            yield name

    engine.warm_up_steps = watched  # type: ignore[method-assign]
    background = BackgroundWarmUp(engine, SIZE)
    background.start()
    assert background.wait(timeout=300)
    assert background.state == "done" and background.error is None
    # CPU: the analysis at each warm-up batch size (1, 2, 4); the graph steps are CUDA-only
    assert background.steps == 3 and held == [True] * 3
    assert SIZE in engine._warmed
    assert engine.lock.acquire(blocking=False)  # released at the end
    engine.lock.release()


def test_stop_before_start_and_twice() -> None:
    background = BackgroundWarmUp(SwapEngine(_settings()), SIZE)
    background.stop()
    background.stop()
    assert background.state == "stopped" and not background.wait(0.01) and not _warm_threads()


def test_warm_up_plan() -> None:
    """What each request means: ``auto`` defers only a GPU job that owns its engine and streams in one process; the
    service's shared engine (given to the job) and segment jobs keep the full warm-up; the CPU has nothing to warm;
    engines other than SwapEngine are never warmed."""
    engine = SwapEngine(_settings())
    assert warm_up_plan("auto", engine, owned=True, streaming=True) == "none"  # CPU
    assert warm_up_plan("deferred", engine, owned=False, streaming=True) == "deferred"
    assert warm_up_plan("deferred", engine, owned=True, streaming=False) == "full"
    assert warm_up_plan("full", engine, owned=True, streaming=True) == "full"
    engine.device = torch.device("cuda")  # the plan reads only the device type
    assert warm_up_plan("auto", engine, owned=True, streaming=True) == "deferred"
    assert warm_up_plan("auto", engine, owned=False, streaming=True) == "full"
    assert warm_up_plan("auto", engine, owned=True, streaming=False) == "full"
    assert warm_up_plan("deferred", TinyEngine(_settings()), owned=True, streaming=True) == "none"  # type: ignore[arg-type]


@pytest.mark.gpu
def test_background_warm_up_captures_what_the_full_one_does(media: type) -> None:
    """On the GPU the background warm-up leaves the same graphs as ``warm_up``: every swap graph (crop size × face
    count bucket) and every analysis shape, none failed."""
    settings = SwapSettings(device="cuda", dtype="float16", batch_size=16)
    full, deferred = SwapEngine(settings), SwapEngine(settings)
    full.warm_up((360, 640))
    background = BackgroundWarmUp(deferred, (360, 640))
    background.start()
    assert background.wait(timeout=300)
    assert background.state == "done", background.error
    for engine in (full, deferred):
        assert engine.crop_graphs is not None and not engine.crop_graphs.failed
    assert full.crop_graphs is not None and deferred.crop_graphs is not None
    assert set(deferred.crop_graphs.captured) == set(full.crop_graphs.captured)
    assert len(full.crop_graphs.captured) == 2 * len(CROP_SIZES)  # face-count buckets 8 and 16

    def nets(engine: SwapEngine) -> list[GraphNet]:
        return [m for owner in (engine.detector, engine.mesh) for m in owner.modules() if isinstance(m, GraphNet)]

    for a, b in zip(nets(full), nets(deferred), strict=True):
        assert set(b.captured) == set(a.captured) and a.captured and not b.graphs.failed
