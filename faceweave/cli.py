"""The ``faceweave`` command line. The one place where library errors become exit codes and one-line messages."""

from __future__ import annotations

import importlib
import json
import os
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from faceweave.batch import DEFAULT_OUTPUT_PATTERN, is_batch_target
from faceweave.errors import FaceweaveError, OutputNotWritable
from faceweave.progress import Progress as JobProgress
from faceweave.settings import SwapSettings

app = typer.Typer(
    name="faceweave",
    help="Fast, trustworthy face swap for images and video.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err = Console(stderr=True)
out = Console()


class Selector(str, Enum):
    one = "one"
    many = "many"
    reference = "reference"
    by_index = "index"  # not `index`: that would shadow str.index


class Blend(str, Enum):
    laplacian = "laplacian"
    poisson = "poisson"
    feather = "feather"


def _settings_from(options: dict[str, Any]) -> SwapSettings:
    """Only the options the user gave; the rest keep SwapSettings' defaults (one source of truth)."""
    given = {k: (v.value if isinstance(v, Enum) else v) for k, v in options.items() if v is not None}
    return SwapSettings.build(**given)


class _RichProgress:
    """Feeds :class:`faceweave.progress.Progress` snapshots into a rich bar with fps and ETA."""

    def __init__(self, bar: Progress) -> None:
        self.bar = bar
        self.task = bar.add_task("preparing", total=None, fps="")

    def __call__(self, p: JobProgress) -> None:
        self.bar.update(self.task, completed=p.frames_done, total=p.frames_total, description=p.stage,
                        fps=f"{p.fps:6.1f} fps" if p.fps else "")


def _bar() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[fps]}"),
                    TimeRemainingColumn(), console=err, transient=True)


def _check_output_pattern(value: str | None) -> str | None:
    """Reject a malformed ``--output-pattern`` while parsing, so it is a usage error (exit 2)."""
    from faceweave.batch import OutputPattern, OutputPatternError

    if value is not None:
        try:
            OutputPattern(value)
        except OutputPatternError as exc:
            raise typer.BadParameter(exc.one_line()) from None
    return value


class _BatchBar:
    """The batch's bar (items, ETA) plus one bar for the video being swapped."""

    def __init__(self, bar: Progress, total: int) -> None:
        self.bar = bar
        self.task = bar.add_task("batch", total=total, fps="")
        self.video: _RichProgress | None = None

    def started(self, item: Any) -> None:
        self.bar.update(self.task, description=f"batch: {escape(item.target.name)}")
        if item.kind == "video":
            self.video = _RichProgress(self.bar)

    def finished(self, item: Any) -> None:
        if self.video is not None:
            self.bar.remove_task(self.video.task)
            self.video = None
        self.bar.advance(self.task)

    def video_progress(self, p: JobProgress) -> None:
        if self.video is not None:
            self.video(p)


_STATUS_STYLE = {"done": "green", "skipped": "cyan", "failed": "red"}
_TABLE_ROWS = 50  # longer batches list only their failures (the --json report has every item)


def _print_summary(report: Any) -> None:
    from rich.table import Table

    rows = report.items if len(report.items) <= _TABLE_ROWS else [it for it in report.items if it.status == "failed"]
    table = Table(title="batch summary", title_justify="left", show_edge=False)
    for col in ("target", "status", "output / reason"):
        table.add_column(col, overflow="fold")
    for it in rows:
        detail = f"[{it.error_code}] {it.error}" if it.status == "failed" else it.output.name  # its folder is -o
        table.add_row(escape(str(it.target)), f"[{_STATUS_STYLE[it.status]}]{it.status}[/]", escape(detail))
    if rows:
        err.print(table)
    if len(rows) < len(report.items):
        err.print(f"({len(report.items) - len(rows)} done/skipped rows not shown; --json lists every item)")
    done = report.count("done")
    err.print(f"batch: [green]{done} done[/green], [cyan]{report.count('skipped')} skipped[/cyan], "
              f"[red]{report.failed} failed[/red] in {report.seconds:.1f} s", highlight=False)


