"""Peak GPU memory of a streaming video swap does not grow with the video's length.

    python benchmarks/gpu_memory.py --input clip.mp4 --short 10 --long 60
    python benchmarks/gpu_memory.py --synth-fps 5 --short 10 --long 600 --json mem.json

Runs the single-process streaming pipeline on the first ``--short`` and ``--long`` seconds of the same clip (in
that order, each in a fresh process) and prints ``torch.cuda.max_memory_allocated`` / ``max_memory_reserved`` and
the NVML peak of the whole card for both, and their ratios; for each run also when the peak rose (frames done,
after each batch; 0 = before the warm-up) and how many CUDA graphs each of the engine's caches holds.

Without ``--input`` it synthesises a ``--size`` clip of ``--long`` seconds with audio (``faceweave.bench``'s moving
face and tone) at ``--synth-fps``. A low frame rate keeps a 10-minute clip affordable (at 3 fps its first 10 s are
only 30 frames, too few to reach the pipeline's steady state; 10 fps gives 100): the pipeline holds at most
a fixed number of batches in flight (``QUEUE_BATCHES`` per queue × ``--batch-size`` frames), so its memory depends
on the frame size and batch size, not on how many frames or seconds the video has. Needs a CUDA GPU.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from faceweave.bench import GpuMonitor, synthesize_video
from faceweave.data import media_path
from faceweave.models.tflite_graph import GraphNet
from faceweave.pipeline.engine import SwapEngine
from faceweave.pipeline.video import swap_video
from faceweave.progress import Progress
from faceweave.settings import SwapSettings


def graph_counts(engine: SwapEngine) -> dict[str, int]:
    """CUDA graphs the engine's caches hold (all captured at warm-up when none is added during the run)."""
    nets = {f"{owner}.{name}": len(m.captured) for owner in ("detector", "mesh")
            for name, m in getattr(engine, owner).named_modules() if isinstance(m, GraphNet)}
    nets["swap"] = len(engine.crop_graphs.captured) if engine.crop_graphs is not None else 0
    return nets


def measure(src: Path, seconds: float, batch_size: int, out_dir: Path) -> dict:
    """One streaming swap of the first ``seconds`` of ``src`` with a fresh engine; its GPU memory figures."""
    torch.cuda.reset_peak_memory_stats()
    at_start = torch.cuda.memory_allocated() / 2**20
    settings = SwapSettings(device="cuda", dtype="float16", trim_end=str(seconds), batch_size=batch_size)
    engine = SwapEngine(settings)
    peak_steps: list[tuple[int, float]] = []  # (frames done, peak allocated MB) each time the peak rose > 1 MB

    def trace(p: Progress) -> None:
        peak = torch.cuda.max_memory_allocated() / 2**20
        if not peak_steps or peak > peak_steps[-1][1] + 1:
            peak_steps.append((p.frames_done, round(peak, 1)))

    with GpuMonitor() as mon:
        t0 = time.perf_counter()
        res = swap_video([media_path("astronaut.png")], src, out_dir / f"o{seconds:g}.mp4", settings, engine=engine,
                         progress=trace)
        dt = time.perf_counter() - t0
    return {
        "frames": res.frames, "faces_swapped": res.faces_swapped, "seconds": round(dt, 1),
        "fps": round(res.frames / dt, 1),  # includes CUDA/cuDNN start-up, model loading and the warm-up
        "peak_allocated_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1),
        "peak_reserved_mb": round(torch.cuda.max_memory_reserved() / 2**20, 1),
        "nvml_peak_used_mb": mon.summary()["gpu_mem_peak_mb"],  # whole card: CUDA context included
        "process_max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "allocated_at_start_mb": round(at_start, 1),
        "peak_steps": peak_steps,  # when the peak rose: frames done (0: before the warm-up), MB
        "graphs": graph_counts(engine),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--input", type=Path, help="video to swap (default: synthesise one)")
    ap.add_argument("--short", type=float, default=10, help="seconds of the short run")
    ap.add_argument("--long", type=float, default=60, help="seconds of the long run (and of a synthesised clip)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--size", default="1920x1080", help="synthesised frame size WxH")
    ap.add_argument("--synth-fps", type=int, default=30, help="frame rate of a synthesised clip")
    ap.add_argument("--json", type=Path, help="write the results here (rewritten after each run)")
    ap.add_argument("--one-run", type=float, default=None, help=argparse.SUPPRESS)  # internal: a child process
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    if args.one_run is not None:  # the child: one run, its figures as the last line of stdout
        print(json.dumps(measure(args.input, args.one_run, args.batch_size, tmp)), flush=True)
        return
    report: dict = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "batch_size": args.batch_size}
    src = args.input
    if src is None:
        w, h = (int(v) for v in args.size.lower().split("x"))
        t0 = time.perf_counter()
        src = synthesize_video(tmp / "long.mp4", width=w, height=h, seconds=args.long, fps=args.synth_fps)
        report["synthesised"] = {"size": args.size, "fps": args.synth_fps, "seconds": args.long,
                                 "synth_s": round(time.perf_counter() - t0, 1)}
        print(json.dumps(report), flush=True)
    report["input"] = str(src)
    runs: dict = {}
    for seconds in (args.short, args.long):
        # a process per run: CUDA and cuBLAS keep per-process state (workspaces, cached constants) that a second
        # run in the same process would inherit
        child = subprocess.run([sys.executable, __file__, "--input", str(src), "--one-run", str(seconds),
                                "--batch-size", str(args.batch_size)], capture_output=True, text=True, check=False)
        if child.returncode != 0:
            raise SystemExit(f"the {seconds:g} s run failed:\n{child.stderr[-3000:]}")
        runs[f"{seconds:g}s"] = json.loads(child.stdout.strip().splitlines()[-1])
        report["runs"] = runs
        print(json.dumps(runs), flush=True)
        if args.json:
            args.json.write_text(json.dumps(report, indent=1))
    short, long = (runs[f"{s:g}s"] for s in (args.short, args.long))
    report["ratio_long_to_short"] = {k: round(long[k] / short[k], 4) for k in ("peak_allocated_mb", "peak_reserved_mb")}
    print(json.dumps(report["ratio_long_to_short"]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
