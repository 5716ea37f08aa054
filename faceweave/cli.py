"""The ``faceweave`` command line. The one place where library errors become exit codes and one-line messages."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from faceweave.errors import FaceweaveError
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


@app.command()
def swap(
    source: Annotated[list[Path], typer.Option("--source", "-s", help="source face image(s); repeat for several")],
    target: Annotated[Path, typer.Option("--target", "-t", help="target image or video")],
    output: Annotated[Path, typer.Option("--output", "-o", help="output file; its extension picks the format")],
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
    pixel_boost: Annotated[int | None, typer.Option(help="128-px swappers: k×k tiles (1, 2, 4)")] = None,
    model_dir: Annotated[str | None, typer.Option(help="plug-in model folder (default $FACEWEAVE_MODELS)")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda or cuda:N")] = None,
    dtype: Annotated[str | None, typer.Option(help="auto, float32, float16, bfloat16")] = None,
    batch_size: Annotated[int | None, typer.Option(help="frames per batch (video)")] = None,
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
    """Swap the face from SOURCE into TARGET (image or video) and write OUTPUT."""
    from faceweave import api

    settings = _settings_from(dict(
        selector=selector, face_index=face_index, reference_threshold=reference_threshold, swapper=swapper,
        shape_transfer=shape_transfer, keep_mouth=keep_mouth, keep_eyes=keep_eyes, blend=blend, enhancer=enhancer,
        detector=detector, recogniser=recogniser, occlusion_mask=occlusion_mask, pixel_boost=pixel_boost,
        model_dir=model_dir, device=device, dtype=dtype, batch_size=batch_size, devices=devices, cuda_graphs=cuda_graphs, video_codec=video_codec, crf=crf,
        preset=preset, pix_fmt=pix_fmt, trim_start=trim_start, trim_end=trim_end, workers=workers,
        detect_every=detect_every, smoothing=smoothing, skip_corrupt=skip_corrupt, max_pixels=max_pixels,
        max_duration_s=max_duration, provenance_label=label,
    ))
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[fps]}"),
                  TimeRemainingColumn(), console=err, transient=True) as bar:
        result = api.swap(source, target, output, settings, progress=_RichProgress(bar), reference=reference)
    extra = f", {result.frames} frames" if result.kind == "video" else ""
    err.print(f"[green]wrote[/green] {result.output} ({result.faces_swapped} face(s) swapped{extra}, "
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
    source: Annotated[Path, typer.Option("--source", "-s", help="source face image")],
    target: Annotated[Path, typer.Option("--target", "-t", help="target image (before the swap)")],
    output: Annotated[Path, typer.Option("--output", "-o", help="swapped image to judge")],
) -> None:
    """Quality report (JSON): identity distance to source and target, landmark NME to target, seam score."""
    from faceweave.eval.metrics import evaluate_files

    out.print_json(json.dumps(evaluate_files(source, target, output).to_dict()))


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
    import importlib

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


def main() -> None:
    """Entry point: run the app, mapping library errors to exit codes and one-line messages (no tracebacks)."""
    try:
        app(standalone_mode=False)
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
    except Exception as exc:  # click usage errors
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            raise SystemExit(exc.exit_code) from None
        import os

        if os.environ.get("FACEWEAVE_DEBUG"):
            raise
        err.print("[red]error[/red] " + escape(f"[internal_error] unexpected {type(exc).__name__}: {exc} — this is a "
                                               "bug; rerun with FACEWEAVE_DEBUG=1 for the traceback and report it"),
                  highlight=False, soft_wrap=True)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