def _swap_batch(source: list[Path], target: str, output: Path, settings: SwapSettings, *, reference: Path | None,
                resume: bool, pattern: str, json_report: str | None) -> None:
    """``swap`` with several targets: one warm engine, a bar over the items, a summary; exit 3 if any failed."""
    from faceweave.batch import (
        BatchCallbacks,
        OutputPattern,
        OutputPatternError,
        expand_targets,
        plan_outputs,
        run_batch,
    )

    try:  # names are checked before the bar starts and before any work
        items = plan_outputs(source, expand_targets(target), output, OutputPattern(pattern))
    except OutputPatternError as exc:  # two targets → one name: the options are wrong, not the media
        raise typer.BadParameter(exc.one_line(), param_hint="'--output-pattern'") from None
    with _bar() as bar:
        view = _BatchBar(bar, len(items))
        callbacks = BatchCallbacks(item_started=view.started, item_finished=view.finished,
                                   video_progress=view.video_progress)
        report = run_batch(source, items, output, settings, resume=resume, reference=reference, callbacks=callbacks)
    _print_summary(report)
    if json_report is not None:
        text = json.dumps(report.to_dict(), indent=2)
        if json_report == "-":
            print(text)  # plain print: rich would wrap long paths and break the JSON
        else:
            from faceweave.media.image import atomic_write_bytes

            path = Path(json_report)
            try:
                atomic_write_bytes(path, (text + "\n").encode())
            except OSError as exc:
                raise OutputNotWritable(f"cannot write the JSON report {path}: {exc.strerror or exc}",
                                        hint="check that its folder exists and is writable") from None
    if report.exit_code:
        raise typer.Exit(report.exit_code)


