"""Live inputs: a camera (``/dev/video*`` through PyAV's v4l2 input), a network stream (rtsp/rtmp/srt/udp/http
URL), or a file played at its own frame rate on the clock (a file behaves like a camera: a frame arrives when its
timestamp comes due, not as fast as the decoder can read).

Every source yields :class:`LiveFrame` s of upright 8-bit ``yuv420p`` frames stamped with the
``time.perf_counter()`` at which they arrived; :class:`CaptureThread` pushes them into a one-slot
:class:`~faceweave.live.mailbox.Mailbox`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av

from faceweave.errors import InputNotFound, InputUnreadable
from faceweave.live.mailbox import LiveStats, Mailbox

STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "rtmps://", "srt://", "udp://", "tcp://", "http://", "https://")


@dataclass(frozen=True)
class LiveFrame:
    """One captured frame: ``frame`` an ``av.VideoFrame`` (``yuv420p``, upright), ``captured_at`` the
    ``time.perf_counter()`` when it arrived, ``time_s`` its time from the source's first frame (seconds, increasing;
    the tracker's smoothing clock), ``index`` its position in the source (dropped frames leave gaps)."""

    frame: Any
    captured_at: float
    time_s: float
    index: int


def _yuv420(frame: Any) -> Any:
    """``frame`` as 8-bit ``yuv420p`` (cameras deliver YUYV/MJPEG, streams anything), keeping its tags."""
    return frame if frame.format.name == "yuv420p" else frame.reformat(format="yuv420p")


class AvSource:
    """A PyAV input: a file (``paced``: frames released on their timestamps' clock), a stream URL or a v4l2 camera.

    Opening happens in the constructor so that a missing or unreadable input is an error before the session
    starts; :attr:`width`, :attr:`height` and :attr:`fps` describe the video stream.
    """

    def __init__(self, spec: str, *, paced: bool, av_format: str | None = None,
                 options: dict[str, str] | None = None) -> None:
        self.spec, self.paced = spec, paced
        try:
            self.container: Any = av.open(spec, format=av_format, options=options or {}, timeout=(10.0, 10.0))
        except (av.error.FFmpegError, OSError) as exc:
            raise InputUnreadable(f"cannot open live input {spec!r}: {exc}",
                                  hint="check the device, URL or file (and that nothing else holds the camera)"
                                  ) from None
        if not self.container.streams.video:
            self.container.close()
            raise InputUnreadable(f"{spec!r} has no video stream", hint="use a camera, a video stream or a video file")
        self.stream = self.container.streams.video[0]
        self.stream.thread_type = "AUTO"
        self.width, self.height = int(self.stream.codec_context.width), int(self.stream.codec_context.height)
        rate = self.stream.average_rate or self.stream.guessed_rate
        self.fps = float(rate) if rate else 30.0
        self._stop = threading.Event()

    def frames(self) -> Iterator[LiveFrame]:
        """Frames as they arrive (paced files sleep until each frame's time); ends with the input or :meth:`stop`."""
        t0: float | None = None
        first: float | None = None
        index = 0
        try:
            for frame in self.container.decode(self.stream):
                if self._stop.is_set():
                    return
                ts = frame.time if frame.time is not None else index / self.fps
                if first is None:
                    first, t0 = ts, time.perf_counter()
                assert t0 is not None
                rel = ts - first
                if self.paced:
                    wait = t0 + rel - time.perf_counter()
                    if wait > 0 and self._stop.wait(wait):
                        return
                now = time.perf_counter()
                yield LiveFrame(_yuv420(frame), now, rel if self.paced else now - t0, index)
                index += 1
        except av.error.FFmpegError as exc:
            if not self._stop.is_set():
                raise InputUnreadable(f"live input {self.spec!r} failed: {exc}", hint="check the stream") from None

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        self.stop()
        self.container.close()


def open_source(spec: str) -> AvSource:
    """The live input named by ``spec``: ``/dev/videoN`` (v4l2 camera), a stream URL, or a video file (paced)."""
    if spec.startswith("/dev/video"):
        if not Path(spec).exists():
            raise InputNotFound(f"no camera at {spec}", hint="list cameras with `ls /dev/video*`")
        return AvSource(spec, paced=False, av_format="v4l2")
    if spec.startswith(STREAM_SCHEMES):
        options = {"rtsp_transport": "tcp"} if spec.startswith("rtsp") else {}
        return AvSource(spec, paced=False, options=options)
    path = Path(spec)
    if not path.is_file():
        raise InputNotFound(f"live input {spec!r} not found",
                            hint="give a video file, a stream URL (rtsp://, rtmp://, srt://, udp://, http://) or "
                                 "/dev/videoN")
    return AvSource(str(path), paced=True)


class CaptureThread:
    """Reads a source in its own thread into a :class:`Mailbox` (newest wins), counting frames in and dropped.

    The mailbox is closed when the source ends (or fails: :attr:`error` keeps why), which ends the session.
    """

    def __init__(self, source: AvSource, mailbox: Mailbox[LiveFrame], stats: LiveStats) -> None:
        self.source, self.mailbox, self.stats = source, mailbox, stats
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="faceweave-live-capture", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        try:
            for item in self.source.frames():
                self.stats.frames_in += 1
                self.mailbox.put(item)
                self.stats.dropped = self.mailbox.dropped
        except BaseException as exc:  # reported by the session after it drained
            self.error = exc
        finally:
            self.mailbox.close()

    def stop(self) -> None:
        self.source.stop()
        self.thread.join(timeout=10)


__all__ = ["AvSource", "CaptureThread", "LiveFrame", "open_source"]
