"""``faceweave bench``: one process, one run — plain transcode vs face swap on CPU and GPU, with ratios.

What it measures, all on the same input in the same run (so ratios are fair):

1. decode alone, plain decode→encode in one process and segment-parallel (``--workers``, plus any
   ``--plain-workers``): the encoder ceiling. Frames stay YUV end to end, as the swap path's untouched frames do;
2. the face work (detect + landmarks + swap + blend) per frame at each batch size, per stage, on the CPU (small
   batches) and on the GPU in eager fp32 and fp16 (every op launched from Python), with the nets and the swap
   replayed from CUDA graphs in fp32 and fp16, and compiled fp16 — frames already on the device; "video path" is
   what the video pipeline spends per frame, detecting on one frame in ``detect_every`` (detect / N + landmarks +
   swap);
3. the end-to-end swap with audio, segment-parallel, on the chosen device, with GPU utilisation and peak VRAM.

Without ``--input`` it synthesises a moving, zooming crop of a bundled face at the requested size with a tone as
audio (not counted in any timing).
"""

from __future__ import annotations

import json
import math
import platform
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import typer

from faceweave.settings import SwapSettings

if TYPE_CHECKING:
    import torch

# torch is imported inside the functions that use it: `faceweave.cli` imports this module to mount the command, and
# every segment worker that a 'spawn' pool starts re-imports the CLI — 2+ s of `import torch` per plain-transcode
# worker that never touches a tensor.


# --- input ---------------------------------------------------------------------------------------------------
def synthesize_video(path: Path, *, width: int, height: int, seconds: float, fps: int = 30,
                     face: str = "obama.jpg") -> Path:
    """Write an H.264 + AAC clip: the bundled face slowly panning and zooming (one face per frame), 440 Hz tone."""
    import av
    import cv2

    from faceweave.bench_clips import write_tone
    from faceweave.data import media_path
    from faceweave.media.image import read_image

    img = read_image(media_path(face)).rgb
    frames = int(round(seconds * fps))
    base = min(width / img.shape[1], height / img.shape[0]) * 0.9
    with av.open(str(path), "w") as out:
        # keyframe every second, like camera output: segments start on keyframes without long lead-ins
        v = out.add_stream("libx264", rate=fps, options={"crf": "18", "preset": "ultrafast", "g": str(fps)})
        v.width, v.height, v.pix_fmt = width, height, "yuv420p"
        a = out.add_stream("aac", rate=48000)
        a.layout = "mono"  # type: ignore[union-attr]
        for i in range(frames):
            t = i / fps
            s = base * (1.0 + 0.15 * math.sin(2 * math.pi * t / 7))
            cx = width / 2 + 0.12 * width * math.sin(2 * math.pi * t / 11)
            cy = height / 2 + 0.05 * height * math.sin(2 * math.pi * t / 5)
            ang = 8 * math.sin(2 * math.pi * t / 9)
            m = cv2.getRotationMatrix2D((img.shape[1] / 2, img.shape[0] / 2), ang, s)
            m[:, 2] += (cx - img.shape[1] / 2, cy - img.shape[0] / 2)
            # a black surround: a mirrored border would add mirrored copies of the face (2–4 faces per frame)
            frame = cv2.warpAffine(img, m, (width, height), borderMode=cv2.BORDER_CONSTANT)
            for p in v.encode(av.VideoFrame.from_ndarray(np.asarray(frame, dtype=np.uint8), format="rgb24")):
                out.mux(p)
        write_tone(out, a, seconds)  # in chunks: a 10-minute tone held at once is 230 MB
        for stream in (v, a):
            for p in stream.encode(None):
                out.mux(p)
    return path


# --- GPU monitoring ------------------------------------------------------------------------------------------
@dataclass
class GpuMonitor:
    """Samples NVML utilisation and memory in a thread (nothing when there is no GPU or no pynvml)."""

    index: int = 0
    period_s: float = 0.1
    util: list[float] = field(default_factory=list)
    mem_mb: list[float] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> GpuMonitor:
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(self.index)
        except Exception:  # no GPU, no NVML: monitoring is optional
            return self

        def loop() -> None:
            while not self._stop.is_set():
                self.util.append(float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu))
                self.mem_mb.append(pynvml.nvmlDeviceGetMemoryInfo(handle).used / 2**20)
                time.sleep(self.period_s)

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()

    def summary(self) -> dict[str, float | None]:
        return {"gpu_util_mean_pct": round(statistics.mean(self.util), 1) if self.util else None,
                "gpu_mem_peak_mb": round(max(self.mem_mb), 1) if self.mem_mb else None}