@app.command()
def swap(
    source: Annotated[list[Path], typer.Option("--source", "-s", help="source face image(s); repeat for several")],
    target: Annotated[Path, typer.Option("--target", "-t", help="target image or video; or a folder, a quoted glob "
                                         "('photos/*.jpg') or @list.txt for a batch")],
    output: Annotated[Path, typer.Option("--output", "-o", help="output file; its extension picks the format "
                                         "(batch: a folder, created if missing)")],
    output_pattern: Annotated[str | None, typer.Option(
        help="batch: output file names; {target_stem} {target_name} {target_ext} {source_stem} {ext} {index} "
             f"[default: {DEFAULT_OUTPUT_PATTERN}]", callback=_check_output_pattern)] = None,
    resume: Annotated[bool, typer.Option("--resume", help="batch: keep outputs that already exist and decode")] = False,
    json_report: Annotated[str | None, typer.Option("--json", metavar="PATH", help="batch: write the summary as "
                                                    "JSON to PATH ('-': stdout)")] = None,
    selector: Annotated[Selector | None, typer.Option(help="which target faces: one (largest), many, reference, index")] = None,
    face_index: Annotated[int | None, typer.Option(help="with --selector index: position, left to right, from 0")] = None,
    reference: Annotated[Path | None, typer.Option(help="with --selector reference: image of the person to replace")] = None,
    reference_threshold: Annotated[float | None, typer.Option(help="max identity distance for 'reference'")] = None,
    swapper: Annotated[str | None, typer.Option(help="'mesh' (built-in) or a plug-in model, e.g. inswapper_128")] = None,
    shape_transfer: Annotated[float | None, typer.Option(help="0..1: move the face shape toward the source's")] = None,
    keep_mouth: Annotated[bool | None, typer.Option("--keep-mouth/--no-keep-mouth", help="keep the target's mouth interior")] = None,
    keep_eyes: Annotated[bool | None, typer.Option("--keep-eyes/--no-keep-eyes", help="keep the target's eyes")] = None,
    blend: Annotated[Blend | None, typer.Option(help="blending: laplacian, poisson or feather")] = None,
    enhancer: Annotated[str | None, typer.Option(help="'detail' (built-in, default), a plug-in enhancer model, or 'none'")] = None,
    detector: Annotated[str | None, typer.Option(help="'blazeface' (built-in), 'retinaface', 'scrfd', …")] = None,
    recogniser: Annotated[str | None, typer.Option(help="'dlib' (built-in) or 'arcface'")] = None,
    occlusion_mask: Annotated[str | None, typer.Option(help="face-parser plug-in for occlusions")] = None,
    occlusion: Annotated[bool | None, typer.Option("--occlusion/--no-occlusion", help="built-in occlusion estimate (experimental)")] = None,
    detail_restore: Annotated[bool | None, typer.Option("--detail-restore/--no-detail-restore", help="built-in swap: sharpen a magnified face's eyes, brows and lips with their own detail (default on)")] = None,
    hairline_fill: Annotated[bool | None, typer.Option("--hairline-fill/--no-hairline-fill", help="built-in swap: no band of the source's fringe on a bald or high-forehead target (default on)")] = None,
    pixel_boost: Annotated[int | None, typer.Option(help="128-px swappers: k×k tiles (1, 2, 4)")] = None,
    model_dir: Annotated[str | None, typer.Option(help="plug-in model folder (default $FACEWEAVE_MODELS)")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda or cuda:N")] = None,
    dtype: Annotated[str | None, typer.Option(help="auto, float32, float16, bfloat16: the swap and plug-in nets (detection and landmarks always run in float32)")] = None,
    batch_size: Annotated[int | None, typer.Option(help="frames per device batch (video); images per batch (batch of images)")] = None,
    devices: Annotated[str | None, typer.Option(help="video: split segments across devices, e.g. 0,1")] = None,
    cuda_graphs: Annotated[bool | None, typer.Option("--cuda-graphs/--no-cuda-graphs", help="GPU: replay the analysis nets and the swap from CUDA graphs")] = None,
    video_codec: Annotated[str | None, typer.Option(help="libx264, libx265, libsvtav1, … (default: auto)")] = None,
    crf: Annotated[int | None, typer.Option(help="encoder quality (lower is better)")] = None,
    preset: Annotated[str | None, typer.Option(help="encoder preset, e.g. veryfast")] = None,
    pix_fmt: Annotated[str | None, typer.Option(help="output pixel format, e.g. yuv420p")] = None,
    trim_start: Annotated[str | None, typer.Option(help="start at seconds ('1.5') or frame ('45f')")] = None,
    trim_end: Annotated[str | None, typer.Option(help="end at seconds ('9') or frame ('300f')")] = None,
    workers: Annotated[int | None, typer.Option(help="parallel segment encoders (video)")] = None,
    detect_every: Annotated[int | None, typer.Option(help="run the detector every N frames (video)")] = None,
    smoothing: Annotated[bool | None, typer.Option("--smoothing/--no-smoothing", help="temporal landmark smoothing")] = None,
    skip_corrupt: Annotated[bool | None, typer.Option("--skip-corrupt", help="drop undecodable frames, report count")] = None,
    max_pixels: Annotated[int | None, typer.Option(help="reject images/frames with more pixels")] = None,
    max_duration: Annotated[float | None, typer.Option(help="reject videos longer than this (s)")] = None,
    label: Annotated[bool | None, typer.Option("--label", help="draw a visible 'AI-generated' label")] = None,
) -> None:
    """Swap the face from SOURCE into TARGET (image or video) and write OUTPUT.

    With several targets (-t a folder, a quoted glob, or @list.txt) OUTPUT is a folder: one engine swaps them all,
    a bad target is reported and skipped, and the exit code is 3 when any target failed.
    """
    from faceweave import api

    settings = _settings_from(dict(
        selector=selector, face_index=face_index, reference_threshold=reference_threshold, swapper=swapper,
        shape_transfer=shape_transfer, keep_mouth=keep_mouth, keep_eyes=keep_eyes, blend=blend, enhancer=enhancer,
        detector=detector, recogniser=recogniser, occlusion_mask=occlusion_mask, occlusion=occlusion, detail_restore=detail_restore,
        hairline_fill=hairline_fill, pixel_boost=pixel_boost, model_dir=model_dir, device=device, dtype=dtype, batch_size=batch_size, devices=devices, cuda_graphs=cuda_graphs, video_codec=video_codec, crf=crf,
        preset=preset, pix_fmt=pix_fmt, trim_start=trim_start, trim_end=trim_end, workers=workers,
        detect_every=detect_every, smoothing=smoothing, skip_corrupt=skip_corrupt, max_pixels=max_pixels,
        max_duration_s=max_duration, provenance_label=label,
    ))
    if is_batch_target(str(target)):
        _swap_batch(source, str(target), output, settings, reference=reference, resume=resume,
                    pattern=output_pattern or DEFAULT_OUTPUT_PATTERN, json_report=json_report)
        return
    for given, name in ((output_pattern, "--output-pattern"), (resume or None, "--resume"), (json_report, "--json")):
        if given is not None:
            raise typer.BadParameter("only for a batch (-t a folder, a quoted glob or @list.txt)", param_hint=name)
    with _bar() as bar:
        result = api.swap(source, target, output, settings, progress=_RichProgress(bar), reference=reference)
    extra = f", {result.frames} frames" if result.kind == "video" else ""
    found = result.stats.get("faces_found")
    of = f" of {found} found" if found is not None and result.kind == "image" else ""
    err.print(f"[green]wrote[/green] {result.output} ({result.faces_swapped} face(s) swapped{of}{extra}, "
              f"{result.seconds:.2f} s)")
    for key, value in result.stats.get("warnings", {}).items():
        err.print(f"[yellow]warning[/yellow] {key}: {value}")


@app.command()
def analyze(
    image: Annotated[Path, typer.Argument(help="image to analyse")],
    landmarks: Annotated[bool, typer.Option(help="include the 468 FaceMesh points")] = False,
    identity: Annotated[bool, typer.Option(help="include 128-d identity embeddings")] = False,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N")] = "auto",
) -> None:
    """Print the faces found in IMAGE as JSON (box, score, 5 keypoints, roll; optionally landmarks, identity)."""
    from faceweave.media.image import read_image
    from faceweave.pipeline.engine import SwapEngine

    engine = SwapEngine(SwapSettings.build(device=device))
    img = read_image(image)
    t = engine.to_tensor(img.rgb)
    faces = engine.analyze(t)[0]
    if identity:
        faces = engine.identify(t, [faces])[0]
    rows = []
    for f in faces:
        d = f.to_dict()
        if not landmarks:
            d.pop("landmarks", None)
        rows.append(d)
    out.print_json(json.dumps({"image": image.name, "width": img.rgb.shape[1], "height": img.rgb.shape[0],
                               "faces": rows}))


@app.command(name="eval")
def eval_command(
    source: Annotated[list[Path], typer.Option("--source", "-s", help="source face image (repeat: one per pair)")],
    target: Annotated[list[Path], typer.Option("--target", "-t", help="target image or video, before the swap")],
    output: Annotated[list[Path], typer.Option("--output", "-o", help="swapped image or video to judge")],
    occluder: Annotated[list[Path] | None, typer.Option(help="mask image of a known occluder (per pair)")] = None,
    before: Annotated[list[Path] | None, typer.Option(help="an earlier output of the pair (contact sheet)")] = None,
    sheet: Annotated[Path | None, typer.Option(help="write a contact sheet: source | target | [before] | output")] = None,
) -> None:
    """Quality report (JSON) per pair: identity distances, landmark NME, seam, colour consistency (ΔE2000), sharpness,
    occluder preservation; for a video target, colour flicker against the input's."""
    from faceweave.eval.report import evaluate_pairs

    report = evaluate_pairs(source, target, output, occluder or [], before or [], sheet)
    out.print_json(json.dumps(report if len(report) > 1 else report[0]))


@app.command()
def demo(
    out_dir: Annotated[Path, typer.Option("--out-dir", help="where to write the demo outputs")] = Path("faceweave-demo"),
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N")] = "auto",
    video: Annotated[bool, typer.Option("--video/--no-video", help="also swap the bundled video clip")] = True,
) -> None:
    """Swap bundled public-domain faces, write a side-by-side sheet, and print the quality report."""
    from faceweave.demo import run_demo

    report = run_demo(out_dir, device=device, video=video, console=err)
    out.print_json(json.dumps(report))


def _mount_optional(module: str, attr: str, name: str, help_text: str) -> None:
    """Sub-command groups from other parts of the package (models, serve, keys, bench)."""
    try:
        sub = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError):
        return
    if isinstance(sub, typer.Typer):
        app.add_typer(sub, name=name, help=help_text)
    else:
        app.command(name=name, help=help_text)(sub)


