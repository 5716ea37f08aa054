"""Video I/O on the bundled clips and on videos synthesised here with PyAV (VFR, rotated, audio, damaged)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from faceweave.errors import (
    CorruptStream,
    EmptyMedia,
    InvalidOption,
    MediaTooLarge,
    OutputNotWritable,
    TruncatedMedia,
    UnsupportedMedia,
    WrongMediaKind,
)
from faceweave.media.video.encode import EncoderSettings, EncodeThread, encoder_available, resolve_encoder, transcode
from faceweave.media.video.frames import FrameReader
from faceweave.media.video.probe import probe_video, scan_frame_timestamps
from faceweave.media.video.segments import plan_segments, run_segments
from faceweave.media.video.trim import Trim, parse_position, trim_from_settings

FAST = EncoderSettings(codec="libx264", crf=18, preset="ultrafast")


def make_video(
    path: Path,
    pts: list[int],
    *,
    size: tuple[int, int] = (96, 64),
    time_base: Fraction = Fraction(1, 90000),
    rotation: int = 0,
    audio_s: float | None = None,
    gop: int = 12,
) -> np.ndarray:
    """Write a synthetic clip (moving pattern with a white corner marker; optional 440 Hz AAC tone).
    Returns the first frame as coded (``(h, w, 3)`` RGB)."""
    w, h = size
    y, x = np.mgrid[0:h, 0:w]
    first = None
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=30)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        vs.time_base = time_base
        vs.codec_context.time_base = time_base
        vs.codec_context.gop_size = gop
        vs.codec_context.options = {"preset": "ultrafast", "crf": "12"}
        if rotation:
            vs.set_display_rotation(rotation)
        aus = None
        if audio_s:
            aus = out.add_stream("aac", rate=48000)
            aus.layout = "mono"
        for i, p in enumerate(pts):
            rgb = np.stack([(x * 3 + i * 4) % 256, (y * 3 + i * 2) % 256, np.full_like(x, 128)], 2).astype(np.uint8)
            rgb[:8, :8] = 255  # top-left marker shows the orientation
            if first is None:
                first = rgb
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = p, time_base
            for packet in vs.encode(frame):
                out.mux(packet)
        for packet in vs.encode(None):
            out.mux(packet)
        if aus is not None and audio_s:
            n = int(audio_s * 48000)
            t = np.arange(n) / 48000
            tone = (0.4 * np.sin(2 * np.pi * 440 * t) * (1 + np.sin(2 * np.pi * 1.3 * t)) / 2).astype(np.float32)
            for k in range(0, n, 1024):
                af = av.AudioFrame.from_ndarray(tone[None, k : k + 1024], format="fltp", layout="mono")
                af.sample_rate, af.pts, af.time_base = 48000, k, Fraction(1, 48000)
                for packet in aus.encode(af):
                    out.mux(packet)
            for packet in aus.encode(None):
                out.mux(packet)
    assert first is not None
    return first


def frame_times(path: Path) -> list[float]:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return sorted(float(p.pts * s.time_base) for p in c.demux(s) if p.pts is not None and p.size)


def audio_samples(path: Path) -> tuple[np.ndarray, int, float]:
    """Mono float samples, sample rate, and the stream's start time in seconds."""
    with av.open(str(path)) as c:
        s = c.streams.audio[0]
        chunks = []
        start = None
        for frame in c.decode(s):
            if start is None:
                start = float(frame.pts * frame.time_base)
            a = frame.to_ndarray()
            chunks.append(a.reshape(len(frame.layout.channels), -1).mean(0) if frame.format.is_planar
                          else a.reshape(-1, len(frame.layout.channels)).mean(1))
        return np.concatenate(chunks), s.codec_context.sample_rate, start or 0.0


def corr_at_best_lag(a: np.ndarray, b: np.ndarray, max_lag: int = 4096) -> float:
    """Peak normalised cross-correlation of two signals over lags up to ``max_lag`` samples."""
    n = min(len(a), len(b)) - max_lag
    a0 = a[max_lag : max_lag + n]
    best = -1.0
    for lag in range(-max_lag, max_lag + 1, 16):
        b0 = b[max_lag + lag : max_lag + lag + n]
        if len(b0) < n:
            continue
        c = float(np.corrcoef(a0, b0)[0, 1])
        best = max(best, c)
    return best