# --- timing helpers -------------------------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_ms(fn: Callable[[], Any], device: torch.device, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def face_work(engine: Any, frames: torch.Tensor, prepared: Any, repeats: int) -> dict[str, float]:
    """Per-frame milliseconds of each GPU-capable stage on ``frames`` (already on the engine's device)."""
    from faceweave.pipeline.video_faces import RECALL_EVERY

    faces = engine.detector.detect(frames)
    faces = engine.mesh.landmarks(frames, faces)
    plans = [engine.select(f, prepared) for f in faces]
    n = frames.shape[0]

    def detect() -> Any:
        return engine.detector.detect(frames)

    def detect_whole_view() -> Any:  # a video's detection between recall passes (no small-face tiles)
        return engine.detector.detect(frames, tiles=False)

    def landmarks() -> Any:
        return engine.mesh.landmarks(frames, faces)

    def swap() -> Any:
        return engine.swap(frames, plans, prepared)

    def total() -> Any:
        f = engine.mesh.landmarks(frames, engine.detector.detect(frames))
        return engine.swap(frames, [engine.select(x, prepared) for x in f], prepared)

    for fn in (detect, detect_whole_view, landmarks, swap, total):  # warm-up (compilation, autotune, allocator)
        fn()
    out = {name: _median_ms(fn, engine.device, repeats) / n
           for name, fn in (("detect", detect), ("detect_whole_view", detect_whole_view), ("landmarks", landmarks),
                            ("swap_blend", swap), ("total", total))}
    out["faces_per_frame"] = sum(len(p) for p in plans) / n
    # what the video path spends per frame: it runs the detector on one frame in detect_every and tracks between;
    # the small-face tiles only on a recall pass, once in RECALL_EVERY frames (a shot without a crowd)
    out["video_path"] = (out["detect_whole_view"] / engine.settings.detect_every
                         + (out["detect"] - out["detect_whole_view"]) / RECALL_EVERY
                         + out["landmarks"] + out["swap_blend"])
    return {k: round(v, 3) for k, v in out.items()}


def marking_cost(device: str, repeats: int = 30) -> dict[str, float]:
    """The watermark's added work per 1080p frame, median ms: the video writer's in-place step on the V plane of a
    4:2:0 frame (CPU, what every encoded frame pays), the RGB image path (CPU), and, when a GPU is asked for and
    present, the torch path on a ``(1, 3, 1080, 1920)`` float frame already on the GPU. The pattern itself is
    computed once per video."""
    import torch

    from faceweave.provenance.watermark import (
        ChromaMarker,
        WatermarkPayload,
        embed_watermark,
        embed_watermark_torch,
        watermark_delta,
    )

    payload = WatermarkPayload.for_job("bench")
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (1080, 1920, 3), dtype=np.uint8)
    v = np.ascontiguousarray(rgb[::2, ::2, 2])  # a 4:2:0 V plane
    cpu = torch.device("cpu")
    t0 = time.perf_counter()
    marker = ChromaMarker(1080, 1920, payload, v.shape)
    once = (time.perf_counter() - t0) * 1000
    delta = watermark_delta(1080, 1920, payload)
    out = {"pattern_once_per_video": round(once, 2),
           "video_chroma_cpu": round(_median_ms(lambda: marker.apply(v), cpu, repeats), 3),
           "image_rgb_cpu": round(_median_ms(lambda: embed_watermark(rgb, payload, delta=delta), cpu, repeats), 3)}
    if device != "cpu" and torch.cuda.is_available():
        gpu = torch.device(device if device != "auto" else "cuda")
        frames = torch.from_numpy(rgb).permute(2, 0, 1)[None].to(gpu, torch.float32) / 255
        d = torch.from_numpy(delta).to(gpu)
        embed_watermark_torch(frames.clone(), d)  # warm-up
        out["frame_float32_gpu"] = round(_median_ms(lambda: embed_watermark_torch(frames.clone(), d), gpu, repeats), 3)
    return out


def compile_engine(engine: Any) -> None:
    """torch.compile the three networks' forwards (fixed shapes per batch size; the ops stay eager)."""
    import torch

    for net in (engine.detector.short, engine.detector.full, engine.mesh.net):
        net.forward = torch.compile(net.forward, dynamic=False)