_mount_optional("faceweave.models.cli", "models_app", "models", "List, locate, verify and fetch models.")
_mount_optional("faceweave.serve.cli", "serve_command", "serve", "Run the REST job service and web page.")
_mount_optional("faceweave.serve.cli", "keys_app", "keys", "Manage service API keys.")
_mount_optional("faceweave.bench", "bench_command", "bench", "Benchmark the pipeline (transcode vs swap, CPU/GPU).")
_mount_optional("faceweave.live.cli", "live_command", "live", "Swap a camera, stream or file live (real time).")
_mount_optional("faceweave.provenance.cli", "verify_command", "verify", "Check files for faceweave's provenance marks.")


@dataclass(frozen=True)
class _ClickErrors:
    """The exception classes of whichever Click the installed Typer raises.

    Typer ≥ 0.22 vendors Click as ``typer._click`` (its exceptions do not derive from ``click``'s), older Typer
    raises ``click``'s own; both may be installed, so accept either rather than mistaking a usage error for a bug.
    """

    any: tuple[type[Exception], ...]  # ClickException: has exit_code and format_message()
    usage: tuple[type[Exception], ...]  # UsageError: also ctx (the command whose usage line to print)
    no_args_help: tuple[type[Exception], ...]  # NoArgsIsHelpError (Click ≥ 8.2): help already printed

    @classmethod
    def installed(cls) -> _ClickErrors:
        found: dict[str, list[type[Exception]]] = {"ClickException": [], "UsageError": [], "NoArgsIsHelpError": []}
        for module in ("typer._click.exceptions", "click.exceptions"):
            try:
                mod = vars(importlib.import_module(module))
            except ImportError:
                continue
            for name, classes in found.items():
                if name in mod:
                    classes.append(mod[name])
        return cls(tuple(found["ClickException"]), tuple(found["UsageError"]), tuple(found["NoArgsIsHelpError"]))


