"""PNG encoders on a marked 1920-px face (a benchmark, not a test): faceweave's strip-parallel writer at 1..N threads
against OpenCV and Pillow, per zlib level; best of ``--repeats``, with the file size.

    python benchmarks/png_encode.py [--size 1920] [--target obama2.jpg] [--threads 1,2,4] [--levels 1,6]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from collections.abc import Callable

import cv2
import numpy as np
from PIL import Image

from faceweave.data import media_path
from faceweave.media.png import encode_png
from faceweave.provenance.watermark import WatermarkPayload, embed_watermark


def best_ms(fn: Callable[[], bytes], repeats: int) -> tuple[float, int]:
    times, size = [], 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        size = len(fn())
        times.append(time.perf_counter() - t0)
    return round(min(times) * 1000, 1), size


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=1920)
    ap.add_argument("--target", default="obama2.jpg")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--levels", default="1,6")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)

    with Image.open(media_path(args.target)) as im:
        rgb_im = im.convert("RGB")
    scale = args.size / max(rgb_im.size)
    rgb_im = rgb_im.resize((round(rgb_im.width * scale), round(rgb_im.height * scale)), Image.Resampling.LANCZOS)
    rgb = embed_watermark(np.asarray(rgb_im), WatermarkPayload.for_job("bench"))  # the pixels an output has
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    rows = []
    for level in (int(x) for x in args.levels.split(",")):
        cv_params = [cv2.IMWRITE_PNG_COMPRESSION, level]
        if level == 1:
            cv_params += [cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]

        def pillow(level: int = level) -> bytes:
            buf = io.BytesIO()
            Image.fromarray(rgb).save(buf, "PNG", compress_level=level)
            return buf.getvalue()

        candidates: list[tuple[str, Callable[[], bytes]]] = [
            ("pillow", pillow),
            ("opencv", lambda p=cv_params: cv2.imencode(".png", bgr, p)[1].tobytes()),
        ]
        candidates += [(f"faceweave x{n}", lambda n=int(n), lv=level: encode_png(rgb, lv, threads=n))
                       for n in args.threads.split(",")]  # fmt: skip
        for name, fn in candidates:
            ms, size = best_ms(fn, args.repeats if level < 4 else max(1, args.repeats // 2))
            rows.append({"level": level, "encoder": name, "ms": ms, "mb": round(size / 1e6, 2)})
    print(json.dumps({"image": list(rgb.shape), "cpus": os.cpu_count(), "load_average": os.getloadavg(),
                      "rows": rows}, indent=1))  # fmt: skip
    print("\n| level | encoder | ms (best) | MB |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['level']} | {r['encoder']} | {r['ms']} | {r['mb']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
