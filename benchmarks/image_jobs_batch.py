"""Image jobs of many requests batched on one warm engine (issue 18): N jobs through one
:func:`~faceweave.pipeline.image_batch.swap_image_batch` call versus the same N jobs one at a time on the same warm
engine (prepare the sources, swap the target: what each job cost before). Not a test: run it and read the lines.

    python benchmarks/image_jobs_batch.py [--jobs 8] [--device cpu] [--repeats 5] [--json out.json]

The jobs are what a service sees from several users: targets of four sizes made from the bundled faces (crops,
mirrored and brightness-shifted copies, so no two are equal), two different sources, alternating. Both sides run
in-process on one engine loaded and warmed once, so the difference is the forwards alone (no process start, no
file I/O). The two sides alternate (ABAB…) and the ratio of each pair is reported with the median, so a busy machine
slows both alike. The engine calls each side took are counted on the real engine (CountingEngine).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections import Counter

import cv2
import numpy as np
import torch

from faceweave.analysis.detect import FaceDetector
from faceweave.analysis.landmarks import FaceMesh
from faceweave.data import media_path
from faceweave.pipeline.engine import SwapEngine
from faceweave.pipeline.image import swap_image_counted
from faceweave.pipeline.image_batch import CountingEngine, ImageJob, swap_image_batch
from faceweave.settings import SwapSettings


def rgb(name: str) -> np.ndarray:
    bgr = cv2.imread(str(media_path(name)), cv2.IMREAD_COLOR)
    assert bgr is not None
    return np.ascontiguousarray(bgr[:, :, ::-1])


def make_jobs(n: int, settings: SwapSettings) -> list[ImageJob]:
    faces = [rgb("astronaut.png"), rgb("obama2.jpg"), rgb("grace_hopper.jpg"), rgb("obama.jpg")]
    sources = [rgb("grace_hopper.jpg"), rgb("obama.jpg")]
    jobs = []
    for k in range(n):
        im = faces[k % len(faces)]
        if k // len(faces) % 2:
            im = im[:, ::-1]
        shift = 6 * (k // (2 * len(faces)))  # more copies than that: brightness-shifted, never equal
        target = np.ascontiguousarray(np.clip(im.astype(np.int16) + shift, 0, 255).astype(np.uint8))
        jobs.append(ImageJob([sources[k % 2]], target, settings))
    return jobs


def one_by_one(jobs: list[ImageJob], engine: SwapEngine) -> None:
    for job in jobs:
        prepared = engine.prepare_sources(job.sources)
        swap_image_counted(prepared, job.target, engine)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=8)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    settings = SwapSettings(device=args.device)
    engine = SwapEngine(settings)
    engine.warm_up()
    counting = CountingEngine(engine)
    jobs = make_jobs(args.jobs, settings)
    sync = torch.cuda.synchronize if engine.device.type == "cuda" else (lambda: None)

    def batched() -> None:
        swap_image_batch(jobs, lambda _: counting)

    def single() -> None:
        one_by_one(jobs, engine)

    batched(), single()  # warm: first forwards at these batch shapes
    sync()
    times: dict[str, list[float]] = {"batched": [], "single": []}
    for _ in range(args.repeats):
        for name, fn in (("batched", batched), ("single", single)):
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - t0)
    # the model forwards each side runs, counted by hooks on the real nets (BlazeFace short/full, FaceMesh)
    forwards: Counter[str] = Counter()
    detector, mesh = engine.detector, engine.mesh
    assert isinstance(detector, FaceDetector) and isinstance(mesh, FaceMesh)  # the built-in ones (the default)
    nets = {"blazeface_short": detector.short, "blazeface_full": detector.full, "facemesh": mesh.net}
    for name, net in nets.items():
        net.register_forward_hook(lambda *_, n=name: forwards.update([n]))
    before = counting.calls.copy()
    batched()
    calls_batched, forwards_batched = dict(counting.calls - before), dict(forwards)
    forwards.clear()
    single()
    forwards_single = dict(forwards)
    ratios = [s / b for s, b in zip(times["single"], times["batched"], strict=True)]
    out = {
        "jobs": args.jobs, "device": str(engine.device), "repeats": args.repeats,
        "batched_s_median": statistics.median(times["batched"]), "single_s_median": statistics.median(times["single"]),
        "speedup_median": statistics.median(ratios), "speedup_min": min(ratios), "speedup_max": max(ratios),
        "engine_calls_batched": calls_batched, "net_forwards_batched": forwards_batched,
        "net_forwards_single": forwards_single,
        "load_average": os.getloadavg(), "cpu_count": os.cpu_count(), "machine": platform.node(),
        "torch_threads": torch.get_num_threads(),
    }
    print(f"{args.jobs} image jobs on {engine.device}: batched {out['batched_s_median']:.3f} s, one by one "
          f"{out['single_s_median']:.3f} s (median of {args.repeats}); speed-up per ABAB pair median "
          f"{out['speedup_median']:.2f}x (min {out['speedup_min']:.2f}, max {out['speedup_max']:.2f}); engine calls "
          f"batched {calls_batched}; net forwards batched {forwards_batched}, one by one {forwards_single}; "
          f"load average {os.getloadavg()[0]:.2f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)


if __name__ == "__main__":
    main()
