"""Where the single-process video stream's main thread spends its time (cProfile of that thread only).

The stream's main thread decodes nothing itself: it plans each batch (scene cuts, detection, landmark refinement,
tracking) while a second thread swaps the previous batch and a third encodes. `faceweave bench` showed this thread
busy for nearly the whole run; this script says on what. It synthesises a 1080p clip like the bench, warms an
engine up with a one-second job, then profiles one full job.

    python benchmarks/stream_profile.py --seconds 20 --batch 32 --top 30 --out stream_profile.txt
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from faceweave.bench import synthesize_video
from faceweave.bench_clips import synthesize_photo_video
from faceweave.data import media_path
from faceweave.media.image import read_image
from faceweave.media.video.frames import FrameReader
from faceweave.media.video.probe import probe_video
from faceweave.models.tflite_graph import set_depthwise_kernels
from faceweave.pipeline.engine import SwapEngine
from faceweave.pipeline.video import VideoFaceProcessor, swap_video
from faceweave.settings import SwapSettings


def plan_only(engine: SwapEngine, source: list[Path], clip: Path, settings: SwapSettings) -> tuple[int, Any]:
    """Decode and plan every batch (scene cuts, detection, refinement, tracking), no swap, no encode."""
    info = probe_video(clip)
    processor = VideoFaceProcessor(engine, engine.prepare_sources([read_image(p).rgb for p in source]), None, settings)
    frames, plan_s = 0, 0.0
    with FrameReader(info, batch_size=settings.batch_size) as reader:
        for batch in reader:
            t0 = time.perf_counter()
            processor.plan_batch(batch)
            plan_s += time.perf_counter() - t0
            frames += len(batch)
    if engine.device.type == "cuda":
        torch.cuda.synchronize(engine.device)
    return frames, {"plan_s": round(plan_s, 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--size", default="1920x1080")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="float16")
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--out", type=Path, default=None, help="also write the report here")
    ap.add_argument("--content", choices=("synth", "photo"), default="synth",
                    help="the bench's clips: a face on black, or photographic content over the whole frame")
    ap.add_argument("--no-cprofile", action="store_true",
                    help="run the job without cProfile (for an outside sampler such as py-spy: it sees every thread)")
    ap.add_argument("--plan-only", action="store_true",
                    help="profile only the planning half (decode → detect/track), alone in its thread: its cost "
                         "without the swap and encoder threads competing for the GIL")
    ap.add_argument("--depthwise", choices=("faceweave", "aten", "cudnn"), default=None,
                    help="CUDA: the kernels of the nets' depthwise convolutions (set_depthwise_kernels; default: the "
                         "engine's own choice)")
    ap.add_argument("--detail-restore", choices=("on", "off"), default="on",
                    help="the swap's detail restoration (SwapSettings.detail_restore; on by default)")
    ap.add_argument("--switch-interval-ms", type=float, default=None,
                    help="the interpreter's GIL switch interval for the profiled job (Python's default: 5 ms)")
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    settings = SwapSettings(device=args.device, dtype=args.dtype, batch_size=args.batch, workers=1,
                            detail_restore=args.detail_restore == "on")
    lines: list[str] = []
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        make = synthesize_photo_video if args.content == "photo" else synthesize_video
        clip = make(tmp / "in.mp4", width=w, height=h, seconds=args.seconds)
        engine = SwapEngine(settings)
        if args.depthwise is not None:
            set_depthwise_kernels(engine.detector, args.depthwise)  # type: ignore[arg-type]  # nn.Modules
            set_depthwise_kernels(engine.mesh, args.depthwise)  # type: ignore[arg-type]
        source = [media_path("astronaut.png")]
        swap_video(source, clip, tmp / "warm.mp4", settings.model_copy(update={"trim_end": "1"}), engine=engine)
        prof = cProfile.Profile()
        if args.switch_interval_ms is not None:
            sys.setswitchinterval(args.switch_interval_ms / 1000)
        t0 = time.perf_counter()
        if not args.no_cprofile:
            prof.enable()
        if args.plan_only:
            frames, stats = plan_only(engine, source, clip, settings)
        else:
            result = swap_video(source, clip, tmp / "out.mp4", settings, engine=engine)
            frames, stats = result.frames, result.stats.get("stream_timing")
        prof.disable()
        wall = time.perf_counter() - t0
    what = "planning only" if args.plan_only else "whole stream"
    lines.append(f"{what}: {frames} frames in {wall:.2f} s = {frames / wall:.1f} fps, {1000 * wall / frames:.2f} ms "
                 f"per frame on {engine.device}, batch {args.batch}, {args.dtype}, "
                 f"depthwise {args.depthwise or 'default'}, detail restoration {args.detail_restore}, "
                 f"GIL switch interval {1000 * sys.getswitchinterval():g} ms")
    lines.append(f"stream timing (s): {stats}")
    for key in () if args.no_cprofile else ("tottime", "cumulative"):
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats(key).print_stats(args.top)
        lines.append(f"--- main thread, by {key} ---")
        lines.append(buf.getvalue())
    report = "\n".join(lines)
    print(report)
    if args.out:
        args.out.write_text(report)


if __name__ == "__main__":
    main()
