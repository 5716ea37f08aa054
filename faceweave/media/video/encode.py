"""Encoding: encoder choice (:class:`EncoderSettings`, :func:`resolve_encoder`), :class:`VideoWriter` (atomic
output, audio kept), :class:`EncodeThread` (encoding overlapped with the face work) and :func:`transcode`, the
single-process decode → process → encode. Conventions: see :mod:`faceweave.media.video`."""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from faceweave.errors import CorruptStream, InvalidOption, OutputNotWritable
from faceweave.media.image import check_output_path
from faceweave.media.video.audio import _AudioPump
from faceweave.media.video.frames import DecodeStats, FrameBatch, FrameReader, _copy_tags, _tag_frame
from faceweave.media.video.probe import _SWS_COLORSPACE, VideoInfo, probe_video
from faceweave.media.video.trim import Trim, _trim_shift
from faceweave.provenance.metadata import video_container_options
from faceweave.provenance.watermark import ChromaMarker, WatermarkPayload

CONTAINER_OF_EXTENSION = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm"}
WEBM_VIDEO_CODECS = ("libvpx-vp9", "libsvtav1", "libvpx")


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


@dataclass(frozen=True)
class OutputMark:
    """What a finished video carries besides its pictures (picklable: segment workers get it).

    ``tags``: container tags (:func:`faceweave.provenance.metadata.video_tags`); ``watermark``: the payload whose
    pattern every frame's Cr (V plane) gets (None: no watermark). The writer of a final output also opens MP4/MOV with
    ``+faststart``; C2PA is signed over the finished file (:func:`faceweave.provenance.mark.mark_video_output`).
    """

    tags: dict[str, str] = field(default_factory=dict)
    watermark: WatermarkPayload | None = None


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


