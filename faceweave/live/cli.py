"""``faceweave live``: swap a camera, a network stream or a file played in real time, into a file, a stream or a
virtual camera. Mounted into the main CLI by ``faceweave/cli.py``; its errors map to exit codes there."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Annotated, Any

import typer


def live_command(
    source: Annotated[list[Path], typer.Option("--source", "-s", help="source face image(s); repeat for several")],
    input_spec: Annotated[str, typer.Option("--input", "-i", help="/dev/videoN, a stream URL (rtsp/rtmp/srt/udp/http) or a video file (played in real time)")],
    output_spec: Annotated[str, typer.Option("--output", "-o", help="a video file, a stream URL, or 'virtualcam' (needs pyvirtualcam)")],
    stats_json: Annotated[Path | None, typer.Option("--stats-json", help="write fps in/out, dropped frames and latency p50/p95/p99 here")] = None,
    selector: Annotated[str | None, typer.Option(help="which faces: one (largest), many, reference, index")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda or cuda:N")] = None,
    dtype: Annotated[str | None, typer.Option(help="auto, float32, float16, bfloat16")] = None,
    detect_every: Annotated[int | None, typer.Option(help="run the detector every N frames, track between")] = None,
    enhancer: Annotated[str | None, typer.Option(help="'detail' (built-in), a plug-in model, or 'none' (default: none, for speed)")] = None,
    blend: Annotated[str | None, typer.Option(help="laplacian, poisson or feather")] = None,
    swapper: Annotated[str | None, typer.Option(help="'mesh' (built-in) or a plug-in model")] = None,
    smoothing: Annotated[bool | None, typer.Option("--smoothing/--no-smoothing", help="temporal landmark smoothing")] = None,
    label: Annotated[bool | None, typer.Option("--label", help="draw a visible 'AI-generated' label")] = None,
) -> None:
    """Swap the face from SOURCE into a live INPUT in real time (frames dropped, never queued, when behind).

    Ctrl-C stops the session cleanly: the output file is closed valid and the stats are written.
    """
    from rich.console import Console

    from faceweave.live import LIVE_DEFAULTS
    from faceweave.live.session import run_live
    from faceweave.settings import SwapSettings

    given: dict[str, Any] = {k: v for k, v in dict(
        selector=selector, device=device, dtype=dtype, detect_every=detect_every, blend=blend, swapper=swapper,
        smoothing=smoothing, provenance_label=label).items() if v is not None}
    # live mode's defaults (no enhancer, no detail restoration); an enhancer asked for by name is used
    given = {**LIVE_DEFAULTS, **given, "enhancer": None if enhancer in (None, "none") else enhancer}
    settings = SwapSettings.build(**given)
    err = Console(stderr=True)
    stop = threading.Event()

    def on_sigint(signum: int, frame: Any) -> None:
        err.print("[yellow]stopping[/yellow] (Ctrl-C again to abort)")
        stop.set()
        signal.signal(signal.SIGINT, previous)  # a second Ctrl-C interrupts at once (the output is still closed)

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        summary = run_live(source, input_spec, output_spec, settings, stats_json=stats_json, stop=stop,
                           on_start=lambda: err.print(f"live session running: {input_spec} → {output_spec} "
                                                      "(Ctrl-C to stop)"))
    finally:
        signal.signal(signal.SIGINT, previous)
    err.print(f"[green]live session {summary['ended']}[/green]: {summary['frames_out']} frames out of "
              f"{summary['frames_in']} in ({summary['dropped']} dropped), {summary['fps_out']} fps out, latency p50 "
              f"{summary['latency_p50_ms']} ms, p95 {summary['latency_p95_ms']} ms")


__all__ = ["live_command"]
