"""Interleaved A/B of the warm 512² image path on the CPU (issue 19 goal 5, session 18:56). Not a test.

    python benchmarks/image_cpu_ab.py [--rounds 6] [--per 5] [--threads N]

A = the path before this session's changes (small-face tiles, the swap outside inference mode: ``level_views=False``
and ``SwapEngine._swap``); B = the current path (level views on the CPU, ``SwapEngine.swap`` in inference mode). Both
in one process on one engine, alternating every ``--per`` calls (ABBA order), after warm-up (the nets' CPU traces of
every view shape made). Prints median wall and process CPU ms per image, and B/A.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from faceweave.data import media_path
from faceweave.media.image import read_image
from faceweave.pipeline.engine import SwapEngine
from faceweave.settings import SwapSettings


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--per", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    engine = SwapEngine(SwapSettings(device="cpu"))
    prepared = engine.prepare_sources([read_image(media_path("grace_hopper.jpg")).rgb])
    target = read_image(media_path("astronaut.png")).rgb

    def image(new: bool) -> torch.Tensor:
        engine.detector.level_views = new
        frames = engine.to_tensor(target)
        faces = engine.analyze(frames)
        plan = [engine.select(faces[0], prepared)]
        out = engine.swap(frames, plan, prepared) if new else engine._swap(frames, plan, prepared)
        return out.mul(255).round().to(torch.uint8).cpu()

    for new in (False, True):
        for _ in range(4):
            image(new)
    wall: dict[bool, list[float]] = {False: [], True: []}
    cpu: dict[bool, list[float]] = {False: [], True: []}
    for r in range(args.rounds):
        for new in ((False, True) if r % 2 == 0 else (True, False)):
            for _ in range(args.per):
                t0, c0 = time.perf_counter(), time.process_time()
                image(new)
                wall[new].append((time.perf_counter() - t0) * 1000)
                cpu[new].append((time.process_time() - c0) * 1000)
    med = {k: (statistics.median(wall[k]), statistics.median(cpu[k])) for k in (False, True)}
    print(f"torch threads {torch.get_num_threads()}, {len(wall[True])} images each")
    print(f"A (tiles, swap outside inference mode): wall {med[False][0]:.1f} ms, CPU {med[False][1]:.1f} ms")
    print(f"B (level views, inference mode):        wall {med[True][0]:.1f} ms, CPU {med[True][1]:.1f} ms")
    print(f"B/A: wall {med[True][0] / med[False][0]:.3f}, CPU {med[True][1] / med[False][1]:.3f}")


if __name__ == "__main__":
    main()
