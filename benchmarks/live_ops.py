"""Ops per live frame (issue 20's GPU latency, measured without a GPU): how many aten ops the live per-frame path
dispatches from Python, how many of them read a tensor's value on the host, and the wall time per call.

On a GPU the live engine thread is the ceiling (docs/benchmarks.md, "H200 box, first GPU figures"): at batch 1–4 its
time goes to Python and to dispatching many tiny ops (3×3 matrices, 468 landmarks), not to GPU arithmetic. Each
aten op dispatched from Python costs the engine thread about the same few microseconds on a GPU box as here, and
every op on a device tensor is a kernel launch, so the op count is the proxy this script measures on the CPU:

* ``ops``: aten ops called from Python (top-level: an op that another aten op calls is not counted again);
* ``reads``: ops that read a tensor's value on the host (``aten::_local_scalar_dense``, what ``.item()``,
  ``float()``, ``int()`` and ``bool()`` call) and ops whose output shape depends on values (``nonzero``,
  ``masked_select``, ``unique``, ``repeat_interleave`` without a size) or that may sync in ``linalg``: on a GPU
  each is a device sync when its tensor is on the device (the swap's geometry lives on the host by design, where a
  read costs only its dispatch). ``.tolist()`` and ``.numpy()`` do not dispatch an op and are not counted;
* ``ms``: median wall time per call on this machine (all stages run eagerly on the CPU; on CUDA the work inside the
  swap's crops, ``swap: crops``, is replayed from a CUDA graph, one launch).

Stages, at batch 1 and 4 (the frames of 1 or 4 live sessions merged into one engine call, as SharedEngine does),
on 1280×720 frames of the bundled carphone clip: ``detect`` (a detection frame's detector, no tiles),
``landmarks (detect)`` (FaceMesh on the detections, two passes), ``landmarks (refine)`` (a tracked frame: FaceMesh
seeded by the previous frame's faces), ``swap`` split into ``crops`` (swap_in_crops), ``paste`` (paste_back_region)
and ``geometry`` (the rest: output mesh, crop boxes and matrices, the crops' warp, the glue), and the whole frame
through ``VideoFaceProcessor.process_batch`` (tracked and detection frames). The FaceMesh net's forward is its own
row (``facemesh net``), nested in the landmarks rows.

    PYTHONPATH=$PWD python benchmarks/live_ops.py --size 1280x720
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile, record_function

import faceweave.swapper.mesh as mesh_mod
from faceweave.data import media_path
from faceweave.media.image import read_image
from faceweave.media.video.frames import FrameBatch
from faceweave.pipeline.engine import SwapEngine
from faceweave.pipeline.video_faces import VideoFaceProcessor
from faceweave.settings import SwapSettings

LABEL = "live_ops:"  # prefix of this script's record_function labels
READS = {"aten::_local_scalar_dense", "aten::nonzero", "aten::masked_select", "aten::unique", "aten::_unique2",
         "aten::unique_consecutive", "aten::repeat_interleave", "aten::linalg_inv", "aten::linalg_inv_ex",
         "aten::linalg_solve", "aten::linalg_solve_ex", "aten::linalg_det", "aten::_linalg_det", "aten::linalg_svd",
         "aten::_linalg_svd", "aten::linalg_lstsq", "aten::linalg_eigh", "aten::_linalg_eigh"}


def _labelled(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        with record_function(LABEL + name):
            return fn(*args, **kwargs)

    return wrapped


def _label_module(module: torch.nn.Module, name: str) -> None:
    """Label every forward of ``module`` (hooks: the landmarker calls its net by attribute)."""
    open_ranges: list[Any] = []

    def pre(*_: Any) -> None:
        ctx = record_function(LABEL + name)
        ctx.__enter__()
        open_ranges.append(ctx)

    def post(*_: Any) -> None:
        open_ranges.pop().__exit__(None, None, None)

    module.register_forward_pre_hook(pre)
    module.register_forward_hook(post)


def count_ops(fn: Callable[[], Any]) -> dict[str, dict[str, int]]:
    """Run ``fn`` once under the profiler: per innermost live_ops label, top-level aten ops and host reads."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    counts: dict[str, dict[str, int]] = {}
    for ev in prof.events():
        if not ev.name.startswith("aten::"):
            continue
        parent, label, top = ev.cpu_parent, "(unlabelled)", True
        while parent is not None:
            if parent.name.startswith("aten::"):
                top = False
            elif parent.name.startswith(LABEL) and label == "(unlabelled)":
                label = parent.name[len(LABEL):]
            parent = parent.cpu_parent
        row = counts.setdefault(label, {"ops": 0, "reads": 0})
        row["ops"] += int(top)
        row["reads"] += int(ev.name in READS)
    return counts


