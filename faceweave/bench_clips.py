"""Inputs and probes for ``faceweave bench`` (issue 19): a clip of full-frame photographic content, a tone track
written in bounded chunks (a 10-minute clip must not hold its audio in memory at once), and the cold-start probe
(process start → first swapped frame) run in a fresh process.

The photographic clip is what a phone or camera film looks like to the encoder: detail in every block of every
frame, moving every frame, so x264 spends far more per frame than on the bench's black surround. It is made from the
bundled photos only: a large mosaic of small patches cut from them at random (a face cut into 64-px patches and
shuffled is no face any more), panned and zoomed slowly (Ken Burns), with one whole photo of a face moving over it.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

PATCH = 64  # side (pixels) of the pieces cut from the photos: small enough that no piece holds a whole face


def photo_mosaic(width: int, height: int, *, scale: float = 2.0, seed: int = 0) -> np.ndarray:
    """``(round(height·scale), round(width·scale), 3)`` uint8 RGB: shuffled ``PATCH``-px pieces of the bundled photos
    (each from a random photo, position and 90° turn), shown at ``PATCH · height / 1080`` px, so a frame of any
    size holds the same number of pieces (and about as much detail per pixel) as a 1080p frame."""
    import cv2

    from faceweave.data import media_path
    from faceweave.media.image import read_image

    photos = [read_image(media_path(n)).rgb for n in ("astronaut.png", "grace_hopper.jpg", "obama.jpg", "obama2.jpg")]
    rng = np.random.default_rng(seed)
    mh, mw = int(round(height * scale)), int(round(width * scale))
    side = max(8, round(PATCH * height / 1080))
    rows, cols = math.ceil(mh / side), math.ceil(mw / side)
    out = np.empty((rows * side, cols * side, 3), np.uint8)
    for r in range(rows):
        for c in range(cols):
            img = photos[int(rng.integers(len(photos)))]
            y = int(rng.integers(img.shape[0] - PATCH))
            x = int(rng.integers(img.shape[1] - PATCH))
            piece = np.rot90(img[y : y + PATCH, x : x + PATCH], int(rng.integers(4)))
            if side != PATCH:
                piece = cv2.resize(piece, (side, side), interpolation=cv2.INTER_AREA)
            out[r * side : (r + 1) * side, c * side : (c + 1) * side] = piece
    return np.ascontiguousarray(out[:mh, :mw])


def write_tone(out: Any, stream: Any, seconds: float, rate: int = 48000) -> None:
    """Encode ``seconds`` of a 440 Hz mono tone into ``stream`` of the open PyAV container ``out``, one frame of
    1024 samples at a time (bounded memory for any length)."""
    import av

    step, total = 1024, int(seconds * rate)
    for k in range(0, total, step):
        n = min(step, total - k)
        samples = (np.sin(2 * np.pi * 440 * np.arange(k, k + n) / rate) * 0.3).astype(np.float32)
        af = av.AudioFrame.from_ndarray(samples[None], format="fltp", layout="mono")
        af.sample_rate, af.pts, af.time_base = rate, k, Fraction(1, rate)
        for p in stream.encode(af):
            out.mux(p)


def synthesize_photo_video(path: Path, *, width: int, height: int, seconds: float, fps: int = 30,
                           face: str = "obama.jpg") -> Path:
    """Write an H.264 + AAC clip of photographic content over the whole frame with one face (see the module).

    Every frame is made and encoded at once: memory does not grow with ``seconds``."""
    import av
    import cv2

    from faceweave.data import media_path
    from faceweave.media.image import read_image

    mosaic = photo_mosaic(width, height)
    img = read_image(media_path(face)).rgb
    frames = int(round(seconds * fps))
    base = min(width / img.shape[1], height / img.shape[0]) * 0.6
    with av.open(str(path), "w") as out:
        v = out.add_stream("libx264", rate=fps, options={"crf": "18", "preset": "ultrafast", "g": str(fps)})
        v.width, v.height, v.pix_fmt = width, height, "yuv420p"
        a = out.add_stream("aac", rate=48000)
        a.layout = "mono"  # type: ignore[union-attr]
        mh, mw = mosaic.shape[:2]
        for i in range(frames):
            t = i / fps
            # Ken Burns: zoom between 1.0 and 1.3 over ~40 s, pan across the mosaic over ~60 s (never past its edge)
            zoom = 1.15 + 0.15 * math.sin(2 * math.pi * t / 40)
            vw, vh = width / zoom, height / zoom
            x0 = (mw - vw) * (0.5 + 0.5 * math.sin(2 * math.pi * t / 60))
            y0 = (mh - vh) * (0.5 + 0.5 * math.sin(2 * math.pi * t / 47 + 1.0))
            m = np.array([[zoom, 0.0, -x0 * zoom], [0.0, zoom, -y0 * zoom]])
            frame = cv2.warpAffine(mosaic, m, (width, height), flags=cv2.INTER_LINEAR)
            s = base * (1.0 + 0.15 * math.sin(2 * math.pi * t / 7))
            cx = width / 2 + 0.12 * width * math.sin(2 * math.pi * t / 11)
            cy = height / 2 + 0.05 * height * math.sin(2 * math.pi * t / 5)
            ang = 8 * math.sin(2 * math.pi * t / 9)
            fm = cv2.getRotationMatrix2D((img.shape[1] / 2, img.shape[0] / 2), ang, s)
            fm[:, 2] += (cx - img.shape[1] / 2, cy - img.shape[0] / 2)
            cv2.warpAffine(img, fm, (width, height), dst=frame, borderMode=cv2.BORDER_TRANSPARENT)
            for p in v.encode(av.VideoFrame.from_ndarray(np.asarray(frame, dtype=np.uint8), format="rgb24")):
                out.mux(p)
        write_tone(out, a, seconds)
        for stream in (v, a):
            for p in stream.encode(None):
                out.mux(p)
    return path


# --- cold start ----------------------------------------------------------------------------------------------
_MARK = "FACEWEAVE_FIRST_FRAME_WALL="
_PHASES = "FACEWEAVE_COLD_PHASES="

#: the cold child's phases, in order: (key in ``cold_start()["phases"]``, what was done by then)
COLD_PHASES = (
    ("imports_s", "imports done (torch, faceweave.pipeline.video)"),
    ("engine_s", "engine built, models loaded"),
    ("warm_up_s", "warm-up before the first frame done"),
    ("first_frame_s", "first swapped frame (first progress report with frames done)"),
    ("background_warm_up_s", "background warm-up ended (deferred warm-up only)"),
    ("job_end_s", "swap_video returned (output written)"),
    ("process_s", "child process exited"),
)


def cold_start(source: Path, clip: Path, output: Path, *, device: str, dtype: str, batch_size: int,
               trim_end: str = "3", warm_up: str = "auto", timeout_s: float = 300.0) -> dict[str, Any]:
    """Seconds from starting a fresh ``python`` process that runs :func:`~faceweave.swap_video` on ``clip`` to its
    first swapped frame (the first progress report with frames done), and to the job's end.

    The clock starts in this process just before the child is spawned, so interpreter start, ``import torch``,
    model loading, warm-up and graph captures are all inside the figure. ``phases``: seconds since that start at
    which each of :data:`COLD_PHASES` was reached (None: not reached, e.g. no background warm-up); ``warm_up``: the
    child's ``swap_video(warm_up=…)`` (``auto``, as ``faceweave swap`` runs, ``full`` or ``deferred``) and what it
    did (``warm_up_mode``, and the background warm-up's state and steps)."""
    cmd = [sys.executable, "-m", "faceweave.bench_clips", str(source), str(clip), str(output), device, dtype,
           str(batch_size), trim_end, warm_up]
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=dict(os.environ))
    t_end = time.time()
    lines = proc.stdout.splitlines()
    first = next((float(line[len(_MARK):]) for line in lines if line.startswith(_MARK)), None)
    child: dict[str, Any] = next((json.loads(line[len(_PHASES):]) for line in lines if line.startswith(_PHASES)),
                                 {})
    walls: dict[str, Any] = child.get("walls", {})
    phases: dict[str, float | None] = {key: None if walls.get(key) is None else round(float(walls[key]) - t0, 2)
                                       for key, _ in COLD_PHASES}
    phases["process_s"] = round(t_end - t0, 2)
    out: dict[str, Any] = {"first_frame_s": None if first is None else round(first - t0, 2),
                           "process_s": phases["process_s"], "returncode": proc.returncode, "warm_up": warm_up,
                           "warm_up_mode": child.get("mode"), "background": child.get("background"),
                           "phases": phases}
    if proc.returncode:
        out["error"] = proc.stderr.strip().splitlines()[-1:] or ["?"]
    return out


