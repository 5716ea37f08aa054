"""Video I/O with PyAV: probe, streaming batched decode in a thread, encode with audio kept, segments.

Conventions:
    * Frames stay the way the decoder gives them: 8-bit ``yuv420p`` (:class:`FrameBatch` holds the decoded
      ``av.VideoFrame`` objects, upright). Frames nobody changes go to the encoder untouched — no RGB conversion,
      no copy — and frames that change travel as packed Y/U/V planes (1.5 bytes per pixel) to the device, where
      :mod:`faceweave.ops.colourspace` converts them with the stream's colour matrix and range. ``FrameBatch.frames``
      still gives ``(B, H, W, 3)`` ``uint8`` **RGB** (converted on demand on the CPU) for code that wants it.
      Other pixel formats (10-bit, 4:2:2, 4:4:4, RGB codecs) are converted to ``yuv420p`` once, at decode.
    * Rotation: a display matrix on the input is applied at decode time and the output is written upright
      *without* a display matrix, so every player shows the output the way it showed the input (chosen over
      re-tagging because the face stages need upright faces).
    * Colour: the output keeps the input's colour tags and range; the matrix used for YUV ↔ RGB is the stream's
      (BT.601 when the stream does not say, as FFmpeg assumes).
    * Timestamps are the input video stream's ``pts`` in its ``time_base`` (an exact :class:`fractions.Fraction`).
      The encoder uses the same time base and each frame keeps its ``pts``: variable frame rate stays variable,
      and the start offset is kept. With a trim the output is shifted so the first kept frame lands where the
      input's first frame was.
    * Memory is bounded: decode runs ``queue_size`` batches ahead at most; audio is muxed progressively.
    * Output goes to a temporary name in the destination directory and is renamed at the end; a failure
      removes the temporary file, so nothing partial ever exists under the final name.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import av
import numpy as np

from faceweave.errors import (
    CorruptStream,
    InvalidOption,
    MediaTooLarge,
    OutputNotWritable,
    TruncatedMedia,
    UnsupportedMedia,
    WrongMediaKind,
)
from faceweave.media.image import _check_input_file, _detect_magic, _read_head, check_output_path

# Which audio codecs each output container takes as-is (packet copy); anything else is re-encoded.
AUDIO_COPY_OK: dict[str, frozenset[str]] = {
    "mp4": frozenset({"aac", "mp3", "alac", "ac3", "eac3", "opus"}),
    "mov": frozenset({"aac", "mp3", "alac", "ac3", "eac3", "pcm_s16le", "pcm_s24le"}),
    "matroska": frozenset({"aac", "mp3", "opus", "vorbis", "flac", "ac3", "eac3", "alac", "pcm_s16le", "pcm_s24le"}),
    "webm": frozenset({"opus", "vorbis"}),
}
CONTAINER_OF_EXTENSION = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm"}
WEBM_VIDEO_CODECS = ("libvpx-vp9", "libsvtav1", "libvpx")


# ================================================================================================ probing
@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe_video` found. ``width``/``height`` are the displayed (upright) size.

    ``rotation`` is the display matrix's counter-clockwise angle in degrees (FFmpeg convention; 0 if none).
    ``time_base`` and ``average_rate`` are exact fractions; ``frames`` is None when the container does not say.
    ``color_range``: 0 unspecified, 1 limited (MPEG), 2 full (JPEG). ``colorspace``, ``color_primaries`` and
    ``color_trc`` are FFmpeg's tags (2: unspecified); ``colour_matrix`` is the YUV ↔ RGB matrix they imply.
    """

    path: Path
    container: str
    codec: str
    width: int
    height: int
    coded_width: int
    coded_height: int
    rotation: int
    fps: float
    average_rate: Fraction
    time_base: Fraction
    frames: int | None
    duration_s: float
    start_pts: int
    start_time_s: float
    pix_fmt: str
    color_range: int
    has_audio: bool
    audio_codec: str | None = None
    audio_sample_rate: int | None = None
    audio_channels: int | None = None
    audio_start_s: float | None = None
    is_vfr: bool = False
    colorspace: int = 2
    color_primaries: int = 2
    color_trc: int = 2
    colour_matrix: str = "bt601"

    @property
    def full_range(self) -> bool:
        """The luma/chroma planes use full (JPEG) range."""
        return self.color_range == 2


# FFmpeg's AVColorSpace tags → the YUV ↔ RGB matrix (unspecified and RGB: BT.601, swscale's default).
_MATRIX_OF_COLORSPACE = {1: "bt709", 4: "bt601", 5: "bt601", 6: "bt601", 7: "bt709", 9: "bt2020", 10: "bt2020"}
# matrix → swscale's colorspace constant (SWS_CS_*), for conversions done with PyAV on the CPU
_SWS_COLORSPACE = {"bt601": 5, "bt709": 1, "bt2020": 9}


def colour_matrix_of(colorspace: int) -> str:
    """The YUV ↔ RGB matrix (``"bt601"``, ``"bt709"``, ``"bt2020"``) for FFmpeg colorspace tag ``colorspace``."""
    return _MATRIX_OF_COLORSPACE.get(int(colorspace), "bt601")


def _open_input(path: Path) -> Any:
    try:
        return av.open(str(path), mode="r")
    except av.error.InvalidDataError as exc:
        raise TruncatedMedia(
            f"{path.name}: the container header is damaged or the file is truncated ({exc.strerror})",
            hint="re-export or re-upload the video (an mp4 cut short loses its index)",
        ) from None
    except av.error.FFmpegError as exc:
        raise UnsupportedMedia(f"{path.name}: cannot open the video ({exc})", hint="convert it to MP4/H.264") from None


def _stream_duration_s(container: Any, stream: Any) -> float:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return float(container.duration / av.time_base)
    return 0.0


