"""Image swap: read → analyse → select → swap → write, with typed errors at every boundary."""

from __future__ import annotations

import time
from collections.abc import Sequence
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from faceweave.analysis.face import Face
from faceweave.errors import FaceweaveError, NoFaceInTarget
from faceweave.pipeline.engine import PreparedSource, SwapEngine, job_references, to_uint8
from faceweave.progress import Progress, ProgressCallback, no_progress
from faceweave.provenance.metadata import provenance_tags
from faceweave.result import SwapResult
from faceweave.settings import SwapSettings

if TYPE_CHECKING:
    from faceweave.provenance.c2pa import Ingredient
    from faceweave.provenance.mark import Marking

# the provenance tags of an output (kept for callers of the old name; the source of truth is provenance.metadata)
PROVENANCE = provenance_tags()


def swap_image(
    sources: Sequence[PreparedSource],
    target: np.ndarray,
    engine: SwapEngine,
    reference: Sequence[object] | None = None,
) -> tuple[np.ndarray, int]:
    """Swap into one RGB image.

    Args:
        sources: prepared with :meth:`SwapEngine.prepare_sources` (reuse them across targets).
        target: ``(H, W, 3)`` uint8 RGB.
        engine: the job's engine.
        reference: identity embeddings for ``selector="reference"``.

    Returns:
        ``(result (H, W, 3) uint8 RGB, number of faces swapped)``. Raises :class:`NoFaceInTarget`.
    """
    result, swapped, _ = swap_image_counted(sources, target, engine, reference)
    return result, swapped


def swap_image_counted(
    sources: Sequence[PreparedSource],
    target: np.ndarray,
    engine: SwapEngine,
    reference: Sequence[object] | None = None,
) -> tuple[np.ndarray, int, int]:
    """:func:`swap_image`, also returning how many faces were found: ``(result, swapped, found)``."""
    found: list[int] = []
    (outcome,) = swap_images(sources, [target], engine, reference, found=found)
    if isinstance(outcome, FaceweaveError):
        raise outcome
    return outcome[0], outcome[1], found[0]


def swap_images(
    sources: Sequence[PreparedSource],
    targets: Sequence[np.ndarray],
    engine: SwapEngine,
    reference: Sequence[object] | None = None,
    *,
    found: list[int] | None = None,
) -> list[tuple[np.ndarray, int] | FaceweaveError]:
    """Swap into several RGB images of one size as one batch on the engine's device.

    Args:
        sources: prepared with :meth:`SwapEngine.prepare_sources`.
        targets: ``(H, W, 3)`` uint8 RGB each, all the same ``H, W``.
        engine: the job's engine.
        reference: identity embeddings for ``selector="reference"``.
        found: if given, filled with the number of faces found in each target (in order).

    Returns:
        Per target, in order: ``(result (H, W, 3) uint8 RGB, faces swapped)``, or the error that image alone hit
        (:class:`NoFaceInTarget`, :class:`NoMatchingFace`), so one face-less image does not fail its batch.
    """
    frames = torch.cat([engine.to_tensor(t) for t in targets])
    faces = engine.analyze(frames)
    if found is not None:
        found.extend(len(f) for f in faces)
    if engine.settings.selector == "reference":
        faces = engine.identify(frames, faces)
    plans: list[list[tuple[Face, int]]] = []
    outcomes: list[tuple[np.ndarray, int] | FaceweaveError | None] = []
    for frame_faces in faces:
        plan: list[tuple[Face, int]] = []
        outcome: FaceweaveError | None = None
        if not frame_faces:
            outcome = NoFaceInTarget("no face found in the target image", hint="check the target shows a face at "
                                     "least ~40 px wide; rotate it upright if needed")
        else:
            try:
                plan = engine.select(frame_faces, sources, reference)  # type: ignore[arg-type]
            except FaceweaveError as exc:
                outcome = exc
        plans.append(plan)
        outcomes.append(outcome)
    out = engine.swap(frames, plans, sources) if any(plans) else frames
    results = to_uint8(out)
    # Keep untouched pixels bit-exact (the uint8 → float → uint8 round trip is exact, but say it in code).
    unchanged = (out == frames).all(1).cpu().numpy()
    final: list[tuple[np.ndarray, int] | FaceweaveError] = []
    for b, target in enumerate(targets):
        done = outcomes[b]
        if done is None:
            results[b][unchanged[b]] = target[unchanged[b]]
            done = (results[b], len(plans[b]))
        final.append(done)
    return final


