"""Video swap: decode thread → bounded queue → batched face stages → bounded queue → encode thread.

Per batch of ``settings.batch_size`` frames the engine detects faces on every ``settings.detect_every``-th frame
and on scene cuts, refines landmarks on the frames between (seeded by the tracks), smooths each track's geometry
with a One-Euro filter (time from the frames' timestamps, so VFR is exact), decides once per track whether it
is swapped and with which source, and swaps. Frames without a selected face are passed through bit-exact (the
decoded array itself goes to the encoder). With ``settings.workers > 1`` (or a ``work_dir``) the video is cut
into GOP-aligned segments processed by worker processes and concatenated without re-encoding.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import functools
import hashlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from faceweave.device import record_ready, run_on_stream, worker_stream
from faceweave.errors import NoFaceInTarget
from faceweave.media.video.encode import (
    EncodeThread,
    OutputMark,
    VideoWriter,
    encoder_available,
    resolve_encoder,
    video_chroma_marker,
)
from faceweave.media.video.frames import FrameBatch, FrameReader
from faceweave.media.video.probe import VideoInfo, probe_video
from faceweave.media.video.segments import SegmentResult, run_segments, segment_timing
from faceweave.media.video.trim import _trim_shift, trim_from_settings
from faceweave.pipeline.engine import PreparedSource, SwapEngine, job_references
from faceweave.pipeline.video_faces import SCENE_CUT_THRESHOLD, VideoFaceProcessor
from faceweave.pipeline.warm_up import BackgroundWarmUp
from faceweave.progress import Progress, ProgressCallback, no_progress
from faceweave.provenance.c2pa import Ingredient
from faceweave.provenance.mark import Marking, mark_video_output, video_output_mark
from faceweave.result import SEGMENT_COUNTERS, SwapResult
from faceweave.settings import SwapSettings

QUEUE_BATCHES = 3  # batches waiting between stages (bounded memory: ~3 × batch_size frames per queue)


def make_segment_processor(
    settings: SwapSettings, sources: Sequence[PreparedSource], reference: Sequence[torch.Tensor] | None,
    frame_size: tuple[int, int] | None = None,
) -> VideoFaceProcessor:
    """Factory run inside a segment worker process for each segment: a fresh processor (tracks start anew) on the
    worker's engine, which is loaded once per process and settings (and warmed up for ``frame_size`` ``(height,
    width)`` frames on a GPU), and the job's prepared sources."""
    torch.set_num_threads(1)  # one process per core already; oversubscription slows everyone
    key = settings.model_dump_json()
    engine = _WORKER_ENGINE.get(key)
    if engine is None:
        _WORKER_ENGINE.clear()  # a worker serves one job at a time: keep one engine
        engine = _WORKER_ENGINE[key] = SwapEngine(settings, device=worker_device(settings))
        if frame_size is not None:
            warm_gpu_engine(engine, frame_size)
    return VideoFaceProcessor(engine, [s.to(engine.device) for s in sources], reference)


#: how a video job warms its engine up (:func:`swap_video`'s ``warm_up``): ``full``: :meth:`SwapEngine.warm_up` for the
#: frame size before the first frame; ``deferred``: only the models load before it, the first batches capture the
#: graphs they use, and the rest of the same warm-up runs in the background while the video streams
#: (:class:`~faceweave.pipeline.warm_up.BackgroundWarmUp`); ``auto``: ``deferred`` for a GPU job that owns its engine
#: and streams in one process (``faceweave swap``), ``full`` for a GPU job on an engine it was given (the service's
#: shared engine) or run in segments, nothing on the CPU (no graphs to capture).
WarmUp = Literal["auto", "full", "deferred"]


def warm_up_plan(requested: WarmUp, engine: object, *, owned: bool, streaming: bool) -> Literal["full", "deferred",
                                                                                                 "none"]:
    """What ``requested`` means for this job (see :data:`WarmUp`). ``owned``: :func:`swap_video` made the engine (no
    other job shares it, and it is dropped with the job); ``streaming``: the single-process stream, where the
    background warm-up runs beside the batches (segments keep the full warm-up: each worker's engine warms once for
    a long job, and the in-process segment runner has no first-batch hook). Engines other than
    :class:`SwapEngine` (test stand-ins) have nothing to warm."""
    if not isinstance(engine, SwapEngine):
        return "none"
    if requested == "auto":
        if engine.device.type != "cuda":
            return "none"
        return "deferred" if owned and streaming else "full"
    return "deferred" if requested == "deferred" and streaming else "full"