def test_probe_real(media) -> None:
    info = probe_video(media.path("carphone_pristine.mp4"))
    assert (info.width, info.height, info.frames, info.has_audio) == (176, 144, 120, False)
    assert info.average_rate == Fraction(30000, 1001) and not info.is_vfr and info.rotation == 0
    bbb = probe_video(media.path("bigbuckbunny.mp4"))
    assert bbb.has_audio and bbb.audio_codec == "aac" and (bbb.width, bbb.height) == (1280, 720)


def test_passthrough_keeps_frames_timestamps_and_audio(media, tmp_path: Path) -> None:
    src = media.path("bigbuckbunny.mp4")
    out = tmp_path / "bbb.mp4"
    info, stats, written = transcode(src, out, FAST, batch_size=8)
    assert written == stats.frames_read == info.frames
    assert frame_times(out) == pytest.approx(frame_times(src), abs=1e-6)
    a_in, sr_in, _ = audio_samples(src)
    a_out, sr_out, _ = audio_samples(out)
    assert sr_in == sr_out
    assert abs(len(a_in) / sr_in - len(a_out) / sr_out) < 0.05
    assert corr_at_best_lag(a_in, a_out, 256) > 0.99  # packet copy
    with av.open(str(src)) as c_in, av.open(str(out)) as c_out:
        f_in = next(c_in.decode(video=0)).to_ndarray(format="rgb24").astype(float)
        f_out = next(c_out.decode(video=0)).to_ndarray(format="rgb24").astype(float)
    psnr = 10 * np.log10(255**2 / np.mean((f_in - f_out) ** 2))
    assert psnr > 30
    assert [p.name for p in tmp_path.iterdir()] == ["bbb.mp4"]


def test_trim_cuts_audio_too(tmp_path: Path) -> None:
    src = tmp_path / "tone.mp4"
    make_video(src, [i * 3000 for i in range(90)], audio_s=3.0)  # 3 s at 30 fps + 3 s of tone
    out = tmp_path / "cut.mkv"
    info = probe_video(src)
    trim = trim_from_settings("0.5s", "60f", info)
    _, _, written = transcode(src, out, FAST, trim=trim)
    assert written == 60 - 15
    times = frame_times(out)
    assert times[0] == pytest.approx(0.0, abs=2e-3)
    assert times[-1] == pytest.approx(44 / 30, abs=2e-3)
    a_out, sr, start = audio_samples(out)
    assert abs(len(a_out) / sr - 45 / 30) < 0.05
    a_in, sr_in, _ = audio_samples(src)
    ref = a_in[int(0.5 * sr_in) : int(0.5 * sr_in) + len(a_out)]
    assert corr_at_best_lag(ref, a_out[: len(ref)], 2048) > 0.9


def test_vfr_roundtrip(tmp_path: Path) -> None:
    deltas = [3000, 3000, 6000, 1500, 1500, 4500, 3000, 9000, 3000, 3000] * 4
    pts = list(np.cumsum([0, *deltas[:-1]]))
    src = tmp_path / "vfr.mp4"
    make_video(src, [int(p) for p in pts])
    info = probe_video(src)
    assert info.is_vfr
    out = tmp_path / "vfr_out.mp4"
    transcode(src, out, FAST)
    assert frame_times(out) == pytest.approx([p / 90000 for p in pts], abs=1e-4)


def test_rotated_input_written_upright(tmp_path: Path) -> None:
    src = tmp_path / "rot.mp4"
    coded = make_video(src, [i * 3000 for i in range(10)], size=(96, 64), rotation=90)
    info = probe_video(src)
    assert info.rotation == 90 and (info.width, info.height) == (64, 96)
    out = tmp_path / "rot_out.mov"
    transcode(src, out, FAST)
    out_info = probe_video(out)
    assert out_info.rotation == 0 and (out_info.width, out_info.height) == (64, 96)
    with FrameReader(out_info, batch_size=4) as reader:
        first = next(iter(reader)).frames[0].astype(float)
    # A display rotation of +90 (counter-clockwise) moves the coded top-left marker to the bottom-left.
    expected = np.rot90(coded, k=1).astype(float)
    assert np.abs(first - expected).mean() < 6
    assert first[-8:, :8].mean() > 200


