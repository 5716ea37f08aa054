"""Decoding: :class:`FrameReader` streams a video in a background thread as :class:`FrameBatch` es of upright
8-bit ``yuv420p`` frames; helpers to view and build ``av.VideoFrame`` planes. Conventions: see
:mod:`faceweave.media.video`."""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import av
import numpy as np

from faceweave.errors import CorruptStream
from faceweave.media.video.probe import _SWS_COLORSPACE, VideoInfo, _open_input
from faceweave.media.video.trim import Trim


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
    :meth:`replaced` builds the output batch from the frames a stage changed. ``owned``: indices of frames that are
    this batch's own new frames (from :meth:`replaced`), not the decoder's: a writer may change them in place.
    ``marked``: indices of frames that already carry the writer's watermark (marked on the device before the copy
    back, see :meth:`~faceweave.provenance.watermark.ChromaMarker.apply_torch`): the writer must not mark them again.
    """

    yuv: list[Any]
    pts: np.ndarray
    times: np.ndarray
    first_index: int
    matrix: str = "bt601"
    full_range: bool = False
    owned: frozenset[int] = frozenset()
    marked: frozenset[int] = frozenset()
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

    def replaced(self, index: list[int], packed: np.ndarray, *, marked: bool = False) -> FrameBatch:
        """A batch with frames ``index`` rebuilt from ``packed`` rows ``(len(index), N)`` uint8 (the layout of
        :meth:`packed`; colour tags copied from the frames they replace); every other frame is the same decoded
        frame, untouched. ``marked``: the rows already carry the writer's watermark (see :attr:`marked`)."""
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
        return FrameBatch(yuv, self.pts, self.times, self.first_index, self.matrix, self.full_range,
                          owned=self.owned | frozenset(index),
                          marked=self.marked | frozenset(index) if marked else self.marked - frozenset(index))


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