def warm_gpu_engine(engine: SwapEngine, frame_size: tuple[int, int]) -> None:
    """On a GPU, capture the analysis nets' CUDA graphs for this job's batch and frame size before the first frame
    (see :meth:`SwapEngine.warm_up`); nothing on the CPU, or for engines without ``warm_up``."""
    device = getattr(engine, "device", None)
    if device is not None and device.type == "cuda" and hasattr(engine, "warm_up"):
        engine.warm_up(frame_size)


_WORKER_ENGINE: dict[str, SwapEngine] = {}  # inside a segment worker: its engine, reused by its later segments


def worker_device(settings: SwapSettings) -> torch.device | None:
    """The device of this segment worker: with ``settings.devices = "0,1,…"`` worker k (1-based pool identity)
    takes device ``k mod N``, so N GPUs each serve ``workers / N`` processes; None: ``settings.device``."""
    import multiprocessing

    if not settings.devices:
        return None
    names = parse_devices(settings.devices)
    ident = multiprocessing.current_process()._identity  # (k,) inside a pool worker, () in the main process
    k = (ident[0] - 1) if ident else 0
    from faceweave.device import resolve_device

    return resolve_device(names[k % len(names)])


def parse_devices(spec: str) -> list[str]:
    """``"0,1"`` → ``["cuda:0", "cuda:1"]``; ``"cpu,cpu"`` (tests: the CPU as several devices) stays as given."""
    out = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        out.append(f"cuda:{part}" if part.isdigit() else part)
    if not out:
        from faceweave.errors import InvalidOption

        raise InvalidOption(f"no devices in {spec!r}", hint="use e.g. --devices 0,1 or --devices cpu,cpu")
    return out


def _expected_frames(info: VideoInfo) -> int | None:
    return info.frames or (int(round(info.duration_s * info.fps)) if info.duration_s else None)


# Host-side torch threads while the face work runs on a GPU. Its CPU ops are small (tracking, NMS, geometry), and
# torch's default of one OpenMP thread per core competes with the decoder's and x264's frame threads: on the
# 16-core H100 box the single-process 1080p swap ran at 3-6 fps with 16 threads and 48-53 fps with 2
# (docs/benchmarks.md §3).
GPU_HOST_THREADS = 2