def test_segments_match_single_process(tmp_path: Path) -> None:
    src = tmp_path / "long.mp4"
    make_video(src, [i * 3000 for i in range(150)], gop=25, audio_s=5.0)
    info = probe_video(src)
    segments = plan_segments(info, 3, min_frames=24)
    assert len(segments) == 3 and all(s.keyframe_aligned for s in segments)
    assert sum(s.frames for s in segments) == 150
    single = tmp_path / "single.mp4"
    transcode(src, single, FAST)
    parallel = tmp_path / "parallel.mp4"
    work = tmp_path / "work"
    results = run_segments(info, parallel, FAST, workers=2, work_dir=work)
    assert sum(r.frames for r in results) == 150
    assert frame_times(parallel) == pytest.approx(frame_times(single), abs=1e-6)
    with av.open(str(parallel)) as c:
        decoded = sum(1 for _ in c.decode(video=0))
    assert decoded == 150
    a_single, sr, _ = audio_samples(single)
    a_par, _, _ = audio_samples(parallel)
    assert abs(len(a_single) - len(a_par)) / sr < 0.05
    # a rerun with the same work_dir reuses every finished segment
    rerun = run_segments(info, tmp_path / "again.mp4", FAST, workers=1, work_dir=work)
    assert all(r.stats.get("reused") for r in rerun)
    assert frame_times(tmp_path / "again.mp4") == frame_times(parallel)


def test_webm_forces_vp9_and_opus(tmp_path: Path) -> None:
    src = tmp_path / "a.mp4"
    make_video(src, [i * 3000 for i in range(20)], audio_s=0.7)
    out = tmp_path / "a.webm"
    enc = resolve_encoder(None, None, None, None, out)
    assert enc.codec == "libvpx-vp9"
    transcode(src, out, enc)
    with av.open(str(out)) as c:
        assert c.streams.video[0].codec_context.name == "vp9"
        assert c.streams.audio[0].codec_context.name == "opus"
    with pytest.raises(InvalidOption, match="WebM"):
        resolve_encoder("libx264", None, None, None, out)


def test_encoder_choice() -> None:
    assert not encoder_available("h264_nvenc")  # this CI machine has no NVIDIA GPU
    assert resolve_encoder(None, None, None, None, Path("o.mp4")).codec == "libx264"
    with pytest.raises(InvalidOption, match="not available"):
        resolve_encoder("h264_nvenc", None, None, None, Path("o.mp4"))
    with pytest.raises(InvalidOption):
        resolve_encoder("no_such_codec", None, None, None, Path("o.mkv"))


def test_parse_position() -> None:
    assert parse_position("1.5", "t") == (1.5, None)
    assert parse_position("1.5s", "t") == (1.5, None)
    assert parse_position("45f", "t") == (None, 45)
    with pytest.raises(InvalidOption):
        parse_position("abc", "t")
    t = Trim(start_frame=2, end_s=1.0)
    assert [t.keeps(i, i / 10) for i in range(12)] == [False, False] + [True] * 8 + [False, False]


