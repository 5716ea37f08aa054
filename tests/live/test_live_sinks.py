"""Live outputs without a video file carry the invisible watermark too: a network stream, the virtual camera's RGB
and the browser's WebRTC track get the same Cr pattern as a file (``LiveFrameMarker``), on a copy of a decoded frame;
with the watermark off they pass frames as they are."""

from __future__ import annotations

import asyncio
from pathlib import Path

import av
import numpy as np
import pytest
from live_helpers import scaled_clip

from faceweave.live.session import one_frame_batch
from faceweave.live.sinks import LiveFrameMarker, StreamSink
from faceweave.live.sources import open_source
from faceweave.media.video.frames import FrameBatch
from faceweave.provenance.mark import Marking
from faceweave.provenance.watermark import detect_watermark


def _decoded(clip: Path, count: int) -> list[FrameBatch]:
    """The clip's first ``count`` frames as the live engine hands them out (one-frame batches of decoded frames)."""
    source = open_source(str(clip))
    try:
        frames = [item for _, item in zip(range(count), source.frames(), strict=False)]
    finally:
        source.close()
    return [one_frame_batch(f) for f in frames]


def _every_other_rgb(path: Path, count: int = 16) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        frames = [f.to_ndarray(format="rgb24") for _, f in zip(range(2 * count), c.decode(video=0), strict=False)]
    return frames[::2]


@pytest.mark.parametrize("watermark", [True, False])
def test_stream_sink_marks_every_frame(tmp_path: Path, watermark: bool) -> None:
    clip = scaled_clip(tmp_path / "in.mp4", 640, 480, frames=40)
    batches = _decoded(clip, 40)
    before = [np.array(b.yuv[0].planes[2], copy=True) for b in batches]
    marking = Marking(job_id="live-stream", watermark=watermark)
    out = tmp_path / "out.ts"
    sink = StreamSink(f"file:{out}", 640, 480, 30.0, marking=marking)
    for k, batch in enumerate(batches):
        sink.write(batch, k / 30)
    sink.close()
    # the decoded frames themselves are never written into (the decoder may still reference them)
    assert all(np.array_equal(np.asarray(b.yuv[0].planes[2]), v) for b, v in zip(batches, before, strict=True))
    found = detect_watermark(_every_other_rgb(out))
    assert found.found is watermark
    if watermark:
        assert found.plane == "chroma" and found.payload in (None, marking.payload)


def test_marker_on_labelled_rgb_and_for_the_virtual_camera(tmp_path: Path) -> None:
    """The label path hands RGB: marked after conversion to yuv420p; the camera gets it back as RGB, mark kept."""
    clip = scaled_clip(tmp_path / "in.mp4", 640, 480, frames=32)
    marker = LiveFrameMarker(Marking(job_id="live-camera"))
    rgb = [b.frames for b in _decoded(clip, 32)]
    sent = [marker.frame(f).to_ndarray(format="rgb24") for f in rgb]
    assert detect_watermark(sent[::2]).found
    assert not detect_watermark([f[0] for f in rgb][::2]).found
    # luma untouched by the Cr pattern (up to the RGB round trip's rounding)
    y_in = [0.299 * f[0, ..., 0] + 0.587 * f[0, ..., 1] + 0.114 * f[0, ..., 2] for f in rgb]
    y_out = [0.299 * f[..., 0] + 0.587 * f[..., 1] + 0.114 * f[..., 2] for f in sent]
    assert max(float(np.abs(a - b).mean()) for a, b in zip(y_in, y_out, strict=True)) < 1.5


def test_webrtc_track_gets_marked_frames(tmp_path: Path) -> None:
    pytest.importorskip("aiortc", reason="the WebRTC track needs the 'live' extra (aiortc)")
    from faceweave.live.webrtc import SwappedTrack, _TrackSink

    clip = scaled_clip(tmp_path / "in.mp4", 640, 480, frames=2)
    batch = _decoded(clip, 1)[0]
    loop = asyncio.new_event_loop()
    try:
        track = SwappedTrack()
        sink = _TrackSink(track, loop, Marking(job_id="live-webrtc"))
        sink.write(batch, 0.0)
        loop.run_until_complete(asyncio.sleep(0))
        sent = loop.run_until_complete(track.recv())
    finally:
        loop.close()
    assert sent is not batch.yuv[0]  # a copy was marked
    diff = np.asarray(sent.planes[2]).astype(int) - np.asarray(batch.yuv[0].planes[2]).astype(int)
    assert np.abs(diff).max() >= 2 and np.array_equal(np.asarray(sent.planes[0]), np.asarray(batch.yuv[0].planes[0]))
