"""What the watermark costs the video encoder, in machine-independent terms (issue 24: the video path within 5 % of
its speed without marking).

x264's CPU time cannot be asserted on a shared machine, so these tests check what drives it, with one encoder thread
(x264 is then deterministic): the **frame types** x264 chooses and the **bits** it spends. Measured with
``benchmarks/video_marking_cost.py --encoder-only`` (docs/provenance.md): where marked and unmarked frames get the
same I/P/B decisions, x264's CPU time differs by −3 to +4 % although the marked file is up to 21 % bigger; where the
pattern turns x264's all-P decision into P+B (carphone filling a 1080p frame), it costs +13 % at 3 % *fewer* bits.
The frame types are the proxy that tracks the CPU time; the size bound guards the pattern's bit cost (a stronger,
busier or per-frame-changing pattern fails it).
"""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import pytest

from faceweave.data import media_path
from faceweave.media.video import EncoderSettings, Trim, transcode
from faceweave.provenance.mark import Marking, video_output_mark

_ENCODER = EncoderSettings(codec="libx264", crf=20, preset="veryfast", threads=1)  # one thread: deterministic


def _encode_both(src: Path, tmp_path: Path, trim: Trim | None = None) -> dict[bool, tuple[int, str]]:
    """``{marked: (bytes, frame types "IPB…" in display order)}`` of the real writer's output, unmarked and marked."""
    out: dict[bool, tuple[int, str]] = {}
    for marked in (False, True):
        dst = tmp_path / f"{'marked' if marked else 'plain'}.mp4"
        mark = video_output_mark(Marking(job_id="encode-cost", c2pa=False)) if marked else None
        transcode(src, dst, _ENCODER, trim=trim, mark=mark)
        with av.open(str(dst)) as c:
            types = "".join(" IPB"[int(f.pict_type)] for f in c.decode(video=0))
        out[marked] = (dst.stat().st_size, types)
    return out


def _b_frames_added(plain: str, marked: str) -> int:
    """B-frames x264 made of marked frames beyond the unmarked encode's (counts: one flip shifts every later GOP,
    so a position-by-position comparison would not measure the cost)."""
    assert len(plain) == len(marked)
    return abs(marked.count("B") - plain.count("B"))


def test_marking_keeps_x264s_frame_types_and_bits_on_bigbuckbunny_720p(tmp_path: Path) -> None:
    # 2 s of bigbuckbunny at its own 1280x720 (50 frames, a camera pan). Measured at this commit: 35 B-frames
    # unmarked, 36 marked; the marked file is 1.22x the unmarked one; x264's CPU time on this clip +4 %.
    res = _encode_both(media_path("bigbuckbunny.mp4"), tmp_path, Trim(end_s=2.0))
    (plain_bytes, plain_types), (marked_bytes, marked_types) = res[False], res[True]
    assert "B" in plain_types  # x264 decides the types itself: the writer sends frames with no picture type
    assert _b_frames_added(plain_types, marked_types) <= len(plain_types) // 10, (plain_types, marked_types)
    assert marked_bytes / plain_bytes <= 1.30, marked_bytes / plain_bytes


def _carphone_filling(dst: Path, size: tuple[int, int], frames: int) -> None:
    """The face clip scaled to fill ``size`` (what a swap written at that size looks like to the encoder)."""
    w, h = size
    with av.open(str(media_path("carphone_pristine.mp4"))) as c, av.open(str(dst), "w") as out:
        vs = out.add_stream("libx264", rate=25)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        vs.codec_context.options = {"preset": "ultrafast", "crf": "16"}
        for i, f in zip(range(frames), c.decode(video=0), strict=False):
            frame = av.VideoFrame.from_ndarray(cv2.resize(f.to_ndarray(format="rgb24"), (w, h),
                                                          interpolation=cv2.INTER_CUBIC), format="rgb24")
            frame.pts = i
            for p in vs.encode(frame):
                out.mux(p)
        for p in vs.encode(None):
            out.mux(p)


@pytest.mark.xfail(strict=True, reason="open (issue 24): the static pattern makes frames predictable from each other, "
                   "so x264's fast B-frame decision turns this clip's all-P encode into P+B (+13 % CPU time at 1080p); "
                   "no amplitude, cell size or smoothing of the pattern tried keeps the all-P decision")
def test_marking_keeps_x264s_frame_types_on_the_face_clip_at_1080p(tmp_path: Path) -> None:
    src = tmp_path / "carphone_1080p.mp4"
    _carphone_filling(src, (1920, 1080), 24)
    res = _encode_both(src, tmp_path)
    assert _b_frames_added(res[False][1], res[True][1]) <= len(res[False][1]) // 10, (res[False][1], res[True][1])