def test_bad_inputs(media, tmp_path: Path) -> None:
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(EmptyMedia):
        probe_video(empty)
    data = media.path("carphone_pristine.mp4").read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 3])
    with pytest.raises((TruncatedMedia, CorruptStream)):
        transcode(cut, tmp_path / "o1.mp4", FAST)
    with pytest.raises(WrongMediaKind, match="image"):
        probe_video(media.path("astronaut.png"))
    audio = tmp_path / "tone.m4a"
    with av.open(str(audio), "w", format="mp4") as out:
        s = out.add_stream("aac", rate=16000)
        af = av.AudioFrame.from_ndarray(np.zeros((1, 4096), np.float32), format="fltp", layout="mono")
        af.sample_rate = 16000
        for p in [*s.encode(af), *s.encode(None)]:
            out.mux(p)
    with pytest.raises(WrongMediaKind, match="audio"):
        probe_video(audio)
    with pytest.raises(MediaTooLarge, match="longer"):
        probe_video(media.path("carphone_pristine.mp4"), max_duration_s=2.0)
    with pytest.raises(MediaTooLarge, match="pixels"):
        probe_video(media.path("bigbuckbunny.mp4"), max_pixels=640 * 480)
    text = tmp_path / "x.mp4"
    text.write_text("not a video at all\n" * 20)
    with pytest.raises(UnsupportedMedia):
        probe_video(text)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.mp4", "empty.mp4", "tone.m4a", "x.mp4"]


