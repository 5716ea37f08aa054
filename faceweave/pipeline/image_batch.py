"""Image jobs of many requests swapped together: one set of model forwards for the whole batch.

The jobs of a batch may come from different users, with different sources, target sizes and settings. Jobs whose
settings load the same models and run the same forwards (:func:`forward_key`: everything but the per-job choices
in :data:`PER_JOB_FIELDS`) share one engine and run as one batch:

1. every distinct source image and every target are stacked on one zero-padded canvas and analysed by one
   :meth:`SwapEngine.analyze` call (detection over the views of all images, FaceMesh over all their faces), each
   image looked at as if alone (``sizes``), so the faces equal those of a one-by-one run;
2. for ``selector="reference"`` jobs, one :meth:`SwapEngine.identify` call over their targets;
3. each job selects its own faces with its own settings (a job whose target has no face, or no matching face,
   fails alone with its typed error);
4. one :meth:`SwapEngine.swap` call over the targets of all jobs, each face with its own job's source; the
   built-in swapper works at one crop size per call (its largest face's), so jobs whose faces want different
   crop sizes (:meth:`SwapEngine.swap_key`, 32-px steps) get one call per size.

Jobs of different keys run as separate batches, one after the other. What is not batched: the reference images of
``selector="reference"`` jobs with a ``--reference`` (analysed per job, as the one-by-one path does).
"""

from __future__ import annotations

import functools
import hashlib
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch

from faceweave.analysis.face import Face
from faceweave.analysis.select import select_faces
from faceweave.device import to_device_async
from faceweave.errors import FaceweaveError, NoFaceInSource, NoFaceInTarget
from faceweave.pipeline.engine import (
    PreparedSource,
    SwapEngine,
    host_rgb,
    job_references,
    rgb_to_float,
    to_tensor,
    to_uint8,
)
from faceweave.result import SwapResult
from faceweave.settings import SwapSettings

if TYPE_CHECKING:
    from faceweave.media.image import LoadedImage

#: settings a job keeps to itself: read after the forwards (selection, output, provenance) or by videos only, so
#: jobs that differ only in these share one batch. Any other field (model, dtype, device, swap options…) is part
#: of :func:`forward_key`.
PER_JOB_FIELDS = frozenset({
    "selector", "face_index", "reference_threshold", "provenance_label", "watermark", "c2pa", "c2pa_cert", "c2pa_key",
    "max_pixels", "max_duration_s", "video_codec", "crf", "preset", "pix_fmt", "trim_start", "trim_end", "workers",
    "detect_every", "smoothing", "skip_corrupt", "devices",
})


def forward_key(settings: SwapSettings) -> str:
    """Jobs with one key can share every model forward (and one engine)."""
    return settings.model_dump_json(exclude=set(PER_JOB_FIELDS))


class BatchEngine(Protocol):
    """What a batch needs of an engine: a :class:`SwapEngine` or a :class:`CountingEngine` around one."""

    settings: SwapSettings
    device: torch.device
    dtype: torch.dtype

    def analyze(self, frames: torch.Tensor, sizes: Sequence[tuple[int, int]] | None = None) -> list[list[Face]]: ...
    def identify(self, frames: torch.Tensor, faces: list[list[Face]],
                 sizes: Sequence[tuple[int, int]] | None = None) -> list[list[Face]]: ...
    def swap(self, frames: torch.Tensor, plan: Sequence[Sequence[tuple[Face, int]]],
             sources: Sequence[PreparedSource]) -> torch.Tensor: ...
    def swap_key(self, plan: Sequence[Sequence[tuple[Face, int]]],
                 sources: Sequence[PreparedSource]) -> int | None: ...
    def prepare_source(self, image: torch.Tensor, face: Face) -> PreparedSource: ...
    def reference_embeddings(self, images: Sequence[np.ndarray]) -> list[torch.Tensor]: ...


