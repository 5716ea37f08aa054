"""Video swap pipeline: the real decode → queue → face stages → queue → encode path.

Most tests use a *tiny engine* (finds a white square, "swaps" by inverting it) so they exercise the streaming,
tracking, segment and error logic quickly; the identity and jitter tests run the real engine on the bundled
carphone clip with a real face.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from faceweave.analysis.face import Face
from faceweave.errors import NoFaceInTarget, WrongMediaKind
from faceweave.pipeline.video import swap_video
from faceweave.settings import SwapSettings

SQUARE = 48


class TinyEngine:
    """The engine contract on a toy problem: the 'face' is the white square; swapping inverts its box."""

    def __init__(self, settings: SwapSettings) -> None:
        self.settings = settings
        self.device = torch.device("cpu")
        self.dtype = torch.float32
        self.analyze_calls = 0
        self.refine_calls = 0
        self.recalls: list[bool] = []  # per detected frame: was it a recall pass (small-face tiles)?

    def prepare_sources(self, images):
        return [object() for _ in images]

    def _find(self, frame: torch.Tensor) -> list[Face]:
        mask = (frame > 0.97).all(0)
        ys, xs = torch.nonzero(mask, as_tuple=True)
        if len(xs) < 16:
            return []
        x0, y0, x1, y1 = float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        ang = torch.linspace(0, 2 * np.pi, 468)
        lmk = torch.stack([cx + (x1 - x0) / 2 * torch.cos(ang), cy + (y1 - y0) / 2 * torch.sin(ang),
                           torch.zeros(468)], 1)
        kps = torch.tensor([[cx - 8, cy - 8], [cx + 8, cy - 8], [cx, cy], [cx - 6, cy + 8], [cx + 6, cy + 8]])
        return [Face(box=torch.tensor([x0, y0, x1 + 1, y1 + 1]), score=0.99, keypoints=kps, landmarks=lmk,
                     landmark_score=1.0)]

    def analyze(self, frames: torch.Tensor, *, recall: bool = True) -> list[list[Face]]:
        self.analyze_calls += 1
        self.recalls += [recall] * len(frames)
        return [self._find(f) for f in frames]

    def refine(self, frames: torch.Tensor, faces: list[list[Face]]) -> list[list[Face]]:
        self.refine_calls += 1
        return [self._find(f) if seeds else [] for f, seeds in zip(frames, faces, strict=True)]

    def identify(self, frames, faces):
        return faces

    def select(self, faces, sources, reference=None):
        return [(max(faces, key=lambda f: f.area), 0)] if faces else []

    def swap(self, frames: torch.Tensor, plan, sources) -> torch.Tensor:
        out = frames.clone()
        for b, row in enumerate(plan):
            for face, _ in row:
                x0, y0, x1, y1 = (int(round(v)) for v in face.box.tolist())
                out[b, :, y0:y1, x0:x1] = 1 - out[b, :, y0:y1, x0:x1]
        return out


def make_clip(path: Path, n: int, *, size=(160, 120), fps: int = 25, face_from: int = 0, face_to: int | None = None,
              audio: bool = False, pts: list[int] | None = None, gop: int = 25, still: bool = False) -> None:
    """Synthesise a clip: smooth dark background, a white square moving left→right in frames [face_from, face_to).
    ``still``: the background does not scroll (no scene cuts)."""
    w, h = size
    tb = Fraction(1, fps * 100)
    y, x = np.mgrid[0:h, 0:w]
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        vs.time_base = vs.codec_context.time_base = tb
        vs.codec_context.gop_size = gop
        vs.codec_context.options = {"preset": "ultrafast", "crf": "10"}
        aus = None
        if audio:
            aus = out.add_stream("aac", rate=48000)
            aus.layout = "mono"
        for i in range(n):
            rgb = np.stack([(x // 2 + (0 if still else i)) % 160, (y // 2) % 160, np.full_like(x, 60)], 2
                           ).astype(np.uint8)
            if face_from <= i < (face_to if face_to is not None else n):
                cx = 10 + (i * 3) % max(1, w - SQUARE - 20)
                rgb[h // 2 - SQUARE // 2 : h // 2 + SQUARE // 2, cx : cx + SQUARE] = 255
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = pts[i] if pts else i * 100
            frame.time_base = tb
            for p in vs.encode(frame):
                out.mux(p)
        for p in vs.encode(None):
            out.mux(p)
        if aus is not None:
            total = int(n / fps * 48000)
            t = np.arange(total) / 48000
            tone = (0.3 * np.sin(2 * np.pi * 330 * t) * np.sin(2 * np.pi * 0.7 * t)).astype(np.float32)
            for k in range(0, total, 1024):
                af = av.AudioFrame.from_ndarray(tone[None, k : k + 1024], format="fltp", layout="mono")
                af.sample_rate, af.pts, af.time_base = 48000, k, Fraction(1, 48000)
                for p in aus.encode(af):
                    out.mux(p)
            for p in aus.encode(None):
                out.mux(p)


def frame_times(path: Path) -> list[float]:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return sorted(float(p.pts * s.time_base) for p in c.demux(s) if p.pts is not None and p.size)


def decode_all(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


@pytest.fixture
def source_png(media) -> Path:
    return media.path("astronaut.png")


FAST = {"preset": "ultrafast", "crf": 12}


def test_swap_keeps_frames_timestamps_audio_and_passes_faceless_frames(tmp_path: Path, source_png: Path) -> None:
    clip = tmp_path / "in.mp4"
    make_clip(clip, 60, face_from=10, face_to=40, audio=True)
    out = tmp_path / "out.mp4"
    settings = SwapSettings(detect_every=4, batch_size=8, **FAST)
    engine = TinyEngine(settings)
    events = []
    result = swap_video([source_png], clip, out, settings, engine=engine, progress=events.append)
    # a face that appears between two detections is picked up at the next one (detect_every - 1 frames late)
    assert result.frames == 60 and 30 - 3 <= result.stats["frames_swapped"] <= 30 and result.stats["tracks"] >= 1
    assert frame_times(out) == pytest.approx(frame_times(clip), abs=1e-6)
    with av.open(str(out)) as c:
        assert c.streams.audio and c.streams.audio[0].codec_context.name == "aac"
    src, dst = decode_all(clip).astype(int), decode_all(out).astype(int)
    # frames without a face: unchanged up to the (near-lossless) re-encode
    assert np.abs(src[:10] - dst[:10]).mean() < 3.0 and np.abs(src[45:] - dst[45:]).mean() < 3.0
    # frames with the square: inverted there (white → black)
    h = src.shape[1]
    assert dst[20, h // 2, :, :].min() < 30
    assert events[-1].stage == "done" and events[-1].frames_done == 60
    assert any(e.stage == "swap" and e.fps > 0 for e in events)
    assert engine.refine_calls > 0 and result.stats["detections"] < 60  # tracked between detections
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    # where the stream waited: the main thread's waits are sequential parts of the run, the encoder did real work
    timing = result.stats["stream_timing"]
    main_thread = timing["decode_wait_s"] + timing["plan_s"] + timing["swap_wait_s"] + timing["encode_wait_s"]
    assert min(timing.values()) >= 0 and main_thread <= timing["wall_s"] + 0.005
    assert 0 < timing["encode_busy_s"] <= timing["wall_s"] and timing["plan_s"] > 0
    assert 0 < timing["swap_busy_s"] <= timing["wall_s"]  # the swap thread's own time (issue 19's profile)


def test_small_face_tiles_only_on_recall_passes(tmp_path: Path, source_png: Path) -> None:
    """The small-face tiles cost 2.3× a detection at 640×480 and 9× at 1080p: a video scans them on its first frame
    and then once every RECALL_EVERY frames, its other detections look at the whole frame only."""
    from faceweave.pipeline.video_faces import RECALL_EVERY

    clip = tmp_path / "in.mp4"
    make_clip(clip, 70, size=(320, 240), still=True)  # the square moves 3 px a frame, no scene cut
    settings = SwapSettings(detect_every=5, batch_size=8, **FAST)
    engine = TinyEngine(settings)
    result = swap_video([source_png], clip, tmp_path / "out.mp4", settings, engine=engine)
    assert result.stats["scene_cuts"] == 0 and result.stats["detections"] == len(engine.recalls) == 14
    # frames 0, 30 and 60 (a batch's recall frames are detected in a call of their own, before its others)
    assert RECALL_EVERY == 30 and engine.recalls.count(True) == result.stats["recall_passes"] == 3


def test_passthrough_frames_bit_exact(tmp_path: Path, source_png: Path) -> None:
    """The processor hands undecorated decoded arrays to the encoder: check at the array level."""
    from faceweave.media.video.frames import FrameReader
    from faceweave.media.video.probe import probe_video
    from faceweave.pipeline.video import VideoFaceProcessor

    clip = tmp_path / "in.mp4"
    make_clip(clip, 16, face_from=8)
    settings = SwapSettings(detect_every=2)
    proc = VideoFaceProcessor(TinyEngine(settings), [object()])
    with FrameReader(probe_video(clip), batch_size=16) as reader:
        batch = next(iter(reader))
    out = proc(batch)
    np.testing.assert_array_equal(out[:8], batch.frames[:8])
    assert not np.array_equal(out[8:], batch.frames[8:])


def test_no_face_anywhere_is_an_error_and_leaves_nothing(tmp_path: Path, source_png: Path) -> None:
    clip = tmp_path / "in.mp4"
    make_clip(clip, 20, face_from=99)
    out = tmp_path / "out.mp4"
    settings = SwapSettings(**FAST)
    with pytest.raises(NoFaceInTarget):
        swap_video([source_png], clip, out, settings, engine=TinyEngine(settings))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]


def test_image_as_video_and_video_as_source(tmp_path: Path, media, source_png: Path) -> None:
    settings = SwapSettings()
    with pytest.raises(WrongMediaKind):
        swap_video([source_png], source_png, tmp_path / "o.mp4", settings, engine=TinyEngine(settings))
    with pytest.raises(WrongMediaKind):
        swap_video([media.path("carphone_pristine.mp4")], media.path("carphone_pristine.mp4"), tmp_path / "o.mp4",
                   settings, engine=TinyEngine(settings))
    assert list(tmp_path.iterdir()) == []


def test_vfr_and_trim(tmp_path: Path, source_png: Path) -> None:
    pts = list(np.cumsum([0] + [100, 200, 100, 300, 50, 150] * 5)[:30])
    clip = tmp_path / "vfr.mkv"
    make_clip(clip, 30, pts=[int(p) for p in pts])
    out = tmp_path / "vfr.mp4"
    settings = SwapSettings(**FAST)
    swap_video([source_png], clip, out, settings, engine=TinyEngine(settings))
    assert frame_times(out) == pytest.approx([p / 2500 for p in pts], abs=1.5e-3)  # mkv stores milliseconds
    trimmed = tmp_path / "trim.mp4"
    settings = SwapSettings(trim_start="5f", trim_end="25f", **FAST)
    res = swap_video([source_png], clip, trimmed, settings, engine=TinyEngine(settings))
    assert res.frames == 20
    assert frame_times(trimmed)[0] == pytest.approx(0.0, abs=1.5e-3)


def _segment_processor_factory():
    """Picklable factory for worker processes: the tiny engine (module-level so 'spawn' can import it)."""
    from faceweave.pipeline.video import VideoFaceProcessor

    settings = SwapSettings(detect_every=3)
    return VideoFaceProcessor(TinyEngine(settings), [object()])


def test_segment_parallel_matches_single_process(tmp_path: Path) -> None:
    from faceweave.media.video.encode import EncoderSettings, transcode
    from faceweave.media.video.probe import probe_video
    from faceweave.media.video.segments import run_segments

    clip = tmp_path / "in.mp4"
    make_clip(clip, 100, face_from=0, audio=True, gop=20)
    info = probe_video(clip)
    enc = EncoderSettings("libx264", crf=12, preset="ultrafast")
    single = tmp_path / "single.mp4"
    transcode(clip, single, enc, process=_segment_processor_factory())
    parallel = tmp_path / "parallel.mp4"
    results = run_segments(info, parallel, enc, workers=2, processor_factory=_segment_processor_factory)
    assert len(results) >= 2 and sum(r.frames for r in results) == 100
    assert all(r.stats["frames_swapped"] == r.frames for r in results)
    assert frame_times(parallel) == frame_times(single)
    a, b = decode_all(single).astype(int), decode_all(parallel).astype(int)
    assert a.shape == b.shape and np.abs(a - b).mean() < 2.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4", "parallel.mp4", "single.mp4"]


def test_work_dir_resume(tmp_path: Path, source_png: Path) -> None:
    clip = tmp_path / "in.mp4"
    make_clip(clip, 60, gop=15)
    work = tmp_path / "work"
    settings = SwapSettings(**FAST)
    first = swap_video([source_png], clip, tmp_path / "a.mp4", settings, engine=TinyEngine(settings), work_dir=work)
    assert first.stats["segments"] >= 1 and first.stats["segments_reused"] == 0
    # simulate a crash after the first segment: drop the later segments' markers
    markers = sorted(work.glob("segment_*.done"))
    for m in markers[1:]:
        m.unlink()
    again = swap_video([source_png], clip, tmp_path / "b.mp4", settings, engine=TinyEngine(settings), work_dir=work)
    assert again.stats["segments_reused"] == 1
    assert frame_times(tmp_path / "a.mp4") == frame_times(tmp_path / "b.mp4")


MEMORY_SCRIPT = textwrap.dedent(
    """
    import json, resource, sys, torch
    sys.path.insert(0, {test_dir!r})
    from test_video_pipeline import TinyEngine
    from faceweave.pipeline.video import swap_video
    from faceweave.settings import SwapSettings
    # C2PA on, as a user gets it: signing hashes the MP4 in 1 MB Merkle chunks (docs/provenance.md), so its memory
    # does not grow with the file either
    settings = SwapSettings(preset="ultrafast", batch_size=8, detect_every=5)
    res = swap_video([{source!r}], sys.argv[1], sys.argv[2], settings, engine=TinyEngine(settings))
    print(json.dumps({{"frames": res.frames, "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}}))
    """
)


@pytest.mark.slow
def test_memory_bounded_10s_vs_60s_720p(tmp_path: Path, source_png: Path) -> None:
    # Few frames per second keep the test fast (memory depends on the frames in flight, not on fps), but the 10 s
    # clip must fill the pipeline's queues (3 batches of 8 each) like the long one: at 3 fps (30 frames) it did only
    # sometimes, and its peak then came out ~50 MB lower (growth measured 70-120 MB over runs of one tree).
    fps = 6
    peaks = {}
    # No allocator tuning and no allocator environment variable: the pipeline's own transients bound the peak (the
    # batch is converted to RGB once and only the changed rectangle goes back to YUV). Measured 32–92 MB; a fixed
    # glibc mmap threshold gave ~25 MB but made the real swap 2–2.7× slower (page faults on every large buffer).
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")} | {"OMP_NUM_THREADS": "1"}
    for seconds in (10, 60):
        clip = tmp_path / f"c{seconds}.mp4"
        make_clip(clip, seconds * fps, size=(1280, 720), fps=fps, face_from=0)
        script = MEMORY_SCRIPT.format(test_dir=str(Path(__file__).parent), source=str(source_png))
        proc = subprocess.run([sys.executable, "-c", script, str(clip), str(tmp_path / f"o{seconds}.mp4")],
                              capture_output=True, text=True, timeout=300, env=env)
        assert proc.returncode == 0, proc.stderr[-2000:]
        info = json.loads(proc.stdout.strip().splitlines()[-1])
        assert info["frames"] == seconds * fps
        peaks[seconds] = info["maxrss_kb"] / 1024
    growth = peaks[60] - peaks[10]
    print(f"peak RSS 10 s: {peaks[10]:.0f} MB, 60 s: {peaks[60]:.0f} MB, growth {growth:.1f} MB")
    assert growth < 100


# --------------------------------------------------------------------------------------------- real engine
def upscale_carphone(media, dst: Path, frames: int, scale: int = 2) -> None:
    """carphone_pristine.mp4 (176×144) upscaled ×2 (BlazeFace short-range wants faces ≳ 40 px), first ``frames``."""
    import cv2

    with av.open(str(media.path("carphone_pristine.mp4"))) as c, av.open(str(dst), "w") as out:
        s = c.streams.video[0]
        vs = out.add_stream("libx264", rate=s.average_rate)
        vs.width, vs.height, vs.pix_fmt = s.codec_context.width * scale, s.codec_context.height * scale, "yuv420p"
        vs.time_base = vs.codec_context.time_base = s.time_base
        vs.codec_context.options = {"preset": "ultrafast", "crf": "14"}
        for i, f in enumerate(c.decode(s)):
            if i >= frames:
                break
            rgb = cv2.resize(f.to_ndarray(format="rgb24"), None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
            nf = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            nf.pts, nf.time_base = f.pts, s.time_base
            for p in vs.encode(nf):
                out.mux(p)
        for p in vs.encode(None):
            out.mux(p)


def _largest_faces(engine, frames: np.ndarray) -> list[Face | None]:
    """Full detection + mesh on every frame independently (no tracking): the measurement, not the pipeline."""
    out: list[Face | None] = []
    for rgb in frames:
        faces = engine.analyze(engine.to_tensor(rgb))[0]
        out.append(max(faces, key=lambda f: f.area) if faces else None)
    return out


@pytest.mark.slow
def test_real_engine_output_jitter_not_above_input(media, tmp_path: Path) -> None:
    """Acceptance: the swapped face's landmark jitter, re-measured on the output video the way the input's is, is
    not above the input's; smoothing on vs off is reported (both measured, only 'on' is the product default).

    All 120 frames: on the first 40 alone the ratio moves by ±0.06 from sub-pixel changes of the geometry, which
    is the size of the margin being tested. The output goes through a second lossy encode that the input did not
    (that alone measured 1.03× on this clip), so the margin also covers the codec.
    """
    from faceweave.analysis.track import landmark_jitter
    from faceweave.pipeline.engine import SwapEngine

    frames = 120
    clip = tmp_path / "car2.mp4"
    upscale_carphone(media, clip, frames)
    faces_in = None
    ratios = {}
    for smoothing in (True, False):
        # watermark=False: the invisible mark is a pixel pattern of its own (0.867× off, 0.976× on at 9804f40 + the
        # recall policy, 06:40 UTC, one run each; with three runs the test outgrew its 10-minute limit on the VM)
        settings = SwapSettings(preset="ultrafast", crf=16, detect_every=5, smoothing=smoothing, watermark=False)
        engine = SwapEngine(settings)
        out = tmp_path / f"out_{smoothing}.mp4"
        result = swap_video([media.path("astronaut.png")], clip, out, settings, engine=engine)
        assert result.frames == frames and result.stats["frames_swapped"] >= 0.9 * frames
        assert frame_times(out) == pytest.approx(frame_times(clip), abs=1e-6)
        if faces_in is None:
            faces_in = _largest_faces(engine, decode_all(clip))
        faces_out = _largest_faces(engine, decode_all(out))
        both = [(a, b) for a, b in zip(faces_in, faces_out, strict=True) if a is not None and b is not None]
        assert len(both) >= 0.9 * frames
        j_in = landmark_jitter([a.landmarks[:, :2].numpy() for a, _ in both])
        j_out = landmark_jitter([b.landmarks[:, :2].numpy() for _, b in both])
        ratios[smoothing] = j_out / j_in
        print(f"landmark jitter (face-size units), smoothing {'on' if smoothing else 'off'}: input {j_in:.5f}, "
              f"output {j_out:.5f} ({j_out / j_in:.3f}×)")
    # The acceptance is ≤ 1; the bound keeps the old margin. Measured 0.870× up to 929a22d; 0.937× after the
    # provenance merge (d15bdd2) and 0.982× at the crowd-recall merge (8c44881), when the bound was relaxed to 1.0;
    # 0.867× again at 9804f40 (twice, 06:29 and 06:40 UTC). The crowd tiles never ran on this clip (no tile level at
    # 352×288 for 40 px faces), so they were not the cause; which later commit restored the margin is not bisected.
    assert ratios[True] <= 0.95


@pytest.mark.slow
def test_real_engine_identity_moves_to_source(media, tmp_path: Path) -> None:
    pytest.importorskip("dlib")
    from faceweave.analysis.identity import identity_distance
    from faceweave.pipeline.engine import SwapEngine

    frames = 120  # the whole clip
    clip = tmp_path / "car2.mp4"
    upscale_carphone(media, clip, frames)
    settings = SwapSettings(preset="ultrafast", crf=16, detect_every=5)
    engine = SwapEngine(settings)
    out = tmp_path / "out.mp4"
    swap_video([media.path("astronaut.png")], clip, out, settings, engine=engine)
    src_rgb = media.rgb("astronaut.png")
    src_face = _largest_faces(engine, src_rgb[None])[0]
    assert src_face is not None
    src_emb = engine.identify(engine.to_tensor(src_rgb), [[src_face]])[0][0].embedding
    tin, tout = decode_all(clip), decode_all(out)
    closer = checked = 0
    for k in range(frames):
        face_in, face_out = _largest_faces(engine, tin[k : k + 1])[0], _largest_faces(engine, tout[k : k + 1])[0]
        if face_in is None or face_out is None:
            continue
        e_in = engine.identify(engine.to_tensor(tin[k]), [[face_in]])[0][0].embedding
        e_out = engine.identify(engine.to_tensor(tout[k]), [[face_out]])[0][0].embedding
        checked += 1
        closer += int(identity_distance(e_out, src_emb) < identity_distance(e_out, e_in))
    print(f"identity: {closer}/{checked} checked frames closer to the source than to the target")
    assert checked >= 0.9 * frames
    assert closer >= 0.9 * checked
