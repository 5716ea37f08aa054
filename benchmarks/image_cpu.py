"""Per-stage milliseconds of a 512² image swap (issue: foundation). Not a test: run it and read the table.

    python benchmarks/image_cpu.py [--repeats 20] [--device cpu] [--json out.json]

Warm = the source already prepared (the per-target cost of a job); cold = source preparation included
(models already loaded, as in a running service).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from faceweave.data import media_path
from faceweave.media.image import read_image
from faceweave.pipeline.engine import SwapEngine
from faceweave.settings import SwapSettings


def _ms(f, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--source", default="grace_hopper.jpg")
    ap.add_argument("--target", default="astronaut.png")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    engine = SwapEngine(SwapSettings(device=args.device))
    src = read_image(media_path(args.source)).rgb
    tgt = read_image(media_path(args.target)).rgb
    prepared = engine.prepare_sources([src])
    frame = engine.to_tensor(tgt)

    def warm() -> None:
        with record_function("stage.to_tensor"):
            t = engine.to_tensor(tgt)
        with record_function("stage.detect"):
            faces = engine.detector.detect(t)
        with record_function("stage.landmarks"):
            faces = engine.mesh.landmarks(t, faces)
        plan = engine.select(faces[0], prepared)
        with record_function("stage.swap"):
            out = engine.swap(t, [plan], prepared)
        with record_function("stage.to_uint8"):
            out.mul(255).round().to(torch.uint8).cpu()

    def cold() -> None:
        p = engine.prepare_sources([src])
        t = engine.to_tensor(tgt)
        faces = engine.analyze(t)
        engine.swap(t, [engine.select(faces[0], p)], p)

    for _ in range(3):
        warm()
        cold()
    warm_ms = _ms(warm, args.repeats)
    cold_ms = _ms(cold, args.repeats)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.repeats):
            warm()
    stages = {}
    for evt in prof.key_averages():
        if evt.key.startswith(("stage.", "swap.")):
            stages[evt.key] = round(evt.cpu_time_total / 1000 / args.repeats, 2)
    report = {
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        "torch": torch.__version__,
        "device": str(engine.device),
        "image": f"{tgt.shape[1]}x{tgt.shape[0]}",
        "warm_ms_median": round(statistics.median(warm_ms), 1),
        "cold_ms_median": round(statistics.median(cold_ms), 1),
        "stages_ms": stages,
    }
    print(json.dumps(report, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    del frame


if __name__ == "__main__":
    main()