@contextlib.contextmanager
def gpu_host_threads(device: torch.device | None) -> Iterator[None]:
    """Limit torch's intra-op CPU threads to :data:`GPU_HOST_THREADS` for the duration of a GPU job, then restore."""
    if device is None or device.type == "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(min(before, GPU_HOST_THREADS))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def swap_video(
    sources: Sequence[str | PathLike[str]],
    target: str | PathLike[str],
    output: str | PathLike[str],
    settings: SwapSettings,
    *,
    progress: ProgressCallback = no_progress,
    work_dir: str | PathLike[str] | None = None,
    engine: SwapEngine | None = None,
    reference: str | PathLike[str] | None = None,
    segment_s: float | None = None,
    warm_up: WarmUp = "auto",
) -> SwapResult:
    """Swap faces of ``sources`` into the video ``target``, writing ``output`` atomically (audio kept).

    Args:
        sources: source image paths (one face each; several photos of one person pick by head pose).
        target: a video (MP4/MOV/MKV/WebM…).
        output: ``.mp4``, ``.mkv``, ``.mov`` or ``.webm``.
        settings: the job's settings (codec, crf, preset, pix_fmt, trims, workers, detect_every, smoothing…).
        progress: called with frames done, fps and ETA after each batch.
        work_dir: keep finished segments here; a rerun of the same job reuses them (crash resume).
        segment_s: with ``work_dir``, cut segments of at most about this many seconds even with one worker, so a
            rerun loses at most one segment's work (the service's setting); None: one segment per worker.
        engine: an existing engine to reuse (single-process path); default: a new one for ``settings``.
        reference: reference image for ``selector="reference"`` (default: the sources).
        warm_up: when the engine's warm-up runs (:data:`WarmUp`); the job's stats say what ran and when
            (``stats["warm_up"]``).

    Raises:
        NoFaceInTarget: no frame of the video had a face (nothing is written).
        and the media errors of :func:`~faceweave.media.video.probe.probe_video` and the reader.
    """
    from faceweave.media.image import check_output_path, read_image

    t_start = time.perf_counter()
    out_path = check_output_path(Path(output), "video")
    nvenc_probe: threading.Thread | None = None
    if settings.video_codec is None:
        # the automatic codec opens NVENC to see whether it works: 1.0 s on an H100 box that has none (cold-start
        # profile, docs/benchmarks.md §0-24), so it runs beside the reading and model loading below; it cannot fail
        nvenc_probe = threading.Thread(target=encoder_available, args=("h264_nvenc",), name="faceweave-nvenc-probe",
                                       daemon=True)
        nvenc_probe.start()
    else:  # a codec the user named is checked before anything else (a usage error, at once)
        encoder = resolve_encoder(settings.video_codec, settings.crf, settings.preset, settings.pix_fmt, out_path)
    src_images = [read_image(Path(s), max_pixels=settings.max_pixels).rgb for s in sources]
    info = probe_video(Path(target), max_duration_s=settings.max_duration_s, max_pixels=settings.max_pixels)
    trim = trim_from_settings(settings.trim_start, settings.trim_end, info)
    total = _expected_frames(info)
    progress(Progress(stage="prepare", frames_done=0, frames_total=total))

    owned = engine is None
    if engine is None:
        engine = SwapEngine(settings)
    streaming = settings.workers <= 1 and work_dir is None
    plan = warm_up_plan(warm_up, engine, owned=owned, streaming=streaming)
    frame_size = (info.height, info.width)
    if isinstance(engine, SwapEngine):
        engine.load_models()
    warm: dict[str, Any] = {"mode": plan, "engine_s": round(time.perf_counter() - t_start, 3)}
    # with several workers each warms its own engine (make_segment_processor)
    if plan == "full" and settings.workers <= 1:
        engine.warm_up(frame_size)
    background = BackgroundWarmUp(engine, frame_size) if plan == "deferred" else None
    warm["critical_s"] = round(time.perf_counter() - t_start, 3)
    if nvenc_probe is not None:
        nvenc_probe.join()  # its answer is cached: resolve_encoder reads it
        encoder = resolve_encoder(None, settings.crf, settings.preset, settings.pix_fmt, out_path)
    prepared = engine.prepare_sources(src_images)
    refs = job_references(engine, settings, reference, src_images)

    # A resumable job (work_dir) keeps one job id across reruns, so reused segments carry the same watermark.
    resume_id = hashlib.sha256(str(Path(work_dir).resolve()).encode()).hexdigest() if work_dir is not None else None
    marking = Marking.from_settings(settings, resume_id)
    mark = video_output_mark(marking)
    stats: dict[str, Any]
    # Both paths may run the face work in this process (segments do so without parallelism, e.g. a work_dir resume).
    with gpu_host_threads(getattr(engine, "device", None)):
        if settings.workers > 1 or work_dir is not None:
            stats = _swap_segments(info, out_path, encoder, settings, engine, prepared, refs, trim, work_dir,
                                   progress, total, segment_s, mark)
        else:
            try:
                stats = _swap_stream(info, out_path, encoder, settings, engine, prepared, refs, trim, progress,
                                     total, t_start, mark, background)
            finally:  # the job is over: no capture after it, whatever the background warm-up had left
                if background is not None:
                    background.stop()
    if background is not None:
        warm["background"] = background.summary(t_start)
    stats["warm_up"] = warm
    ingredients = [Ingredient.of_file("source", s) for s in sources] + [Ingredient.of_file("target", target)]
    mark_video_output(out_path, marking, ingredients)
    seconds = time.perf_counter() - t_start
    frames = int(stats["frames"])
    # frames reused from a crashed run's segments cost nothing now: counting them would inflate the speed
    worked = frames - int(stats.get("frames_reused", 0))
    stats["fps"] = worked / seconds if seconds else 0.0
    progress(Progress(stage="done", frames_done=frames, frames_total=frames, fps=stats["fps"], eta_s=0.0))
    return SwapResult(output=out_path, kind="video", faces_swapped=int(stats["faces_swapped"]), frames=frames,
                      seconds=seconds, stats=stats)


