"""Batch swaps: many targets (a folder, a glob or a list file) with one warm engine and one report.

>>> from faceweave.batch import expand_targets, run_batch, OutputPattern     # doctest: +SKIP
>>> report = run_batch(["me.jpg"], expand_targets("photos/"), "out/", SwapSettings())  # doctest: +SKIP
>>> report.failed                                                              # doctest: +SKIP

Images of one size are swapped as batches on the engine's device (sources are prepared once for the whole batch);
videos run one after another through the ordinary video pipeline on the same engine. One bad target never stops the
batch: its error is recorded in its :class:`ItemResult` and the next target runs.
"""

from __future__ import annotations

import glob
import string
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from faceweave.errors import (
    FaceweaveError,
    InputNotFound,
    InputUnreadable,
    InvalidOption,
    OutputNotWritable,
    WrongMediaKind,
)
from faceweave.progress import ProgressCallback, no_progress
from faceweave.settings import SwapSettings

if TYPE_CHECKING:  # the CLI imports this module at start-up: keep NumPy/Pillow out of `faceweave --help`
    import numpy as np

    from faceweave.media.image import LoadedImage, MediaKind

# The exit code of a batch in which at least one target failed (the others were written). Distinct from the typed
# errors' codes (10–60, faceweave/errors.py), which a batch still uses when it cannot start at all (e.g. no face in
# the source), and from Click's 2 for usage mistakes.
BATCH_FAILED_EXIT = 3
DEFAULT_OUTPUT_PATTERN = "{target_stem}_{source_stem}.{ext}"
# Images per device batch are also capped by pixels, so a folder of large photos does not multiply peak memory by
# the batch size (16 Mpx ≈ 8 frames of 1080p, the video default).
BATCH_PIXELS = 16_000_000

Status = Literal["pending", "done", "skipped", "failed"]


def is_batch_target(spec: str) -> bool:
    """True when ``-t`` names several targets: ``@list.txt``, a folder, or a glob (``*``, ``?``, ``[``).

    An existing file is always one target, even if its name contains glob characters.
    """
    path = Path(spec)
    if path.is_file():
        return False
    return spec.startswith("@") or path.is_dir() or glob.has_magic(spec)


def expand_targets(spec: str) -> list[Path]:
    """The target files that ``spec`` names, in a stable (sorted or listed) order.

    - ``@list.txt``: one path per line; blank lines and ``#`` comments are ignored; relative paths are relative
      to the list file's folder.
    - a folder: its regular files (not recursive), hidden files (``.name``) excluded.
    - a glob (quote it in the shell): matching regular files; ``**`` recurses.

    Raises:
        InputNotFound: the list file or folder does not exist, or nothing matched.
        InputUnreadable: the list file cannot be read.
    """
    if spec.startswith("@"):
        listing = Path(spec[1:])
        if not listing.is_file():
            raise InputNotFound(f"list file {listing} not found", hint="@FILE names a text file, one target per line")
        try:
            lines = listing.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise InputUnreadable(f"cannot read list file {listing}: {exc}", hint="a UTF-8 text file") from None
        entries = [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]
        # Missing or odd entries stay in: each is reported as that item's failure, not as a failed batch.
        targets = [p if p.is_absolute() else listing.parent / p for p in map(Path, entries)]
        where = f"list file {listing}"
    elif Path(spec).is_dir():
        targets = sorted(p for p in Path(spec).iterdir() if p.is_file() and not p.name.startswith("."))
        where = f"folder {spec}"
    else:
        targets = sorted(Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file())
        where = f"pattern {spec!r}"
    if not targets:
        raise InputNotFound(f"no target files in {where}", hint="check the path; quote a glob so the shell keeps it")
    return targets


class OutputPatternError(InvalidOption):
    """``--output-pattern`` is malformed, or maps two targets to one output (the CLI reports it as a usage error)."""