def wall_ms(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def clip_frames(width: int, height: int, count: int) -> list[Any]:
    with av.open(str(media_path("carphone_pristine.mp4"))) as inp:
        frames = []
        for f in inp.decode(video=0):
            frames.append(f.reformat(width=width, height=height, format="yuv420p"))
            if len(frames) == count:
                break
    return frames


def batch_of(frames: list[Any], start: int) -> FrameBatch:
    n = len(frames)
    return FrameBatch(frames, np.arange(start, start + n, dtype=np.int64),
                      np.arange(start, start + n, dtype=np.float64) / 30, start)


@contextmanager
def stage(name: str) -> Iterator[None]:
    with record_function(LABEL + name):
        yield


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="1280x720")
    ap.add_argument("--batches", default="1,4")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    settings = SwapSettings.build(device=args.device, enhancer=None)
    engine = SwapEngine(settings)
    sources = engine.prepare_sources([read_image(media_path("obama.jpg")).rgb])
    # the stages' parts, labelled where their callers look them up (works on any tree that has these names)
    mesh_mod.swap_in_crops = _labelled("swap: crops", mesh_mod.swap_in_crops)  # type: ignore[assignment]
    mesh_mod.paste_back_region = _labelled("swap: paste", mesh_mod.paste_back_region)  # type: ignore[assignment]
    _label_module(engine.mesh.net, "facemesh net")  # type: ignore[attr-defined]
    frames = clip_frames(width, height, 8)
    rows = [row for b in (int(v) for v in args.batches.split(","))
            for row in measure_batch(engine, sources, settings, frames, b, args.repeats)]
    summary = {"bench": "live_ops", "size": f"{width}x{height}", "device": str(engine.device),
               "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
               "load_avg_1m": round(os.getloadavg()[0], 2), "rows": rows}
    if args.json:
        args.json.write_text(json.dumps(summary) + "\n")


def measure_batch(engine: SwapEngine, sources: Any, settings: SwapSettings, frames: list[Any], b: int,
                  repeats: int) -> list[dict[str, Any]]:
    """The rows of one batch size ``b``."""
    rows: list[dict[str, Any]] = []
    # b live sessions' frames in one engine call: frame k of session s is clip frame s (different faces)
    rgb = batch_of(frames[:b], 0).to_device(engine.device).rgb(slice(None), engine.dtype)
    later = batch_of(frames[4:4 + b], 4).to_device(engine.device).rgb(slice(None), engine.dtype)
    faces = engine.detector.detect(rgb, tiles=False)
    seeds = engine.mesh.landmarks(rgb, faces)
    plan = [[(f, 0) for f in row] for row in seeds]
    processor = VideoFaceProcessor(engine, sources, None, settings)

    def tracked_frame(batch: FrameBatch = batch_of(frames[1:1 + b], 1)) -> Any:
        # as a live session sees it: the tracks of the last frame seed this one (no detection due)
        processor._frames_since_detect = 0
        return processor.process_batch(batch)

    def detection_frame(batch: FrameBatch = batch_of(frames[:b], 0)) -> Any:
        processor._frames_since_detect = 10**9
        return processor.process_batch(batch)

    detection_frame()  # tracks start
    cases: list[tuple[str, Callable[[], Any]]] = [
        ("detect", lambda: engine.detector.detect(rgb, tiles=False)),
        ("landmarks (detect)", lambda: engine.mesh.landmarks(rgb, faces)),
        ("landmarks (refine)", lambda: engine.refine(later, seeds)),
        ("swap", lambda: engine.swap(later, plan, sources)),
        ("frame: tracked", tracked_frame),
        ("frame: detection", detection_frame),
    ]
    for name, fn in cases:
        fn()  # warm
        counts = count_ops(lambda fn=fn, name=name: _in_stage(name, fn))
        ms = wall_ms(fn, repeats)
        total = {k: sum(c[k] for c in counts.values()) for k in ("ops", "reads")}
        parts = {label: c for label, c in counts.items() if label != name}
        own = counts.get(name, {"ops": 0, "reads": 0})
        rows.append({"batch": b, "stage": name, "ops": total["ops"], "reads": total["reads"],
                     "ops_per_frame": round(total["ops"] / b, 1), "ms": round(ms, 2),
                     "own": own, "parts": parts})
        print(f"b={b} {name:20s} ops {total['ops']:6d} ({total['ops'] / b:7.1f}/frame) reads {total['reads']:4d} "
              f"{ms:8.2f} ms  parts {json.dumps(parts)} own {json.dumps(own)}", flush=True)
    return rows


def _in_stage(name: str, fn: Callable[[], Any]) -> Any:
    with stage(name):
        return fn()


if __name__ == "__main__":
    main()