@dataclass
class _StreamTiming:
    """Where the single-process stream's main thread waits, to tell which stage bounds a run.

    The main thread waits on the decoder (``decode_wait_s``), plans (detection + landmarks, ``plan_s``), waits for
    the swap thread's result (``swap_wait_s``) and for room in the encoder's queue (``encode_wait_s``). The encoder
    thread's own busy time comes from :class:`EncodeThread`. The stage whose wait or busy time is closest to the
    wall time is the bound.
    """

    decode_wait_s: float = 0.0
    plan_s: float = 0.0
    swap_wait_s: float = 0.0
    encode_wait_s: float = 0.0
    swap_busy_s: float = 0.0  # the swap thread's own time in finish_batch (launches, syncs, the copy back)

    def timed(self, fn: Callable[[Any], Any], arg: Any) -> Any:
        """``fn(arg)`` in the swap thread, its duration added to ``swap_busy_s``."""
        t0 = time.perf_counter()
        try:
            return fn(arg)
        finally:
            self.swap_busy_s += time.perf_counter() - t0

    def deliver(self, encode: EncodeThread, pending: tuple[cf.Future[Any], np.ndarray]) -> None:
        t0 = time.perf_counter()
        result = pending[0].result()
        t1 = time.perf_counter()
        encode.put(result, pending[1])
        self.swap_wait_s += t1 - t0
        self.encode_wait_s += time.perf_counter() - t1

    def summary(self, wall_s: float, encode_busy_s: float) -> dict[str, float]:
        return {"wall_s": round(wall_s, 3), "decode_wait_s": round(self.decode_wait_s, 3),
                "plan_s": round(self.plan_s, 3), "swap_wait_s": round(self.swap_wait_s, 3),
                "encode_wait_s": round(self.encode_wait_s, 3), "encode_busy_s": round(encode_busy_s, 3),
                "swap_busy_s": round(self.swap_busy_s, 3)}


def _report(progress: ProgressCallback, done: int, total: int | None, t_start: float, stage: str = "swap") -> None:
    dt = time.perf_counter() - t_start
    fps = done / dt if dt > 0 else 0.0
    eta = (total - done) / fps if total and fps > 0 and total >= done else None
    progress(Progress(stage=stage, frames_done=done, frames_total=total, fps=fps, eta_s=eta))


