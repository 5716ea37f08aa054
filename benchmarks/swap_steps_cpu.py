"""Where the swap stage's CPU time goes, per sub-step (issue 19 goal 5; issue 20's CPU goal).

Runs a 480p video job (the carphone clip letterboxed, as ``video_stage_cpu.py`` does) once to record the batches
``SwapEngine.swap`` is given, then replays those calls with torch on one thread and charges ``time.thread_time``
to the swap's ``record_function`` sections (warp, mask, colour, blend, paste) and to the ops they call (each timed
where the swapper calls it; nested rows overlap). The total is the CPU time of ``engine.swap`` (swap plus the
built-in ``detail`` enhancer) per frame.

    PYTHONPATH=$PWD python benchmarks/swap_steps_cpu.py --size 640x480
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import functools
import json
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from faceweave.data import media_path
from faceweave.pipeline.engine import SwapEngine
from faceweave.pipeline.video import swap_video
from faceweave.settings import SwapSettings

# (module, function) pairs timed where they are looked up; a name a tree does not have is skipped
_TIMED = {
    "faceweave.swapper.mesh": ["swap_in_crops", "piecewise_affine_warp", "_region_masks", "polygon_mask",
                               "transfer_colour_lab_from_lab", "lab_to_rgb", "transfer_shading", "_restore_grain",
                               "match_fine_detail", "match_edge_colour", "edge_colour_correction",
                               "laplacian_pyramid_blend", "_laplacian_blend_in_window", "paste_back_region",
                               "warp_affine"],
    "faceweave.ops.blend": ["warp_affine", "gaussian_blur", "feather_blend"],
    "faceweave.ops.warp": ["rasterise_triangles"],
    "faceweave.enhance.detail": ["sharpen_faces"],
    "torch.nn.functional": ["interpolate", "grid_sample"],
}


def main() -> None:
    from video_cpu import make_clip  # benchmarks/ is the script's folder

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="640x480")
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    settings = SwapSettings(device="cpu", preset="veryfast", crf=20, detect_every=5, batch_size=8)
    engine = SwapEngine(settings)
    calls: list[tuple[Any, ...]] = []
    real_swap = engine.swap

    def record(frames: torch.Tensor, plan: Any, sources: Any) -> torch.Tensor:
        calls.append((frames.clone(), [list(row) for row in plan], list(sources)))
        return real_swap(frames, plan, sources)

    engine.swap = record  # type: ignore[method-assign]
    w, h = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "in.mp4"
        make_clip(clip, (w, h), args.frames)
        swap_video([media_path("astronaut.png")], clip, Path(tmp) / "o.mp4", settings, engine=engine)
    engine.swap = real_swap  # type: ignore[method-assign]

    cpu: collections.Counter[str] = collections.Counter()

    @contextlib.contextmanager
    def section(name: str) -> Iterator[None]:
        c0 = time.thread_time()
        try:
            yield
        finally:
            cpu[f"[{name}]"] += time.thread_time() - c0

    def timed(label: str, fn: Any) -> Any:
        @functools.wraps(fn)
        def wrapper(*a: Any, **k: Any) -> Any:
            c0 = time.thread_time()
            try:
                return fn(*a, **k)
            finally:
                cpu[label] += time.thread_time() - c0
        return wrapper

    import importlib

    import faceweave.swapper.mesh as mesh

    mesh.record_function = section  # type: ignore[assignment]  # the sections' labels, timed
    for module_name, names in _TIMED.items():
        module = importlib.import_module(module_name)
        for name in names:
            if hasattr(module, name):
                setattr(module, name, timed(f"{module_name.rsplit('.', 1)[-1]}.{name}", getattr(module, name)))
    for frames, plan, sources in calls[:2]:  # warm-up
        engine.swap(frames, plan, sources)
    cpu.clear()
    load0 = os.getloadavg()[0]
    c0, n = time.thread_time(), 0
    for _ in range(args.repeats):
        for frames, plan, sources in calls:
            engine.swap(frames, plan, sources)
            n += frames.shape[0]
    total = time.thread_time() - c0
    out = {"size": args.size, "frames_replayed": n, "swap_cpu_ms_per_frame": round(total / n * 1000, 2),
           "steps_cpu_ms_per_frame": {k: round(v / n * 1000, 2) for k, v in cpu.most_common()},
           "load": (load0, os.getloadavg()[0])}
    print(json.dumps(out, indent=1))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
