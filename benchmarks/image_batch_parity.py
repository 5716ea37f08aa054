"""How far the cross-request image batch (``swap_image_batch``) is from one-by-one swaps, per dtype and graphs setting
(a diagnostic, not a test; issue 18: on CUDA fp16 the 512² job differed in 5114 pixels by > 2 levels, max 85).

Five jobs of four target sizes share one batch; for each job it prints the largest per-pixel difference (uint8
levels, any channel) and how many pixels differ by more than 2 levels. On the CPU it runs float32, eager only.

    python benchmarks/image_batch_parity.py --device cuda
    python benchmarks/image_batch_parity.py --device cpu
"""

from __future__ import annotations

import argparse

import numpy as np

from faceweave.data import media_path
from faceweave.media.image import read_image
from faceweave.pipeline.engine import SwapEngine
from faceweave.pipeline.image import swap_image_counted
from faceweave.pipeline.image_batch import CountingEngine, ImageJob, ImageOutcome, swap_image_batch
from faceweave.settings import SwapSettings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args()
    rgb = {n: read_image(media_path(n)).rgb for n in ("grace_hopper.jpg", "astronaut.png", "obama2.jpg")}
    hopper, astronaut = rgb["grace_hopper.jpg"], rgb["astronaut.png"]
    targets = [astronaut, rgb["obama2.jpg"], np.ascontiguousarray(hopper[40:, ::-1]),
               np.ascontiguousarray(astronaut[:400, 50:]), np.ascontiguousarray(astronaut[:, ::-1])]
    gpu = args.device.startswith("cuda")
    for dtype in ("float16", "float32") if gpu else ("float32",):
        for graphs in (True, False) if gpu else (False,):
            settings = SwapSettings(device=args.device, dtype=dtype, cuda_graphs=graphs)  # type: ignore[arg-type]
            engine = SwapEngine(settings)
            jobs = [ImageJob([hopper], t, settings) for t in targets]
            batched = swap_image_batch(jobs, lambda _s, e=engine: CountingEngine(e))
            row = []
            for job, got in zip(jobs, batched, strict=True):
                assert isinstance(got, ImageOutcome), got
                single, _, _ = swap_image_counted(engine.prepare_sources(job.sources), job.target, engine)
                diff = np.abs(got.image.astype(int) - single.astype(int)).max(-1)
                row.append(f"{job.target.shape[1]}x{job.target.shape[0]}: max {int(diff.max())}, "
                           f"{int((diff > 2).sum())} px > 2")
            print(f"{dtype} {'graphs' if graphs else 'eager'}: " + "; ".join(row), flush=True)


if __name__ == "__main__":
    main()
