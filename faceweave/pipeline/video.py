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
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import torch

from faceweave.analysis.face import Face
from faceweave.analysis.identity import same_person_distance
from faceweave.analysis.track import FaceTracker, Track, scene_change_score
from faceweave.errors import NoFaceInTarget, NoMatchingFace
from faceweave.media.video.encode import EncodeThread, VideoWriter, resolve_encoder
from faceweave.media.video.frames import FrameBatch, FrameReader
from faceweave.media.video.probe import VideoInfo, probe_video
from faceweave.media.video.segments import SegmentResult, run_segments, segment_timing
from faceweave.media.video.trim import _trim_shift, trim_from_settings
from faceweave.pipeline.engine import PreparedSource, SwapEngine, job_references
from faceweave.progress import Progress, ProgressCallback, no_progress
from faceweave.result import SwapResult
from faceweave.settings import SwapSettings

SCENE_CUT_THRESHOLD = 0.12  # mean |Δ| of 64×36 grey thumbnails, in [0, 1]: above this the shot changed
QUEUE_BATCHES = 3  # batches waiting between stages (bounded memory: ~3 × batch_size frames per queue)


@dataclass
class _PlannedBatch:
    """A batch after :meth:`VideoFaceProcessor.plan_batch`: its planes on the device, the RGB of the frames to swap
    (``rgb`` ``(len(index), 3, H, W)``, None when none), and one plan row per frame in ``index``."""

    batch: FrameBatch
    yuv: Any
    rgb: torch.Tensor | None
    index: list[int]
    plans: list[list[tuple[Face, int]]]


