"""Probing a video: :class:`VideoInfo` (size, rotation, timing, colour tags, audio) from its header and first packets,
and the demuxed frame timestamps. Conventions: see :mod:`faceweave.media.video`."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from faceweave.errors import MediaTooLarge, TruncatedMedia, UnsupportedMedia, WrongMediaKind
from faceweave.media.image import _check_input_file, _detect_magic, _read_head


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
