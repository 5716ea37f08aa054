"""Live mode benchmark: N sessions at once in one process, each a file played in real time (the file behaves like a
camera), all on one shared engine (frames of concurrent sessions batched). Prints one JSON summary.

    python benchmarks/live_bench.py --size 640x480 --fps 30 --seconds 10 --sessions 1 --device cpu
    python benchmarks/live_bench.py --size 1280x720 --sessions 1,4,8,12 --device cuda --seconds 20

The input is the bundled carphone clip (one face) rescaled to ``--size`` and looped to ``--seconds`` at ``--fps``
(or ``--input``). Latency is capture → swapped frame handed to the output (a null output unless ``--output-dir``).
With several ``--sessions`` values each count runs in turn on the same warm engine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time
from fractions import Fraction
from pathlib import Path
from typing import Any, cast

import av
import numpy as np
import torch

from faceweave.data import media_path
from faceweave.live import LIVE_DEFAULTS
from faceweave.live.mailbox import LiveStats, Mailbox
from faceweave.live.session import LiveSession, prime
from faceweave.live.shared import SharedEngine
from faceweave.live.sinks import FileSink
from faceweave.live.sources import CaptureThread, LiveFrame, open_source
from faceweave.live.threads import torch_threads
from faceweave.media.image import read_image
from faceweave.pipeline.engine import SwapEngine
from faceweave.pipeline.video import VideoFaceProcessor, gpu_host_threads, warm_gpu_engine
from faceweave.settings import SwapSettings


class NullSink:
    def write(self, frames: Any, time_s: float) -> None:
        pass

    def close(self) -> None:
        pass


def make_clip(dst: Path, width: int, height: int, fps: int, seconds: float) -> Path:
    """carphone rescaled to width×height, looped (forwards, backwards: no jump cut) to ``seconds`` at ``fps``."""
    with av.open(str(media_path("carphone_pristine.mp4"))) as inp:
        frames = [f.reformat(width=width, height=height, format="yuv420p") for f in inp.decode(video=0)]
    loop = frames + frames[::-1]
    with av.open(str(dst), "w") as out:
        stream = out.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "18", "preset": "ultrafast"}
        for i in range(int(seconds * fps)):
            frame = loop[i % len(loop)]
            frame.pts, frame.time_base = i, Fraction(1, fps)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return dst


def run_sessions(shared: SharedEngine, settings: SwapSettings, clip: Path, count: int, out_dir: Path | None,
                 detection: str = "auto") -> dict[str, Any]:
    prepared = shared.prepare_sources([read_image(media_path("obama.jpg")).rgb])
    sessions, threads, captures = [], [], []
    for k in range(count):
        source = open_source(str(clip))
        defer = shared.defer_detection if detection == "auto" else detection == "deferred"
        processor = VideoFaceProcessor(cast(SwapEngine, shared), prepared, None, settings, defer_detection=defer)
        sink = FileSink(out_dir / f"live_{count}_{k}.mp4", source.width, source.height, source.fps) if out_dir \
            else NullSink()
        stats, box = LiveStats(), Mailbox[LiveFrame]()
        session = LiveSession(processor.process_batch, box, sink, stats,
                              swapped=lambda p=processor: int(p.stats["frames_swapped"]),
                              after_output=processor.detect_pending)
        captures.append((CaptureThread(source, box, stats), source, sink))
        sessions.append(session)
        threads.append(threading.Thread(target=session.run, daemon=True))
    batches0, frames0 = shared.batches, shared.batched_frames
    for _ in range(count):
        shared.session_started()
    for (capture, _, _), thread in zip(captures, threads, strict=True):
        capture.start()
        thread.start()
    for thread in threads:
        thread.join()
    for capture, source, sink in captures:
        capture.stop()
        sink.close()
        source.close()
    for _ in range(count):
        shared.session_ended()
    per = [s.stats.summary() for s in sessions]
    lat = np.concatenate([np.array(s.stats.latencies_s) * 1000 for s in sessions])
    batches = shared.batches - batches0
    return {
        "sessions": count,
        "fps_in_per_session": round(float(np.mean([p["fps_in"] for p in per])), 2),
        "fps_out_per_session_mean": round(float(np.mean([p["fps_out"] for p in per])), 2),
        "fps_out_per_session_min": round(float(np.min([p["fps_out"] for p in per])), 2),
        "frames_in": int(sum(p["frames_in"] for p in per)),
        "frames_out": int(sum(p["frames_out"] for p in per)),
        "dropped": int(sum(p["dropped"] for p in per)),
        "every_frame_swapped": all(p["dropped"] == 0 and p["frames_swapped"] == p["frames_out"] for p in per),
        "frames_swapped": int(sum(p["frames_swapped"] for p in per)),
        "latency_p50_ms": round(float(np.percentile(lat, 50)), 2),
        "latency_p95_ms": round(float(np.percentile(lat, 95)), 2),
        "latency_p99_ms": round(float(np.percentile(lat, 99)), 2),
        "mean_engine_batch": round((shared.batched_frames - frames0) / batches, 2) if batches else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="640x480")
    ap.add_argument("--fps", type=int, default=30)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--sessions", default="1", help="comma-separated session counts, run in turn")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--detect-every", type=int, default=None)
    ap.add_argument("--detection", default="auto",
                    help="comma-separated: 'deferred' (a tracked frame's due detection runs after the frame went "
                         "out), 'inline' (it runs on the frame, as in a video job) and/or 'auto' (the /live default: "
                         "deferred while at most 2 sessions share the engine); each session count is run once per "
                         "mode, in turn")
    ap.add_argument("--enhancer", default="none", help="'none' (the live default) or 'detail'")
    ap.add_argument("--window-ms", type=float, default=None, help="batching window (default: 2 on CUDA, 0 on CPU)")
    ap.add_argument("--engine-threads", type=int, default=None,
                    help="torch threads of the shared engine's thread and the sessions' (default: live_torch_threads, "
                         "all cores but one on the CPU)")
    ap.add_argument("--swap-thread", default="default",
                    help="comma-separated: 'on' (the shared engine's swaps on a second thread and CUDA stream), 'off' "
                         "(one engine thread) and/or 'default' (SharedEngine's default); each is run per session "
                         "count and detection mode, in turn, on the same warm engine")
    ap.add_argument("--switch-interval-ms", default=None,
                    help="comma-separated: the interpreter's GIL switch interval (sys.setswitchinterval; Python's "
                         "default 5 ms), each run in turn per session count; default: as it is")
    ap.add_argument("--input", type=Path, default=None, help="a video file instead of the rescaled carphone clip")
    ap.add_argument("--output-dir", type=Path, default=None, help="write each session's output here (default: none)")
    ap.add_argument("--json", type=Path, default=None, help="also write the summary here")
    args = ap.parse_args()
    if not set(args.detection.split(",")) <= {"auto", "deferred", "inline"}:
        ap.error(f"--detection takes auto, deferred and/or inline, got {args.detection!r}")
    swap_modes = args.swap_thread.split(",")
    if not set(swap_modes) <= {"on", "off", "default"}:
        ap.error(f"--swap-thread takes on, off and/or default, got {args.swap_thread!r}")
    width, height = (int(v) for v in args.size.lower().split("x"))
    values: dict[str, Any] = {**LIVE_DEFAULTS, "device": args.device, "dtype": args.dtype,  # as faceweave live
                              "enhancer": None if args.enhancer == "none" else args.enhancer}
    if args.detect_every:
        values["detect_every"] = args.detect_every
    settings = SwapSettings.build(**values)
    with tempfile.TemporaryDirectory() as tmp:
        clip = args.input or make_clip(Path(tmp) / "in.mp4", width, height, args.fps, args.seconds)
        t0 = time.perf_counter()
        engine = SwapEngine(settings)
        warm_gpu_engine(engine, (height, width))
        window_s = None if args.window_ms is None else args.window_ms / 1000
        shareds = {mode: SharedEngine(engine, window_s=window_s, torch_threads=args.engine_threads,
                                      swap_thread=None if mode == "default" else mode == "on")
                   for mode in swap_modes}
        shared = shareds[swap_modes[0]]
        shared.call(lambda eng: prime(eng, eng.prepare_sources([read_image(media_path("obama.jpg")).rgb])))
        setup_s = time.perf_counter() - t0
        if args.output_dir:
            args.output_dir.mkdir(parents=True, exist_ok=True)
        # on the CPU the sessions' threads (frame conversions) take the engine thread's count too
        cpu_threads = shared.torch_threads if engine.device.type == "cpu" else None
        with gpu_host_threads(engine.device), torch_threads(cpu_threads):
            intervals = [None] if args.switch_interval_ms is None else \
                [float(v) / 1000 for v in args.switch_interval_ms.split(",")]
            runs = []
            for n in args.sessions.split(","):
                for mode in args.detection.split(","):
                    for st in swap_modes:
                        for interval in intervals:
                            before = sys.getswitchinterval()
                            if interval is not None:
                                sys.setswitchinterval(interval)
                            try:
                                result = run_sessions(shareds[st], settings, Path(clip), int(n), args.output_dir,
                                                      detection=mode)
                            finally:
                                sys.setswitchinterval(before)
                            runs.append({"detection": mode, "swap_thread": shareds[st].swap_thread,
                                         "switch_interval_ms": round(1000 * (interval or before), 3), **result})
        for each in shareds.values():
            each.close()
    device_name = torch.cuda.get_device_name(engine.device) if engine.device.type == "cuda" else platform.processor()
    summary = {
        "bench": "live", "size": f"{width}x{height}", "fps_in": args.fps, "seconds": args.seconds,
        "device": str(engine.device), "device_name": device_name, "dtype": str(engine.dtype).replace("torch.", ""),
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "engine_torch_threads": shared.torch_threads,
        "load_avg_1m": round(os.getloadavg()[0], 2), "detect_every": settings.detect_every,
        "enhancer": settings.enhancer, "window_ms": shared.window_s * 1000, "setup_s": round(setup_s, 2),
        "runs": runs,
    }
    text = json.dumps(summary)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