def _report_click_error(exc: Any, kinds: _ClickErrors) -> int:
    """Print a Click/Typer error as the command's usage line plus one ``error [usage_error] …`` line; its exit code.

    Usage errors (missing or unknown option, unknown command, bad choice or number) exit 2, Click's convention.
    """
    is_usage = isinstance(exc, kinds.usage)  # a separate name: narrowing `exc` to Exception would hide its fields
    ctx = exc.ctx if is_usage else None
    if ctx is not None:
        err.print(escape(ctx.get_usage()), highlight=False, soft_wrap=True)
        err.print(escape(f"Try '{ctx.command_path} --help' for help."), highlight=False, soft_wrap=True)
    code = "usage_error" if exc.exit_code == 2 else "cli_error"
    message = " ".join(exc.format_message().split())
    err.print(f"[red]error[/red] {escape(f'[{code}] {message}')}", highlight=False, soft_wrap=True)
    return int(exc.exit_code)


def main() -> None:
    """Entry point: run the app, mapping library errors to exit codes and one-line messages (no tracebacks)."""
    kinds = _ClickErrors.installed()
    try:
        # prog_name: the usage line says `faceweave swap`, also when run as `python -m faceweave.cli`.
        code = app(standalone_mode=False, prog_name="faceweave")
    except FaceweaveError as exc:
        err.print(f"[red]error[/red] {escape(f'[{exc.code}] {exc.one_line()}')}", highlight=False, soft_wrap=True)
        raise SystemExit(exc.exit_code) from None
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/yellow]")
        raise SystemExit(130) from None
    except typer.Exit as exc:
        raise SystemExit(exc.exit_code) from None
    except typer.Abort:
        raise SystemExit(1) from None
    except kinds.no_args_help:
        raise SystemExit(2) from None  # the group's help is already on the screen
    except kinds.any as exc:
        raise SystemExit(_report_click_error(exc, kinds)) from None
    except Exception as exc:
        if os.environ.get("FACEWEAVE_DEBUG"):
            raise
        err.print("[red]error[/red] " + escape(f"[internal_error] unexpected {type(exc).__name__}: {exc} — this is a "
                                               "bug; rerun with FACEWEAVE_DEBUG=1 for the traceback and report it"),
                  highlight=False, soft_wrap=True)
        raise SystemExit(1) from None
    # Without standalone mode Typer returns a command's `typer.Exit(code)` instead of raising it.
    if isinstance(code, int) and code:
        raise SystemExit(code)


if __name__ == "__main__":
    main()
