"""What the crowd-recall tiles cost a video, as ratios from interleaved repeats in one run (issue 19 item 3).

Each figure is given as wall time and as the process's CPU time (``time.process_time``, all its threads): on a
shared machine the CPU time moves far less with the load than the wall time.

1. One detector call on a real frame (carphone, letterboxed) with the small-face tiles vs the whole view only.
2. ``swap_video`` end to end with the tiles on every detection frame (``RECALL_EVERY = 1``, the behaviour before
   the recall policy) vs the policy (tiles on a new shot, every ``RECALL_EVERY`` frames and while a crowd is in view).

    python benchmarks/recall_cost.py --repeats 3 --sizes 640x480,1920x1080 --video-sizes 640x480
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from faceweave.analysis.detect import image_to_frames
from faceweave.data import media_path
from faceweave.pipeline import video_faces
from faceweave.pipeline.engine import SwapEngine
from faceweave.pipeline.video import swap_video
from faceweave.settings import SwapSettings


def first_frame(path: Path):  # noqa: ANN201 - numpy array
    import av

    with av.open(str(path)) as c:
        return next(c.decode(video=0)).to_ndarray(format="rgb24")


def main() -> None:
    from video_cpu import make_clip  # benchmarks/ is the script's folder

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sizes", default="640x480,1920x1080", help="detector-call sizes")
    ap.add_argument("--video-sizes", default="640x480", help="swap_video sizes ('' to skip)")
    ap.add_argument("--frames", type=int, default=90)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    settings = SwapSettings(device="cpu", preset="veryfast", crf=20, detect_every=5, batch_size=8)
    engine = SwapEngine(settings)
    out: dict[str, object] = {"load_before": os.getloadavg()}
    with tempfile.TemporaryDirectory() as tmp:
        det = {}
        for spec in filter(None, args.sizes.split(",")):
            w, h = (int(v) for v in spec.split("x"))
            clip = Path(tmp) / f"d{h}.mp4"
            make_clip(clip, (w, h), 2)
            frames = image_to_frames(first_frame(clip))
            times: dict[bool, list[float]] = {True: [], False: []}
            cpu: dict[bool, list[float]] = {True: [], False: []}
            for _ in range(args.repeats + 1):  # the first round warms up and is dropped
                for tiles in (True, False):
                    t0, c0 = time.perf_counter(), time.process_time()
                    engine.detector.detect(frames, tiles=tiles)
                    times[tiles].append(time.perf_counter() - t0)
                    cpu[tiles].append(time.process_time() - c0)
            tiled, plain = (statistics.median(times[k][1:]) * 1000 for k in (True, False))
            tiled_cpu, plain_cpu = (statistics.median(cpu[k][1:]) * 1000 for k in (True, False))
            det[spec] = {"tiles_ms": round(tiled, 1), "whole_view_ms": round(plain, 1),
                         "ratio": round(tiled / plain, 2),
                         "tiles_cpu_ms": round(tiled_cpu, 1), "whole_view_cpu_ms": round(plain_cpu, 1),
                         "cpu_ratio": round(tiled_cpu / plain_cpu, 2)}
            print("detector call", spec, det[spec], flush=True)
        out["detector_call"] = det
        vid = {}
        default_every = video_faces.RECALL_EVERY
        for spec in filter(None, args.video_sizes.split(",")):
            w, h = (int(v) for v in spec.split("x"))
            clip = Path(tmp) / f"v{h}.mp4"
            make_clip(clip, (w, h), args.frames)
            fps: dict[int, list[float]] = {1: [], default_every: []}
            cpu_per_frame: dict[int, list[float]] = {1: [], default_every: []}
            recalls: dict[int, int] = {}
            for _ in range(args.repeats):
                for every in (1, default_every):
                    video_faces.RECALL_EVERY = every  # benchmark only: the old behaviour is a recall pass per detection
                    t0, c0 = time.perf_counter(), time.process_time()
                    result = swap_video([media_path("astronaut.png")], clip, Path(tmp) / "o.mp4", settings,
                                        engine=engine)
                    fps[every].append(result.frames / (time.perf_counter() - t0))
                    cpu_per_frame[every].append((time.process_time() - c0) / result.frames * 1000)
                    recalls[every] = int(result.stats["recall_passes"])
            video_faces.RECALL_EVERY = default_every
            old, new = (statistics.median(fps[k]) for k in (1, default_every))
            old_cpu, new_cpu = (statistics.median(cpu_per_frame[k]) for k in (1, default_every))
            vid[spec] = {"tiles_every_detection_fps": round(old, 2), "recall_policy_fps": round(new, 2),
                         "fps_ratio": round(new / old, 3), "tiles_every_detection_cpu_ms_per_frame": round(old_cpu, 1),
                         "recall_policy_cpu_ms_per_frame": round(new_cpu, 1), "cpu_ratio": round(new_cpu / old_cpu, 3),
                         "recall_passes": recalls}
            print("swap_video", spec, vid[spec], flush=True)
        out["swap_video"] = vid
    out["load_after"] = os.getloadavg()
    print(json.dumps(out))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
