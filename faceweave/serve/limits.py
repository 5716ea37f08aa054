"""Limits: per-key rate limiting, per-tenant quotas and upload limits enforced while the bytes stream in.

Uploads are parsed from the raw request stream (python-multipart's push parser), so a too-large file is refused
at the byte that crosses the limit, never after it was spooled whole. The content type is sniffed from the
bytes (a file's name and declared type are ignored), and image pixels / video duration and frame count are read
from the headers (demuxing packets, no decoding) before any pixel is decoded.
"""

from __future__ import annotations

import math
import struct
import threading
import time
import warnings
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from faceweave.errors import EmptyMedia, FaceweaveError, MediaTooLarge, TruncatedMedia, UnsupportedMedia
from faceweave.serve.errors import BadRequest, RateLimited

IMAGE_TYPES = {"png": "image/png", "jpg": "image/jpeg", "webp": "image/webp", "bmp": "image/bmp"}
VIDEO_TYPES = {"mp4": "video/mp4", "mkv": "video/x-matroska", "webm": "video/webm", "avi": "video/x-msvideo"}
MAX_FIELD_BYTES = 64 * 1024
MAX_FIELDS_BYTES = 256 * 1024  # all text fields of one request together (they are held in memory)
# Decoding an image costs far more than its pixels: a 39.7 MP PNG raised a worker's RSS by 1.06 GB (≈ 27 bytes per
# pixel: the RGB array plus the pipeline's float copies). The per-job budget is checked against this, from the header.
DECODE_BYTES_PER_PIXEL = 27


# --- rate limiting ---------------------------------------------------------------------------------------------
class RateLimiter:
    """A token bucket per key: ``rate_per_minute`` sustained, ``burst`` at once. Owned by one app instance."""

    def __init__(self, rate_per_minute: float, burst: int) -> None:
        self.rate_per_s = rate_per_minute / 60.0
        self.burst = float(burst)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def blocked(self, key: str, now: float | None = None) -> float:
        """Seconds until ``key`` has a token again (0.0: it has one now); takes nothing."""
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, last = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate_per_s)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate_per_s

    def check(self, key: str, now: float | None = None) -> None:
        """Take one token for ``key`` or raise :class:`RateLimited` with the seconds until the next one."""
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, last = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate_per_s)
            if tokens < 1.0:
                self._buckets[key] = (tokens, now)
                wait = (1.0 - tokens) / self.rate_per_s
                raise RateLimited(
                    "rate limit exceeded for this API key", retry_after_s=wait, hint=f"retry after {math.ceil(wait)} s"
                )
            self._buckets[key] = (tokens - 1.0, now)