@dataclass(frozen=True)
class OutputPattern:
    """Output file names from a ``str.format`` pattern, e.g. ``{target_stem}_{source_stem}.{ext}``.

    Placeholders: ``target_stem`` (``photo``), ``target_name`` (``photo.png``), ``target_ext`` (``png``),
    ``source_stem`` (the first source's), ``ext`` (the target's extension when faceweave writes that format for
    its kind, else ``png`` / ``mp4``), ``index`` (1-based position in the batch; ``{index:04d}`` works).
    """

    pattern: str
    FIELDS = ("target_stem", "target_name", "target_ext", "source_stem", "ext", "index")

    def __post_init__(self) -> None:
        try:
            fields = [name for _, name, _, _ in string.Formatter().parse(self.pattern) if name is not None]
        except ValueError as exc:
            raise OutputPatternError(f"output pattern {self.pattern!r}: {exc}", hint="write {placeholder}; "
                                     "double a literal brace: {{ }}") from None
        unknown = [n for n in fields if n not in self.FIELDS]
        if unknown or "" in fields:
            raise OutputPatternError(
                f"output pattern {self.pattern!r}: unknown placeholder {{{(unknown or [''])[0]}}}",
                hint=f"use {', '.join('{' + f + '}' for f in self.FIELDS)}")
        sample = self._render(Path("photo.png"), Path("me.jpg"), "png", 1)
        if Path(sample).name != sample or sample in (".", ".."):
            raise OutputPatternError(f"output pattern {self.pattern!r} must give a file name, not a path",
                                     hint="put the folder in -o")
        if not any(f.startswith("target") or f == "index" for f in fields):
            raise OutputPatternError(f"output pattern {self.pattern!r} gives every target the same name",
                                     hint="include {target_stem} or {index}")

    def _render(self, target: Path, source: Path, ext: str, index: int) -> str:
        try:
            return self.pattern.format(target_stem=target.stem, target_name=target.name,
                                       target_ext=target.suffix.lstrip("."), source_stem=source.stem, ext=ext,
                                       index=index)
        except (ValueError, TypeError, IndexError, KeyError) as exc:  # e.g. {index:q} or {target_stem:d}
            raise OutputPatternError(f"output pattern {self.pattern!r}: {exc}",
                                     hint="check the format specs, e.g. {index:04d}") from None

    def name_for(self, target: Path, source: Path, kind: MediaKind, index: int) -> str:
        """The output file name of ``target`` (``index`` from 1)."""
        from faceweave.media.image import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS

        suffix = target.suffix.lower()
        writable = tuple(IMAGE_EXTENSIONS) if kind == "image" else VIDEO_EXTENSIONS
        ext = suffix.lstrip(".") if suffix in writable else ("png" if kind == "image" else "mp4")
        return self._render(target, source, ext, index)


@dataclass
class ItemResult:
    """One target of a batch: what happened to it and why."""

    target: Path
    output: Path | None = None
    kind: MediaKind | None = None
    status: Status = "pending"
    faces_swapped: int = 0
    frames: int = 0
    seconds: float = 0.0
    error_code: str | None = None
    error: str | None = None

    def fail(self, exc: BaseException) -> None:
        self.status = "failed"
        if isinstance(exc, FaceweaveError):
            self.error_code, self.error = exc.code, exc.one_line()
        else:  # one unexpected failure must not stop the batch; the report says it is a bug
            self.error_code, self.error = "internal_error", f"unexpected {type(exc).__name__}: {exc} — a bug, report it"

    def to_dict(self) -> dict[str, Any]:
        written = self.output is not None and self.status in ("done", "skipped")
        return {"target": str(self.target), "output": str(self.output) if written else None,
                "kind": self.kind, "status": self.status, "faces_swapped": self.faces_swapped, "frames": self.frames,
                "seconds": round(self.seconds, 3), "error_code": self.error_code, "error": self.error}


@dataclass
class BatchReport:
    """All items of a batch, in target order, and the batch's wall time."""

    items: list[ItemResult] = field(default_factory=list)
    seconds: float = 0.0

    def count(self, status: Status) -> int:
        return sum(1 for it in self.items if it.status == status)

    @property
    def failed(self) -> int:
        return self.count("failed")

    @property
    def exit_code(self) -> int:
        """0 when nothing failed, else :data:`BATCH_FAILED_EXIT`."""
        return BATCH_FAILED_EXIT if self.failed else 0

    def to_dict(self) -> dict[str, Any]:
        return {"done": self.count("done"), "skipped": self.count("skipped"), "failed": self.failed,
                "seconds": round(self.seconds, 3), "exit_code": self.exit_code,
                "items": [it.to_dict() for it in self.items]}


