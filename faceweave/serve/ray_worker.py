"""The GPU actor of the Ray executor: loads and warms the models once, then serves many jobs' work items.

One actor per GPU (``num_gpus=1``; Ray sets ``CUDA_VISIBLE_DEVICES``, so the actor's ``cuda`` is its own GPU). Work
items are idempotent and self-contained — everything comes from object storage and goes back to it — so any actor
on any node can take any item, and a pre-empted actor's item is simply given to another:

- :meth:`SwapWorker.plan_video`: probe the target and plan keyframe-aligned segments;
- :meth:`SwapWorker.run_segment`: swap one segment and upload its file (one storage key per attempt);
- :meth:`SwapWorker.join`: concatenate the segment files without re-encoding, mux the audio, upload the result;
- :meth:`SwapWorker.swap_images`: a batch of image jobs from many requests, their model forwards run together.

A job error a user caused (:class:`~faceweave.errors.FaceweaveError`) comes back as an ``error`` entry, not an
exception, so the executor can tell it from an actor that died.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from faceweave.errors import FaceweaveError, NoFaceInTarget
from faceweave.serve.executor import _engine_for, batch_engine, output_extension, warm_up
from faceweave.serve.resilience import RetryingStorage
from faceweave.settings import SwapSettings

KEEP_JOB_DIRS = 4  # inputs of this many recent jobs stay cached on the actor (a job's segments reuse them)


@dataclass(frozen=True)
class WorkSpec:
    """One job as an actor sees it: where its inputs are and with which settings (picklable)."""

    job_id: str
    settings: dict[str, Any]
    source_keys: list[str]
    target_key: str
    storage_url: str
    storage_options: dict[str, Any] = field(default_factory=dict, repr=False)  # may hold credentials


def error_entry(exc: FaceweaveError) -> dict[str, Any]:
    return {"type": type(exc).__name__, "code": exc.code, "message": exc.one_line()}


class SwapWorker:
    """The actor's class (the executor wraps it with ``ray.remote``). ``warm_settings``: a job's default settings,
    whose models are loaded and run once at start so the first job does not pay."""

    def __init__(self, warm_settings: dict[str, Any] | None = None) -> None:
        self.state: dict[str, Any] = {}
        self.root = Path(tempfile.mkdtemp(prefix="faceweave-actor-"))
        self.gpu = threading.Lock()  # one work item at a time on the GPU; progress() answers meanwhile
        self._storages: dict[str, RetryingStorage] = {}
        self._jobs: list[str] = []
        self._progress: dict[tuple[str, int], int] = {}
        if warm_settings is not None:
            warm_up(self.state, SwapSettings.build(**warm_settings))

    # --- plumbing ------------------------------------------------------------------------------------------
    def ping(self) -> dict[str, Any]:
        import ray

        ctx = ray.get_runtime_context()
        return {"pid": os.getpid(), "node": ctx.get_node_id(), "gpus": [str(g) for g in ray.get_gpu_ids()]}

    def progress(self, job_id: str, index: int) -> int:
        """Frames done so far in the segment being swapped (0 when it is not running here)."""
        return self._progress.get((job_id, index), 0)

    def _storage(self, spec: WorkSpec) -> RetryingStorage:
        key = spec.storage_url + json.dumps(spec.storage_options, sort_keys=True, default=str)
        if key not in self._storages:
            self._storages[key] = RetryingStorage(spec.storage_url, **spec.storage_options)
        return self._storages[key]

    def _job_dir(self, job_id: str) -> Path:
        if job_id not in self._jobs:
            self._jobs.append(job_id)
            while len(self._jobs) > KEEP_JOB_DIRS:
                shutil.rmtree(self.root / self._jobs.pop(0), ignore_errors=True)
        path = self.root / job_id
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _input(self, spec: WorkSpec, key: str, folder: Path | None = None) -> Path:
        """The input ``key`` as a local file: downloaded into ``folder`` (default: the job's cached inputs)."""
        storage = self._storage(spec)
        local = storage.local_path(key)
        if local is not None:
            return local
        dest = (folder or self._job_dir(spec.job_id) / "inputs") / key.replace("/", "_")
        if not dest.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(dest.name + ".part")
            storage.download(key, tmp)
            os.replace(tmp, dest)
        return dest

    def _video(self, spec: WorkSpec) -> tuple[SwapSettings, Any, Any, Path]:
        from faceweave.media.video.probe import probe_video
        from faceweave.media.video.trim import trim_from_settings

        settings = SwapSettings.build(**spec.settings)
        target = self._input(spec, spec.target_key)
        info = probe_video(target, max_duration_s=settings.max_duration_s, max_pixels=settings.max_pixels)
        return settings, info, trim_from_settings(settings.trim_start, settings.trim_end, info), target

    # --- work items ----------------------------------------------------------------------------------------
    def plan_video(self, spec: WorkSpec, segment_frames: int) -> dict[str, Any]:
        """``{"segments": [Segment fields…], "frames_total": n}`` or ``{"error": …}``."""
        from dataclasses import asdict

        from faceweave.media.video.segments import plan_segments

        try:
            _, info, trim, _ = self._video(spec)
            total = info.frames or 0
            count = max(1, -(-total // segment_frames)) if total else 1
            segments = plan_segments(info, count, trim=trim, min_frames=min(24, segment_frames))
            return {"segments": [asdict(s) for s in segments], "frames_total": sum(s.frames for s in segments)}
        except FaceweaveError as exc:
            return {"error": error_entry(exc)}

    def run_segment(self, spec: WorkSpec, segment: dict[str, Any], first_start_pts: int, key: str) -> dict[str, Any]:
        """Swap one segment and upload it to ``key``: ``{"frames", "stats"}`` or ``{"error": …}``."""
        from faceweave.media.image import read_image
        from faceweave.media.video.encode import resolve_encoder
        from faceweave.media.video.segments import Segment, SegmentJob, encode_segment
        from faceweave.media.video.trim import _trim_shift
        from faceweave.pipeline.engine import job_references
        from faceweave.pipeline.video import VideoFaceProcessor
        from faceweave.provenance.mark import Marking, video_output_mark

        seg = Segment(**segment)
        slot = (spec.job_id, seg.index)
        with self.gpu:
            try:
                settings, info, trim, _ = self._video(spec)
                out = self._job_dir(spec.job_id) / f"segment_{seg.index:05d}.mp4"
                encoder = resolve_encoder(settings.video_codec, settings.crf, settings.preset, settings.pix_fmt, out)
                engine = _engine_for(self.state, settings)
                paths = [self._input(spec, k) for k in spec.source_keys]
                images = [read_image(p, max_pixels=settings.max_pixels).rgb for p in paths]
                prepared = engine.prepare_sources(images)
                refs = job_references(engine, settings, None, images)
                self._progress[slot] = 0

                def processor() -> Any:
                    inner = VideoFaceProcessor(engine, prepared, refs, settings)
                    return _Counting(inner, self._progress, slot)

                # every segment of the job carries the same watermark: the job id makes the payload
                mark = video_output_mark(Marking.from_settings(settings, spec.job_id))
                job = SegmentJob(info, seg, out, encoder, settings.batch_size, trim, settings.skip_corrupt,
                                 _trim_shift(info, trim, first_start_pts), processor, threads=0, mark=mark)  # fmt: skip
                result = encode_segment(job)
                self._storage(spec).upload(out, key)
                out.unlink(missing_ok=True)
                return {"frames": result.frames, "corrupt": result.corrupt_dropped, "stats": result.stats}
            except FaceweaveError as exc:
                return {"error": error_entry(exc)}
            finally:
                self._progress.pop(slot, None)

    def join(self, spec: WorkSpec, segment_keys: list[str], first_start_pts: int, result_key: str) -> dict[str, Any]:
        """Concatenate the segments (stream copy) with the input's audio; upload: ``{"bytes"}`` or ``{"error"}``."""
        from faceweave.media.video.segments import concat_segments
        from faceweave.media.video.trim import _trim_shift
        from faceweave.provenance.c2pa import Ingredient
        from faceweave.provenance.mark import Marking, mark_video_output, video_output_mark

        with self.gpu:
            try:
                settings, info, trim, _ = self._video(spec)
                marking = Marking.from_settings(settings, spec.job_id)
                work = Path(tempfile.mkdtemp(prefix="join-", dir=self._job_dir(spec.job_id)))
                try:
                    files = []
                    for i, key in enumerate(segment_keys):
                        files.append(self._storage(spec).download(key, work / f"segment_{i:05d}.mp4"))
                    output = concat_segments(files, work / "result.mp4", info, trim=trim,
                                             pts_shift=_trim_shift(info, trim, first_start_pts),
                                             mark=video_output_mark(marking))
                    ingredients = [Ingredient.of_file("source", self._input(spec, k)) for k in spec.source_keys]
                    ingredients.append(Ingredient.of_file("target", self._input(spec, spec.target_key)))
                    mark_video_output(output, marking, ingredients)
                    return {"bytes": self._storage(spec).upload(output, result_key), "audio": info.has_audio}
                finally:
                    shutil.rmtree(work, ignore_errors=True)
            except FaceweaveError as exc:
                return {"error": error_entry(exc)}

    def swap_images(self, specs: list[WorkSpec], result_keys: list[str]) -> list[dict[str, Any]]:
        """Image jobs batched across requests: their model forwards run together
        (:func:`~faceweave.pipeline.image_batch.swap_image_files`: one analysis call over every source and target,
        one swap call per crop size), each job with its own settings, error and marking. One entry per job in
        order; each carries ``forwards``, the engine calls the whole batch took (counted on the real engine)."""
        from collections import Counter

        from faceweave.pipeline.image_batch import CountingEngine, ImageFileJob, swap_image_files

        entries: list[dict[str, Any] | None] = [None] * len(specs)
        jobs: list[ImageFileJob] = []
        positions: list[int] = []
        calls: Counter[str] = Counter()
        counters: list[CountingEngine] = []

        def engine_for(settings: SwapSettings) -> CountingEngine:
            counters.append(CountingEngine(batch_engine(self.state, settings)))
            return counters[-1]

        with self.gpu:
            # the batch's own folder: the job-folder cache keeps only KEEP_JOB_DIRS jobs, fewer than a batch holds
            work = Path(tempfile.mkdtemp(prefix="images-", dir=self.root))
            try:
                for n, spec in enumerate(specs):
                    try:
                        settings = SwapSettings.build(**spec.settings)
                        folder = work / f"{n:02d}"
                        folder.mkdir()
                        target = self._input(spec, spec.target_key, folder)
                        local = folder / f"result{output_extension('image', target)}"
                        sources = [self._input(spec, k, folder) for k in spec.source_keys]
                    except FaceweaveError as exc:
                        entries[n] = {"error": error_entry(exc)}
                        continue
                    jobs.append(ImageFileJob(sources, target, local, settings))
                    positions.append(n)
                for n, job, result in zip(positions, jobs, swap_image_files(jobs, engine_for), strict=True):
                    try:
                        if isinstance(result, FaceweaveError):
                            raise result
                        size = self._storage(specs[n]).upload(job.output, result_keys[n])
                        entries[n] = {"bytes": size, "faces": result.faces_swapped, "kind": result.kind,
                                      "stats": dict(result.stats)}  # fmt: skip
                    except FaceweaveError as exc:
                        entries[n] = {"error": error_entry(exc)}
            finally:
                shutil.rmtree(work, ignore_errors=True)
        for counter in counters:
            calls.update(counter.calls)
        return [{**e, "forwards": dict(calls)} for e in entries if e is not None]


class _Counting:
    """A frame processor that counts the frames it has done into the actor's progress table."""

    def __init__(self, inner: Any, table: dict[tuple[str, int], int], slot: tuple[str, int]) -> None:
        self.inner, self.table, self.slot = inner, table, slot
        self.stats = inner.stats

    def process_batch(self, batch: Any) -> Any:
        out = self.inner.process_batch(batch)
        self.table[self.slot] = self.table.get(self.slot, 0) + len(batch.pts)
        return out

    def __call__(self, batch: Any) -> Any:
        return self.process_batch(batch)


def no_face_error(total_with_faces: int, name: str) -> dict[str, Any] | None:
    """The job's error when no segment saw a face (the same rule as the single-process path)."""
    if total_with_faces:
        return None
    return error_entry(NoFaceInTarget(f"no face found in any frame of {name}",
                                      hint="check the video shows a face at least ~40 px wide, upright"))


__all__ = ["SwapWorker", "WorkSpec", "no_face_error"]