class CountingEngine:
    """A :class:`SwapEngine` that counts the calls of its model stages (``analyze``, ``identify``, ``swap``,
    ``reference_embeddings``) in :attr:`calls`: how many forwards a batch of jobs took (the Ray actor reports it)."""

    def __init__(self, engine: SwapEngine) -> None:
        self.engine = engine
        self.settings, self.device, self.dtype = engine.settings, engine.device, engine.dtype
        self.calls: Counter[str] = Counter()

    def analyze(self, frames: torch.Tensor, sizes: Sequence[tuple[int, int]] | None = None) -> list[list[Face]]:
        self.calls["analyze"] += 1
        return self.engine.analyze(frames, sizes)

    def identify(self, frames: torch.Tensor, faces: list[list[Face]],
                 sizes: Sequence[tuple[int, int]] | None = None) -> list[list[Face]]:
        self.calls["identify"] += 1
        return self.engine.identify(frames, faces, sizes)

    def swap(self, frames: torch.Tensor, plan: Sequence[Sequence[tuple[Face, int]]],
             sources: Sequence[PreparedSource]) -> torch.Tensor:
        self.calls["swap"] += 1
        return self.engine.swap(frames, plan, sources)

    def swap_key(self, plan: Sequence[Sequence[tuple[Face, int]]], sources: Sequence[PreparedSource]) -> int | None:
        return self.engine.swap_key(plan, sources)

    def prepare_source(self, image: torch.Tensor, face: Face) -> PreparedSource:
        return self.engine.prepare_source(image, face)

    def reference_embeddings(self, images: Sequence[np.ndarray]) -> list[torch.Tensor]:
        self.calls["reference_embeddings"] += 1
        return self.engine.reference_embeddings(images)


@dataclass(frozen=True)
class ImageJob:
    """One image job of a batch: RGB ``(H, W, 3)`` uint8 sources and target, the job's own settings, and for
    ``selector="reference"`` an optional reference image (default: the sources)."""

    sources: Sequence[np.ndarray]
    target: np.ndarray
    settings: SwapSettings
    reference: np.ndarray | None = None
    staged: StagedImages | None = None  # the images already on a device (stage_image_job)


@dataclass(frozen=True)
class StagedImages:
    """A job's images on ``device`` already, ``(H, W, 3)`` uint8 per source and for the target, and the sources'
    digests: made by the request's own thread (:func:`stage_image_job`), so the :sync batch's thread, which every
    request waits for, neither copies nor hashes them (on an H100 those were a fifth of its busy time at 8 clients)."""

    device: torch.device
    sources: tuple[torch.Tensor, ...]
    target: torch.Tensor
    source_digests: tuple[bytes, ...]


def stage_image_job(job: ImageJob, device: torch.device) -> ImageJob:
    """``job`` with its images copied to ``device`` (pinned and asynchronous on a GPU: the copy is queued, this thread
    does not wait) and its sources' digests: call it on the request's thread before the job joins a batch. A batch on
    another device ignores them and copies the images itself."""
    def upload(rgb: np.ndarray) -> torch.Tensor:
        return to_device_async(host_rgb(rgb), device)

    staged = StagedImages(device, tuple(upload(s) for s in job.sources), upload(job.target),
                          tuple(_digest(s) for s in job.sources))
    return replace(job, staged=staged)


@dataclass(frozen=True)
class ImageOutcome:
    """A job's result: ``image`` ``(H, W, 3)`` uint8 RGB (pixels the swap left alone are the target's, bit for
    bit), faces swapped and faces found in the target."""

    image: np.ndarray
    swapped: int
    found: int


