"""Live outputs: a video file (:class:`~faceweave.media.video.encode.VideoWriter`: atomic, valid after Ctrl-C),
a network stream URL (rtmp → FLV, rtsp → RTSP, srt/udp/tcp → MPEG-TS; x264 ``zerolatency``), or a virtual camera
(pyvirtualcam, where the host has one). With a :class:`~faceweave.provenance.mark.Marking` every output carries the
invisible watermark in every frame (:class:`LiveFrameMarker`; the browser's WebRTC track too), and the file its tags
and C2PA as any video output.

Each sink takes what the engine hands out — a one-frame :class:`~faceweave.media.video.frames.FrameBatch`, or
``(1, H, W, 3)`` uint8 RGB when a visible label was drawn — with the frame's time in seconds since the session
started (frames dropped upstream leave gaps: the output keeps real time).
"""

from __future__ import annotations

import contextlib
from fractions import Fraction
from pathlib import Path
from typing import Any, Protocol

import av
import numpy as np

from faceweave import __version__
from faceweave.errors import DependencyMissing, OutputNotWritable
from faceweave.media.video.encode import (
    EncoderSettings,
    VideoWriter,
    copy_video_frame,
    frame_plane,
    resolve_encoder,
)
from faceweave.media.video.frames import FrameBatch
from faceweave.media.video.probe import VideoInfo
from faceweave.provenance.mark import Marking, mark_video_output, video_output_mark
from faceweave.provenance.watermark import ChromaMarker

TIME_BASE = Fraction(1, 1000)  # live output timestamps in milliseconds (frames come on the clock, not a grid)
PROVENANCE = {"comment": "faceweave:synthetic=true", "encoder": f"faceweave {__version__}"}
STREAM_FORMATS = {"rtmp": "flv", "rtmps": "flv", "rtsp": "rtsp", "srt": "mpegts", "udp": "mpegts", "tcp": "mpegts"}


class LiveSink(Protocol):
    """Where a live session's swapped frames go."""

    def write(self, frames: FrameBatch | np.ndarray, time_s: float) -> None: ...

    def close(self) -> None: ...


def _pts(time_s: float, last: int | None) -> int:
    pts = int(round(time_s / TIME_BASE))
    return pts if last is None or pts > last else last + 1  # strictly increasing, whatever the clock did


def live_video_info(path: Path, width: int, height: int, fps: float) -> VideoInfo:
    """A :class:`VideoInfo` for a live output of this size and nominal rate (ms timestamps, no audio)."""
    rate = Fraction(fps).limit_denominator(1001)
    return VideoInfo(path=path, container="live", codec="rawvideo", width=width, height=height, coded_width=width,
                     coded_height=height, rotation=0, fps=float(rate), average_rate=rate, time_base=TIME_BASE,
                     frames=None, duration_s=0.0, start_pts=0, start_time_s=0.0, pix_fmt="yuv420p", color_range=1,
                     has_audio=False)