class VideoWriter:
    """Encode RGB frames with their input timestamps into ``output`` (atomically), muxing the input's audio.

    ``write`` takes ``(B, H, W, 3)`` uint8 RGB upright frames and their ``pts`` in ``info.time_base``.
    Call :meth:`close` to finish (flush, rename into place) or :meth:`abort` to drop everything.
    ``mark``: tags and watermark of the output. ``intermediate``: a segment file to be joined later (no tags and
    no ``+faststart``, which would rewrite the file once more for nothing; the watermark still goes in).
    ``marker``: the watermark's :class:`ChromaMarker` when the caller made it (:func:`video_chroma_marker`, to mark
    some frames on the device itself: those come in :attr:`FrameBatch.marked`); by default made from ``mark``.
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
        mark: OutputMark | None = None,
        intermediate: bool = False,
        marker: ChromaMarker | None = None,
    ) -> None:
        self.output = check_output_path(output, "video")
        self.info = info
        self.encoder = encoder
        self.pts_shift = pts_shift
        self.tmp = _temp_output_name(self.output)
        self.frames_written = 0
        self._audio: _AudioPump | None = None
        self._last_pts: int | None = None
        self._marker: ChromaMarker | None = None
        container_name = CONTAINER_OF_EXTENSION[self.output.suffix.lower()]
        options = {} if intermediate else video_container_options(self.output)
        try:
            self.container = av.open(str(self.tmp), mode="w", format=container_name, options=options)
        except av.error.FFmpegError as exc:
            raise OutputNotWritable(f"cannot create {self.output}: {exc}", hint="check the directory") from None
        try:
            if mark is not None and not intermediate:
                self.container.metadata.update(mark.tags)
            if marker is not None:
                self._marker = marker
            elif mark is not None and mark.watermark is not None:
                self._marker = video_chroma_marker(info, encoder.pix_fmt, mark.watermark)
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
        owned: frozenset[int] = frozenset()
        marked: frozenset[int] = frozenset()
        if isinstance(frames, FrameBatch):
            yuv, owned, marked = frames.yuv, frames.owned, frames.marked
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
        for k, (item, p) in enumerate(zip(yuv, pts, strict=True)):
            if isinstance(item, np.ndarray):
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(item), format="rgb24")
                frame = frame.reformat(format=pix_fmt, dst_colorspace=cs, dst_color_range=rng)
                _tag_frame(frame, self.info)
            elif item.format.name != pix_fmt:  # e.g. a 10-bit or 4:4:4 output: one swscale pass, colour kept
                frame = item.reformat(format=pix_fmt, src_colorspace=cs, dst_colorspace=cs, src_color_range=rng,
                                      dst_color_range=rng)
            elif self._marker is not None and k not in owned and k not in marked:
                # a decoded frame may still be one of the decoder's reference pictures: mark a copy, never it (a
                # frame the pipeline rebuilt is its own: marked in place, which saves a full-frame copy)
                frame = copy_video_frame(item)
            else:
                frame = item  # the decoded frame itself
            if self._marker is not None and k not in marked:
                self._marker.apply(frame_plane(frame, 2))
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


def video_chroma_marker(info: VideoInfo, pix_fmt: str, payload: WatermarkPayload) -> ChromaMarker:
    """The writer's marker: the pattern in the V plane (Cr), so x264's luma-only lookahead chooses the frame types it
    would choose unmarked (a luma pattern made it pick B-frames on smooth moving content: docs/provenance.md)."""
    fmt = av.VideoFormat(pix_fmt, info.width, info.height)
    comps = fmt.components
    bits = comps[0].bits
    if (fmt.is_rgb or len(comps) < 3 or [c.plane for c in comps[:3]] != [0, 1, 2] or bits not in (8, 10, 12)
            or (bits > 8 and not pix_fmt.endswith("le"))):
        raise InvalidOption(f"the watermark cannot mark {pix_fmt} frames",
                            hint="use a planar YUV pix_fmt (yuv420p, yuv444p, yuv420p10le…)")
    return ChromaMarker(info.height, info.width, payload, (comps[2].height, comps[2].width), bits)


def frame_plane(frame: Any, index: int) -> np.ndarray:
    """``(rows, cols)`` writable view of a frame's plane ``index`` (uint16 for 10/12-bit little-endian planes)."""
    plane = frame.planes[index]
    dtype = np.uint8 if frame.format.components[0].bits <= 8 else np.dtype("<u2")
    item = np.dtype(dtype).itemsize
    rows = np.frombuffer(plane, dtype)[: plane.height * plane.line_size // item]
    return rows.reshape(plane.height, plane.line_size // item)[:, : plane.width]


def copy_video_frame(src: Any) -> Any:
    """A new frame of ``src``'s format, size, planes and colour tags (the copy is ours to write into)."""
    dst: Any = av.VideoFrame(src.width, src.height, src.format.name)
    for a, b in zip(src.planes, dst.planes, strict=True):
        n = min(a.line_size, b.line_size)
        src_rows = np.frombuffer(a, np.uint8)[: a.height * a.line_size].reshape(a.height, a.line_size)
        dst_rows = np.frombuffer(b, np.uint8)[: b.height * b.line_size].reshape(b.height, b.line_size)
        dst_rows[:, :n] = src_rows[:, :n]
    _copy_tags(src, dst)
    return dst


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
    mark: OutputMark | None = None,
) -> tuple[VideoInfo, DecodeStats, int]:
    """Single-process decode → (process) → encode with audio; the baseline the benchmarks compare against.
    ``mark``: see :class:`VideoWriter`. Returns (input info, decode stats, frames written)."""
    info = probe_video(source, max_duration_s=max_duration_s, max_pixels=max_pixels)
    check_output_path(output, "video")
    trim = trim or Trim()
    writer: VideoWriter | None = None
    try:
        with FrameReader(info, batch_size=batch_size, trim=trim, skip_corrupt=skip_corrupt) as reader:
            for batch in reader:
                if writer is None:
                    writer = VideoWriter(output, info, encoder, trim=trim,
                                         pts_shift=_trim_shift(info, trim, int(batch.pts[0])), mark=mark)
                writer.write(apply_processor(process, batch), batch.pts)
        if writer is None:
            raise CorruptStream(f"{info.path.name}: no frame in the requested range", hint="check the trims")
        writer.close()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    return info, reader.stats, writer.frames_written
