"""CPU video benchmark: swap fps at 480p and 720p, and the ratio to a plain decode → encode of the same file.

Both runs of a resolution use the same encoder settings in the same process, so the ratio says how much the face
stages cost on top of the media path. The input is the bundled carphone clip (a real face) upscaled to the target
size and looped to ``--frames`` frames; it is written to a temporary directory and deleted afterwards.

    python benchmarks/video_cpu.py --frames 120 --threads 2
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import av
import cv2
import numpy as np
import torch

from faceweave.data import media_path
from faceweave.media.video.encode import EncoderSettings, transcode
from faceweave.pipeline.engine import SwapEngine
from faceweave.pipeline.video import swap_video
from faceweave.settings import SwapSettings


def make_clip(dst: Path, size: tuple[int, int], frames: int) -> None:
    """carphone (176×144, 30000/1001 fps) resized to ``size`` (letterboxed to keep its aspect), looped."""
    w, h = size
    with av.open(str(media_path("carphone_pristine.mp4"))) as c:
        src = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    sh, sw = src[0].shape[:2]
    scale = min(w / sw, h / sh)
    nw, nh = int(sw * scale) // 2 * 2, int(sh * scale) // 2 * 2
    x0, y0 = (w - nw) // 2, (h - nh) // 2
    with av.open(str(dst), "w") as out:
        vs = out.add_stream("libx264", rate=30)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        vs.codec_context.options = {"preset": "ultrafast", "crf": "16"}
        canvas = np.zeros((h, w, 3), np.uint8)
        for i in range(frames):
            k = i % (2 * len(src) - 2)  # ping-pong loop: no jump cut at the wrap
            k = k if k < len(src) else 2 * len(src) - 2 - k
            canvas[y0 : y0 + nh, x0 : x0 + nw] = cv2.resize(src[k], (nw, nh), interpolation=cv2.INTER_CUBIC)
            frame = av.VideoFrame.from_ndarray(canvas, format="rgb24")
            frame.pts = i
            for p in vs.encode(frame):
                out.mux(p)
        for p in vs.encode(None):
            out.mux(p)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--preset", default="veryfast", help="libx264 preset for both runs")
    parser.add_argument("--crf", type=int, default=20)
    parser.add_argument("--detect-every", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--sizes", default="640x480,1280x720")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    settings = SwapSettings(video_codec="libx264", preset=args.preset, crf=args.crf, detect_every=args.detect_every,
                            batch_size=args.batch_size, device="cpu")
    encoder = EncoderSettings("libx264", crf=args.crf, preset=args.preset)
    engine = SwapEngine(settings)
    engine.warm_up()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for spec in args.sizes.split(","):
            w, h = (int(v) for v in spec.split("x"))
            clip = Path(tmp) / f"in_{h}p.mp4"
            make_clip(clip, (w, h), args.frames)
            t0 = time.perf_counter()
            transcode(clip, Path(tmp) / f"plain_{h}p.mp4", encoder)
            plain_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            result = swap_video([media_path("astronaut.png")], clip, Path(tmp) / f"swap_{h}p.mp4", settings,
                                engine=engine)
            swap_s = time.perf_counter() - t0
            row = {
                "size": f"{w}x{h}",
                "frames": result.frames,
                "plain_fps": round(args.frames / plain_s, 2),
                "swap_fps": round(result.frames / swap_s, 2),
                "swap_over_plain_time": round(swap_s / plain_s, 2),
                "frames_swapped": result.stats.get("frames_swapped"),
                "detections": result.stats.get("detections"),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    summary = {
        "machine": f"{platform.processor() or platform.machine()}, torch threads {args.threads}",
        "torch": torch.__version__,
        "pyav": av.__version__,
        "preset": args.preset,
        "crf": args.crf,
        "results": rows,
    }
    print("| size | frames | plain decode→encode fps | swap fps | swap time / plain time |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['size']} | {r['frames']} | {r['plain_fps']} | {r['swap_fps']} | {r['swap_over_plain_time']} |")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
