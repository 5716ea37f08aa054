"""Where the GPU face work spends its time: host vs device, kernel launches per stage, top host ops.

For each stage (detect, landmarks, swap) of one batch of 1080p frames on a CUDA device it prints the wall time, the
number of kernel launches and graph replays, the device time summed over kernels, and the ops with the most host
(self CPU) time — with the nets replayed from CUDA graphs and without. Then, optionally, the single-process
end-to-end swap of a clip with and without the graphs, after a warm-up job each.

    python benchmarks/gpu_profile.py --batch 8 --dtype float16 --e2e-seconds 10 --json profile.json
    python benchmarks/gpu_profile.py --batch 32 --depthwise aten,cudnn     # the depthwise kernels, A/B (§0-26)
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

from faceweave.bench import synthesize_video
from faceweave.data import media_path
from faceweave.media.image import read_image
from faceweave.media.video.frames import FrameReader
from faceweave.media.video.probe import probe_video
from faceweave.models.tflite_graph import DepthwiseChoice, set_depthwise_kernels
from faceweave.pipeline.engine import SwapEngine
from faceweave.pipeline.video import swap_video
from faceweave.settings import SwapSettings


def _median_ms(fn: Any, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def profile_stage(fn: Any, top: int) -> dict[str, Any]:
    """One profiled call: launches, device time, and the host ops with the most self CPU time."""
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    events = prof.key_averages()
    launches = sum(e.count for e in events if e.key in ("cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel"))
    replays = sum(e.count for e in events if e.key in ("cudaGraphLaunch", "cuGraphLaunch"))
    syncs = sum(e.count for e in events if e.key in ("cudaStreamSynchronize", "cudaDeviceSynchronize",
                                                     "cudaMemcpyAsync"))
    device_us = sum(e.self_device_time_total for e in events if e.device_type.name == "CUDA")
    host = sorted((e for e in events if e.device_type.name == "CPU"), key=lambda e: -e.self_cpu_time_total)
    kernels = sorted((e for e in events if e.device_type.name == "CUDA"), key=lambda e: -e.self_device_time_total)
    return {"top_kernels": [(e.key[:90], e.count, round(e.self_device_time_total / 1000, 3)) for e in kernels[:top]],
            "kernel_launches": launches, "graph_replays": replays, "sync_or_copy_calls": syncs,
            "device_ms_in_kernels": round(device_us / 1000, 3),
            "top_host_ops": [(e.key, e.count, round(e.self_cpu_time_total / 1000, 3)) for e in host[:top]]}


def stage_report(settings: SwapSettings, frames_np: np.ndarray, batch: int, repeats: int, top: int,
                 depthwise: DepthwiseChoice = "aten") -> dict[str, Any]:
    engine = SwapEngine(settings)
    set_depthwise_kernels(engine.detector, depthwise)  # type: ignore[arg-type]  # FaceDetector, an nn.Module
    set_depthwise_kernels(engine.mesh, depthwise)  # type: ignore[arg-type]
    prepared = engine.prepare_sources([read_image(media_path("astronaut.png")).rgb])
    frames = (torch.from_numpy(np.ascontiguousarray(frames_np[:batch])).to(engine.device).permute(0, 3, 1, 2)
              .to(engine.dtype).div(255))
    faces = engine.mesh.landmarks(frames, engine.detector.detect(frames))
    plans = [engine.select(f, prepared) for f in faces]
    stages = {"detect": lambda: engine.detector.detect(frames),
              "landmarks": lambda: engine.mesh.landmarks(frames, faces),
              "swap": lambda: engine.swap(frames, plans, prepared)}
    out: dict[str, Any] = {}
    for name, fn in stages.items():
        for _ in range(3):
            fn()
        out[name] = {"ms_per_batch": round(_median_ms(fn, repeats), 3), **profile_stage(fn, top)}
    return out


def e2e(clip: Path, settings: SwapSettings, tmp: Path, host_profile: Path | None = None) -> dict[str, Any]:
    """Single-process swap of ``clip`` after a one-second warm-up job; with ``host_profile``, a second run under
    cProfile (all threads' Python time lands in the main thread's profile only, so it shows the planning half)."""
    engine = SwapEngine(settings)
    source = [media_path("astronaut.png")]
    t0 = time.perf_counter()
    swap_video(source, clip, tmp / "warm.mp4", settings.model_copy(update={"trim_end": "1"}), engine=engine)
    startup = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = swap_video(source, clip, tmp / "out.mp4", settings, engine=engine)
    dt = time.perf_counter() - t0
    if host_profile is not None:
        import cProfile
        import io
        import pstats

        prof = cProfile.Profile()
        prof.runcall(swap_video, source, clip, tmp / "prof.mp4", settings, engine=engine)
        text = io.StringIO()
        pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(40)
        host_profile.write_text(text.getvalue())
    return {"fps": round(result.frames / dt, 1), "frames": result.frames, "faces": result.faces_swapped,
            "startup_s": round(startup, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--input", type=Path, default=None, help="1080p clip (default: synthesise one)")
    ap.add_argument("--batch", type=int, nargs="+", default=[8])
    ap.add_argument("--dtype", default="float16")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("--e2e-seconds", type=float, default=0.0, help="also run the end-to-end swap on this long a clip")
    ap.add_argument("--depthwise", default="aten",
                    help="comma list of the depthwise kernels to profile in turn (set_depthwise_kernels): "
                         "'aten' (the default: PyTorch's), 'faceweave' (faceweave's own), 'cudnn'")
    ap.add_argument("--detail-restore", choices=("on", "off"), default="on",
                    help="the swap's detail restoration (SwapSettings.detail_restore; on by default)")
    ap.add_argument("--no-eager", action="store_true", help="profile with CUDA graphs only (skip the eager runs)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--host-profile", type=Path, default=None, help="cProfile of the graphs e2e run, to this file")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("gpu_profile.py needs a CUDA device")
    tmp = Path(tempfile.mkdtemp(prefix="faceweave-profile-"))
    clip = args.input or synthesize_video(tmp / "in.mp4", width=1920, height=1080,
                                          seconds=max(args.e2e_seconds, 2.0))
    with FrameReader(probe_video(clip), batch_size=max(args.batch)) as reader:
        frames_np = next(iter(reader)).frames
    report: dict[str, Any] = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "stages": {}}
    depthwise = args.depthwise.split(",")
    if not set(depthwise) <= {"faceweave", "aten", "cudnn"}:
        ap.error(f"--depthwise takes faceweave, aten and/or cudnn, got {args.depthwise!r}")
    for kernels, graphs, batch in itertools.product(depthwise, (True,) if args.no_eager else (False, True),
                                                   args.batch):
        suffix = "" if kernels == "aten" else f"_{kernels}_dw"
        key = f"{'graphs' if graphs else 'eager'}_{args.dtype}_b{batch}{suffix}"
        settings = SwapSettings(device="cuda", dtype=args.dtype, batch_size=batch, cuda_graphs=graphs,
                                detail_restore=args.detail_restore == "on")
        report["stages"][key] = rep = stage_report(settings, frames_np, batch, args.repeats, args.top,
                                                   depthwise=kernels)
        for stage, r in rep.items():
            print(f"{key} {stage}: {r['ms_per_batch']} ms/batch, {r['kernel_launches']} launches, "
                  f"{r['graph_replays']} replays, {r['sync_or_copy_calls']} sync/copy, "
                  f"{r['device_ms_in_kernels']} ms in kernels", flush=True)
            for op in r["top_host_ops"][:6]:
                print(f"    host {op}")
            for op in r["top_kernels"][:8]:
                print(f"    kernel {op}")
    if args.e2e_seconds:
        report["e2e"] = {}
        for graphs in (False, True):
            settings = SwapSettings(device="cuda", dtype=args.dtype, batch_size=max(args.batch), cuda_graphs=graphs)
            report["e2e"][f"graphs={graphs}"] = r = e2e(clip, settings, tmp, args.host_profile if graphs else None)
            print(f"e2e single process, graphs={graphs}: {r}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