@dataclass(frozen=True)
class DeviceOutcome:
    """A job's result still on the engine's device: ``swapped_frame`` and ``target_frame`` ``(1, 3, h, w)`` float
    ``[0, 1]`` (views of the batch's tensors, which they keep alive), the target ``(h, w, 3)`` uint8 RGB, faces
    swapped and found. :meth:`to_host` makes the :class:`ImageOutcome` on the caller's thread: the :sync batch's
    thread leaves that host work (the device→host copy, rounding, restoring the untouched pixels) to each request's
    own thread, so it goes on to the next batch's forwards."""

    swapped_frame: torch.Tensor
    target_frame: torch.Tensor
    target: np.ndarray
    swapped: int
    found: int

    def to_host(self) -> ImageOutcome:
        with torch.inference_mode():
            image = to_uint8(self.swapped_frame)[0]
            if not uint8_round_trip_exact(self.swapped_frame.device, self.swapped_frame.dtype):
                # a pixel the swap left alone is the target's float value, which would not round back to the
                # target's byte: put the target's bytes back (a second download and a masked copy)
                unchanged = (self.swapped_frame == self.target_frame).all(1)[0].cpu().numpy()
                np.copyto(image, self.target, where=unchanged[:, :, None])
        return ImageOutcome(image=image, swapped=self.swapped, found=self.found)