def probe_video(path: Path | str, *, max_duration_s: float = 3600.0, max_pixels: int = 80_000_000) -> VideoInfo:
    """Read a video's header (and its first packets/frame) and check it against limits.

    Raises:
        InputNotFound, InputUnreadable, EmptyMedia: file-level problems.
        WrongMediaKind: an image, or audio only.
        UnsupportedMedia: not a container/codec that can be decoded here.
        TruncatedMedia: damaged header or a stream with no decodable frame.
        MediaTooLarge: longer than ``max_duration_s`` or a frame bigger than ``max_pixels``.
    """
    path = Path(path)
    _check_input_file(path)
    name, kind = _detect_magic(_read_head(path))
    if kind == "image":
        raise WrongMediaKind(f"{path.name}: this is an image ({name}), not a video", hint="use an image target")
    if kind == "audio":
        raise WrongMediaKind(f"{path.name}: this is audio only ({name}), not a video", hint="give a video file")
    if kind is None:
        raise UnsupportedMedia(f"{path.name}: unsupported file type (the bytes look like {name})",
                               hint="use MP4, MOV, MKV or WebM")
    with _open_input(path) as container:
        videos = [s for s in container.streams.video if not (s.disposition & av.stream.Disposition.attached_pic)]
        audios = list(container.streams.audio)
        if not videos:
            if audios:
                raise WrongMediaKind(f"{path.name}: this is audio only, no video stream", hint="give a video file")
            raise UnsupportedMedia(f"{path.name}: no video stream", hint="give a video file")
        stream = videos[0]
        ctx = stream.codec_context
        if ctx is None or not ctx.name:
            raise UnsupportedMedia(f"{path.name}: its video codec cannot be decoded here", hint="convert to H.264")
        coded_w, coded_h = int(ctx.width), int(ctx.height)
        if coded_w * coded_h > max_pixels:
            raise MediaTooLarge(
                f"{path.name}: {coded_w}x{coded_h} frames are over the limit of {max_pixels:,} pixels",
                hint="downscale the video or raise max_pixels",
            )
        duration = _stream_duration_s(container, stream)
        if duration > max_duration_s:
            raise MediaTooLarge(
                f"{path.name}: {duration:.1f} s is longer than the limit of {max_duration_s:.0f} s",
                hint="trim the video (--trim-start/--trim-end) or raise max_duration_s",
            )
        time_base = Fraction(stream.time_base.numerator, stream.time_base.denominator)
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        average_rate = Fraction(rate.numerator, rate.denominator) if rate else Fraction(25)
        # Demux (no decode) the first packets for the start pts and a VFR guess from their spacing.
        deltas: list[int] = []
        pts_seen: list[int] = []
        try:
            for packet in container.demux(stream):
                if packet.pts is not None:
                    pts_seen.append(int(packet.pts))
                if len(pts_seen) >= 120:
                    break
        except av.error.FFmpegError:
            pass
        pts_seen.sort()
        deltas = [b - a for a, b in zip(pts_seen, pts_seen[1:], strict=False)]
        is_vfr = bool(deltas) and (max(deltas) - min(deltas)) > max(1, 0.02 * float(np.median(deltas)))
        container.seek(0)
        rotation, pix_fmt, colour_range = 0, str(ctx.pix_fmt or ""), int(ctx.color_range or 0)
        try:
            first = next(container.decode(stream), None)
        except av.error.FFmpegError as exc:
            raise TruncatedMedia(
                f"{path.name}: the first frame cannot be decoded ({exc})", hint="the file is damaged"
            ) from None
        if first is None:
            raise TruncatedMedia(f"{path.name}: the video stream has no decodable frame", hint="the file is damaged")
        rotation = int(round(first.rotation or 0))
        pix_fmt = first.format.name
        colour_range = int(first.color_range or colour_range)
        if pix_fmt.startswith("yuvj"):  # the deprecated JPEG-range formats say so by name only
            colour_range = 2
        colorspace = int(first.colorspace or 2)
        start_pts = int(stream.start_time if stream.start_time is not None else (pts_seen[0] if pts_seen else 0))
        width, height = (coded_h, coded_w) if rotation % 180 else (coded_w, coded_h)
        audio = audios[0] if audios else None
        return VideoInfo(
            path=path,
            container=container.format.name,
            codec=ctx.name,
            width=width,
            height=height,
            coded_width=coded_w,
            coded_height=coded_h,
            rotation=rotation,
            fps=float(average_rate),
            average_rate=average_rate,
            time_base=time_base,
            frames=int(stream.frames) or None,
            duration_s=duration,
            start_pts=start_pts,
            start_time_s=float(start_pts * time_base),
            pix_fmt=pix_fmt,
            color_range=colour_range,
            has_audio=audio is not None,
            audio_codec=audio.codec_context.name if audio is not None else None,
            audio_sample_rate=int(audio.codec_context.sample_rate) if audio is not None else None,
            audio_channels=int(audio.codec_context.channels) if audio is not None else None,
            audio_start_s=(
                float(audio.start_time * audio.time_base)
                if audio is not None and audio.start_time is not None
                else None
            ),
            is_vfr=is_vfr,
            colorspace=colorspace,
            color_primaries=int(first.color_primaries or 2),
            color_trc=int(first.color_trc or 2),
            colour_matrix=colour_matrix_of(colorspace),
        )


# ================================================================================================ trims
@dataclass(frozen=True)
class Trim:
    """Which frames to keep: by presentation time (seconds) or by index ("45f"), start inclusive, end exclusive."""

    start_s: float | None = None
    end_s: float | None = None
    start_frame: int | None = None
    end_frame: int | None = None

    @property
    def active(self) -> bool:
        return any(v is not None for v in (self.start_s, self.end_s, self.start_frame, self.end_frame))

    def keeps(self, index: int, time_s: float) -> bool:
        """Whether frame ``index`` (0-based, decode order = presentation order) at ``time_s`` is kept."""
        if self.start_frame is not None and index < self.start_frame:
            return False
        if self.end_frame is not None and index >= self.end_frame:
            return False
        if self.start_s is not None and time_s < self.start_s - 1e-6:
            return False
        return not (self.end_s is not None and time_s >= self.end_s - 1e-6)

    def past_end(self, index: int, time_s: float) -> bool:
        return (self.end_frame is not None and index >= self.end_frame) or (
            self.end_s is not None and time_s >= self.end_s - 1e-6
        )


def parse_position(spec: str | None, name: str) -> tuple[float | None, int | None]:
    """``"1.5"``/``"1.5s"`` → (1.5, None); ``"45f"`` → (None, 45); None → (None, None)."""
    if spec is None or str(spec).strip() == "":
        return None, None
    text = str(spec).strip().lower()
    try:
        if text.endswith("f"):
            frames = int(text[:-1])
            if frames < 0:
                raise ValueError
            return None, frames
        seconds = float(text[:-1] if text.endswith("s") else text)
        if seconds < 0 or seconds != seconds:
            raise ValueError
        return seconds, None
    except ValueError:
        raise InvalidOption(
            f"{name}={spec!r} is not a position", hint="use seconds ('1.5', '1.5s') or frames ('45f')"
        ) from None


def trim_from_settings(trim_start: str | None, trim_end: str | None, info: VideoInfo) -> Trim:
    """Build a :class:`Trim`. Seconds are relative to the video's start ('0s' is the first frame); frame positions
    are also turned into times (from the demuxed timestamps) so the audio is cut at the same instants."""
    s_sec, s_frame = parse_position(trim_start, "trim_start")
    e_sec, e_frame = parse_position(trim_end, "trim_end")
    if (s_sec is not None and e_sec is not None and e_sec <= s_sec) or (
        s_frame is not None and e_frame is not None and e_frame <= s_frame
    ):
        raise InvalidOption(f"trim_end ({trim_end}) is not after trim_start ({trim_start})", hint="swap or fix them")
    offset = info.start_time_s
    start_s = None if s_sec is None else s_sec + offset
    end_s = None if e_sec is None else e_sec + offset
    if s_frame is not None or e_frame is not None:
        all_pts, _ = scan_frame_timestamps(info)
        times = [float(p * info.time_base) for p in all_pts.tolist()]
        if s_frame is not None:
            if s_frame >= len(times):
                raise InvalidOption(f"trim_start={trim_start} is past the last frame ({len(times)} frames)",
                                    hint="use a smaller start")
            start_s = max(start_s or -1e18, times[s_frame])
        if e_frame is not None and e_frame < len(times):
            end_s = min(end_s if end_s is not None else 1e18, times[e_frame])
    return Trim(start_s=start_s, end_s=end_s, start_frame=s_frame, end_frame=e_frame)


# ================================================================================================ decode
def plane_array(plane: Any) -> np.ndarray:
    """``(h, w)`` uint8 view of one plane of an ``av.VideoFrame`` (no copy; rows strided by the line size)."""
    rows = np.frombuffer(plane, np.uint8)[: plane.height * plane.line_size]
    return rows.reshape(plane.height, plane.line_size)[:, : plane.width]


def yuv420_frame(y: np.ndarray, u: np.ndarray, v: np.ndarray, tags: VideoInfo | None = None) -> Any:
    """A new ``yuv420p`` ``av.VideoFrame`` holding a copy of the planes ``y`` ``(H, W)``, ``u``/``v``
    ``(⌈H/2⌉, ⌈W/2⌉)`` uint8, tagged with ``tags``' colorspace/range/primaries/transfer."""
    h, w = y.shape
    frame = av.VideoFrame(w, h, "yuv420p")
    for plane, src in zip(frame.planes, (y, u, v), strict=True):
        plane_array(plane)[:] = src
    if tags is not None:
        _tag_frame(frame, tags)
    return frame


