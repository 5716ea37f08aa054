"""Peak GPU memory of a streaming video swap does not grow with the video's length.

    python benchmarks/gpu_memory.py --input clip.mp4 --short 10 --long 60
    python benchmarks/gpu_memory.py --synth-fps 5 --short 10 --long 600 --json mem.json

Runs the single-process streaming pipeline on the first ``--short`` and ``--long`` seconds of the same clip (in
that order, one engine each) and prints ``torch.cuda.max_memory_allocated`` / ``max_memory_reserved`` (peaks reset
before each run) and the NVML peak of the whole card for both, and their ratios; for each run also when the peak
rose (frames done, after each batch; 0 = the warm-up) and how many CUDA graphs each of the engine's caches holds.

Without ``--input`` it synthesises a ``--size`` clip of ``--long`` seconds with audio (``faceweave.bench``'s moving
face and tone) at ``--synth-fps``. A low frame rate keeps a 10-minute clip affordable: the pipeline holds at most
a fixed number of batches in flight (``QUEUE_BATCHES`` per queue × ``--batch-size`` frames), so its memory depends
on the frame size and batch size, not on how many frames or seconds the video has. Needs a CUDA GPU.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--input", type=Path, help="video to swap (default: synthesise one)")
    ap.add_argument("--short", type=float, default=10, help="seconds of the short run")
    ap.add_argument("--long", type=float, default=60, help="seconds of the long run (and of a synthesised clip)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--size", default="1920x1080", help="synthesised frame size WxH")
    ap.add_argument("--synth-fps", type=int, default=30, help="frame rate of a synthesised clip")
    ap.add_argument("--json", type=Path, help="write the results here (rewritten after each run)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
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
        # the previous run's engine must be gone: its nets and CUDA graphs form reference cycles (a graph cache
        # holds its net's bound method), which only the cycle collector frees, and its graph pools with them
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        at_start = torch.cuda.memory_allocated() / 2**20
        settings = SwapSettings(device="cuda", dtype="float16", trim_end=str(seconds), batch_size=args.batch_size)
        engine = SwapEngine(settings)
        peak_steps: list[tuple[int, float]] = []  # (frames done, peak allocated MB) each time the peak rose > 1 MB

        def trace(p: Progress, steps: list[tuple[int, float]] = peak_steps) -> None:
            peak = torch.cuda.max_memory_allocated() / 2**20
            if not steps or peak > steps[-1][1] + 1:
                steps.append((p.frames_done, round(peak, 1)))

        with GpuMonitor() as mon:
            t0 = time.perf_counter()
            res = swap_video([media_path("astronaut.png")], src, tmp / f"o{seconds:g}.mp4", settings, engine=engine,
                             progress=trace)
            dt = time.perf_counter() - t0
        runs[f"{seconds:g}s"] = {
            "frames": res.frames, "faces_swapped": res.faces_swapped, "seconds": round(dt, 1),
            "fps": round(res.frames / dt, 1),  # the first run includes CUDA/cuDNN start-up and model loading
            "peak_allocated_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1),
            "peak_reserved_mb": round(torch.cuda.max_memory_reserved() / 2**20, 1),
            "nvml_peak_used_mb": mon.summary()["gpu_mem_peak_mb"],  # whole card: CUDA context included
            "process_max_rss_mb_so_far": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "allocated_at_start_mb": round(at_start, 1),  # should be ~0: nothing left from the previous run
            "peak_steps": peak_steps,  # when the peak was reached: frames done (0: warm-up), MB
            "graphs": graph_counts(engine),
        }
        del engine, res
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