def test_corrupt_mid_stream(tmp_path: Path) -> None:
    src = tmp_path / "ok.mkv"
    make_video(src, [i * 3000 for i in range(60)], size=(160, 96))
    data = bytearray(src.read_bytes())
    # Truncate the payload in the middle: the first frames stay decodable, the header still says 60 frames.
    bad = tmp_path / "bad.mkv"
    bad.write_bytes(bytes(data[: len(data) * 2 // 3]))
    info = probe_video(bad)
    with pytest.raises(CorruptStream, match=r"after t=\d"):
        transcode(bad, tmp_path / "o.mp4", FAST)
    assert not (tmp_path / "o.mp4").exists()
    _, stats, written = transcode(bad, tmp_path / "o2.mp4", FAST, skip_corrupt=True)
    assert written == stats.frames_read and stats.frames_corrupt_dropped > 0
    assert written + stats.frames_corrupt_dropped == (info.frames or 60)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.mkv", "o2.mp4", "ok.mkv"]


def test_bounded_queue_and_early_close(media) -> None:
    info = probe_video(media.path("carphone_pristine.mp4"))
    with FrameReader(info, batch_size=4, queue_size=2) as reader:
        it = iter(reader)
        batch = next(it)
        assert batch.frames.shape == (4, 144, 176, 3) and batch.frames.dtype == np.uint8
        assert reader._queue.qsize() <= 2
    assert not reader._thread.is_alive()
    all_pts, keys = scan_frame_timestamps(info)
    assert len(all_pts) == 120 and keys[0]


def test_prepare_runs_in_the_decode_thread_and_staged_planes_reach_the_device(media) -> None:
    import threading

    import torch

    info = probe_video(media.path("carphone_pristine.mp4"))
    where: list[str] = []

    def stage(batch) -> None:
        where.append(threading.current_thread().name)
        batch.stage(pin=False)

    with FrameReader(info, batch_size=8, prepare=stage) as reader:
        for batch in reader:
            staged = batch._staged
            assert staged is not None and staged.dtype == torch.uint8
            on_device = batch.to_device("cpu")
            # the staged tensor is what went to the device, and it holds exactly the packed planes
            assert batch._staged is None
            np.testing.assert_array_equal(on_device.packed.numpy(), batch.packed())
    assert len(where) == 15 and set(where) == {"faceweave-decode"}


# ------------------------------------------------------------------------------------- YUV data path (issue 5)
def make_tagged(path: Path, n: int, *, pix_fmt: str = "yuv420p", colorspace: int = 1, color_range: int = 1,
                size: tuple[int, int] = (96, 64)) -> None:
    """A clip with colour tags (default BT.709 limited range) in ``pix_fmt``, from the same pattern as make_video."""
    w, h = size
    y, x = np.mgrid[0:h, 0:w]
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=30)
        vs.width, vs.height, vs.pix_fmt = w, h, pix_fmt
        ctx = vs.codec_context
        ctx.colorspace, ctx.color_range, ctx.color_primaries, ctx.color_trc = colorspace, color_range, 1, 1
        ctx.options = {"preset": "ultrafast", "crf": "8"}
        cs = {1: "ITU709", 5: "ITU601", 6: "SMPTE170M"}[colorspace]
        for i in range(n):
            rgb = np.stack([(x * 3 + i * 4) % 256, (y * 3 + i * 2) % 256, np.full_like(x, 128)], 2).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(
                format=pix_fmt, dst_colorspace=cs, dst_color_range=color_range)
            frame.colorspace, frame.color_range = colorspace, color_range
            frame.pts = i
            for p in vs.encode(frame):
                out.mux(p)
        for p in vs.encode(None):
            out.mux(p)


def test_batches_stay_yuv_and_untouched_frames_pass_through(media) -> None:
    info = probe_video(media.path("carphone_pristine.mp4"))
    assert (info.colour_matrix, info.full_range) == ("bt601", False)  # untagged: FFmpeg's default
    with FrameReader(info, batch_size=4) as reader:
        batch = next(iter(reader))
    assert len(batch) == 4 and all(f.format.name == "yuv420p" for f in batch.yuv)
    packed = batch.packed()
    assert packed.shape == (4, 176 * 144 * 3 // 2) and packed.dtype == np.uint8
    y, u, v = batch.planes(2)
    np.testing.assert_array_equal(packed[2, : 176 * 144].reshape(144, 176), y)
    np.testing.assert_array_equal(packed[2, 176 * 144 : 176 * 144 + 88 * 72].reshape(72, 88), u)
    edited = packed[1:2].copy()
    edited[0, :100] = 0
    out = batch.replaced([1], edited)
    assert out.yuv[0] is batch.yuv[0] and out.yuv[2] is batch.yuv[2] and out.yuv[1] is not batch.yuv[1]
    np.testing.assert_array_equal(out.packed(index=[1]), edited)
    assert out.yuv[1].colorspace == batch.yuv[1].colorspace and out.yuv[1].color_range == batch.yuv[1].color_range
    # RGB on demand (swscale on the CPU) and on a device (torch) agree within swscale's fast-path error
    rgb_dev = batch.to_device("cpu").rgb(slice(None))
    assert rgb_dev.shape == (4, 3, 144, 176)
    ours = (rgb_dev.permute(0, 2, 3, 1) * 255).round().numpy()
    assert np.abs(ours - batch.frames.astype(float)).max() <= 3 and np.abs(ours - batch.frames).mean() < 1.5


def test_colour_tags_and_range_kept(tmp_path: Path) -> None:
    src = tmp_path / "bt709_full.mp4"
    make_tagged(src, 12, colorspace=1, color_range=2)
    info = probe_video(src)
    assert (info.colorspace, info.colour_matrix, info.full_range) == (1, "bt709", True)
    out = tmp_path / "o.mp4"
    transcode(src, out, FAST)
    with av.open(str(out)) as c:
        ctx = c.streams.video[0].codec_context
        assert (int(ctx.colorspace), int(ctx.color_range)) == (1, 2)
    with FrameReader(info, batch_size=12) as r_in, FrameReader(probe_video(out), batch_size=12) as r_out:
        a, b = next(iter(r_in)), next(iter(r_out))
    assert (b.matrix, b.full_range) == ("bt709", True)
    assert np.abs(a.packed().astype(int) - b.packed()).mean() < 1.5  # planes copied, not re-mapped


@pytest.mark.parametrize(("pix_fmt", "full"), [("yuv444p", False), ("yuvj420p", True), ("yuv422p", False)])
def test_other_pixel_formats_become_yuv420p(tmp_path: Path, pix_fmt: str, full: bool) -> None:
    src = tmp_path / f"{pix_fmt}.mp4"
    make_tagged(src, 6, pix_fmt=pix_fmt, colorspace=5, color_range=2 if full else 1)
    info = probe_video(src)
    assert info.full_range is full
    with FrameReader(info, batch_size=6) as reader:
        batch = next(iter(reader))
    assert all(f.format.name == "yuv420p" and (f.width, f.height) == (96, 64) for f in batch.yuv)
    with av.open(str(src)) as c:  # the same pictures, converted to RGB straight from the source format
        ref = np.stack([f.to_ndarray(format="rgb24", src_colorspace="ITU601", src_color_range=2 if full else 1)
                        for f in c.decode(video=0)])
    rgb = (batch.to_device("cpu").rgb(slice(None)).permute(0, 2, 3, 1) * 255).numpy()
    assert np.abs(rgb - ref).mean() < 4.0  # chroma subsampled to 4:2:0, nothing else
    _, _, written = transcode(src, tmp_path / "o.mp4", FAST)
    assert written == 6


def test_yuv_write_is_exact_and_rgb_write_close(media, tmp_path: Path) -> None:
    """Through a lossless encode the YUV path gives back the decoded planes exactly; the RGB path (processors that
    return arrays) goes through swscale twice and lands within about a level."""
    from faceweave.media.video.encode import VideoWriter

    info = probe_video(media.path("carphone_pristine.mp4"))
    lossless = EncoderSettings(codec="libx264", crf=0, preset="ultrafast")
    a, b = VideoWriter(tmp_path / "a.mp4", info, lossless), VideoWriter(tmp_path / "b.mp4", info, lossless)
    assert a.stream.codec_context.thread_type.value & 1  # frame threads (PyAV opens with slice threads only)
    inputs = []
    with FrameReader(info, batch_size=8) as reader:
        for k, batch in enumerate(reader):
            inputs.append(batch.packed())
            a.write(batch)
            b.write(batch.frames, batch.pts)
            if k == 2:
                break
    a.close()
    b.close()
    with FrameReader(probe_video(tmp_path / "a.mp4"), batch_size=24) as ra, \
            FrameReader(probe_video(tmp_path / "b.mp4"), batch_size=24) as rb:
        pa, pb = next(iter(ra)).packed().astype(int), next(iter(rb)).packed()
    assert pa.shape == pb.shape == (24, 176 * 144 * 3 // 2)
    np.testing.assert_array_equal(pa, np.concatenate(inputs))
    assert np.abs(pa - pb).mean() < 1.0 and np.percentile(np.abs(pa - pb), 99) <= 3


class _SlowWriter:
    """A stand-in writer (a dependency of the thread under test): records batches, can block or fail."""

    def __init__(self, delay_s: float = 0.0, fail_at: int | None = None) -> None:
        self.delay_s, self.fail_at = delay_s, fail_at
        self.written: list[int] = []
        self.aborted = False

    def write(self, frames: np.ndarray, pts: np.ndarray) -> None:
        import time

        if self.fail_at is not None and len(self.written) == self.fail_at:
            raise OutputNotWritable("disk full", hint="free some space")
        time.sleep(self.delay_s)
        self.written.append(int(pts[0]))

    def abort(self) -> None:
        self.aborted = True


def test_encode_thread_keeps_order_and_reports_busy_time() -> None:
    writer = _SlowWriter(delay_s=0.01)
    encode = EncodeThread(lambda first_pts: writer, maxsize=2)
    for k in range(6):
        encode.put(np.zeros((1, 2, 2, 3), np.uint8), np.array([k * 10]))
    encode.finish()
    assert writer.written == [0, 10, 20, 30, 40, 50] and encode.writer is writer
    assert encode.busy_s >= 6 * 0.01


def test_encode_thread_error_reaches_the_producer_and_abort_is_prompt() -> None:
    import time

    failing = _SlowWriter(fail_at=1)
    encode = EncodeThread(lambda first_pts: failing, maxsize=1)
    with pytest.raises(OutputNotWritable, match="disk full"):
        for k in range(50):  # the producer learns of the failure at its next put, never blocks on a dead consumer
            encode.put(np.zeros((1, 2, 2, 3), np.uint8), np.array([k]))
    encode.abort()
    assert failing.aborted and failing.written == [0]

    # abort with a full queue behind a slow write drops the queued batches instead of encoding them first
    slow = _SlowWriter(delay_s=0.3)
    encode = EncodeThread(lambda first_pts: slow, maxsize=2)
    for k in range(3):
        encode.put(np.zeros((1, 2, 2, 3), np.uint8), np.array([k]))
    t0 = time.perf_counter()
    encode.abort()
    assert time.perf_counter() - t0 < 0.6 and slow.aborted and len(slow.written) <= 2