def plan_outputs(sources: Sequence[Path], targets: Sequence[Path], out_dir: Path, pattern: OutputPattern
                 ) -> list[ItemResult]:
    """One :class:`ItemResult` per target with its kind (sniffed from the bytes) and output path.

    A target whose kind cannot be sniffed (missing, empty, not media) comes back already failed.

    Raises:
        OutputPatternError: two targets map to the same output, or an output would overwrite a target.
    """
    from faceweave.media.image import sniff_media_kind

    items: list[ItemResult] = []
    taken: dict[Path, Path] = {}
    inputs = {t.resolve() for t in targets}
    for index, target in enumerate(targets, start=1):
        item = ItemResult(target=target)
        items.append(item)
        try:
            kind = sniff_media_kind(target)
            if kind == "audio":
                raise WrongMediaKind(f"{target.name} is audio only", hint="a batch takes images and videos")
        except FaceweaveError as exc:
            item.fail(exc)
            continue
        item.kind = kind
        item.output = out_dir / pattern.name_for(target, sources[0], kind, index)
        key = item.output.resolve()
        if key in taken:
            raise OutputPatternError(
                f"{taken[key]} and {target} would both be written to {item.output}",
                hint="use {target_name} (keeps the extension) or {index} in --output-pattern")
        if key in inputs:
            raise OutputPatternError(f"output {item.output} would overwrite a target", hint="use another -o folder")
        taken[key] = target
    return items


def output_verifies(path: Path, kind: MediaKind, settings: SwapSettings) -> bool:
    """True when ``path`` exists and decodes completely (``--resume`` keeps it instead of swapping again)."""
    if not path.is_file():
        return False
    try:
        if kind == "image":
            from faceweave.media.image import read_image

            read_image(path, max_pixels=settings.max_pixels)
        else:
            from faceweave.media.video import FrameReader, probe_video

            info = probe_video(path, max_duration_s=float("inf"), max_pixels=settings.max_pixels)
            with FrameReader(info, batch_size=settings.batch_size) as reader:
                for _ in reader:
                    pass
    except FaceweaveError:
        return False
    return True


@dataclass(frozen=True)
class BatchCallbacks:
    """What the caller sees while a batch runs: each finished item, and a video's frame progress."""

    item_started: Callable[[ItemResult], None] = lambda _: None
    item_finished: Callable[[ItemResult], None] = lambda _: None
    video_progress: ProgressCallback = no_progress


def run_batch(
    sources: Sequence[str | PathLike[str]],
    targets: Sequence[Path] | Sequence[ItemResult],
    out_dir: str | PathLike[str],
    settings: SwapSettings,
    *,
    pattern: OutputPattern | None = None,
    resume: bool = False,
    reference: str | PathLike[str] | None = None,
    engine: Any = None,
    callbacks: BatchCallbacks | None = None,
) -> BatchReport:
    """Swap ``sources`` into every target, writing ``out_dir/<pattern>`` atomically; never stops at a bad target.

    Args:
        sources: source image paths (several photos of one person, as for a single swap).
        targets: from :func:`expand_targets`, or already planned by :func:`plan_outputs` (which checks the names
            before any work; then ``pattern`` is not used).
        out_dir: created if missing.
        settings: the batch's settings; ``batch_size`` images of one size go through the device together.
        pattern: output names (default :data:`DEFAULT_OUTPUT_PATTERN`).
        resume: keep outputs that already exist and decode (status ``skipped``).
        reference: reference image for ``selector="reference"``.
        engine: a warm :class:`~faceweave.pipeline.engine.SwapEngine` to use (default: a new one).
        callbacks: progress hooks.

    Raises:
        OutputPatternError: two targets map to one output name (before any work).
        OutputNotWritable: ``out_dir`` cannot be created.
        the source errors (:class:`NoFaceInSource`, unreadable source…): nothing can be swapped then.
    """
    from faceweave.media.image import read_image
    from faceweave.pipeline.engine import SwapEngine, job_references

    t0 = time.perf_counter()
    cb = callbacks or BatchCallbacks()
    src_paths = [Path(s) for s in sources]
    out = Path(out_dir)
    if all(isinstance(t, ItemResult) for t in targets):
        items = [t for t in targets if isinstance(t, ItemResult)]
    else:
        paths = [Path(t) for t in targets if not isinstance(t, ItemResult)]
        items = plan_outputs(src_paths, paths, out, pattern or OutputPattern(DEFAULT_OUTPUT_PATTERN))
    report = BatchReport(items=items)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputNotWritable(f"cannot create output folder {out}: {exc.strerror or exc}",
                                hint="check the path and its permissions") from None
    todo: list[ItemResult] = []
    for item in report.items:
        if item.status == "failed":
            cb.item_finished(item)
        elif resume and item.output is not None and item.kind is not None and output_verifies(
                item.output, item.kind, settings):
            item.status = "skipped"
            cb.item_finished(item)
        else:
            todo.append(item)
    if todo:
        src_images = [read_image(p, max_pixels=settings.max_pixels).rgb for p in src_paths]
        engine = engine or SwapEngine(settings)
        prepared = engine.prepare_sources(src_images)  # once for every image of the batch
        refs = job_references(engine, settings, reference, src_images)
        _ImageBatcher(engine, prepared, refs, settings, cb).run([it for it in todo if it.kind == "image"])
        for item in (it for it in todo if it.kind == "video"):
            _run_video(item, src_paths, settings, engine, reference, cb)
    report.seconds = time.perf_counter() - t0
    return report