# --- sniffing and header probes --------------------------------------------------------------------------------
def sniff_type(head: bytes) -> tuple[str, str] | None:
    """``(kind, extension)`` from a file's first bytes (kind ``image`` or ``video``), or None if unknown."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image", "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image", "jpg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image", "webp"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "video", "avi"
    if head.startswith(b"BM") and len(head) > 26:
        return "image", "bmp"
    if head[4:8] == b"ftyp":
        return "video", "mp4"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "video", "webm" if b"webm" in head[:64] else "mkv"
    return None


def _png_size(head: bytes) -> tuple[int, int]:
    if len(head) < 24 or head[12:16] != b"IHDR":
        raise TruncatedMedia("the PNG header is incomplete", hint="upload the whole file")
    w, h = struct.unpack(">II", head[16:24])
    return int(w), int(h)


def _jpeg_size(f: IO[bytes]) -> tuple[int, int]:
    f.seek(2)
    while True:
        b = f.read(1)
        while b and b != b"\xff":
            b = f.read(1)
        while b == b"\xff":
            b = f.read(1)
        if not b:
            raise TruncatedMedia("the JPEG ends before its frame header", hint="upload the whole file")
        marker = b[0]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            continue
        seg = f.read(2)
        if len(seg) < 2:
            raise TruncatedMedia("the JPEG ends inside a segment header", hint="upload the whole file")
        length = struct.unpack(">H", seg)[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            data = f.read(5)
            if len(data) < 5:
                raise TruncatedMedia("the JPEG frame header is incomplete", hint="upload the whole file")
            h, w = struct.unpack(">HH", data[1:5])
            return int(w), int(h)
        f.seek(length - 2, 1)


@dataclass(frozen=True)
class MediaInfo:
    """What the header says about an uploaded file."""

    kind: str  # "image" | "video"
    extension: str
    content_type: str
    width: int
    height: int
    frames: int = 1
    duration_s: float = 0.0


@dataclass(frozen=True)
class UploadLimits:
    max_bytes: int
    max_pixels: int
    max_duration_s: float
    max_frames: int
    max_decode_bytes: int = 1 << 62


def probe_media(path: Path, limits: UploadLimits) -> MediaInfo:
    """Sniff ``path`` from its bytes and check pixels, duration and frames from headers (no pixel decoding).

    Raises :class:`EmptyMedia`, :class:`UnsupportedMedia`, :class:`TruncatedMedia` or :class:`MediaTooLarge`.
    """
    size = path.stat().st_size
    if size == 0:
        raise EmptyMedia("the uploaded file is empty (0 bytes)", hint="upload an image (PNG/JPEG/WebP) or a video")
    with path.open("rb") as f:
        head = f.read(64)
        sniffed = sniff_type(head)
        if sniffed is None:
            raise UnsupportedMedia(
                "the uploaded file is not a supported image or video (its bytes were checked, not its name)",
                hint="upload PNG, JPEG, WebP, BMP, MP4/MOV, MKV/WebM or AVI",
            )
        kind, ext = sniffed
        if kind == "image":
            if ext == "png":
                w, h = _png_size(head)
            elif ext == "jpg":
                w, h = _jpeg_size(f)
            else:
                w, h = _pil_size(path)
            _check_pixels(w, h, limits)
            if w * h * DECODE_BYTES_PER_PIXEL > limits.max_decode_bytes:
                raise MediaTooLarge(
                    f"decoding this {w}x{h} image needs about {w * h * DECODE_BYTES_PER_PIXEL >> 20} MiB, over the"
                    f" server's per-job budget of {limits.max_decode_bytes >> 20} MiB",
                    hint="downscale the image before uploading",
                )
            return MediaInfo(kind, ext, IMAGE_TYPES[ext], w, h)
    return _probe_video(path, ext, limits)


def _pil_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as im:  # reads the header only
                return int(im.size[0]), int(im.size[1])
    except Image.DecompressionBombError as exc:
        raise MediaTooLarge("the image has too many pixels", hint="upload a smaller image") from exc
    except Exception as exc:
        raise TruncatedMedia("the image header cannot be read", hint="upload the whole, valid file") from exc


def _check_pixels(w: int, h: int, limits: UploadLimits) -> None:
    if w <= 0 or h <= 0:
        raise TruncatedMedia("the header gives a zero width or height", hint="upload a valid file")
    if w * h > limits.max_pixels:
        raise MediaTooLarge(
            f"{w}x{h} = {w * h} pixels exceeds the limit of {limits.max_pixels}",
            hint="downscale the image or video before uploading",
        )


def _probe_video(path: Path, ext: str, limits: UploadLimits) -> MediaInfo:
    import av

    try:
        container = av.open(str(path), metadata_errors="ignore")
    except Exception as exc:
        raise TruncatedMedia(
            "the video container cannot be opened (truncated or corrupt)", hint="upload the whole, valid file"
        ) from exc
    with container:
        if not container.streams.video:
            raise UnsupportedMedia("the file has no video stream", hint="upload a video with a video track")
        stream = container.streams.video[0]
        w, h = int(stream.codec_context.width or 0), int(stream.codec_context.height or 0)
        _check_pixels(w, h, limits)
        duration = 0.0
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / 1_000_000
        if duration > limits.max_duration_s:
            raise MediaTooLarge(
                f"the video lasts {duration:.1f} s, over the limit of {limits.max_duration_s:.0f} s",
                hint="trim the video before uploading",
            )
        # Demux (no decoding) to count the frames and to see that every packet is really there.
        frames, payload = 0, 0
        try:
            for packet in container.demux(stream):
                if packet.size:
                    frames += 1
                    payload += packet.size
                    if frames > limits.max_frames:
                        raise MediaTooLarge(
                            f"the video has more than {limits.max_frames} frames", hint="trim the video"
                        )
        except MediaTooLarge:
            raise
        except Exception as exc:
            raise TruncatedMedia("the video stream is truncated or corrupt", hint="upload the whole file") from exc
        declared = int(stream.frames or 0)
        if frames == 0 or (declared and frames < declared):
            raise TruncatedMedia(
                f"the video is truncated: {frames} of {declared or '?'} frames present", hint="upload the whole file"
            )
    return MediaInfo("video", ext, VIDEO_TYPES[ext], w, h, frames, duration)


# --- streaming multipart ---------------------------------------------------------------------------------------
@dataclass
class UploadedFile:
    field: str
    path: Path
    size: int = 0


@dataclass
class ParsedForm:
    fields: dict[str, list[str]] = field(default_factory=dict)
    files: list[UploadedFile] = field(default_factory=list)

    def one(self, name: str) -> str | None:
        values = self.fields.get(name)
        return values[-1] if values else None


@dataclass
class _Part:
    """The multipart part being parsed."""

    headers: dict[bytes, bytes] = field(default_factory=dict)
    header_field: bytearray = field(default_factory=bytearray)
    header_value: bytearray = field(default_factory=bytearray)
    name: str = ""
    value: bytearray = field(default_factory=bytearray)
    file: UploadedFile | None = None
    handle: IO[bytes] | None = None

    def reset(self) -> None:
        self.headers, self.header_field, self.header_value = {}, bytearray(), bytearray()
        self.name, self.value, self.file, self.handle = "", bytearray(), None, None


async def parse_multipart_stream(
    content_type: str,
    chunks: AsyncIterator[bytes],
    spool_dir: Path,
    *,
    max_file_bytes: int,
    max_files: int,
    max_parts: int = 32,
) -> ParsedForm:
    """Parse a ``multipart/form-data`` body chunk by chunk, writing files under ``spool_dir``.

    A file is refused (:class:`MediaTooLarge`) as soon as it grows past ``max_file_bytes``; text fields are capped
    at 64 KiB each and 256 KiB together, and a body of more than ``max_parts`` parts is refused at the part that
    crosses it (:class:`BadRequest`). File names sent by the client are ignored (named by field and position).
    """
    from python_multipart.multipart import MultipartParser, parse_options_header

    ctype, params = parse_options_header(content_type)
    if ctype != b"multipart/form-data" or b"boundary" not in params:
        raise BadRequest("expected a multipart/form-data body", hint="send the files as multipart form fields")
    boundary = params[b"boundary"]
    form = ParsedForm()
    spool_dir.mkdir(parents=True, exist_ok=True)
    part = _Part()
    counts = {"parts": 0, "field_bytes": 0}

    def on_part_begin() -> None:
        part.reset()
        counts["parts"] += 1
        if counts["parts"] > max_parts:
            raise BadRequest(f"too many form parts (at most {max_parts})", hint="send only the documented fields")

    def on_header_field(data: bytes, start: int, end: int) -> None:
        part.header_field += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        part.header_value += data[start:end]

    def on_header_end() -> None:
        part.headers[bytes(part.header_field).lower()] = bytes(part.header_value)
        part.header_field, part.header_value = bytearray(), bytearray()

    def on_headers_finished() -> None:
        _, disp = parse_options_header(part.headers.get(b"content-disposition", b""))
        part.name = disp.get(b"name", b"").decode("utf-8", "replace")
        if b"filename" in disp:
            if len(form.files) >= max_files:
                raise BadRequest(f"too many files (at most {max_files})", hint="send fewer source images")
            part.file = UploadedFile(field=part.name, path=spool_dir / f"upload_{len(form.files)}")
            form.files.append(part.file)
            part.handle = part.file.path.open("wb")

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if part.file is not None and part.handle is not None:
            part.file.size += end - start
            if part.file.size > max_file_bytes:
                raise MediaTooLarge(
                    f"an uploaded file exceeds the limit of {max_file_bytes} bytes", hint="upload a smaller file"
                )
            part.handle.write(data[start:end])
        else:
            part.value += data[start:end]
            counts["field_bytes"] += end - start
            if counts["field_bytes"] > MAX_FIELDS_BYTES:
                raise BadRequest("the form's text fields are over 256 KiB together", hint="send shorter values")
            if len(part.value) > MAX_FIELD_BYTES:
                raise BadRequest(f"form field {part.name!r} is over 64 KiB", hint="send a shorter value")

    def on_part_end() -> None:
        if part.handle is not None:
            part.handle.close()
        elif part.file is None:
            form.fields.setdefault(part.name, []).append(part.value.decode("utf-8", "replace"))
        part.reset()

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
        },  # fmt: skip
    )
    try:
        async for chunk in chunks:
            parser.write(chunk)
        parser.finalize()
    except FaceweaveError:  # ours, and the body limits' (413, 408) raised from the stream
        raise
    except Exception as exc:
        raise BadRequest("the multipart body is malformed", hint="send a valid multipart/form-data body") from exc
    finally:
        if part.handle is not None and not part.handle.closed:
            part.handle.close()
    return form
