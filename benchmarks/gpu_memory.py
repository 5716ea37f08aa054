"""Peak GPU memory of a streaming video swap does not grow with the video's length.

    python benchmarks/gpu_memory.py --input clip.mp4 --short 10 --long 60

Runs the single-process streaming pipeline on the first ``--short`` and ``--long`` seconds of the same clip (in
that order, one engine each) and prints ``torch.cuda.max_memory_allocated`` for both.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from faceweave.data import media_path
from faceweave.pipeline.video import swap_video
from faceweave.settings import SwapSettings


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--input", type=Path, required=True)
    ap.add_argument("--short", type=float, default=10)
    ap.add_argument("--long", type=float, default=60)
    ap.add_argument("--batch-size", type=int, default=8)
    args = ap.parse_args()
    out = {}
    tmp = Path(tempfile.mkdtemp())
    for seconds in (args.short, args.long):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        settings = SwapSettings(device="cuda", dtype="float16", trim_end=str(seconds), batch_size=args.batch_size)
        t0 = time.perf_counter()
        res = swap_video([media_path("astronaut.png")], args.input, tmp / f"o{seconds}.mp4", settings)
        dt = time.perf_counter() - t0
        out[f"{seconds:g}s"] = {"frames": res.frames, "fps": round(res.frames / dt, 1),
                                "peak_allocated_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1),
                                "peak_reserved_mb": round(torch.cuda.max_memory_reserved() / 2**20, 1)}
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