class LiveFrameMarker:
    """The watermark on the frames a live output sends that has no :class:`VideoWriter` of its own (a stream, the
    virtual camera, the browser's WebRTC track): the same pattern in Cr as a video file's
    (:class:`~faceweave.provenance.watermark.ChromaMarker`, the session's payload, made for each frame size met), so
    ``faceweave verify`` finds it in a recording of any of them. Without a marking, or with ``watermark`` off, frames
    pass as they are."""

    def __init__(self, marking: Marking | None) -> None:
        self.marking = marking if marking is not None and marking.watermark else None
        self._markers: dict[tuple[int, int], ChromaMarker] = {}

    @property
    def active(self) -> bool:
        return self.marking is not None

    def frame(self, frames: FrameBatch | np.ndarray) -> Any:
        """Frame 0 of what the engine handed out (a :class:`FrameBatch`, or ``(1, H, W, 3)`` uint8 RGB with a visible
        label) as a ``yuv420p`` ``av.VideoFrame``, marked. A decoded frame is marked on a copy: the decoder may still
        reference it."""
        if isinstance(frames, FrameBatch):
            frame = frames.yuv[0]
            if self.marking is None or 0 in frames.marked:
                return frame
            if 0 not in frames.owned:
                frame = copy_video_frame(frame)
        else:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frames[0]), format="rgb24").reformat(
                format="yuv420p")
            if self.marking is None:
                return frame
        h, w = int(frame.height), int(frame.width)
        marker = self._markers.get((h, w))
        if marker is None:
            marker = self._markers[(h, w)] = ChromaMarker(h, w, self.marking.payload, ((h + 1) // 2, (w + 1) // 2))
        marker.apply(frame_plane(frame, 2))
        return frame


class FileSink:
    """A file: encoded as frames come, closed into place on :meth:`close` (so an interrupted session still leaves a
    valid file with every frame written so far)."""

    def __init__(self, path: Path, width: int, height: int, fps: float, encoder: EncoderSettings | None = None,
                 marking: Marking | None = None) -> None:
        enc = encoder or resolve_encoder(None, None, "veryfast", None, path)
        # with a marking, every frame gets the watermark and the closed file its tags, +faststart and C2PA
        self.marking = marking
        mark = video_output_mark(marking) if marking is not None else None
        self.writer = VideoWriter(path, live_video_info(path, width, height, fps), enc, audio=False, mark=mark)
        with contextlib.suppress(AttributeError, TypeError):
            self.writer.container.metadata.update(PROVENANCE)
        self._last: int | None = None

    def write(self, frames: FrameBatch | np.ndarray, time_s: float) -> None:
        self._last = _pts(time_s, self._last)
        self.writer.write(frames, [self._last])

    def close(self) -> None:
        path = self.writer.close()
        if self.marking is not None:
            mark_video_output(path, self.marking)

    def abort(self) -> None:
        self.writer.abort()


class StreamSink:
    """A network stream (the muxer picked from the URL's scheme), H.264 tuned for latency."""

    def __init__(self, url: str, width: int, height: int, fps: float, marking: Marking | None = None) -> None:
        self.marker = LiveFrameMarker(marking)
        scheme = url.split("://", 1)[0].lower()
        fmt = STREAM_FORMATS.get(scheme, "mpegts")
        try:
            self.container: Any = av.open(url, mode="w", format=fmt, timeout=(10.0, 10.0))
        except (av.error.FFmpegError, OSError) as exc:
            raise OutputNotWritable(f"cannot open the output stream {url!r}: {exc}",
                                    hint="check the URL and that the receiving server is up") from None
        self.container.metadata.update(video_output_mark(marking).tags if marking is not None else PROVENANCE)
        stream: Any = self.container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.time_base = stream.codec_context.time_base = TIME_BASE
        stream.codec_context.options = {"preset": "ultrafast", "tune": "zerolatency", "crf": "23"}
        self.stream = stream
        self._last: int | None = None

    def write(self, frames: FrameBatch | np.ndarray, time_s: float) -> None:
        frame = self.marker.frame(frames)
        self._last = _pts(time_s, self._last)
        frame.pts, frame.time_base = self._last, TIME_BASE
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def close(self) -> None:
        with contextlib.suppress(av.error.FFmpegError):
            for packet in self.stream.encode(None):
                self.container.mux(packet)
        self.container.close()

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self.container.close()


class VirtualCameraSink:
    """A virtual camera through pyvirtualcam (v4l2loopback on Linux, OBS's camera elsewhere)."""

    def __init__(self, device: str | None, width: int, height: int, fps: float, marking: Marking | None = None
                 ) -> None:
        self.marker = LiveFrameMarker(marking)
        try:
            import pyvirtualcam
        except ImportError:
            raise DependencyMissing("the virtual camera output needs pyvirtualcam",
                                    hint="pip install pyvirtualcam (and, on Linux, load v4l2loopback); or write "
                                         "to a file or stream URL") from None
        try:
            self.cam = pyvirtualcam.Camera(width, height, fps, device=device, fmt=pyvirtualcam.PixelFormat.RGB)
        except RuntimeError as exc:
            raise OutputNotWritable(f"no virtual camera available: {exc}",
                                    hint="on Linux: sudo modprobe v4l2loopback") from None

    def write(self, frames: FrameBatch | np.ndarray, time_s: float) -> None:
        if not self.marker.active:
            rgb = frames.frames[0] if isinstance(frames, FrameBatch) else frames[0]
        else:  # marked in Cr like every other output, then to RGB for the camera
            rgb = self.marker.frame(frames).to_ndarray(format="rgb24")
        self.cam.send(np.ascontiguousarray(rgb))

    def close(self) -> None:
        self.cam.close()

    def abort(self) -> None:
        self.close()


def open_sink(spec: str, width: int, height: int, fps: float, marking: Marking | None = None
              ) -> FileSink | StreamSink | VirtualCameraSink:
    """The live output named by ``spec``: ``virtualcam`` (or ``virtualcam:/dev/videoN``), a stream URL, or a file
    whose extension picks the container (.mp4, .mkv, .mov, .webm)."""
    if spec == "virtualcam" or spec.startswith("virtualcam:"):
        device = spec.partition(":")[2] or None
        return VirtualCameraSink(device, width, height, fps, marking=marking)
    if "://" in spec:
        return StreamSink(spec, width, height, fps, marking=marking)
    return FileSink(Path(spec), width, height, fps, marking=marking)


__all__ = ["FileSink", "LiveFrameMarker", "LiveSink", "StreamSink", "VirtualCameraSink", "live_video_info", "open_sink"]
