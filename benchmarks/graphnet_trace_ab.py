"""A/B of GraphNet's CPU trace (``cpu_trace``) on the 512² image's warm path (detect, landmarks, swap), interleaved
in one process: wall and CPU ms medians, their ratios, and whether the swapped images are equal. Not a test.

    python benchmarks/graphnet_trace_ab.py [--rounds 10]      # OMP_NUM_THREADS=1 for one torch thread
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from faceweave.data import media_path
from faceweave.media.image import read_image
from faceweave.models.tflite_graph import GraphNet
from faceweave.pipeline.engine import SwapEngine
from faceweave.settings import SwapSettings


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=10)
    args = ap.parse_args()
    engine = SwapEngine(SwapSettings(device="cpu"))
    prepared = engine.prepare_sources([read_image(media_path("grace_hopper.jpg")).rgb])
    target = read_image(media_path("astronaut.png")).rgb
    nets = [m for owner in (engine.detector, engine.mesh) for m in owner.modules() if isinstance(m, GraphNet)]

    def warm() -> torch.Tensor:
        t = engine.to_tensor(target)
        faces = engine.mesh.landmarks(t, engine.detector.detect(t))
        out = engine.swap(t, [engine.select(faces[0], prepared)], prepared)
        return out.mul(255).round().to(torch.uint8).cpu()

    def use_trace(on: bool) -> None:
        for net in nets:
            net.cpu_trace = on

    outs = {}
    for on in (False, True):
        use_trace(on)
        for _ in range(5):  # traced at the 3rd call, profiled at the 4th
            outs[on] = warm()
    wall: dict[bool, list[float]] = {False: [], True: []}
    cpu: dict[bool, list[float]] = {False: [], True: []}
    for r in range(args.rounds):
        for on in (False, True) if r % 2 == 0 else (True, False):
            use_trace(on)
            for _ in range(3):
                w0, c0 = time.perf_counter(), time.process_time()
                warm()
                wall[on].append((time.perf_counter() - w0) * 1000)
                cpu[on].append((time.process_time() - c0) * 1000)
    med = {on: (statistics.median(wall[on]), statistics.median(cpu[on])) for on in (False, True)}
    print({"threads": torch.get_num_threads(), "outputs_equal": torch.equal(outs[False], outs[True]),
           "eager_wall_ms": round(med[False][0], 1), "trace_wall_ms": round(med[True][0], 1),
           "eager_cpu_ms": round(med[False][1], 1), "trace_cpu_ms": round(med[True][1], 1),
           "ratio_wall": round(med[True][0] / med[False][0], 3), "ratio_cpu": round(med[True][1] / med[False][1], 3)})


if __name__ == "__main__":
    main()
