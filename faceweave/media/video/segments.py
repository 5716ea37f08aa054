"""Segment-parallel encoding: plan keyframe-aligned segments, encode each in a worker process, and join them
without re-encoding (audio muxed from the input). Conventions: see :mod:`faceweave.media.video`."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from faceweave.errors import CorruptStream
from faceweave.media.image import check_output_path
from faceweave.media.video.audio import _AudioPump
from faceweave.media.video.encode import (
    CONTAINER_OF_EXTENSION,
    EncoderSettings,
    EncodeThread,
    FrameProcessor,
    OutputMark,
    VideoWriter,
    _temp_output_name,
    apply_processor,
)
from faceweave.media.video.frames import FrameReader
from faceweave.media.video.probe import VideoInfo, scan_frame_timestamps
from faceweave.media.video.trim import Trim, _trim_shift
from faceweave.provenance.metadata import video_container_options


@dataclass(frozen=True)
class Segment:
    """Frames with ``start_pts <= pts < end_pts`` (``end_pts`` None: to the end). ``keyframe_aligned``: the input
    has a keyframe at ``start_pts`` (seeking lands exactly; otherwise the worker decodes and discards a lead-in)."""

    index: int
    start_pts: int
    end_pts: int | None
    frames: int
    keyframe_aligned: bool


def plan_segments(
    info: VideoInfo, count: int, *, trim: Trim | None = None, min_frames: int = 24, segment_s: float | None = None
) -> list[Segment]:
    """Split the (trimmed) frames into about ``count`` segments, each starting on an input keyframe where the
    input has keyframes near the cut; otherwise on the exact frame (the worker then decodes a lead-in).

    ``segment_s``: also cut so that no segment is much longer than this many seconds, however few workers run
    them (a segment is the unit of crash resume: the service cuts every video job this way)."""
    all_pts, is_key = scan_frame_timestamps(info)
    trim = trim or Trim()
    tb = info.time_base
    keep = np.asarray([trim.keeps(i, float(p * tb)) for i, p in enumerate(all_pts.tolist())], bool)
    pts, key = all_pts[keep], is_key[keep]
    n = len(pts)
    if n == 0:
        raise CorruptStream(f"{info.path.name}: no frame in the requested range", hint="check the trims")
    if segment_s is not None and segment_s > 0:
        count = max(count, round(n / max(1.0, float(info.fps) * segment_s)))
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
    mark: OutputMark | None = None,
) -> Path:
    """Concatenate segment files (same encoder settings, each starting on a keyframe) into ``output`` without
    re-encoding; audio from the original input is muxed in. Packet timestamps are shifted by the running end
    time when a segment restarts its clock (segments written by :func:`encode_segment` keep absolute pts, so
    the shift is zero for them). Atomic like :class:`VideoWriter`; ``mark``'s tags go on the joined file (its
    watermark is already in the segments' pictures), and MP4/MOV are written with ``+faststart``."""
    output = check_output_path(output, "video")
    container_name = CONTAINER_OF_EXTENSION[output.suffix.lower()]
    tmp = _temp_output_name(output)
    out = av.open(str(tmp), mode="w", format=container_name, options=video_container_options(output))
    pump: _AudioPump | None = None
    try:
        if mark is not None:
            out.metadata.update(mark.tags)
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
    mark: OutputMark | None = None  # the watermark goes into each segment's pictures; tags onto the joined file


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


def encode_segment(job: SegmentJob, on_frames: Callable[[int], None] | None = None) -> SegmentResult:
    """Decode one segment, process its frames, and encode it to ``job.output`` (atomically). Runs in a worker.

    ``on_frames`` (in-process runs only: it does not cross a process boundary) is called with the number of
    frames of this segment processed so far after every batch, for live progress."""

    seg = job.segment
    started = time.time()
    process = job.processor_factory() if job.processor_factory is not None else None
    ready = time.time()
    encoder = job.encoder
    if job.threads and not encoder.threads:
        encoder = replace(encoder, threads=job.threads)
    writer = VideoWriter(job.output, job.info, encoder, audio=False, trim=job.trim, pts_shift=job.pts_shift,
                         mark=job.mark, intermediate=True)
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
                processed = 0
                for batch in reader:
                    encode.put(apply_processor(process, batch), batch.pts)
                    processed += len(batch)
                    if on_frames is not None:
                        on_frames(processed)
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
    the first segment started (process start-up), mean processor set-up per segment, mean busy time per worker.
    Segments reused from an earlier run are left out: their marks are that run's clock, not this one's."""
    marks = [r.stats["timing"] for r in results
             if isinstance(r.stats.get("timing"), dict) and not r.stats.get("reused")]
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
    segment_s: float | None = None,
    on_frames: Callable[[int], None] | None = None,
    mark: OutputMark | None = None,
) -> list[SegmentResult]:
    """Segment-parallel encode: plan GOP-aligned segments, encode each in a worker process ('spawn': safe with
    torch threads), then concatenate without re-encoding and mux the audio. With ``work_dir`` finished segments
    are kept (``segment_NNNNN.<ext>`` + a ``.done`` marker) and reused by a rerun of the same job. ``threads``:
    decoder/encoder threads per worker (None: :func:`threads_per_worker`). ``segment_s``: the longest a segment
    should be (see :func:`plan_segments`; a saved plan of the same job wins). ``on_segment_done`` is called for
    every segment, reused ones first (their ``stats["reused"]`` is True); ``on_frames`` with the frames done in
    the running segment after each batch, only when ``workers <= 1`` (segments then run in this process). ``mark``: see
    :class:`VideoWriter` (it is part of the fingerprint: a reused segment carries this job's watermark).
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
        info, {"encoder": encoder_fingerprint(encoder), "trim": asdict(trim), "mark": mark,
               **(fingerprint_extra or {})}
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
        segments = plan_segments(info, max(workers, 1) * (2 if workers > 1 else 1), trim=trim, segment_s=segment_s)
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
                               processor_factory, threads_per_worker(workers) if threads is None else threads,
                               mark))

    def finished(res: SegmentResult) -> None:
        marker = res.output.with_suffix(res.output.suffix + ".done")
        marker.write_text(json.dumps({"frames": res.frames, "corrupt": res.corrupt_dropped, "stats": res.stats},
                                     default=str))
        results[res.index] = res
        if on_segment_done is not None:
            on_segment_done(res)

    try:
        if on_segment_done is not None:
            for reused in sorted(results.values(), key=lambda r: r.index):
                on_segment_done(reused)
        if workers <= 1:
            for job in jobs:
                finished(encode_segment(job, on_frames))
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
        concat_segments([r.output for r in ordered if r.frames > 0], output, info, trim=trim, pts_shift=pts_shift,
                        mark=mark)
    finally:
        if own_dir:
            shutil.rmtree(seg_dir, ignore_errors=True)
    return ordered
