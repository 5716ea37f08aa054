"""Live mode's face work per stage, offline: every other frame of the 640×480 live-bench clip (a session at 30 fps in
keeps about every other frame) through ``VideoFaceProcessor.process_batch`` one frame at a time, as a live session
calls it, without the capture thread. Wall ms per processed frame and per engine stage, and CPU ms per frame
(every thread of the process). Not a test.

    python benchmarks/live_stages_cpu.py [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import av
import torch

sys.path.insert(0, str(Path(__file__).parent))
from live_bench import make_clip  # noqa: E402

from faceweave.data import media_path  # noqa: E402
from faceweave.live.session import one_frame_batch, prime  # noqa: E402
from faceweave.live.sources import LiveFrame  # noqa: E402
from faceweave.media.image import read_image  # noqa: E402
from faceweave.pipeline.engine import SwapEngine  # noqa: E402
from faceweave.pipeline.video import VideoFaceProcessor  # noqa: E402
from faceweave.settings import SwapSettings  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--size", default="640x480")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    width, height = (int(v) for v in args.size.split("x"))
    settings = SwapSettings.build(device="cpu", enhancer=None)
    with tempfile.TemporaryDirectory() as tmp:
        clip = make_clip(Path(tmp) / "in.mp4", width, height, 30, 10)
        with av.open(str(clip)) as container:
            frames = list(container.decode(video=0))
    engine = SwapEngine(settings)
    prepared = engine.prepare_sources([read_image(media_path("obama.jpg")).rgb])
    prime(engine, prepared)
    stages: dict[str, list[float]] = {}

    def timed(name: str) -> None:
        fn = getattr(engine, name)

        def wrapper(*a: Any, **k: Any) -> Any:
            t0 = time.perf_counter()
            out = fn(*a, **k)
            stages.setdefault(name, []).append((time.perf_counter() - t0) * 1000)
            return out
        setattr(engine, name, wrapper)

    for name in ("analyze", "refine", "swap"):
        timed(name)
    processor = VideoFaceProcessor(engine, prepared, None, settings)
    per: list[float] = []

    def play(first: int, last: int) -> None:
        for i in range(first, last, 2):
            t0 = time.perf_counter()
            processor.process_batch(one_frame_batch(LiveFrame(frames[i], 0.0, i / 30, i)))
            per.append((time.perf_counter() - t0) * 1000)

    play(0, 20)  # warm
    stages.clear()
    per.clear()
    c0 = time.process_time()
    play(20, len(frames))
    cpu = (time.process_time() - c0) * 1000 / len(per)
    report = {
        "torch_threads": torch.get_num_threads(), "frames": len(per),
        "wall_ms_median": round(statistics.median(per), 1), "wall_ms_mean": round(statistics.mean(per), 1),
        "wall_ms_p95": round(sorted(per)[int(0.95 * len(per))], 1), "cpu_ms_per_frame": round(cpu, 1),
        "stages": {k: {"calls": len(v), "median_ms": round(statistics.median(v), 1),
                       "ms_per_frame": round(sum(v) / len(per), 1)} for k, v in stages.items()},
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