def _swap_stream(
    info: VideoInfo,
    out_path: Path,
    encoder: Any,
    settings: SwapSettings,
    engine: SwapEngine,
    prepared: Sequence[PreparedSource],
    refs: Sequence[torch.Tensor] | None,
    trim: Any,
    progress: ProgressCallback,
    total: int | None,
    t_start: float,
    mark: OutputMark | None = None,
    background: BackgroundWarmUp | None = None,
) -> dict[str, Any]:
    """Single process: decode thread → queue → face stages (this thread) → queue → encode thread. ``background``:
    started once the first swapped frames are with the encoder (the caller stops it)."""
    # the frames with faces get the watermark on the device, in the swap thread; the encoder thread (the stream's
    # bound at 1080p on a GPU) marks only the others. The writer and the processor share the one marker.
    marker = (video_chroma_marker(info, encoder.pix_fmt, mark.watermark)
              if mark is not None and mark.watermark is not None and encoder.pix_fmt == "yuv420p" else None)
    processor = VideoFaceProcessor(engine, prepared, refs, settings, marker=marker)

    def open_writer(first_pts: int) -> VideoWriter:
        return VideoWriter(out_path, info, encoder, trim=trim, pts_shift=_trim_shift(info, trim, first_pts), mark=mark,
                           marker=marker)

    encode = EncodeThread(open_writer, QUEUE_BATCHES)
    timing = _StreamTiming()
    t_run = time.perf_counter()
    try:
        # Batch n is swapped in a second thread while this one plans batch n+1 (detection and FaceMesh, which follow
        # the tracks and so stay in frame order); results reach the encoder in order.
        # For a GPU the decode thread also packs each batch's planes into pinned memory for the device copy (PyTorch
        # caches and reuses pinned blocks). Not on the CPU: there the packed tensor is the frames' working copy, and
        # allocating it in the decode thread while other threads free it grew peak RSS with the video's length
        # (tests/pipeline test_memory_bounded_10s_vs_60s_720p on the dev VM: +46 to +122 MB over 9 runs, 2 past its
        # 100 MB bound; packed on this thread, -43 to +97 MB over 14 runs).
        on_gpu = getattr(getattr(engine, "device", None), "type", None) == "cuda"
        stage = functools.partial(FrameBatch.stage, pin=True) if on_gpu else None
        # On a GPU the swap thread runs on a CUDA stream of its own: this thread's syncs (detection's candidates, the
        # thumbnails) then wait for its own kernels only, not for the previous batch's swap queued before them, and
        # the two batches' kernels overlap on the device (the analysis and the swap graphs have separate pools)
        swap_stream = worker_stream(engine.device, "swap") if on_gpu else None
        with FrameReader(info, batch_size=settings.batch_size, queue_size=QUEUE_BATCHES, trim=trim,
                         skip_corrupt=settings.skip_corrupt, prepare=stage) as reader, \
                cf.ThreadPoolExecutor(1, thread_name_prefix="faceweave-swap") as swapper:
            pending: tuple[cf.Future[Any], np.ndarray] | None = None
            batches = iter(reader)
            while True:
                t0 = time.perf_counter()
                batch = next(batches, None)
                t1 = time.perf_counter()
                timing.decode_wait_s += t1 - t0
                if batch is None:
                    break
                planned = processor.plan_batch(batch)
                ready = record_ready(engine.device) if swap_stream is not None else None
                timing.plan_s += time.perf_counter() - t1
                if pending is not None:
                    timing.deliver(encode, pending)
                    _report(progress, processor.stats["frames"], total, t_start)
                    if background is not None:  # the first frames are out: warm the rest up between batches
                        background.start()
                finish = functools.partial(run_on_stream, swap_stream, ready, processor.finish_batch)
                pending = (swapper.submit(timing.timed, finish, planned), batch.pts)
            if pending is not None:
                timing.deliver(encode, pending)
                _report(progress, processor.stats["frames"], total, t_start)
        if processor.stats["frames_with_faces"] == 0:
            raise NoFaceInTarget(
                f"no face found in any of the {processor.stats['frames']} frames of {info.path.name}",
                hint="check the video shows a face at least ~40 px wide, upright",
            )
        encode.finish()
        if encode.writer is None:
            raise NoFaceInTarget(f"no frame decoded from {info.path.name}", hint="check the trims")
        encode.writer.close()
    except BaseException:
        encode.abort()
        raise
    stats = dict(processor.stats)
    stats["corrupt_frames_dropped"] = reader.stats.frames_corrupt_dropped
    stats["audio"] = encode.writer.audio_mode
    stats["segments"] = 1
    stats["stream_timing"] = timing.summary(time.perf_counter() - t_run, encode.busy_s)
    return stats


def _swap_segments(
    info: VideoInfo,
    out_path: Path,
    encoder: Any,
    settings: SwapSettings,
    engine: SwapEngine,
    prepared: Sequence[PreparedSource],
    refs: Sequence[torch.Tensor] | None,
    trim: Any,
    work_dir: str | PathLike[str] | None,
    progress: ProgressCallback,
    total: int | None,
    segment_s: float | None,
    mark: OutputMark | None = None,
) -> dict[str, Any]:
    """Segment-parallel path: each worker process runs decode → face stages → encode on its segment; with one
    worker the segments run here, in order, on one processor (tracks continue across cuts), reporting progress
    after every batch."""
    if settings.workers > 1:
        # Sources travel to the worker processes on the CPU; each worker moves them to its own device.
        factory: Callable[[], VideoFaceProcessor] = functools.partial(
            make_segment_processor, settings, [p.to("cpu") for p in prepared],
            None if refs is None else [r.cpu() for r in refs], (info.height, info.width))
    else:  # segments run in this process, one after another: one processor (and the loaded engine) for all
        shared = VideoFaceProcessor(engine, list(prepared), refs, settings)
        factory = shared.reset_counters
    live = _SegmentProgress(progress, total)

    # A crash-resumable job must be rerun with the same settings; the fingerprint covers everything but workers.
    fingerprint = settings.model_dump(exclude={"workers"})
    work = Path(work_dir) if work_dir is not None else None
    t_wall = time.time()
    results = _run_checked(info, out_path, encoder, settings, factory, trim, work, fingerprint, live.segment_done,
                           segment_s, live.frames, mark)
    stats: dict[str, Any] = {"frames": 0, **dict.fromkeys(SEGMENT_COUNTERS, 0)}
    for r in results:
        for key in stats:
            stats[key] += int(r.stats.get(key, 0)) if key != "frames" else r.frames
    stats["corrupt_frames_dropped"] = sum(r.corrupt_dropped for r in results)
    stats["segments"] = len(results)
    stats["segments_reused"] = sum(1 for r in results if r.stats.get("reused"))
    stats["frames_reused"] = sum(r.frames for r in results if r.stats.get("reused"))
    stats["segment_timing"] = segment_timing(results, t_wall)
    stats["audio"] = "muxed" if info.has_audio else None
    return stats


