"""Single-process GPU swap fps under thread settings (torch intra-op threads, encoder threads, dtype).

Each row sets ``torch.set_num_threads`` and the encoder's thread count, then swaps the first 6 s of INPUT on CUDA
(after a one-second warm-up job). Needs a CUDA GPU.

    python benchmarks/gpu_threads.py /tmp/in.mp4 threads.json
"""
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

import faceweave.pipeline.video as pv
from faceweave.data import media_path
from faceweave.settings import SwapSettings

src, out = Path(sys.argv[1]), Path(sys.argv[2])
orig_choose = pv.resolve_encoder
rows: list[dict[str, object]] = []
def run(dtype: str, torch_threads: int, enc_threads: int, seconds: str = "6") -> None:
    torch.set_num_threads(torch_threads)
    pv.resolve_encoder = lambda *a, **k: dataclasses.replace(orig_choose(*a, **k), threads=enc_threads)
    s = SwapSettings(device="cuda", dtype=dtype, crf=20, preset="veryfast", batch_size=8, trim_end=seconds)
    t0 = time.perf_counter()
    res = pv.swap_video([media_path("astronaut.png")], src, Path("/tmp/x.mp4"), s)
    dt = time.perf_counter() - t0
    row = {"dtype": dtype, "torch_threads": torch_threads, "enc_threads": enc_threads, "frames": res.frames,
           "fps": round(res.frames / dt, 1)}
    print(row, flush=True)
    rows.append(row)
run("float16", 16, 0, "1")  # warm-up
for args in (("float16", 16, 0), ("float32", 16, 0), ("float32", 2, 0), ("float32", 2, 8), ("float32", 1, 4),
             ("float16", 2, 8)):
    run(*args)
out.write_text(json.dumps(rows, indent=1))