# --- the command ---------------------------------------------------------------------------------------------
def run_bench(
    *,
    input_path: Path | None,
    size: tuple[int, int],
    seconds: float,
    workers: int,
    batch_sizes: list[int],
    device: str,
    devices: str | None,
    preset: str,
    crf: int,
    cpu_frames: int,
    do_compile: bool,
    repeats: int,
    stages_table: bool = True,
    plain_workers: list[int] | None = None,
    e2e_workers: list[int] | None = None,
    content: str = "synth",
    cold: bool = False,
    k_jobs: list[int] | None = None,
    sync_clients: list[int] | None = None,
    sync_requests: int = 4,
    sync_slots: int = 2,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    import torch

    from faceweave.data import media_path
    from faceweave.media.image import read_image
    from faceweave.media.video.encode import EncoderSettings, transcode
    from faceweave.media.video.frames import FrameReader
    from faceweave.media.video.probe import probe_video
    from faceweave.media.video.segments import run_segments, segment_timing
    from faceweave.pipeline.engine import SwapEngine
    from faceweave.pipeline.video import swap_video

    tmp = Path(tempfile.mkdtemp(prefix="faceweave-bench-"))
    report: dict[str, Any] = {
        "machine": {"platform": platform.platform(), "cpu_count": __import__("os").cpu_count(),
                    "torch": torch.__version__, "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available()
                    else None, "av": __import__("av").__version__},
        "settings": {"preset": preset, "crf": crf, "workers": workers, "batch_sizes": batch_sizes,
                     "content": content if input_path is None else str(input_path)},
    }
    if input_path is None:
        t0 = time.perf_counter()
        from faceweave.bench_clips import synthesize_photo_video

        make = synthesize_photo_video if content == "photo" else synthesize_video
        input_path = make(tmp / "input.mp4", width=size[0], height=size[1], seconds=seconds)
        log(f"synthesised {content} {input_path.name} {size[0]}x{size[1]} {seconds:.0f}s in "
            f"{time.perf_counter() - t0:.1f}s")
    info = probe_video(input_path)
    report["input"] = {"width": info.width, "height": info.height, "frames": info.frames, "fps": info.fps,
                       "audio": info.has_audio}
    encoder = EncoderSettings(codec="libx264", crf=crf, preset=preset)
    n_frames = info.frames or int(info.duration_s * info.fps)

    # 1. the encoder ceiling: decode alone, then decode→encode in one process and segment-parallel
    t0 = time.perf_counter()
    with FrameReader(info, batch_size=8) as reader:
        decoded = sum(len(batch) for batch in reader)
    decode_fps = decoded / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    transcode(input_path, tmp / "plain1.mp4", encoder)
    plain1 = n_frames / (time.perf_counter() - t0)
    plain: dict[str, float] = {"decode_only": round(decode_fps, 1), "single": round(plain1, 1)}
    timing: dict[str, Any] = {}
    for k in sorted(set(plain_workers or []) | {workers}):
        t0, t_wall = time.perf_counter(), time.time()
        results = run_segments(info, tmp / f"plain{k}.mp4", encoder, workers=k)
        plain[f"segments_x{k}"] = round(n_frames / (time.perf_counter() - t0), 1)
        timing[f"segments_x{k}"] = segment_timing(results, t_wall)
        log(f"plain transcode, {k} segment workers: {plain[f'segments_x{k}']} fps; {timing[f'segments_x{k}']}")
    plain_n = plain[f"segments_x{workers}"]
    # the fastest plain transcode of this run, single process included (on short clips the segment workers' start-up
    # can make the single process faster): the stricter yardstick, reported beside the segment-parallel one
    plain_best = max(v for key, v in plain.items() if key != "decode_only")
    report["plain_transcode_fps"] = plain
    report["plain_segment_timing"] = timing
    log(f"plain: decode {decode_fps:.1f} fps, transcode {plain1:.1f} fps single, {plain_n:.1f} fps with {workers} "
        f"segment workers (best plain {plain_best:.1f})")

    # 2. face work per stage
    src = read_image(media_path("astronaut.png")).rgb
    with FrameReader(info, batch_size=max(batch_sizes)) as reader:
        sample = next(iter(reader)).frames
    # (name, device, dtype, torch.compile, CUDA-graph replay of the nets); "eager" runs every op from Python
    variants: list[tuple[str, str, str, bool, bool]] = [("cpu_fp32", "cpu", "float32", False, False)]
    use_gpu = device != "cpu" and torch.cuda.is_available()
    if use_gpu:
        gpu = device if device != "auto" else "cuda"
        variants += [("gpu_eager_fp32", gpu, "float32", False, False), ("gpu_eager_fp16", gpu, "float16", False, False),
                     ("gpu_graphs_fp32", gpu, "float32", False, True), ("gpu_graphs_fp16", gpu, "float16", False, True)]
        if do_compile:
            variants.append(("gpu_compiled_fp16", gpu, "float16", True, False))
    stages: dict[str, Any] = {}
    for name, dev, dtype_name, comp, graphs in variants if stages_table else []:
        engine = SwapEngine(SwapSettings(device=dev, dtype=dtype_name, cuda_graphs=graphs))  # type: ignore[arg-type]
        prepared = engine.prepare_sources([src])
        if comp:
            try:
                compile_engine(engine)
            except Exception as exc:  # report, do not hide: compile support varies by platform
                stages[name] = {"error": f"{type(exc).__name__}: {exc}"}
                continue
        stages[name] = {}
        sizes = batch_sizes if dev != "cpu" else ([b for b in batch_sizes if b <= cpu_frames] or [1])
        for b in sizes:
            frames = (torch.from_numpy(np.ascontiguousarray(sample[:b])).to(engine.device)
                      .permute(0, 3, 1, 2).to(engine.dtype).div(255))
            if frames.shape[0] < b:  # short clip: repeat frames
                frames = frames.repeat(math.ceil(b / frames.shape[0]), 1, 1, 1)[:b]
            if engine.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(engine.device)
            row: dict[str, Any]
            try:
                row = face_work(engine, frames, prepared, repeats if dev != "cpu" else max(2, repeats // 5))
            except Exception as exc:
                row = {"error": f"{type(exc).__name__}: {exc}"}
            if engine.device.type == "cuda":
                row["peak_vram_mb"] = round(torch.cuda.max_memory_allocated(engine.device) / 2**20, 1)
            base = stages.get("gpu_eager_fp32", {}).get(f"batch_{b}", {}).get("total")
            if base and "total" in row and name != "gpu_eager_fp32":
                row["speedup_vs_eager_fp32"] = round(base / row["total"], 2)
            stages[name][f"batch_{b}"] = row
            log(f"{name} batch {b}: {row}")
        del engine
        if use_gpu:
            torch.cuda.empty_cache()
    report["face_work_ms_per_frame"] = stages

    # 3. end to end, with audio, segment-parallel
    e2e: dict[str, Any] = {}
    runs = [(f"gpu_fp16_x{k}", SwapSettings(device=device if device != "auto" else "cuda", dtype="float16",
                                            workers=k, crf=crf, preset=preset, batch_size=max(batch_sizes),
                                            devices=devices))
            for k in (e2e_workers or [workers])] if use_gpu else []
    if not use_gpu:
        runs.append(("cpu", SwapSettings(device="cpu", workers=workers, crf=crf, preset=preset,
                                         batch_size=min(8, max(batch_sizes)))))
    for name, settings in runs:
        warm_engine: Any = None
        startup_s = None
        if settings.workers <= 1:
            # Single process: load the models and let cuDNN pick its kernels first (a one-second job), so the
            # figure is the steady-state rate a long video sees; that start-up cost is reported separately.
            from faceweave.pipeline.engine import SwapEngine

            t0 = time.perf_counter()
            warm_engine = SwapEngine(settings)
            swap_video([media_path("astronaut.png")], input_path, tmp / f"warm_{name}.mp4",
                       settings.model_copy(update={"trim_end": "1"}), engine=warm_engine)
            startup_s = round(time.perf_counter() - t0, 2)
        with GpuMonitor() as mon:
            t0 = time.perf_counter()
            result = swap_video([media_path("astronaut.png")], input_path, tmp / f"swap_{name}.mp4", settings,
                                engine=warm_engine)
            dt = time.perf_counter() - t0
        fps = result.frames / dt
        e2e[name] = {"fps": round(fps, 1), "seconds": round(dt, 2), "frames": result.frames,
                     "faces_swapped": result.faces_swapped, "startup_s_excluded": startup_s,
                     "ratio_to_plain_segments": round(fps / plain_n, 3),
                     "ratio_to_best_plain": round(fps / plain_best, 3), **mon.summary(),
                     "segment_timing": result.stats.get("segment_timing", {}),
                     "stream_timing": result.stats.get("stream_timing", {})}
        log(f"end to end {name}: {fps:.1f} fps = {fps / plain_n:.2f}× plain segment-parallel transcode, "
            f"{fps / plain_best:.2f}× the fastest plain transcode")
        if result.stats.get("stream_timing"):
            log(f"  where the stream waited (s): {result.stats['stream_timing']}")
    report["end_to_end"] = e2e
    if cold and use_gpu:
        from faceweave.bench_clips import cold_start, format_cold_start

        # a fresh process, nothing warm: the figure a user of `faceweave swap` waits for (issue 19 goal 4: ≤ 3 s);
        # its file caches are warm by now (this process read the same files): benchmarks/cold_start.py runs it first
        report["cold_start"] = cold_start(media_path("astronaut.png"), input_path, tmp / "cold.mp4",
                                          device=runs[0][1].device, dtype="float16", batch_size=max(batch_sizes))
        log(f"cold start (process start → first swapped frame): {format_cold_start(report['cold_start'])}")
    if k_jobs or sync_clients:
        from faceweave.bench_concurrency import k_jobs_rows, sync_client_rows

        # the service's executor path: one warm engine shared by K worker threads (issue 19 goal 3)
        job_device = "cpu" if not use_gpu else (device if device != "auto" else "cuda")
        if k_jobs:
            report["k_jobs"] = k_jobs_rows(input_path, media_path("astronaut.png"), k_jobs, device=job_device,
                                           crf=crf, preset=preset, frames=n_frames, log=log)
        if sync_clients:
            report["sync_clients"] = sync_client_rows(media_path("astronaut.png"), media_path("grace_hopper.jpg"),
                                                      sync_clients, device=job_device, slots=sync_slots,
                                                      requests_per_client=sync_requests, log=log)
    report["marking_ms_per_1080p_frame"] = marking_cost(device)
    log(f"marking, ms per 1080p frame: {report['marking_ms_per_1080p_frame']}")
    import resource

    # peak RSS of this process (KiB on Linux): the 10-minute run must stay near the short run's
    report["max_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return report


def _print_table(report: dict[str, Any], log: Callable[[str], None]) -> None:
    log("\n| variant | batch | detect | landmarks | swap+blend | total ms/frame | video path | × eager fp32 "
        "| peak VRAM MB |")
    log("|---|---|---|---|---|---|---|---|---|")
    for name, rows in report["face_work_ms_per_frame"].items():
        if "error" in rows:
            log(f"| {name} | – | {rows['error']} | | | | | | |")
            continue
        for b, r in rows.items():
            if "error" in r:
                log(f"| {name} | {b[6:]} | {r['error']} | | | | | | |")
                continue
            log(f"| {name} | {b[6:]} | {r['detect']} | {r['landmarks']} | {r['swap_blend']} | {r['total']} | "
                f"{r.get('video_path', '–')} | {r.get('speedup_vs_eager_fp32', '–')} | {r.get('peak_vram_mb', '–')} |")
    log(f"\nplain transcode fps: {report['plain_transcode_fps']}")
    for name, r in report["end_to_end"].items():
        util = r.get("gpu_util_mean_pct")
        log(f"end to end {name}: {r['fps']} fps, {r['ratio_to_plain_segments']}x plain segment-parallel, mean GPU "
            f"utilisation {'n/a' if util is None else f'{util} %'}; {r}")
    if "cold_start" in report:
        from faceweave.bench_clips import format_cold_start

        log(f"cold start: {format_cold_start(report['cold_start'])}")
    if "marking_ms_per_1080p_frame" in report:
        log("| marking, per 1080p frame | ms |\n|---|---|")
        for k, ms in report["marking_ms_per_1080p_frame"].items():
            log(f"| {k} | {ms} |")
    for name, r in report.get("k_jobs", {}).items():
        log(f"{name} concurrent video jobs: {r}")
    for name, r in report.get("sync_clients", {}).items():
        log(f"{name} sync: {r}")
    log(f"max RSS of the bench process: {report.get('max_rss_mb')} MB")


def bench_command(
    input: Annotated[Path | None, typer.Option("--input", help="video to use (default: synthesise one)")] = None,
    size: Annotated[str, typer.Option(help="synthesised size WxH")] = "1920x1080",
    seconds: Annotated[float, typer.Option(help="synthesised duration")] = 20.0,
    workers: Annotated[int, typer.Option(help="segment workers (encoder processes)")] = 8,
    batch_sizes: Annotated[str, typer.Option(help="comma list of batch sizes for the face-work table")] = "1,4,8",
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N")] = "auto",
    devices: Annotated[str | None, typer.Option(help="split segments across devices, e.g. 0,1")] = None,
    preset: Annotated[str, typer.Option(help="libx264 preset")] = "veryfast",
    crf: Annotated[int, typer.Option(help="libx264 crf")] = 20,
    cpu_frames: Annotated[int, typer.Option(help="largest CPU batch in the face-work table")] = 4,
    compile: Annotated[bool, typer.Option("--compile/--no-compile", help="include torch.compile fp16")] = True,
    repeats: Annotated[int, typer.Option(help="timed repetitions per measurement")] = 20,
    stages: Annotated[bool, typer.Option("--stages/--no-stages", help="include the per-stage face-work table")] = True,
    plain_workers: Annotated[str, typer.Option(help="extra segment-worker counts for plain transcode, e.g. 4,16")] = "",
    e2e_workers: Annotated[str, typer.Option(help="worker counts for the GPU end-to-end runs (default: --workers); "
                                                  "1 is the single-process streaming path")] = "",
    content: Annotated[str, typer.Option(help="synthesised clips, comma list: synth (a face on black), photo "
                                              "(photographic content over the whole frame, harder to encode)")
                       ] = "synth",
    cold_start: Annotated[bool, typer.Option("--cold-start/--no-cold-start",
                                             help="GPU: time a fresh process to its first swapped frame")] = False,
    k_jobs: Annotated[str, typer.Option(help="K concurrent video jobs through the service executor, e.g. 1,2,4")
                      ] = "",
    sync_clients: Annotated[str, typer.Option(help="concurrent image-job clients, e.g. 1,8,32")] = "",
    sync_requests: Annotated[int, typer.Option(help="image jobs each sync client sends")] = 4,
    sync_slots: Annotated[int, typer.Option(help="executor worker threads for the sync-client rows")] = 2,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the full report here")] = None,
) -> None:
    """Benchmark transcode vs swap (CPU, GPU eager/CUDA-graph fp32/fp16, compiled) in one run; table + JSON."""
    from faceweave.errors import InvalidOption

    try:
        w, h = (int(v) for v in size.lower().split("x"))
        sizes = [int(b) for b in batch_sizes.split(",") if b.strip()]
        plain_ks = [int(k) for k in plain_workers.split(",") if k.strip()]
        e2e_ks = [int(k) for k in e2e_workers.split(",") if k.strip()]
        contents = [c.strip() for c in content.split(",") if c.strip()]
        kjob_ks = [int(k) for k in k_jobs.split(",") if k.strip()]
        client_ns = [int(c) for c in sync_clients.split(",") if c.strip()]
        if not contents or set(contents) - {"synth", "photo"}:
            raise ValueError(content)
    except ValueError:
        raise InvalidOption(f"bad --size {size!r} or --batch-sizes {batch_sizes!r}",
                            hint="e.g. --size 1920x1080 --batch-sizes 1,4,8 --plain-workers 4,16 --content "
                                 "synth,photo") from None
    reports = [run_bench(input_path=input, size=(w, h), seconds=seconds, workers=workers, batch_sizes=sizes,
                         device=device, devices=devices, preset=preset, crf=crf, cpu_frames=cpu_frames,
                         do_compile=compile, repeats=repeats, stages_table=stages and k == 0,
                         plain_workers=plain_ks, e2e_workers=e2e_ks, content=c, cold=cold_start and k == 0,
                         k_jobs=kjob_ks if k == 0 else None, sync_clients=client_ns if k == 0 else None,
                         sync_requests=sync_requests, sync_slots=sync_slots)
               for k, c in enumerate(contents if input is None else contents[:1])]
    report = reports[0]  # the first clip's report; the others (same rows, no face-work table) under other_clips
    if len(reports) > 1:
        report["other_clips"] = {r["settings"]["content"]: r for r in reports[1:]}
    for r in reports:
        log_clip = r["settings"]["content"]
        print(f"\n=== clip: {log_clip} ===")
        _print_table(r, print)
    if json_out:
        json_out.write_text(json.dumps(report, indent=2))