class _SegmentProgress:
    """Progress of a segmented run: frames of reused segments count as done from the start, frames of the running
    segment after each of its batches; speed and ETA from the frames worked in this run only (a resumed run that
    counted reused frames reported thousands of frames per second)."""

    def __init__(self, progress: ProgressCallback, total: int | None) -> None:
        self.progress, self.total = progress, total
        self.reused = self.finished = self.running = 0
        self.t_run = time.perf_counter()  # reused segments are reported at once, before any work

    def segment_done(self, res: SegmentResult) -> None:
        if res.stats.get("reused"):
            self.reused += res.frames
        else:
            self.finished += res.frames
        self.running = 0
        self._report()

    def frames(self, in_segment: int) -> None:
        self.running = in_segment
        self._report()

    def _report(self) -> None:
        now = time.perf_counter()
        worked = self.finished + self.running
        done = self.reused + worked
        dt = now - self.t_run
        fps = worked / dt if dt > 0 and worked else 0.0
        eta = (self.total - done) / fps if self.total and fps > 0 and self.total >= done else None
        self.progress(Progress(stage="swap", frames_done=done, frames_total=self.total, fps=fps, eta_s=eta))


def _run_checked(
    info: VideoInfo,
    out_path: Path,
    encoder: Any,
    settings: SwapSettings,
    factory: Callable[[], VideoFaceProcessor],
    trim: Any,
    work: Path | None,
    fingerprint: dict[str, Any],
    on_done: Callable[[SegmentResult], None],
    segment_s: float | None = None,
    on_frames: Callable[[int], None] | None = None,
    mark: OutputMark | None = None,
) -> list[SegmentResult]:
    """Run the segments; refuse to write an output when no segment saw a face (like the streaming path)."""
    holder: dict[str, list[SegmentResult]] = {}

    def guard(res: SegmentResult) -> None:
        holder.setdefault("r", []).append(res)
        on_done(res)

    import tempfile

    own = work is None
    seg_dir = work or Path(tempfile.mkdtemp(prefix=".fw-seg-", dir=out_path.parent))
    try:
        # First encode all segments into a scratch output name, check faces, then publish atomically.
        scratch = out_path.parent / f".{out_path.stem}.segments{out_path.suffix}"
        results = run_segments(info, scratch, encoder, workers=settings.workers, work_dir=seg_dir, trim=trim,
                               batch_size=settings.batch_size, skip_corrupt=settings.skip_corrupt,
                               processor_factory=factory, fingerprint_extra={"settings": fingerprint},
                               on_segment_done=guard, segment_s=segment_s, on_frames=on_frames,
                               mark=mark)
        if sum(int(r.stats.get("frames_with_faces", 0)) for r in results) == 0:
            scratch.unlink(missing_ok=True)
            raise NoFaceInTarget(f"no face found in any frame of {info.path.name}",
                                 hint="check the video shows a face at least ~40 px wide, upright")
        scratch.replace(out_path)
    finally:
        if own:
            import shutil

            shutil.rmtree(seg_dir, ignore_errors=True)
    return results


__all__ = ["SCENE_CUT_THRESHOLD", "VideoFaceProcessor", "make_segment_processor", "swap_video"]
