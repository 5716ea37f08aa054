"""Interleaved A/B of the warm 512² image path on the CPU (issue 19 goal 5, session 18:56). Not a test.

    python benchmarks/image_cpu_ab.py [--rounds 6] [--per 5] [--threads N] [--swap-only]

A = the path before this session's changes (small-face tiles, the swap outside inference mode: ``level_views=False``
and ``SwapEngine._swap``); B = the current path (level views on the CPU, ``SwapEngine.swap`` in inference mode). Both
in one process on one engine, alternating every ``--per`` calls (ABBA order), after warm-up (the nets' CPU traces of
every view shape made). Prints median wall and process CPU ms per image, and B/A. ``--swap-only``: the swap
stage alone on one detected face, outside (A) and inside (B) inference mode.
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
    ap.add_argument("--swap-only", action="store_true", help="time the swap stage alone")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    engine = SwapEngine(SwapSettings(device="cpu"))
    prepared = engine.prepare_sources([read_image(media_path("grace_hopper.jpg")).rgb])
    target = read_image(media_path("astronaut.png")).rgb

    frames0 = engine.to_tensor(target)
    plan0 = [engine.select(engine.analyze(frames0)[0], prepared)]

    def image(new: bool) -> torch.Tensor:
        if args.swap_only:
            return engine.swap(frames0, plan0, prepared) if new else engine._swap(frames0, plan0, prepared)
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
    a_name, b_name = (("swap outside inference mode", "swap in inference mode") if args.swap_only else
                      ("tiles, swap outside inference mode", "level views, inference mode"))
    print(f"A ({a_name}): wall {med[False][0]:.2f} ms, CPU {med[False][1]:.2f} ms")
    print(f"B ({b_name}): wall {med[True][0]:.2f} ms, CPU {med[True][1]:.2f} ms")
    print(f"B/A: wall {med[True][0] / med[False][0]:.3f}, CPU {med[True][1] / med[False][1]:.3f}")


if __name__ == "__main__":
    main()