def format_cold_start(row: dict[str, Any]) -> str:
    """One line: each phase's seconds since the process was spawned (see :func:`cold_start`)."""
    phases = row.get("phases", {})
    parts = [f"{key[:-2].replace('_', ' ')} {'–' if phases.get(key) is None else f'{phases[key]:.2f}'}"
             for key, _ in COLD_PHASES]
    bg = row.get("background") or {}
    extra = f", background {bg.get('state')} after {bg.get('steps')} steps" if bg else ""
    err = f", error {row['error']}" if row.get("error") else ""
    return (f"warm-up {row.get('warm_up')} ({row.get('warm_up_mode')}){extra}: " + ", ".join(parts)
            + f" s since spawn{err}")


def _child(argv: list[str]) -> None:
    """The cold-start child: one ``swap_video`` call; prints the wall time of its first swapped frame, and at the
    end the wall times of its phases (from the job's ``stats["warm_up"]``)."""
    source, clip, output, device, dtype, batch, trim_end, warm_up = argv
    from faceweave.pipeline.video import swap_video  # torch and the pipeline: what `faceweave swap` imports
    from faceweave.progress import Progress
    from faceweave.settings import SwapSettings

    t_imports = time.time()
    seen: list[float] = []

    def progress(p: Progress) -> None:
        if not seen and p.stage == "swap" and p.frames_done > 0:
            seen.append(time.time())
            print(f"{_MARK}{seen[0]:.6f}", flush=True)

    settings = SwapSettings(device=device, dtype=dtype, batch_size=int(batch), workers=1,  # type: ignore[arg-type]
                            trim_end=trim_end)
    t_call = time.time()
    result = swap_video([source], clip, output, settings, progress=progress, warm_up=warm_up)  # type: ignore[arg-type]
    t_done = time.time()
    warm = result.stats.get("warm_up", {})
    background = warm.get("background")

    def at(offset: float | None) -> float | None:  # swap_video's offsets are from its own start, ~t_call
        return None if offset is None else t_call + offset

    walls = {"imports_s": t_imports, "engine_s": at(warm.get("engine_s")), "warm_up_s": at(warm.get("critical_s")),
             "first_frame_s": seen[0] if seen else None,
             "background_warm_up_s": at(background.get("end_s")) if background else None, "job_end_s": t_done}
    print(_PHASES + json.dumps({"walls": walls, "mode": warm.get("mode"), "background": background}), flush=True)


if __name__ == "__main__":
    _child(sys.argv[1:])
