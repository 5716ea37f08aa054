"""Where a CPU video job's time goes, per stage, in CPU time (issue 19 goal 5's profile; works on a loaded VM).

Runs ``swap_video`` on the carphone clip letterboxed to ``--size`` with torch on one thread, so every torch op runs
in the thread that called it and ``time.thread_time`` charges it to its stage: detection (recall passes with the
small-face tiles and plain whole-view detections apart), FaceMesh on tracked frames, the swap; the rest of the
process's CPU time (decode, encode, tracking, colour conversion) is "other". ``--recall-every 1`` runs the tiles on
every detection frame (the behaviour before the recall policy); the default is the policy's.

    python benchmarks/video_stage_cpu.py --size 640x480 --frames 90 --recall-every 1
    python benchmarks/video_stage_cpu.py --size 640x480 --frames 90
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from faceweave.data import media_path
from faceweave.pipeline import video_faces
from faceweave.pipeline.engine import SwapEngine
from faceweave.pipeline.video import swap_video
from faceweave.settings import SwapSettings


def main() -> None:
    from video_cpu import make_clip  # benchmarks/ is the script's folder

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="640x480")
    ap.add_argument("--frames", type=int, default=90)
    ap.add_argument("--detect-every", type=int, default=5)
    ap.add_argument("--recall-every", type=int, default=None, help="default: the policy's RECALL_EVERY")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.recall_every is not None:
        video_faces.RECALL_EVERY = args.recall_every  # benchmark only
    settings = SwapSettings(device="cpu", preset="veryfast", crf=20, detect_every=args.detect_every, batch_size=8)
    engine = SwapEngine(settings)
    cpu: collections.Counter[str] = collections.Counter()

    def timed(name: str, fn: Any) -> Any:
        def wrapper(*a: Any, **k: Any) -> Any:
            c0 = time.thread_time()
            try:
                return fn(*a, **k)
            finally:
                key = name if name != "analyze" else ("detect+mesh, recall" if k.get("recall", True)
                                                      else "detect+mesh, plain")
                cpu[key] += time.thread_time() - c0
        return wrapper

    engine.analyze = timed("analyze", engine.analyze)  # type: ignore[method-assign]
    engine.refine = timed("FaceMesh (tracked frames)", engine.refine)  # type: ignore[method-assign]
    engine.swap = timed("swap", engine.swap)  # type: ignore[method-assign]
    w, h = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "in.mp4"
        make_clip(clip, (w, h), args.frames)
        swap_video([media_path("astronaut.png")], clip, Path(tmp) / "warm.mp4", settings, engine=engine)  # warm-up
        cpu.clear()
        load0 = os.getloadavg()[0]
        t0, c0 = time.perf_counter(), time.process_time()
        result = swap_video([media_path("astronaut.png")], clip, Path(tmp) / "o.mp4", settings, engine=engine)
        wall, total = time.perf_counter() - t0, time.process_time() - c0
    n = result.frames
    rows = {k: round(v / n * 1000, 1) for k, v in sorted(cpu.items())}
    rows["other (decode, encode, tracking, conversions)"] = round((total - sum(cpu.values())) / n * 1000, 1)
    out = {"size": args.size, "frames": n, "recall_every": video_faces.RECALL_EVERY,
           "detections": result.stats["detections"], "recall_passes": result.stats["recall_passes"],
           "cpu_ms_per_frame": rows, "cpu_ms_per_frame_total": round(total / n * 1000, 1),
           "wall_fps": round(n / wall, 2), "load": (load0, os.getloadavg()[0])}
    print(json.dumps(out, indent=1))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