def _run_video(item: ItemResult, sources: Sequence[Path], settings: SwapSettings, engine: Any,
               reference: str | PathLike[str] | None, cb: BatchCallbacks) -> None:
    from faceweave.pipeline.video import swap_video

    assert item.output is not None
    cb.item_started(item)
    try:
        res = swap_video(sources, item.target, item.output, settings, progress=cb.video_progress, engine=engine,
                         reference=reference)
    except Exception as exc:
        item.fail(exc)
    else:
        item.status, item.faces_swapped, item.frames, item.seconds = "done", res.faces_swapped, res.frames, res.seconds
    cb.item_finished(item)


@dataclass
class _ImageBatcher:
    """Groups images by size into device batches (at most ``batch_size`` images, :data:`BATCH_PIXELS` pixels)."""

    engine: Any
    prepared: Any
    refs: Any
    settings: SwapSettings
    cb: BatchCallbacks
    pending: dict[tuple[int, int], list[tuple[ItemResult, LoadedImage, float]]] = field(default_factory=dict)

    def run(self, items: Sequence[ItemResult]) -> None:
        from faceweave.media.image import read_image

        for item in items:
            self.cb.item_started(item)
            t0 = time.perf_counter()
            try:
                img = read_image(item.target, max_pixels=self.settings.max_pixels)
            except Exception as exc:
                item.fail(exc)
                item.seconds = time.perf_counter() - t0
                self.cb.item_finished(item)
                continue
            group = self.pending.setdefault((img.height, img.width), [])
            group.append((item, img, time.perf_counter() - t0))
            if len(group) >= self.settings.batch_size or (len(group) + 1) * img.height * img.width > BATCH_PIXELS:
                self._flush((img.height, img.width))
        for size in list(self.pending):
            self._flush(size)

    def _flush(self, size: tuple[int, int]) -> None:
        group = self.pending.pop(size, [])
        if not group:
            return
        t0 = time.perf_counter()
        outcomes: list[tuple[np.ndarray, int] | Exception]
        try:
            outcomes = list(self._swap([img for _, img, _ in group]))
        except Exception as exc:
            if len(group) > 1:  # one image broke the batch: swap them one by one so only that one fails
                for entry in group:
                    self.pending[size] = [entry]
                    self._flush(size)
                return
            outcomes = [exc]
        share = (time.perf_counter() - t0) / len(group)
        for (item, img, t_read), outcome in zip(group, outcomes, strict=True):
            t1 = time.perf_counter()
            try:
                self._write(item, img, outcome)
            except Exception as exc:
                item.fail(exc)
            item.seconds = t_read + share + time.perf_counter() - t1
            self.cb.item_finished(item)

    def _swap(self, images: Sequence[LoadedImage]) -> list[tuple[np.ndarray, int] | FaceweaveError]:
        from faceweave.pipeline.image import swap_images

        return swap_images(self.prepared, [img.rgb for img in images], self.engine, self.refs)

    def _write(self, item: ItemResult, img: LoadedImage, outcome: tuple[np.ndarray, int] | Exception) -> None:
        from faceweave.provenance.c2pa import Ingredient
        from faceweave.provenance.mark import Marking, write_marked_image

        if isinstance(outcome, Exception):
            raise outcome
        result, faces = outcome
        if self.settings.provenance_label:
            from faceweave.media.label import draw_label

            result = draw_label(result)
        assert item.output is not None
        # marked like a single swap's output (watermark, tags, C2PA naming the target by its hash)
        write_marked_image(item.output, result, Marking.from_settings(self.settings), like=img,
                           ingredients=[Ingredient.of_file("target", item.target)])
        item.status, item.faces_swapped, item.frames = "done", faces, 1