def swap_image_file(
    sources: Sequence[str | PathLike[str]],
    target: str | PathLike[str],
    output: str | PathLike[str],
    settings: SwapSettings,
    *,
    progress: ProgressCallback = no_progress,
    engine: SwapEngine | None = None,
    reference: str | PathLike[str] | None = None,
) -> SwapResult:
    """Swap files: read sources and target (any supported image), write ``output`` atomically with provenance."""
    from faceweave.media.image import check_output_path, read_image

    t0 = time.perf_counter()
    out_path = Path(output)
    check_output_path(out_path, kind="image")
    src_images = [read_image(Path(s), max_pixels=settings.max_pixels).rgb for s in sources]
    tgt = read_image(Path(target), max_pixels=settings.max_pixels)
    progress(Progress(stage="prepare", frames_done=0, frames_total=1))
    engine = engine or SwapEngine(settings)
    prepared = engine.prepare_sources(src_images)
    refs = job_references(engine, settings, reference, src_images)
    result, n, found = swap_image_counted(prepared, tgt.rgb, engine, refs)
    out = finish_image(result, n, found, sources, target, out_path, settings, like=tgt, started=t0)
    progress(Progress(stage="done", frames_done=1, frames_total=1, fps=1 / out.seconds if out.seconds else 0.0,
                      eta_s=0.0))
    return out


def finish_image(result: np.ndarray, swapped: int, found: int, sources: Sequence[str | PathLike[str]],
                 target: str | PathLike[str], output: Path, settings: SwapSettings, *, like: object,
                 started: float) -> SwapResult:
    """Label (if asked), mark and write a swapped image ``(H, W, 3)`` uint8 RGB to ``output`` (atomically, with
    the sources and target as C2PA ingredients); the job's :class:`SwapResult` (``seconds`` from ``started``, a
    :func:`time.perf_counter` value). Shared by the one-image path and
    the batched one (:mod:`faceweave.pipeline.image_batch`), so both write the same bytes."""
    from faceweave.provenance.mark import write_marked_image

    labelled, marking, ingredients = _marking(result, sources, target, settings)
    write_marked_image(output, labelled, marking, like=like, ingredients=ingredients)
    return SwapResult(output=output, kind="image", faces_swapped=swapped, frames=1,
                      seconds=time.perf_counter() - started, stats=face_count_stats(found, swapped, settings))


def finished_image_bytes(result: np.ndarray, sources: Sequence[str | PathLike[str]], target: str | PathLike[str],
                         output: Path, settings: SwapSettings, *, like: object,
                         png_compression: int | None = None) -> bytes:
    """What :func:`finish_image` writes, as bytes in ``output``'s format (its extension; nothing is written): the
    swapped image ``(H, W, 3)`` uint8 RGB labelled (if asked) and marked the same way. ``png_compression``: see
    :func:`faceweave.media.image.encode_image` (the :sync service answers at a fast level; the pixels and the
    markings are the same at every level)."""
    from faceweave.provenance.mark import encode_marked_image

    labelled, marking, ingredients = _marking(result, sources, target, settings)
    return encode_marked_image(labelled, output, marking, like=like, ingredients=ingredients,
                               png_compression=png_compression)


def _marking(result: np.ndarray, sources: Sequence[str | PathLike[str]], target: str | PathLike[str],
             settings: SwapSettings) -> tuple[np.ndarray, Marking, list[Ingredient]]:
    """The image to mark (labelled if asked), the job's :class:`Marking` and its C2PA ingredients."""
    if settings.provenance_label:
        from faceweave.media.label import draw_label

        result = draw_label(result)
    from faceweave.provenance.c2pa import Ingredient
    from faceweave.provenance.mark import Marking

    ingredients = [Ingredient.of_file("source", s) for s in sources] + [Ingredient.of_file("target", target)]
    return result, Marking.from_settings(settings), ingredients


def face_count_stats(found: int, swapped: int, settings: SwapSettings) -> dict[str, object]:
    """``faces_found`` / ``faces_swapped``, and a warning when ``selector="many"`` left found faces unswapped (the
    user asked for every face; with one/index/reference the others are left on purpose)."""
    stats: dict[str, object] = {"faces_found": found, "faces_swapped": swapped}
    if settings.selector == "many" and swapped < found:
        stats["warnings"] = {"faces_not_swapped": f"{found - swapped} of {found} faces found were not swapped"}
    return stats