def _copy_tags(src: Any, dst: Any) -> None:
    dst.colorspace, dst.color_range = src.colorspace, src.color_range
    with contextlib.suppress(AttributeError):  # settable from PyAV 14
        dst.color_primaries, dst.color_trc = src.color_primaries, src.color_trc


def _tag_frame(frame: Any, info: VideoInfo) -> None:
    frame.colorspace = info.colorspace
    frame.color_range = info.color_range
    with contextlib.suppress(AttributeError):  # settable from PyAV 14
        frame.color_primaries = info.color_primaries
        frame.color_trc = info.color_trc


@dataclass
class FrameBatch:
    """A batch of decoded frames, kept as the decoder made them.

    ``yuv``: ``B`` ``av.VideoFrame`` objects, ``yuv420p`` 8-bit, upright, all the video's size; ``pts``: ``(B,)``
    int64 in the input stream's time base; ``times``: ``(B,)`` float64 seconds; ``first_index``: index of frame 0
    in the video; ``matrix``/``full_range``: how the planes map to RGB (see :mod:`faceweave.ops.colourspace`).

    The frames go to :class:`VideoWriter` as they are: a frame nobody replaced is encoded without any conversion.
    ``frames`` gives ``(B, H, W, 3)`` uint8 RGB (converted on the CPU on first use) for code that wants RGB;
    :meth:`packed` gives the planes as one ``(B, N)`` uint8 array for a single copy to a device, and
    :meth:`replaced` builds the output batch from the frames a stage changed.
    """

    yuv: list[Any]
    pts: np.ndarray
    times: np.ndarray
    first_index: int
    matrix: str = "bt601"
    full_range: bool = False
    _rgb: np.ndarray | None = field(default=None, repr=False, compare=False)
    _staged: Any = field(default=None, repr=False, compare=False)  # packed planes, see stage()

    def __len__(self) -> int:
        return len(self.yuv)

    @property
    def width(self) -> int:
        return int(self.yuv[0].width)

    @property
    def height(self) -> int:
        return int(self.yuv[0].height)

    @property
    def frames(self) -> np.ndarray:
        """``(B, H, W, 3)`` uint8 RGB (swscale on the CPU, with the stream's matrix and range; cached)."""
        if self._rgb is None:
            opts = {"src_colorspace": _SWS_COLORSPACE.get(self.matrix, 5), "src_color_range": 2 if self.full_range
                    else 1}
            self._rgb = np.stack([f.to_ndarray(format="rgb24", **opts) for f in self.yuv])
        return self._rgb

    def planes(self, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Frame ``k``'s ``(y, u, v)`` planes as uint8 views: ``(H, W)`` and twice ``(⌈H/2⌉, ⌈W/2⌉)``."""
        y, u, v = (plane_array(p) for p in self.yuv[k].planes)
        return y, u, v

    def packed(self, out: np.ndarray | None = None, index: list[int] | None = None) -> np.ndarray:
        """The frames' planes back to back, one frame per row: ``(B, N)`` uint8, ``N = H·W + 2·⌈H/2⌉·⌈W/2⌉``
        (the layout of :func:`faceweave.ops.colourspace.unpack_yuv420`). Writes into ``out`` when given (e.g. a
        pinned staging buffer); ``index`` picks frames (default: all)."""
        picks = list(range(len(self.yuv))) if index is None else index
        h, w = self.height, self.width
        ny, nc = h * w, ((h + 1) // 2) * ((w + 1) // 2)
        if out is None:
            out = np.empty((len(picks), ny + 2 * nc), np.uint8)
        for row, k in enumerate(picks):
            y, u, v = self.planes(k)
            out[row, :ny].reshape(y.shape)[:] = y
            out[row, ny : ny + nc].reshape(u.shape)[:] = u
            out[row, ny + nc :].reshape(v.shape)[:] = v
        return out

    def to_device(self, device: Any) -> Any:
        """The frames' planes on ``device`` in one copy (through pinned memory for CUDA), as a
        :class:`faceweave.ops.colourspace.Yuv420Batch` that converts them to RGB there on demand."""
        import torch

        from faceweave.ops.colourspace import Yuv420Batch

        device = torch.device(device)
        h, w = self.height, self.width
        host = self._staged
        if host is None or (device.type == "cuda" and not host.is_pinned()):
            host = self.stage(pin=device.type == "cuda")
        self._staged = None  # the copy below owns it now (the pinned allocator keeps it until the copy is done)
        return Yuv420Batch(host.to(device, non_blocking=True), h, w, matrix=self.matrix, full_range=self.full_range)

    def stage(self, pin: bool) -> Any:
        """Pack the planes (:meth:`packed`) into a new ``(B, N)`` uint8 torch tensor, page-locked with ``pin`` (for
        an asynchronous copy to a GPU), keep it for :meth:`to_device` and return it. The video pipeline has the
        decode thread call this (``FrameReader(prepare=…)``), so the 100 MB memcpy of a 1080p batch of 32 happens
        there and not on the thread that drives the GPU."""
        import torch

        h, w = self.height, self.width
        host = torch.empty((len(self.yuv), h * w + 2 * ((h + 1) // 2) * ((w + 1) // 2)), dtype=torch.uint8,
                           pin_memory=pin)
        self.packed(out=host.numpy())
        self._staged = host
        return host

    def replaced(self, index: list[int], packed: np.ndarray) -> FrameBatch:
        """A batch with frames ``index`` rebuilt from ``packed`` rows ``(len(index), N)`` uint8 (the layout of
        :meth:`packed`; colour tags copied from the frames they replace); every other frame is the same decoded
        frame, untouched."""
        h, w = self.height, self.width
        ny, hc, wc = h * w, (h + 1) // 2, (w + 1) // 2
        nc = hc * wc
        if packed.shape != (len(index), ny + 2 * nc) or packed.dtype != np.uint8:
            from faceweave.errors import ShapeError

            raise ShapeError(f"packed must be ({len(index)}, {ny + 2 * nc}) uint8, got {packed.shape} {packed.dtype}")
        yuv = list(self.yuv)
        for row, k in enumerate(index):
            r = packed[row]
            frame = yuv420_frame(r[:ny].reshape(h, w), r[ny : ny + nc].reshape(hc, wc), r[ny + nc :].reshape(hc, wc))
            _copy_tags(self.yuv[k], frame)
            yuv[k] = frame
        return FrameBatch(yuv, self.pts, self.times, self.first_index, self.matrix, self.full_range)


@dataclass
class DecodeStats:
    frames_read: int = 0
    frames_corrupt_dropped: int = 0
    last_good_time_s: float | None = None


def _as_upright_yuv420(frame: Any, info: VideoInfo) -> Any:
    """A decoded frame as 8-bit ``yuv420p`` of the video's coded size, upright (display rotation applied). The
    frame itself when it already is (the common case: nothing is copied)."""
    name = frame.format.name
    if name == "yuvj420p" and (frame.width, frame.height) == (info.coded_width, info.coded_height):
        # the same planes, only the format name says "full range": relabel by copying the planes (no maths)
        y, u, v = (plane_array(p) for p in frame.planes)
        frame = yuv420_frame(y, u, v, info)
    elif name != "yuv420p" or (frame.width, frame.height) != (info.coded_width, info.coded_height):
        cs, rng = _SWS_COLORSPACE.get(info.colour_matrix, 5), 2 if info.full_range else 1
        frame = frame.reformat(width=info.coded_width, height=info.coded_height, format="yuv420p",
                               src_colorspace=cs, dst_colorspace=cs, src_color_range=rng, dst_color_range=rng)
        _tag_frame(frame, info)
    quarter = (info.rotation // 90) % 4
    if quarter:
        y, u, v = (np.rot90(plane_array(p), k=quarter) for p in frame.planes)
        frame = yuv420_frame(y, u, v, info)
    return frame


_END = object()


class FrameReader:
    """Decode a video in a background thread into a bounded queue of :class:`FrameBatch` (iterate it).

    Use as a context manager; leaving early stops the thread. At most ``queue_size`` batches wait decoded.
    ``pts_range`` ``[start, end)`` restricts decoding to one segment (seek to the keyframe at or before start).

    Raises (while iterating) :class:`CorruptStream` naming the last good timestamp when a frame cannot be
    decoded — or, with ``skip_corrupt``, drops such frames and counts them in :attr:`stats`. ``prepare`` runs on each
    batch in the decode thread before it is queued (the video pipeline packs the planes for the device copy there).
    """

    def __init__(
        self,
        info: VideoInfo,
        *,
        batch_size: int = 8,
        queue_size: int = 4,
        trim: Trim | None = None,
        pts_range: tuple[int, int | None] | None = None,
        skip_corrupt: bool = False,
        threads: int = 0,
        prepare: Callable[[FrameBatch], object] | None = None,
    ) -> None:
        self.info = info
        self.prepare = prepare  # called on each batch in the decode thread before it is queued
        self.batch_size = max(1, batch_size)
        self.trim = trim or Trim()
        self.pts_range = pts_range
        self.skip_corrupt = skip_corrupt
        self.threads = threads
        self.stats = DecodeStats()
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max(1, queue_size))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="faceweave-decode", daemon=True)
        self._started = False

    def _start(self) -> None:
        if not self._started:
            self._started = True
            self._thread.start()

    def __enter__(self) -> FrameReader:
        self._start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(queue.Empty):
            while True:
                self._queue.get_nowait()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator[FrameBatch]:
        self._start()
        while True:
            item = self._queue.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def _corrupt(self, at: str) -> CorruptStream:
        last = self.stats.last_good_time_s
        where = f"after t={last:.3f} s" if last is not None else "before the first frame"
        return CorruptStream(
            f"{self.info.path.name}: the video stream is corrupt {where} ({at})",
            hint="re-export the video, trim before that point, or use --skip-corrupt to drop bad frames",
        )

    def _run(self) -> None:
        try:
            self._decode()
            self._put(_END)
        except BaseException as exc:  # handed to the consumer thread, which re-raises it
            self._put(exc)

    def _decode(self) -> None:
        info, trim = self.info, self.trim
        tb = info.time_base
        frames: list[Any] = []
        pts: list[int] = []
        first_index = 0
        index = -1
        start_pts, end_pts = self.pts_range if self.pts_range else (None, None)

        def flush() -> bool:
            nonlocal frames, pts
            if not frames:
                return True
            batch = FrameBatch(
                yuv=frames,
                pts=np.asarray(pts, np.int64),
                times=np.asarray([float(p * tb) for p in pts]),
                first_index=first_index,
                matrix=info.colour_matrix,
                full_range=info.full_range,
            )
            frames, pts = [], []
            if self.prepare is not None:
                self.prepare(batch)
            return self._put(batch)

        with _open_input(info.path) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            if self.threads:
                stream.codec_context.thread_count = self.threads
            if start_pts is not None:
                container.seek(int(start_pts), stream=stream, backward=True, any_frame=False)
            decoded_any = False
            for packet in container.demux(stream):
                if self._stop.is_set():
                    return
                try:
                    decoded = packet.decode()
                except av.error.FFmpegError as exc:
                    if not self.skip_corrupt:
                        raise self._corrupt(str(exc)) from None
                    self.stats.frames_corrupt_dropped += 1
                    continue
                for frame in decoded:
                    if frame.pts is None:
                        continue
                    p = int(frame.pts)
                    if start_pts is not None and p < start_pts:
                        continue
                    if end_pts is not None and p >= end_pts:
                        return self._finish(flush, decoded_any)
                    if frame.is_corrupt:
                        if not self.skip_corrupt:
                            raise self._corrupt(f"damaged frame at t={float(p * tb):.3f} s")
                        self.stats.frames_corrupt_dropped += 1
                        continue
                    index += 1
                    t = float(p * tb)
                    if trim.past_end(index, t):
                        return self._finish(flush, decoded_any)
                    if not trim.keeps(index, t):
                        continue
                    if not frames:
                        first_index = index
                    frames.append(_as_upright_yuv420(frame, info))
                    pts.append(p)
                    decoded_any = True
                    self.stats.frames_read += 1
                    self.stats.last_good_time_s = t
                    if len(frames) >= self.batch_size and not flush():
                        return
            self._finish(flush, decoded_any)
            self._check_complete(index)

    def _check_complete(self, last_index: int) -> None:
        """A stream that stops before the header's frame count/duration was cut short: that is corruption too."""
        info = self.info
        if self.pts_range is not None and self.pts_range[1] is not None:
            return  # a segment ends where its plan says
        seen = last_index + 1 + self.stats.frames_corrupt_dropped
        missing = 0
        if info.frames and self.pts_range is None and seen < info.frames and not self.trim.active:
            missing = info.frames - seen
        elif (
            (not info.frames or self.pts_range is not None)
            and info.duration_s > 0
            and self.trim.end_s is None
            and self.trim.end_frame is None
        ):
            last = self.stats.last_good_time_s if self.stats.last_good_time_s is not None else info.start_time_s
            gap = info.start_time_s + info.duration_s - last
            margin = max(3.0 / max(info.fps, 1e-3), 0.25)
            if gap > margin:
                missing = max(1, int(round(gap * info.fps)) - 1)
        if missing:
            if not self.skip_corrupt:
                raise self._corrupt(f"the stream stops about {missing} frames before the end the header declares")
            self.stats.frames_corrupt_dropped += missing

    def _finish(self, flush: Callable[[], bool], decoded_any: bool) -> None:
        flush()


# ================================================================================================ encode
@dataclass(frozen=True)
class EncoderSettings:
    """Video encoder choice. ``codec``: libx264, libx265, libsvtav1, libvpx-vp9, h264_nvenc, hevc_nvenc."""

    codec: str = "libx264"
    crf: int | None = None
    preset: str | None = None
    pix_fmt: str = "yuv420p"
    threads: int = 0
    gop_size: int | None = None

    def codec_options(self) -> dict[str, str]:
        """FFmpeg private options for the codec (CRF/preset spelt the way each encoder wants them)."""
        opts: dict[str, str] = {}
        c = self.codec
        if c in ("libx264", "libx265"):
            opts["crf"] = str(self.crf if self.crf is not None else (20 if c == "libx264" else 24))
            opts["preset"] = self.preset or "veryfast"
            if c == "libx265":
                opts["x265-params"] = "log-level=error"
        elif c == "libsvtav1":
            opts["crf"] = str(self.crf if self.crf is not None else 35)
            opts["preset"] = self.preset or "10"
        elif c.startswith("libvpx"):
            opts["crf"] = str(self.crf if self.crf is not None else 32)
            opts["b"] = "0"
            opts["deadline"] = self.preset or "realtime"
            opts["cpu-used"] = "8"
            opts["row-mt"] = "1"
        elif c.endswith("_nvenc"):
            opts["cq"] = str(self.crf if self.crf is not None else 23)
            opts["preset"] = self.preset or "p4"
        return opts


_nvenc_cache: dict[str, bool] = {}
_PICT_NONE = av.video.frame.PictureType.NONE


def encoder_available(name: str) -> bool:
    """Whether encoder ``name`` exists *and* opens here (NVENC needs the hardware: a tiny open test)."""
    if name in _nvenc_cache:
        return _nvenc_cache[name]
    try:
        av.codec.Codec(name, "w")
    except (av.error.FFmpegError, ValueError):
        ok = False
    else:
        ok = True
        if name.endswith(("_nvenc", "_qsv", "_vaapi")):
            try:
                ctx: Any = av.CodecContext.create(name, "w")
                ctx.width, ctx.height, ctx.pix_fmt = 256, 256, "yuv420p"
                ctx.time_base = Fraction(1, 25)
                ctx.open()
            except Exception:  # any failure to open means: not usable on this machine
                ok = False
    _nvenc_cache[name] = ok  # the hardware does not change while the process runs
    return ok


def resolve_encoder(
    video_codec: str | None, crf: int | None, preset: str | None, pix_fmt: str | None, output: Path
) -> EncoderSettings:
    """Pick and check the encoder for ``output`` from user options (None = automatic).

    Automatic: h264_nvenc where NVENC opens, else libx264; WebM gets libvpx-vp9 (WebM allows only VP8/VP9/AV1).
    """
    container = CONTAINER_OF_EXTENSION.get(output.suffix.lower())
    if video_codec is None:
        auto = "h264_nvenc" if encoder_available("h264_nvenc") else "libx264"
        codec = "libvpx-vp9" if container == "webm" else auto
    else:
        codec = video_codec
        if container == "webm" and codec not in WEBM_VIDEO_CODECS:
            raise InvalidOption(
                f"WebM output cannot hold {codec}", hint=f"use {', '.join(WEBM_VIDEO_CODECS)} or an .mp4/.mkv output"
            )
        if not encoder_available(codec):
            raise InvalidOption(
                f"video codec {codec!r} is not available on this machine",
                hint="use libx264, libx265 or libsvtav1 (NVENC needs an NVIDIA GPU with an encoder)",
            )
    return EncoderSettings(codec=codec, crf=crf, preset=preset, pix_fmt=pix_fmt or "yuv420p")


def _temp_output_name(output: Path) -> Path:
    # Keep the extension so FFmpeg picks the muxer; hidden + unique so concurrent jobs never collide.
    return output.parent / f".{output.stem}.{uuid.uuid4().hex[:8]}.part{output.suffix}"


class _AudioPump:
    """Moves the input's audio into the output, interleaved with video: packet copy where the container takes
    the codec and nothing is trimmed, else decode → cut → re-encode (AAC, or Opus for WebM)."""

    def __init__(self, out: Any, info: VideoInfo, trim: Trim, shift_s: float, container_name: str) -> None:
        self.info = info
        self.trim = trim
        self.shift_s = shift_s
        self.src = _open_input(info.path)
        self.in_stream = self.src.streams.audio[0]
        copy_ok = info.audio_codec in AUDIO_COPY_OK.get(container_name, frozenset())
        self.mode: Literal["copy", "encode"] = "copy" if copy_ok and not trim.active and shift_s == 0 else "encode"
        if self.mode == "copy":
            self.stream = out.add_stream_from_template(self.in_stream)
        else:
            codec = "libopus" if container_name == "webm" else "aac"
            rate = 48000 if codec == "libopus" else int(self.in_stream.codec_context.sample_rate)
            self.stream = out.add_stream(codec, rate=rate)
            layout = self.in_stream.codec_context.layout
            if layout is not None and layout.nb_channels <= 2 or codec == "aac":
                self.stream.layout = layout
            else:
                self.stream.layout = "stereo"
            self.stream.time_base = Fraction(1, rate)
            self.resampler = av.AudioResampler(
                format=self.stream.codec_context.codec.audio_formats[0].name, layout=self.stream.layout, rate=rate
            )
            self.samples_out: int | None = None
        self.out = out
        self._packets = self.src.demux(self.in_stream)
        self.done = False
        self.pending: list[Any] = []

    def _encode_frame(self, frame: Any) -> list[Any]:
        t0 = float(frame.pts * frame.time_base) if frame.pts is not None else None
        arr = None
        if t0 is not None and self.trim.active:
            sr = frame.sample_rate
            n = frame.samples
            lo = 0 if self.trim.start_s is None else int(round((self.trim.start_s - t0) * sr))
            hi = n if self.trim.end_s is None else int(round((self.trim.end_s - t0) * sr))
            lo, hi = max(0, lo), min(n, hi)
            if hi <= lo:
                return []
            if lo > 0 or hi < n:
                arr = frame.to_ndarray()[:, lo:hi] if frame.format.is_planar else frame.to_ndarray()[:, lo * len(
                    frame.layout.channels):hi * len(frame.layout.channels)]
                new = av.AudioFrame.from_ndarray(np.ascontiguousarray(arr), format=frame.format.name,
                                                 layout=frame.layout.name)
                new.sample_rate = sr
                frame = new
        if self.samples_out is None:
            # the first audio sample kept lands at its input time minus the video's shift (A/V stay in sync)
            first_t = t0 if t0 is not None else 0.0
            if self.trim.start_s is not None:
                first_t = max(first_t, self.trim.start_s)
            self.samples_out = max(0, int(round((first_t - self.shift_s) * self.stream.codec_context.sample_rate)))
        frame.pts = None
        packets = []
        for rs in self.resampler.resample(frame):
            rs.pts = self.samples_out
            rs.time_base = self.stream.time_base
            self.samples_out += rs.samples
            packets.extend(self.stream.encode(rs))
        return packets

    def mux_until(self, t_s: float | None) -> None:
        """Mux audio up to output time ``t_s`` (seconds; None: everything left)."""
        while not self.done:
            if self.pending:
                packet = self.pending[0]
                pt = float(packet.pts * packet.time_base) if packet.pts is not None else 0.0
                if t_s is not None and pt > t_s:
                    return
                self.pending.pop(0)
                self.out.mux(packet)
                continue
            try:
                packet = next(self._packets)
            except StopIteration:
                self._flush()
                continue
            if packet.size == 0:
                continue
            if self.mode == "copy":
                packet.stream = self.stream
                self.pending.append(packet)
            else:
                try:
                    for frame in packet.decode():
                        self.pending.extend(self._encode_frame(frame))
                except av.error.FFmpegError:
                    continue  # a damaged audio packet: drop it, the video decides success
        for packet in self.pending:
            self.out.mux(packet)
        self.pending.clear()

    def _flush(self) -> None:
        if self.mode == "encode":
            for rs in self.resampler.resample(None):
                self.samples_out = self.samples_out or 0
                rs.pts = self.samples_out
                self.samples_out += rs.samples
                self.pending.extend(self.stream.encode(rs))
            self.pending.extend(self.stream.encode(None))
        for packet in self.pending:
            self.out.mux(packet)
        self.pending.clear()
        self.done = True

    def close(self) -> None:
        self.src.close()


class VideoWriter:
    """Encode RGB frames with their input timestamps into ``output`` (atomically), muxing the input's audio.

    ``write`` takes ``(B, H, W, 3)`` uint8 RGB upright frames and their ``pts`` in ``info.time_base``.
    Call :meth:`close` to finish (flush, rename into place) or :meth:`abort` to drop everything.
    """

    def __init__(
        self,
        output: Path,
        info: VideoInfo,
        encoder: EncoderSettings,
        *,
        audio: bool = True,
        trim: Trim | None = None,
        pts_shift: int = 0,
    ) -> None:
        self.output = check_output_path(output, "video")
        self.info = info
        self.encoder = encoder
        self.pts_shift = pts_shift
        self.tmp = _temp_output_name(self.output)
        self.frames_written = 0
        self._audio: _AudioPump | None = None
        self._last_pts: int | None = None
        container_name = CONTAINER_OF_EXTENSION[self.output.suffix.lower()]
        try:
            self.container = av.open(str(self.tmp), mode="w", format=container_name)
        except av.error.FFmpegError as exc:
            raise OutputNotWritable(f"cannot create {self.output}: {exc}", hint="check the directory") from None
        try:
            self.stream = self._add_video_stream()
            if audio and info.has_audio:
                self._audio = _AudioPump(self.container, info, trim or Trim(), float(pts_shift * info.time_base),
                                         container_name)
        except BaseException:
            self.abort()
            raise

    def _add_video_stream(self) -> Any:
        info, enc = self.info, self.encoder
        stream: Any = self.container.add_stream(enc.codec, rate=info.average_rate)
        stream.width, stream.height = info.width, info.height
        stream.pix_fmt = enc.pix_fmt
        stream.time_base = info.time_base
        stream.codec_context.time_base = info.time_base
        ctx = stream.codec_context
        if enc.threads:
            ctx.thread_count = enc.threads
        # PyAV opens every codec with slice threads only; for libx264 that means x264's sliced threading, about
        # half the throughput of its frame threads (FFmpeg's own default, chosen by any type but "slice alone").
        ctx.thread_type = "AUTO"
        if enc.gop_size:
            ctx.gop_size = enc.gop_size
        if info.color_range:
            ctx.color_range = info.color_range
        # the planes keep the input's colour, so the output keeps its tags (unspecified stays unspecified)
        for attr, value in (("colorspace", info.colorspace), ("color_primaries", info.color_primaries),
                            ("color_trc", info.color_trc)):
            if value not in (0, 2):
                with contextlib.suppress(AttributeError, ValueError):
                    setattr(ctx, attr, value)
        ctx.options = enc.codec_options()
        return stream

    @property
    def audio_mode(self) -> str | None:
        return self._audio.mode if self._audio else None

    def write(self, frames: np.ndarray | FrameBatch, pts: np.ndarray | list[int] | None = None) -> None:
        """Encode a batch: a :class:`FrameBatch` (its ``yuv`` frames go to the encoder as they are) or
        ``(B, H, W, 3)`` uint8 RGB frames (converted on the CPU with the stream's matrix and range). ``pts``:
        ``(B,)`` in the input time base (default for a :class:`FrameBatch`: its own)."""
        yuv: list[Any] | np.ndarray
        if isinstance(frames, FrameBatch):
            yuv = frames.yuv
            if pts is None:
                pts = frames.pts
            if len(yuv) and (yuv[0].width, yuv[0].height) != (self.info.width, self.info.height):
                from faceweave.errors import ShapeError

                raise ShapeError(f"frames must be {self.info.width}x{self.info.height}, got "
                                 f"{yuv[0].width}x{yuv[0].height}")
        else:
            if (frames.ndim != 4 or frames.shape[1:] != (self.info.height, self.info.width, 3)
                    or frames.dtype != np.uint8):
                from faceweave.errors import ShapeError

                raise ShapeError(f"frames must be (B, {self.info.height}, {self.info.width}, 3) uint8, got "
                                 f"{frames.shape} {frames.dtype}")
            yuv = frames  # converted one by one below
        if pts is None:
            raise InvalidOption("pts are needed with RGB frames", hint="pass the batch's pts")
        tb = self.info.time_base
        cs = _SWS_COLORSPACE.get(self.info.colour_matrix, 5)
        rng = 2 if self.info.full_range else 1
        pix_fmt = self.encoder.pix_fmt
        for item, p in zip(yuv, pts, strict=True):
            if isinstance(item, np.ndarray):
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(item), format="rgb24")
                frame = frame.reformat(format=pix_fmt, dst_colorspace=cs, dst_color_range=rng)
                _tag_frame(frame, self.info)
            elif item.format.name != pix_fmt:  # e.g. a 10-bit or 4:4:4 output: one swscale pass, colour kept
                frame = item.reformat(format=pix_fmt, src_colorspace=cs, dst_colorspace=cs, src_color_range=rng,
                                      dst_color_range=rng)
            else:
                frame = item  # the decoded frame itself
            frame.pts = int(p) - self.pts_shift
            frame.time_base = tb
            frame.pict_type = _PICT_NONE  # a decoded I/P/B type would force the encoder's decision
            for packet in self.stream.encode(frame):
                self.container.mux(packet)
            self._last_pts = frame.pts
            self.frames_written += 1
        if self._audio is not None and self._last_pts is not None:
            # keep ~1 s of audio ahead of the video so the muxer interleaves without buffering the whole track
            self._audio.mux_until(float(self._last_pts * tb) + 1.0)

    def close(self) -> Path:
        """Flush encoders, finish the container, and rename the temporary file to the output name."""
        try:
            for packet in self.stream.encode(None):
                self.container.mux(packet)
            if self._audio is not None:
                self._audio.mux_until(None)
                self._audio.close()
            self.container.close()
        except BaseException:
            self.abort()
            raise
        if self.frames_written == 0:
            self.abort()
            raise CorruptStream(f"no frame was written to {self.output.name}", hint="check the trims and the input")
        os.replace(self.tmp, self.output)
        return self.output

    def abort(self) -> None:
        """Drop the partial output (nothing remains under the final name or the temporary one)."""
        with contextlib.suppress(Exception):
            if self._audio is not None:
                self._audio.close()
        with contextlib.suppress(Exception):
            self.container.close()
        self.tmp.unlink(missing_ok=True)


# ================================================================================================ segments
@dataclass(frozen=True)
class Segment:
    """Frames with ``start_pts <= pts < end_pts`` (``end_pts`` None: to the end). ``keyframe_aligned``: the input
    has a keyframe at ``start_pts`` (seeking lands exactly; otherwise the worker decodes and discards a lead-in)."""

    index: int
    start_pts: int
    end_pts: int | None
    frames: int
    keyframe_aligned: bool


def scan_frame_timestamps(info: VideoInfo) -> tuple[np.ndarray, np.ndarray]:
    """Demux (no decoding) and return the sorted frame pts ``(N,)`` int64 and a keyframe flag per frame ``(N,)``."""
    pts: list[int] = []
    keys: set[int] = set()
    with _open_input(info.path) as container:
        stream = container.streams.video[0]
        for packet in container.demux(stream):
            if packet.pts is None or packet.size == 0:
                continue
            pts.append(int(packet.pts))
            if packet.is_keyframe:
                keys.add(int(packet.pts))
    order = np.unique(np.asarray(pts, np.int64))
    return order, np.asarray([p in keys for p in order.tolist()], bool)


def plan_segments(
    info: VideoInfo, count: int, *, trim: Trim | None = None, min_frames: int = 24
) -> list[Segment]:
    """Split the (trimmed) frames into about ``count`` segments, each starting on an input keyframe where the
    input has keyframes near the cut; otherwise on the exact frame (the worker then decodes a lead-in)."""
    all_pts, is_key = scan_frame_timestamps(info)
    trim = trim or Trim()
    tb = info.time_base
    keep = np.asarray([trim.keeps(i, float(p * tb)) for i, p in enumerate(all_pts.tolist())], bool)
    pts, key = all_pts[keep], is_key[keep]
    n = len(pts)
    if n == 0:
        raise CorruptStream(f"{info.path.name}: no frame in the requested range", hint="check the trims")
    count = max(1, min(count, n // max(1, min_frames)))
    cuts = [0]
    key_idx = np.flatnonzero(key)
    for k in range(1, count):
        ideal = k * n // count
        near = key_idx[np.abs(key_idx - ideal) <= max(1, n // (4 * count))] if len(key_idx) else key_idx
        cut = int(near[np.argmin(np.abs(near - ideal))]) if len(near) else ideal
        if cut > cuts[-1]:
            cuts.append(cut)
    cuts.append(n)
    segments = []
    for i, (a, b) in enumerate(zip(cuts, cuts[1:], strict=False)):
        end = int(pts[b]) if b < n else (int(all_pts[np.flatnonzero(keep)[-1] + 1])
                                          if np.flatnonzero(keep)[-1] + 1 < len(all_pts) else None)
        segments.append(Segment(i, int(pts[a]), end, b - a, bool(key[a])))
    return segments


def concat_segments(
    segment_files: list[Path],
    output: Path,
    info: VideoInfo,
    *,
    audio: bool = True,
    trim: Trim | None = None,
    pts_shift: int = 0,
) -> Path:
    """Concatenate segment files (same encoder settings, each starting on a keyframe) into ``output`` without
    re-encoding; audio from the original input is muxed in. Packet timestamps are shifted by the running end
    time when a segment restarts its clock (segments written by :func:`encode_segment` keep absolute pts, so
    the shift is zero for them). Atomic like :class:`VideoWriter`."""
    output = check_output_path(output, "video")
    container_name = CONTAINER_OF_EXTENSION[output.suffix.lower()]
    tmp = _temp_output_name(output)
    out = av.open(str(tmp), mode="w", format=container_name)
    pump: _AudioPump | None = None
    try:
        with av.open(str(segment_files[0])) as first:
            out_stream = out.add_stream_from_template(first.streams.video[0])
        out_stream.time_base = info.time_base
        if audio and info.has_audio:
            pump = _AudioPump(out, info, trim or Trim(), float(pts_shift * info.time_base), container_name)
        running_end: int | None = None
        for seg_file in segment_files:
            with av.open(str(seg_file)) as seg:
                s = seg.streams.video[0]
                s_tb = s.time_base or Fraction(1, 1)
                packets = [p for p in seg.demux(s) if p.size > 0]
                if not packets:
                    continue
                first_pts = min(int(p.pts) for p in packets if p.pts is not None)
                shift = 0
                if running_end is not None and float(first_pts * s_tb) < float(running_end * s_tb) - 1e-9:
                    shift = running_end - first_pts  # the segment restarted its clock: continue after the last end
                for p in packets:
                    if p.pts is not None:
                        p.pts += shift
                    if p.dts is not None:
                        p.dts += shift
                    end = int(p.pts) + int(p.duration or 0) if p.pts is not None else None
                    if end is not None and (running_end is None or end > running_end):
                        running_end = end
                    p.stream = out_stream
                    out.mux(p)
                if pump is not None and running_end is not None:
                    pump.mux_until(float(running_end * s_tb) + 1.0)
        if pump is not None:
            pump.mux_until(None)
            pump.close()
        out.close()
    except BaseException:
        with contextlib.suppress(Exception):
            if pump is not None:
                pump.close()
        with contextlib.suppress(Exception):
            out.close()
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, output)
    return output


FrameProcessor = Callable[[FrameBatch], "np.ndarray | FrameBatch"]
"""Turns a decoded batch into the frames to encode: RGB ``(B, H, W, 3)`` uint8, or a :class:`FrameBatch`. An object
with a ``process_batch(FrameBatch) -> FrameBatch`` method is called through that instead (frames stay YUV)."""


class EncodeThread:
    """Runs :class:`VideoWriter` writes in a thread fed by a bounded queue, so encoding overlaps the face work.

    ``writer_factory(first_pts)`` opens the writer on the first batch. PyAV releases the GIL while x264 encodes, so
    the thread costs the producer little; :attr:`busy_s` is the time spent in writes.
    """

    def __init__(self, writer_factory: Any, maxsize: int) -> None:
        self._factory = writer_factory
        self.writer: VideoWriter | None = None
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=maxsize)
        self.error: BaseException | None = None
        self._aborted = False
        self.busy_s = 0.0  # time spent converting and encoding (the encoder's own threads included)
        self.thread = threading.Thread(target=self._run, name="faceweave-encode", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            while True:
                item = self.queue.get()
                if item is None or self._aborted:
                    return
                frames, pts = item
                t0 = time.perf_counter()
                if self.writer is None:
                    self.writer = self._factory(int(pts[0]))
                self.writer.write(frames, pts)
                self.busy_s += time.perf_counter() - t0
        except BaseException as exc:
            self.error = exc
            # drain so the producer never blocks on a dead consumer
            with contextlib.suppress(queue.Empty):
                while True:
                    self.queue.get_nowait()

    def put(self, frames: np.ndarray | FrameBatch, pts: np.ndarray) -> None:
        while True:
            if self.error is not None:
                raise self.error
            try:
                self.queue.put((frames, pts), timeout=0.2)
                return
            except queue.Full:
                continue

    def finish(self) -> None:
        self.queue.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error

    def abort(self) -> None:
        """Stop after the write in progress (queued batches are dropped) and drop the partial output."""
        self._aborted = True
        with contextlib.suppress(queue.Empty):
            while True:
                self.queue.get_nowait()
        with contextlib.suppress(queue.Full):
            self.queue.put_nowait(None)
        self.thread.join(timeout=30)
        if self.writer is not None:
            self.writer.abort()


def apply_processor(process: FrameProcessor | None, batch: FrameBatch) -> np.ndarray | FrameBatch:
    """Run ``process`` on ``batch`` the cheapest way it offers (``process_batch`` first; None: the batch itself)."""
    if process is None:
        return batch
    via_yuv = getattr(process, "process_batch", None)
    return via_yuv(batch) if via_yuv is not None else process(batch)


@dataclass(frozen=True)
class SegmentJob:
    """Everything a worker process needs to produce one segment file (picklable for 'spawn')."""

    info: VideoInfo
    segment: Segment
    output: Path
    encoder: EncoderSettings
    batch_size: int = 8
    trim: Trim = field(default_factory=Trim)
    skip_corrupt: bool = False
    pts_shift: int = 0
    # a picklable zero-argument factory returning a FrameProcessor (None: pass frames through unchanged)
    processor_factory: Callable[[], FrameProcessor] | None = None
    # decoder and encoder threads of this worker (0: FFmpeg's automatic choice, one per core — right for a single
    # process, but K workers × 16+ threads each oversubscribe the machine)
    threads: int = 0


def threads_per_worker(workers: int) -> int:
    """Codec threads for each of ``workers`` segment processes: the machine's cores shared out (0 — automatic —
    for a single process). x264 frame threads scale well to about this; more threads per process only add
    contention between the K encoders."""
    if workers <= 1:
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // workers)


@dataclass(frozen=True)
class SegmentResult:
    index: int
    output: Path
    frames: int
    corrupt_dropped: int
    stats: dict[str, Any] = field(default_factory=dict)


def encode_segment(job: SegmentJob) -> SegmentResult:
    """Decode one segment, process its frames, and encode it to ``job.output`` (atomically). Runs in a worker."""

    seg = job.segment
    started = time.time()
    process = job.processor_factory() if job.processor_factory is not None else None
    ready = time.time()
    encoder = job.encoder
    if job.threads and not encoder.threads:
        encoder = replace(encoder, threads=job.threads)
    writer = VideoWriter(job.output, job.info, encoder, audio=False, trim=job.trim, pts_shift=job.pts_shift)
    try:
        with FrameReader(
            job.info,
            batch_size=job.batch_size,
            queue_size=2,
            trim=job.trim,
            pts_range=(seg.start_pts, seg.end_pts),
            skip_corrupt=job.skip_corrupt,
            threads=job.threads,
        ) as reader:
            # encode batch n in a thread while batch n+1 is processed (one process per segment: no GIL to share
            # with other workers; on a GPU the face work and x264 then overlap instead of adding up)
            encode = EncodeThread(lambda _pts: writer, maxsize=2)
            try:
                for batch in reader:
                    encode.put(apply_processor(process, batch), batch.pts)
                encode.finish()
            except BaseException:
                encode.abort()
                raise
        writer.close()
    except BaseException:
        writer.abort()
        raise
    stats = dict(getattr(process, "stats", {}) or {})
    # wall-clock marks (seconds since the epoch) of this worker: where a segment-parallel run spends its time
    stats["timing"] = {"pid": os.getpid(), "start": started, "ready": ready, "end": time.time()}
    return SegmentResult(seg.index, job.output, writer.frames_written, reader.stats.frames_corrupt_dropped, stats)


def segment_timing(results: list[SegmentResult], t_call: float) -> dict[str, float]:
    """Summary of the workers' ``timing`` marks for a run that began at ``t_call`` (``time.time()``): seconds until
    the first segment started (process start-up), mean processor set-up per segment, mean busy time per worker."""
    marks = [r.stats["timing"] for r in results if isinstance(r.stats.get("timing"), dict)]
    if not marks:
        return {}
    busy: dict[int, float] = {}
    for m in marks:
        busy[m["pid"]] = busy.get(m["pid"], 0.0) + m["end"] - m["start"]
    return {"first_segment_after_s": round(min(m["start"] for m in marks) - t_call, 2),
            "setup_s_mean": round(sum(m["ready"] - m["start"] for m in marks) / len(marks), 2),
            "busy_s_per_worker": round(sum(busy.values()) / len(busy), 2),
            "last_segment_done_s": round(max(m["end"] for m in marks) - t_call, 2),
            "workers": len(busy), "segments": len(marks)}


def job_fingerprint(info: VideoInfo, extra: dict[str, Any]) -> str:
    """A stable id for (input file, settings): segments in a work_dir are reused only when it matches."""
    st = info.path.stat()
    payload = json.dumps(
        {"path": str(info.path.resolve()), "size": st.st_size, "mtime": st.st_mtime_ns, **extra},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def encoder_fingerprint(encoder: EncoderSettings) -> dict[str, Any]:
    return asdict(encoder)


__all__ = [
    "DecodeStats",
    "EncoderSettings",
    "FrameBatch",
    "FrameReader",
    "Segment",
    "SegmentJob",
    "SegmentResult",
    "Trim",
    "VideoInfo",
    "VideoWriter",
    "apply_processor",
    "colour_matrix_of",
    "concat_segments",
    "encode_segment",
    "encoder_available",
    "job_fingerprint",
    "parse_position",
    "plan_segments",
    "plane_array",
    "probe_video",
    "resolve_encoder",
    "run_segments",
    "transcode",
    "scan_frame_timestamps",
    "segment_timing",
    "threads_per_worker",
    "trim_from_settings",
    "yuv420_frame",
]


def run_segments(
    info: VideoInfo,
    output: Path,
    encoder: EncoderSettings,
    *,
    workers: int,
    work_dir: Path | None = None,
    trim: Trim | None = None,
    batch_size: int = 8,
    skip_corrupt: bool = False,
    processor_factory: Callable[[], FrameProcessor] | None = None,
    fingerprint_extra: dict[str, Any] | None = None,
    on_segment_done: Callable[[SegmentResult], None] | None = None,
    threads: int | None = None,
) -> list[SegmentResult]:
    """Segment-parallel encode: plan GOP-aligned segments, encode each in a worker process ('spawn': safe with
    torch threads), then concatenate without re-encoding and mux the audio. With ``work_dir`` finished segments
    are kept (``segment_NNNNN.<ext>`` + a ``.done`` marker) and reused by a rerun of the same job. ``threads``:
    decoder/encoder threads per worker (None: :func:`threads_per_worker`).
    Returns one :class:`SegmentResult` per segment (reused ones included)."""
    import concurrent.futures as cf
    import multiprocessing
    import shutil
    import tempfile

    trim = trim or Trim()
    own_dir = work_dir is None
    seg_dir = Path(work_dir) if work_dir is not None else Path(tempfile.mkdtemp(prefix=".fw-seg-", dir=output.parent))
    seg_dir.mkdir(parents=True, exist_ok=True)
    fingerprint = job_fingerprint(
        info, {"encoder": encoder_fingerprint(encoder), "trim": asdict(trim), **(fingerprint_extra or {})}
    )
    plan_file = seg_dir / "plan.json"
    segments: list[Segment] | None = None
    if plan_file.exists():
        try:
            saved_plan = json.loads(plan_file.read_text())
        except ValueError:
            saved_plan = {}
        if saved_plan.get("fingerprint") == fingerprint:
            # a rerun of the same job: keep its plan so finished segments line up, whatever `workers` is now
            segments = [Segment(**s) for s in saved_plan["segments"]]
        else:  # a different job used this directory: its segments are not ours
            for stale in seg_dir.glob("segment_*"):
                stale.unlink(missing_ok=True)
    if segments is None:
        segments = plan_segments(info, max(workers, 1) * (2 if workers > 1 else 1), trim=trim)
        atomic_tmp = plan_file.with_suffix(".tmp")
        atomic_tmp.write_text(json.dumps({"fingerprint": fingerprint, "segments": [asdict(x) for x in segments]}))
        os.replace(atomic_tmp, plan_file)
    pts_shift = _trim_shift(info, trim, segments[0].start_pts)
    ext = output.suffix.lower()
    results: dict[int, SegmentResult] = {}
    jobs = []
    for seg in segments:
        seg_file = seg_dir / f"segment_{seg.index:05d}{ext}"
        marker = seg_file.with_suffix(seg_file.suffix + ".done")
        if seg_file.exists() and marker.exists():
            saved = json.loads(marker.read_text())
            results[seg.index] = SegmentResult(seg.index, seg_file, int(saved["frames"]), int(saved["corrupt"]),
                                               dict(saved.get("stats", {})) | {"reused": True})
            continue
        jobs.append(SegmentJob(info, seg, seg_file, encoder, batch_size, trim, skip_corrupt, pts_shift,
                               processor_factory, threads_per_worker(workers) if threads is None else threads))

    def finished(res: SegmentResult) -> None:
        marker = res.output.with_suffix(res.output.suffix + ".done")
        marker.write_text(json.dumps({"frames": res.frames, "corrupt": res.corrupt_dropped, "stats": res.stats},
                                     default=str))
        results[res.index] = res
        if on_segment_done is not None:
            on_segment_done(res)

    try:
        if workers <= 1:
            for job in jobs:
                finished(encode_segment(job))
        else:
            ctx = multiprocessing.get_context("spawn")
            with cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
                futures = [pool.submit(encode_segment, job) for job in jobs]
                try:
                    for fut in cf.as_completed(futures):
                        finished(fut.result())
                except BaseException:
                    for fut in futures:
                        fut.cancel()
                    raise
        ordered = [results[s.index] for s in segments]
        concat_segments([r.output for r in ordered if r.frames > 0], output, info, trim=trim, pts_shift=pts_shift)
    finally:
        if own_dir:
            shutil.rmtree(seg_dir, ignore_errors=True)
    return ordered


def _trim_shift(info: VideoInfo, trim: Trim, first_kept_pts: int) -> int:
    """pts shift so a trimmed output starts where the input did (0 without a trim: timestamps kept as-is)."""
    return first_kept_pts - info.start_pts if trim.active else 0


def transcode(
    source: Path,
    output: Path,
    encoder: EncoderSettings,
    *,
    trim: Trim | None = None,
    batch_size: int = 8,
    max_duration_s: float = 3600.0,
    max_pixels: int = 80_000_000,
    skip_corrupt: bool = False,
    process: FrameProcessor | None = None,
) -> tuple[VideoInfo, DecodeStats, int]:
    """Single-process decode → (process) → encode with audio; the baseline the benchmarks compare against.
    Returns (input info, decode stats, frames written)."""
    info = probe_video(source, max_duration_s=max_duration_s, max_pixels=max_pixels)
    check_output_path(output, "video")
    trim = trim or Trim()
    writer: VideoWriter | None = None
    try:
        with FrameReader(info, batch_size=batch_size, trim=trim, skip_corrupt=skip_corrupt) as reader:
            for batch in reader:
                if writer is None:
                    writer = VideoWriter(output, info, encoder, trim=trim,
                                         pts_shift=_trim_shift(info, trim, int(batch.pts[0])))
                writer.write(apply_processor(process, batch), batch.pts)
        if writer is None:
            raise CorruptStream(f"{info.path.name}: no frame in the requested range", hint="check the trims")
        writer.close()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    return info, reader.stats, writer.frames_written