@functools.lru_cache(maxsize=16)
def uint8_round_trip_exact(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether every byte value survives :func:`to_tensor` then :func:`to_uint8` on ``device`` in ``dtype`` (checked
    there once: true for float32, float16 and bfloat16 on the CPU). Then a pixel the swap left alone, still the
    target's float value, rounds back to the target's byte by itself, and :meth:`DeviceOutcome.to_host` needs no
    mask (on an H100 the mask's download and masked copy were most of its 30 ms for a 1920×1002 image)."""
    values = np.repeat(np.arange(256, dtype=np.uint8).reshape(1, 256, 1), 3, axis=2)
    with torch.inference_mode():
        return bool(np.array_equal(to_uint8(to_tensor(values, device, dtype))[0], values))


EngineFor = Callable[[SwapSettings], BatchEngine]


def swap_image_batch(jobs: Sequence[ImageJob], engine_for: EngineFor) -> list[ImageOutcome | FaceweaveError]:
    """Swap every job, the jobs of one :func:`forward_key` in one batch on ``engine_for(settings)`` (the settings of
    the group's first job). Returns per job, in order, its outcome or the typed error it alone hit."""
    return [o if isinstance(o, FaceweaveError) else o.to_host() for o in swap_image_batch_on_device(jobs, engine_for)]


def swap_image_batch_on_device(jobs: Sequence[ImageJob], engine_for: EngineFor
                               ) -> list[DeviceOutcome | FaceweaveError]:
    """:func:`swap_image_batch` without the conversion to the host: per job, in order, its :class:`DeviceOutcome`
    (convert it with :meth:`DeviceOutcome.to_host`, on any thread) or the typed error it alone hit."""
    groups: dict[str, list[int]] = {}
    for n, job in enumerate(jobs):
        groups.setdefault(forward_key(job.settings), []).append(n)
    out: list[DeviceOutcome | FaceweaveError | None] = [None] * len(jobs)
    for members in groups.values():
        engine = engine_for(jobs[members[0]].settings)
        with torch.inference_mode():
            for n, outcome in zip(members, _swap_group([jobs[n] for n in members], engine), strict=True):
                out[n] = outcome
    return [o for o in out if o is not None]


def _swap_group(jobs: Sequence[ImageJob], engine: BatchEngine) -> list[DeviceOutcome | FaceweaveError]:
    # distinct source images once (two jobs of one user with one selfie analyse it once)
    images: list[np.ndarray] = []
    on_device: list[torch.Tensor | None] = []  # each image's staged uint8 copy on the engine's device, if any
    seen: dict[bytes, int] = {}
    job_sources: list[list[int]] = []
    staged = [job.staged if job.staged is not None and job.staged.device == engine.device else None for job in jobs]
    for job, ready in zip(jobs, staged, strict=True):
        rows = []
        for k, rgb in enumerate(job.sources):
            digest = _digest(rgb) if ready is None else ready.source_digests[k]
            if digest not in seen:
                seen[digest] = len(images)
                images.append(rgb)
                on_device.append(None if ready is None else ready.sources[k])
            rows.append(seen[digest])
        job_sources.append(rows)
    first_target = len(images)
    images.extend(job.target for job in jobs)
    on_device.extend(None if ready is None else ready.target for ready in staged)
    canvas, sizes = _stack(images, engine.device, engine.dtype, on_device)
    faces = engine.analyze(canvas, sizes)  # every source and target: one call

    errors: list[FaceweaveError | None] = [None] * len(jobs)
    prepared: dict[int, PreparedSource] = {}
    for n, rows in enumerate(job_sources):
        for k, row in enumerate(rows):
            if not faces[row]:
                errors[n] = NoFaceInSource(
                    f"no face found in source image {k + 1} of {len(rows)}",
                    hint="use a photo where the face is clearly visible, frontal, at least ~40 px wide")
                break
            if row not in prepared:
                h, w = sizes[row]
                image = canvas[row : row + 1, :, :h, :w].contiguous()
                prepared[row] = engine.prepare_source(image, max(faces[row], key=lambda f: f.area))

    frames = canvas[first_target:]
    target_sizes = sizes[first_target:]
    target_faces = faces[first_target:]
    found = [len(f) for f in target_faces]
    wants_ids = [n for n, job in enumerate(jobs) if job.settings.selector == "reference" and errors[n] is None
                 and target_faces[n]]
    if wants_ids:  # one identity call over the targets of every reference-mode job
        ided = engine.identify(frames[wants_ids], [target_faces[n] for n in wants_ids],
                               [target_sizes[n] for n in wants_ids])
        for n, with_ids in zip(wants_ids, ided, strict=True):
            target_faces[n] = with_ids

    plan: list[list[tuple[Face, int]]] = []
    sources: list[PreparedSource] = []
    for n, job in enumerate(jobs):
        row_plan: list[tuple[Face, int]] = []
        if errors[n] is None and not target_faces[n]:
            errors[n] = NoFaceInTarget("no face found in the target image", hint="check the target shows a face at "
                                       "least ~40 px wide; rotate it upright if needed")
        if errors[n] is None:
            own = [prepared[row] for row in job_sources[n]]
            try:
                refs = job_references(engine, job.settings, None,
                                      job.sources if job.reference is None else [job.reference])
                chosen = select_faces(target_faces[n], job.settings, [s.face for s in own], refs)
            except FaceweaveError as exc:
                errors[n] = exc
            else:
                # the batch's source list holds every job's sources; each face points at its own job's
                row_plan = [(f, s + len(sources)) for f, s in chosen]
                sources.extend(own)
        plan.append(row_plan)
    # every face of every job in one call, but for the built-in swapper's crop size: a call works at its largest
    # face's, so jobs whose faces want different sizes go in one call per size (what each would get alone)
    swapped = frames.clone() if any(plan) else frames
    calls: dict[int | None, list[int]] = {}
    for n, row_plan in enumerate(plan):
        if row_plan:
            calls.setdefault(engine.swap_key([row_plan], sources), []).append(n)
    for rows in calls.values():
        index = torch.tensor(rows, device=frames.device)
        swapped[index] = engine.swap(frames[index], [plan[n] for n in rows], sources)

    results: list[DeviceOutcome | FaceweaveError] = []
    for n, job in enumerate(jobs):
        error = errors[n]
        if error is not None:
            results.append(error)
            continue
        h, w = target_sizes[n]
        results.append(DeviceOutcome(swapped[n : n + 1, :, :h, :w], frames[n : n + 1, :, :h, :w], job.target,
                                     swapped=len(plan[n]), found=found[n]))
    return results


def _digest(rgb: np.ndarray) -> bytes:
    return hashlib.blake2b(np.ascontiguousarray(rgb).data, digest_size=16, person=str(rgb.shape).encode()[:16]
                           ).digest()


def _stack(images: Sequence[np.ndarray], device: torch.device, dtype: torch.dtype,
           on_device: Sequence[torch.Tensor | None] | None = None) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """``(N, 3, H, W)`` float ``[0, 1]``: each image at the top left of a zero canvas of the largest height and
    width, and each image's ``(height, width)``. ``on_device``: per image, its ``(H, W, 3)`` uint8 copy on
    ``device`` already (converted there, as :func:`to_tensor` converts), or None to copy it now."""
    sizes = [(int(im.shape[0]), int(im.shape[1])) for im in images]
    height, width = max(h for h, _ in sizes), max(w for _, w in sizes)
    canvas = torch.zeros(len(images), 3, height, width, device=device, dtype=dtype)
    for n, (im, (h, w)) in enumerate(zip(images, sizes, strict=True)):
        ready = None if on_device is None else on_device[n]
        canvas[n, :, :h, :w] = (to_tensor(im, device, dtype) if ready is None else rgb_to_float(ready, dtype))[0]
    return canvas, sizes


# --- files: what the service's workers call ---------------------------------------------------------------
@dataclass(frozen=True)
class ImageFileJob:
    """One image job on files: sources, target and the output to write (with provenance), and the job's
    settings."""

    sources: Sequence[Path]
    target: Path
    output: Path
    settings: SwapSettings
    reference: Path | None = None


def read_image_job(job: ImageFileJob) -> tuple[ImageJob, LoadedImage]:
    """Check ``job``'s output path and read its images: the :class:`ImageJob` for a batch, and the target as loaded
    (its format and metadata for the output). Raises the typed error of an unreadable file or a bad output path."""
    from faceweave.media.image import check_output_path, read_image

    check_output_path(job.output, kind="image")
    limit = job.settings.max_pixels
    loaded = read_image(job.target, max_pixels=limit)
    reference = None if job.reference is None else read_image(job.reference, max_pixels=limit).rgb
    sources = [read_image(s, max_pixels=limit).rgb for s in job.sources]
    return ImageJob(sources=sources, target=loaded.rgb, settings=job.settings, reference=reference), loaded


def swap_image_files(jobs: Sequence[ImageFileJob], engine_for: EngineFor, *, threads: int | None = None
                     ) -> list[SwapResult | FaceweaveError]:
    """:func:`~faceweave.pipeline.image.swap_image_file` for many jobs as one batch (:func:`swap_image_batch`):
    read every job (a job whose files fail to read fails alone), swap, write each output with its own marking.

    Reading (decode) and finishing (to the host, label, watermark, C2PA, encode, write) run on ``threads`` threads
    (default: one per CPU core, at most one per job); only the forwards are one stream of work on the engine.
    """
    from faceweave.pipeline.image import finish_image

    t0 = time.perf_counter()

    def load(job: ImageFileJob) -> tuple[ImageJob, LoadedImage] | FaceweaveError:
        try:
            return read_image_job(job)
        except FaceweaveError as exc:
            return exc

    def finish(job: ImageFileJob, loaded: LoadedImage, on_device: DeviceOutcome | FaceweaveError
               ) -> SwapResult | FaceweaveError:
        if isinstance(on_device, FaceweaveError):
            return on_device
        try:
            outcome = on_device.to_host()
            return finish_image(outcome.image, outcome.swapped, outcome.found, job.sources, job.target, job.output,
                                job.settings, like=loaded, started=t0)
        except FaceweaveError as exc:
            return exc

    results: list[SwapResult | FaceweaveError] = []
    with ThreadPoolExecutor(max(1, min(len(jobs), threads or os.cpu_count() or 1))) as pool:
        loads = list(pool.map(load, jobs))
        ok = [(job, got) for job, got in zip(jobs, loads, strict=True) if not isinstance(got, FaceweaveError)]
        outcomes = iter(swap_image_batch_on_device([batch_job for _, (batch_job, _) in ok], engine_for))
        finishing = [pool.submit(finish, job, got[1], next(outcomes)) for job, got in ok]
        finished = iter([f.result() for f in finishing])
        for got in loads:
            results.append(got if isinstance(got, FaceweaveError) else next(finished))
    return results


__all__ = ["PER_JOB_FIELDS", "BatchEngine", "CountingEngine", "DeviceOutcome", "ImageFileJob", "ImageJob",
           "ImageOutcome", "forward_key", "read_image_job", "swap_image_batch", "swap_image_batch_on_device",
           "swap_image_files"]
