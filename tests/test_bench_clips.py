"""The bench's inputs (issue 19): the photographic clip has detail over the whole frame and one face; the tone is
written in chunks and has the clip's length; the cold-start probe reports a first frame before the process ends."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from faceweave.bench import synthesize_video
from faceweave.bench_clips import PATCH, photo_mosaic, synthesize_photo_video


def _decode(path: Path) -> tuple[list[np.ndarray], int]:
    import av

    with av.open(str(path)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    with av.open(str(path)) as c:
        samples = sum(f.samples for f in c.decode(audio=0))
    return frames, samples


def _flat_blocks(rgb: np.ndarray, block: int = 16) -> float:
    """Fraction of ``block``² blocks whose grey values hardly vary (std < 2)."""
    grey = rgb.mean(axis=2)
    h, w = (grey.shape[0] // block) * block, (grey.shape[1] // block) * block
    blocks = grey[:h, :w].reshape(h // block, block, w // block, block).transpose(0, 2, 1, 3)
    return float((blocks.reshape(-1, block * block).std(axis=1) < 2.0).mean())


def test_photo_mosaic_is_patches_of_the_photos() -> None:
    m = photo_mosaic(320, 240, scale=2.0, seed=1)
    assert m.shape == (480, 640, 3) and m.dtype == np.uint8
    # every patch is a piece of a photo, not flat: its own spread of values
    side = round(PATCH * 240 / 1080)  # pieces shrink with the frame: as many per frame as at 1080p
    patches = m[: 20 * side, : 20 * side].reshape(20, side, 20, side, 3).transpose(0, 2, 1, 3, 4)
    assert (patches.reshape(400, -1).std(axis=1) > 2.0).mean() > 0.8
    assert not np.array_equal(m, photo_mosaic(320, 240, scale=2.0, seed=2))  # the seed picks the patches


def test_photo_clip_fills_the_frame_and_shows_one_face(tmp_path: Path) -> None:
    clip = synthesize_photo_video(tmp_path / "photo.mp4", width=320, height=240, seconds=1)
    frames, samples = _decode(clip)
    assert len(frames) == 30
    assert samples == pytest.approx(48000, abs=2048)  # the chunked tone has the clip's length (AAC pads a frame)
    # detail over the whole frame: almost no flat 16×16 block (the face-on-black clip is mostly flat blocks)
    synth = synthesize_video(tmp_path / "synth.mp4", width=320, height=240, seconds=1)
    for f in (frames[0], frames[-1]):
        assert _flat_blocks(f) < 0.05
    assert _flat_blocks(_decode(synth)[0][0]) > 0.3
    # harder to encode than the face-on-black clip: more bytes for the same frames and settings
    assert clip.stat().st_size > 1.5 * synth.stat().st_size

    from faceweave.analysis.detect import FaceDetector, image_to_frames

    detector = FaceDetector()
    for f in (frames[0], frames[15], frames[-1]):
        assert len(detector.detect(image_to_frames(f))[0]) == 1  # the one face, no face in the mosaic


@pytest.mark.slow
def test_cold_start_reports_its_phases_in_order(tmp_path: Path) -> None:
    """The cold-start probe (a fresh process) reports when each phase ended, in order, before the process exits; a
    deferred warm-up reports its background thread (here on the CPU, where ``warm_up="deferred"`` is opt-in)."""
    from faceweave.bench_clips import COLD_PHASES, cold_start, format_cold_start
    from faceweave.data import media_path

    clip = synthesize_video(tmp_path / "clip.mp4", width=320, height=240, seconds=1.0)
    row = cold_start(media_path("astronaut.png"), clip, tmp_path / "out.mp4", device="cpu", dtype="float32",
                     batch_size=8, trim_end="1", warm_up="deferred")
    assert row["returncode"] == 0, row
    assert row["warm_up_mode"] == "deferred" and row["background"]["state"] in ("done", "stopped")
    phases = row["phases"]
    assert list(phases) == [k for k, _ in COLD_PHASES]
    order = [phases[k] for k in ("imports_s", "engine_s", "warm_up_s", "first_frame_s", "job_end_s", "process_s")]
    assert all(v is not None and v > 0 for v in order), phases
    assert order == sorted(order), phases
    assert phases["first_frame_s"] == row["first_frame_s"]
    assert phases["warm_up_s"] <= phases["background_warm_up_s"] <= phases["job_end_s"]  # type: ignore[operator]
    assert "first frame" in format_cold_start(row)