class VideoFaceProcessor:
    """Turns :class:`FrameBatch` es into swapped ``(B, H, W, 3)`` uint8 RGB frames, keeping tracks across calls.

    Args:
        engine: a :class:`~faceweave.pipeline.engine.SwapEngine` (or anything with the same methods).
        sources: prepared once per job with ``engine.prepare_sources``.
        reference: identity embeddings for ``selector="reference"``.
    """

    def __init__(
        self,
        engine: SwapEngine,
        sources: Sequence[PreparedSource],
        reference: Sequence[torch.Tensor] | None = None,
        settings: SwapSettings | None = None,
    ) -> None:
        self.engine = engine
        # the job's settings (detect_every, smoothing, selector…); an engine reused across jobs may carry others
        self.settings: SwapSettings = settings or engine.settings
        self.sources = list(sources)
        self.reference = list(reference) if reference is not None else None
        self.tracker = FaceTracker(identity_threshold=same_person_distance(self.settings.recogniser),
                                   smoothing=self.settings.smoothing)
        self._prev_thumb: np.ndarray | None = None
        self._frames_since_detect = 10**9
        self.stats: dict[str, Any] = {
            "frames": 0,
            "frames_with_faces": 0,
            "frames_swapped": 0,
            "faces_swapped": 0,
            "detections": 0,
            "scene_cuts": 0,
            "tracks": 0,
        }

    # --- per-track decisions -----------------------------------------------------------------------------
    def _decide(self, frame: torch.Tensor, pairs: list[tuple[Track, Face]], born: list[int]) -> None:
        """Decide selection + source for the tracks born in this frame, once (the same person keeps their source
        when people cross). ``pairs``: every ``(track, face)`` of the frame; ``born``: positions of new tracks."""
        settings = self.settings
        faces = [f for _, f in pairs]
        if settings.selector == "reference":
            faces = self.engine.identify(frame, [faces])[0]
            for i in born:
                pairs[i][0].embedding = faces[i].embedding
        try:
            plan = self.engine.select(faces, self.sources, self.reference)
        except NoMatchingFace:
            plan = []
        chosen = {id(f): src for f, src in plan}  # select returns the very objects it was given
        already_selected = any(tr.selected for tr in self.tracker.tracks if tr.decided)
        for i in born:
            track = pairs[i][0]
            src = chosen.get(id(faces[i]))
            if settings.selector in ("one", "index") and already_selected:
                src = None  # one face per video: an existing selected track keeps the role
            track.selected = src is not None
            track.source_index = int(src or 0)
            track.decided = True
            already_selected = already_selected or (track.selected and settings.selector in ("one", "index"))

    # --- one batch ---------------------------------------------------------------------------------------
    def __call__(self, batch: FrameBatch) -> np.ndarray:
        """Process a batch and return ``(B, H, W, 3)`` uint8 RGB (for callers that want arrays; the video pipeline
        uses :meth:`process_batch`, which keeps the frames YUV)."""
        out = self.process_batch(batch)
        return out if isinstance(out, np.ndarray) else out.frames

    def process_batch(self, batch: FrameBatch) -> FrameBatch | np.ndarray:
        """Process a decoded batch; returns what to encode: a :class:`FrameBatch` whose frames without a swapped
        face are the decoded frames themselves (bit-exact, never converted), or — with ``provenance_label`` —
        ``(B, H, W, 3)`` uint8 RGB. The planes go to the engine's device once per batch (1.5 bytes per pixel) and
        become RGB there; swapped frames come back once, as planes.

        The same as ``finish_batch(plan_batch(batch))``: the streaming pipeline runs the two halves of consecutive
        batches at the same time (see :func:`_swap_stream`)."""
        return self.finish_batch(self.plan_batch(batch))

    def plan_batch(self, batch: FrameBatch) -> _PlannedBatch:
        """First half, in frame order (it updates the tracks): scene cuts, detection or tracking, selection."""
        engine, settings = self.engine, self.settings
        b_count = len(batch)
        # One host→device copy per batch: packed Y/U/V uint8 (pinned for CUDA); every stage then indexes the copy.
        frames_yuv = batch.to_device(engine.device)
        thumbs = frames_yuv.luma_thumbnails().cpu().numpy()  # (B, 36, 64) grey, from the luma plane on the device
        detect_flags, cut_flags = [], []
        for k in range(b_count):
            thumb = thumbs[k]
            cut = self._prev_thumb is not None and scene_change_score(self._prev_thumb, thumb) > SCENE_CUT_THRESHOLD
            self._prev_thumb = thumb
            self.stats["scene_cuts"] += int(cut)
            due = self._frames_since_detect + 1 >= settings.detect_every
            cut_flags.append(cut)
            detect_flags.append(bool(cut or due))
            self._frames_since_detect = 0 if detect_flags[-1] else self._frames_since_detect + 1

        rgb_cache: list[torch.Tensor] = []

        def as_float(sel: list[int] | slice) -> torch.Tensor:
            # The batch becomes float (B, 3, H, W) RGB [0, 1] on the engine's device once, on first use, and every
            # stage (detection, refinement, swap, and the encoder's "what changed" test) reads that one conversion:
            # converting per stage cost 3 conversions per frame (1.2 s of 10 s at 480p on 2 cores).
            if not rgb_cache:
                rgb_cache.append(frames_yuv.rgb(slice(None), engine.dtype))
            full = rgb_cache[0]
            if isinstance(sel, slice):
                return full[sel]
            return full if sel == list(range(b_count)) else full[sel]

        det_idx = [k for k in range(b_count) if detect_flags[k]]
        detected: dict[int, list[Face]] = {}
        if det_idx:
            found = engine.analyze(as_float(det_idx))
            detected = dict(zip(det_idx, found, strict=True))
            self.stats["detections"] += len(det_idx)

        # Every tracked frame of the batch is refined in ONE batched call (per-call overhead, not the net, is what
        # costs on a GPU: one call per run of frames between detections was 7 calls per batch of 32). Its seeds are
        # known before any refinement: a frame after the batch's first detection is seeded by the faces detected at
        # the last detection before it (after a detection every live track is one of that frame's faces), earlier
        # frames by the tracks as they stood before the batch. A seed is up to detect_every - 1 frames old, well
        # inside FaceMesh's crop margin. The track update and smoothing then go frame by frame, in time order.
        seeds_at: dict[int, list[Face]] = {}
        last_seeds = list(self.tracker.seeds())
        for m in range(b_count):
            if m in detected:
                last_seeds = detected[m]
            elif last_seeds:
                seeds_at[m] = list(last_seeds)
        refined_at: dict[int, list[Face]] = {}
        if seeds_at:
            tracked = sorted(seeds_at)
            refined_at = dict(zip(tracked, engine.refine(as_float(tracked), [seeds_at[m] for m in tracked]),
                                  strict=True))

        plans: list[list[tuple[Face, int]]] = []
        for m in range(b_count):
            t = float(batch.times[m])
            if m in detected:
                if cut_flags[m]:
                    self.tracker.reset()  # a new shot: old tracks (and their decisions) do not carry over
                pairs = self.tracker.update(detected[m], t, detected=True)
            elif m in seeds_at:
                refined = [f for f in refined_at[m] if f.landmark_score is None or f.landmark_score >= 0.5]
                pairs = self.tracker.update(refined, t, detected=False)
                if len(refined) < len(seeds_at[m]):
                    self._frames_since_detect = 10**9  # lost a face: detect again at the next batch
            else:
                pairs = self.tracker.update([], t, detected=False)
            born = [i for i, (tr, _) in enumerate(pairs) if not tr.decided]
            if born:
                self._decide(as_float(slice(m, m + 1)), pairs, born)
            if pairs:
                self.stats["frames_with_faces"] += 1
            plans.append([(f, tr.source_index) for tr, f in pairs if tr.selected])
        self.stats["tracks"] = self.tracker.tracks_started
        idx = [k for k in range(b_count) if plans[k]]
        return _PlannedBatch(batch, frames_yuv, as_float(idx) if idx else None, idx, [plans[k] for k in idx])

    def finish_batch(self, planned: _PlannedBatch) -> FrameBatch | np.ndarray:
        """Second half, independent of other batches: swap the planned faces, back to planes, label."""
        batch, settings = planned.batch, self.settings
        out = batch
        if planned.index:
            assert planned.rgb is not None
            swapped = self.engine.swap(planned.rgb, planned.plans, self.sources)
            # back to planes on the device (untouched pixels keep theirs exactly), one device→host copy
            packed = planned.yuv.encode(swapped, planned.index, before=planned.rgb)
            out = batch.replaced(planned.index, packed.cpu().numpy())
            self.stats["frames_swapped"] += len(planned.index)
            self.stats["faces_swapped"] += sum(len(row) for row in planned.plans)
        self.stats["frames"] += len(batch)
        if settings.provenance_label:
            from faceweave.media.label import draw_label

            return np.stack([draw_label(f) for f in out.frames])
        return out


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
) -> SwapResult:
    """Swap faces of ``sources`` into the video ``target``, writing ``output`` atomically (audio kept).

    Args:
        sources: source image paths (one face each; several photos of one person pick by head pose).
        target: a video (MP4/MOV/MKV/WebM…).
        output: ``.mp4``, ``.mkv``, ``.mov`` or ``.webm``.
        settings: the job's settings (codec, crf, preset, pix_fmt, trims, workers, detect_every, smoothing…).
        progress: called with frames done, fps and ETA after each batch.
        work_dir: keep finished segments here; a rerun of the same job reuses them (crash resume).
        engine: an existing engine to reuse (single-process path); default: a new one for ``settings``.
        reference: reference image for ``selector="reference"`` (default: the sources).

    Raises:
        NoFaceInTarget: no frame of the video had a face (nothing is written).
        and the media errors of :func:`~faceweave.media.video.probe.probe_video` and the reader.
    """
    from faceweave.media.image import check_output_path, read_image

    t_start = time.perf_counter()
    out_path = check_output_path(Path(output), "video")
    encoder = resolve_encoder(settings.video_codec, settings.crf, settings.preset, settings.pix_fmt, out_path)
    src_images = [read_image(Path(s), max_pixels=settings.max_pixels).rgb for s in sources]
    info = probe_video(Path(target), max_duration_s=settings.max_duration_s, max_pixels=settings.max_pixels)
    trim = trim_from_settings(settings.trim_start, settings.trim_end, info)
    total = _expected_frames(info)
    progress(Progress(stage="prepare", frames_done=0, frames_total=total))

    if engine is None:
        engine = SwapEngine(settings)
    if settings.workers <= 1:  # with several workers each warms its own engine (make_segment_processor)
        warm_gpu_engine(engine, (info.height, info.width))
    prepared = engine.prepare_sources(src_images)
    refs = job_references(engine, settings, reference, src_images)

    stats: dict[str, Any]
    # Both paths may run the face work in this process (segments do so without parallelism, e.g. a work_dir resume).
    with gpu_host_threads(getattr(engine, "device", None)):
        if settings.workers > 1 or work_dir is not None:
            stats = _swap_segments(info, out_path, encoder, settings, engine, prepared, refs, trim, work_dir,
                                   progress, total, t_start)
        else:
            stats = _swap_stream(info, out_path, encoder, settings, engine, prepared, refs, trim, progress, total,
                                 t_start)
    seconds = time.perf_counter() - t_start
    frames = int(stats["frames"])
    stats["fps"] = frames / seconds if seconds else 0.0
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
                "encode_wait_s": round(self.encode_wait_s, 3), "encode_busy_s": round(encode_busy_s, 3)}


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
) -> dict[str, Any]:
    """Single process: decode thread → queue → face stages (this thread) → queue → encode thread."""
    processor = VideoFaceProcessor(engine, prepared, refs, settings)

    def open_writer(first_pts: int) -> VideoWriter:
        return VideoWriter(out_path, info, encoder, trim=trim, pts_shift=_trim_shift(info, trim, first_pts))

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
                timing.plan_s += time.perf_counter() - t1
                if pending is not None:
                    timing.deliver(encode, pending)
                    _report(progress, processor.stats["frames"], total, t_start)
                pending = (swapper.submit(processor.finish_batch, planned), batch.pts)
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
    t_start: float,
) -> dict[str, Any]:
    """Segment-parallel path: each worker process runs decode → face stages → encode on its segment."""
    if settings.workers > 1:
        # Sources travel to the worker processes on the CPU; each worker moves them to its own device.
        factory: Callable[[], VideoFaceProcessor] = functools.partial(
            make_segment_processor, settings, [p.to("cpu") for p in prepared],
            None if refs is None else [r.cpu() for r in refs], (info.height, info.width))
    else:  # segments run in this process (work_dir resume without parallelism): reuse the loaded engine
        factory = functools.partial(VideoFaceProcessor, engine, list(prepared), refs, settings)
    done = {"frames": 0}

    def on_done(res: SegmentResult) -> None:
        done["frames"] += res.frames
        _report(progress, done["frames"], total, t_start)

    # A crash-resumable job must be rerun with the same settings; the fingerprint covers everything but workers.
    fingerprint = settings.model_dump(exclude={"workers"})
    work = Path(work_dir) if work_dir is not None else None
    t_wall = time.time()
    results = _run_checked(info, out_path, encoder, settings, factory, trim, work, fingerprint, on_done)
    stats: dict[str, Any] = {"frames": 0, "frames_with_faces": 0, "frames_swapped": 0, "faces_swapped": 0,
                             "detections": 0, "scene_cuts": 0, "tracks": 0}
    for r in results:
        for key in stats:
            stats[key] += int(r.stats.get(key, 0)) if key != "frames" else r.frames
    stats["corrupt_frames_dropped"] = sum(r.corrupt_dropped for r in results)
    stats["segments"] = len(results)
    stats["segments_reused"] = sum(1 for r in results if r.stats.get("reused"))
    stats["segment_timing"] = segment_timing(results, t_wall)
    stats["audio"] = "muxed" if info.has_audio else None
    return stats


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
                               on_segment_done=guard)
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


__all__ = ["VideoFaceProcessor", "make_segment_processor", "swap_video"]
