"""Does a variant of the watermark pattern keep x264's frame-type decisions? (issue 24: the encoder's cost.)

x264 (veryfast, fast B-frame decision) chooses I/P/B from the content; the pattern, the same in every frame, makes
frames predictable from each other and can turn an all-P encode into P+B, which costs x264 CPU time. This encodes one
clip unmarked and with each pattern variant (amplitude scale, cells per short side, Gaussian smoothing in cells; the
smoothed pattern rescaled to the same RMS, i.e. the same PSNR), one encoder thread, A/B repeats in alternating order,
and prints per variant: the frame types, the B-frame count, the size ratio and the median CPU-time ratio.

    python benchmarks/marking_frame_types.py --clip carphone-full --size 1920x1080 --frames 24 --repeats 4 \\
        --variant 1,160,0 --variant 0.5,160,0 --variant 1,100,0 --variant 1,240,0 --variant 1,160,0.5

The variants are luma patterns (what the video writer added until branch i24-x264); ``--variant cr`` is the writer's
mark now, in the V plane (:class:`ChromaMarker`), which x264's luma-only lookahead does not see.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
from pathlib import Path

import av
import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from video_marking_cost import make_scaled_clip, x264_cpu  # noqa: E402

from faceweave.media.video.encode import copy_video_frame, frame_plane  # noqa: E402
from faceweave.provenance import watermark as wm  # noqa: E402

PAYLOAD = wm.WatermarkPayload.for_job("benchmark-job")


def variant_delta(h: int, w: int, amp: float, cells: int, smooth: float, stripes: float = 0.0) -> np.ndarray:
    """The writer's pattern (:func:`watermark_delta`) drawn with ``cells`` per short side, ``amp`` × its amplitude,
    smoothed by a Gaussian of ``smooth`` cells and rescaled to the unsmoothed RMS; ``stripes``: its first row
    repeated down the picture (vertical stripes: what intra prediction copies from the row above, a probe of why the
    pattern changes x264's frame types). ``(H, W)`` int16 levels."""
    c = max(wm.MIN_CELL, min(h, w) / cells)
    gh, gw = math.ceil(h / c) + 2, math.ceil(w / c) + 2
    tile = wm._tile_chips(PAYLOAD)
    grid = np.tile(tile, (gh // wm.TILE + 1, gw // wm.TILE + 1))[:gh, :gw] * np.float32(wm.AMPLITUDE * amp)
    m = np.array([[1 / c, 0, 0.5 / c - 0.5], [0, 1 / c, 0.5 / c - 0.5]], np.float64)
    d = cv2.warpAffine(grid, m, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT)
    if smooth > 0:
        s = cv2.GaussianBlur(d, (0, 0), smooth * c, borderType=cv2.BORDER_REFLECT)
        d = s * np.float32(d.std() / s.std())
    if stripes:
        d = np.repeat(d[:1], h, axis=0)
    return np.rint(d).astype(np.int16)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clip", choices=("carphone-full", "bigbuckbunny"), default="carphone-full")
    p.add_argument("--size", default="1920x1080")
    p.add_argument("--frames", type=int, default=24)
    p.add_argument("--repeats", type=int, default=4)
    p.add_argument("--variant", action="append", default=[],
                   help="amp,cells_per_short_side,smooth_cells[,stripes] (a luma pattern), or cr (the writer's mark "
                        "in the V plane)")
    args = p.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    variants: list[tuple[float, ...] | str] = [v if v == "cr" else tuple(float(x) for x in v.split(","))
                                               for v in (args.variant or ["1,160,0"])]
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "in.mp4"
        make_scaled_clip("bigbuckbunny.mp4" if args.clip == "bigbuckbunny" else "carphone_pristine.mp4", clip,
                         (w, h), args.frames)
        with av.open(str(clip)) as c:
            plain = [f.reformat(format="yuv420p") for f in c.decode(video=0)]
        for f in plain:
            f.pict_type = av.video.frame.PictureType.NONE  # as the writer sends them: x264 decides
        sides: dict[object, list[av.VideoFrame]] = {"unmarked": plain}
        for v in variants:
            out = []
            if v == "cr":
                cv = plain[0].planes[2]
                marker = wm.ChromaMarker(h, w, PAYLOAD, (cv.height, cv.width))
                for f in plain:
                    g = copy_video_frame(f)
                    marker.apply(frame_plane(g, 2))
                    out.append(g)
                sides[v] = out
                continue
            d = variant_delta(h, w, v[0], int(v[1]), v[2], v[3] if len(v) > 3 else 0.0)
            for f in plain:
                g = copy_video_frame(f)
                y = frame_plane(g, 0)
                y[:] = np.clip(y.astype(np.int16) + d, 0, 255).astype(np.uint8)
                out.append(g)
            sides[v] = out

        def encode(frames: list[av.VideoFrame]) -> tuple[float, int, str]:
            return x264_cpu(frames, Path(tmp) / "e.mp4")

        load0 = os.getloadavg()[0]
        encode(plain)  # the first x264 open in a process is slower
        res: dict[object, list[tuple[float, int, str]]] = {k: [] for k in sides}
        for rep in range(args.repeats):
            for k in (list(sides) if rep % 2 == 0 else list(sides)[::-1]):
                res[k].append(encode(sides[k]))
        base = res["unmarked"]
        for k, r in res.items():
            print(json.dumps({"clip": args.clip, "size": args.size, "variant": k, "types": r[0][2],
                              "b_frames": r[0][2].count("B"), "bytes_ratio": round(r[0][1] / base[0][1], 3),
                              "cpu_ratio_median": round(statistics.median(
                                  a[0] / b[0] for a, b in zip(r, base, strict=True)), 3),
                              "load_before_after": [load0, os.getloadavg()[0]]}), flush=True)


if __name__ == "__main__":
    main()
