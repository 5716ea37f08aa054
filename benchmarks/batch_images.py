"""Batch vs one call per image (issue 23): 20 images at 512² through one `faceweave swap -t FOLDER` versus 20
separate `faceweave swap` calls, both as subprocesses of this Python. Not a test: run it and read the line.

    python benchmarks/batch_images.py [--images 20] [--device cpu] [--batch-size 8] [--json out.json]

The images are made from the bundled faces (square crop, 512², mirrored and brightness-shifted copies so that no two
are equal). Both sides pay what a user pays: process start, imports, model load, source preparation; the batch pays
them once. The ratio is measured in one run, so a busy machine slows both sides alike (the absolute numbers are
noisy on a shared 2-core VM; the ratio much less).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from faceweave.data import media_path
from faceweave.media.image import read_image, write_image

FACES = ("astronaut.png", "obama.jpg", "obama2.jpg", "grace_hopper.jpg")


def make_images(folder: Path, count: int, size: int = 512) -> list[Path]:
    """``count`` distinct ``size``² PNGs from the bundled faces (centre square crop, resize, flip, brightness)."""
    bases = []
    for name in FACES:
        rgb = read_image(media_path(name)).rgb
        h, w = rgb.shape[:2]
        s = min(h, w)
        crop = rgb[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
        bases.append(cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA))
    paths = []
    for k in range(count):
        img = bases[k % len(bases)]
        if (k // len(bases)) % 2:
            img = np.ascontiguousarray(img[:, ::-1])
        shift = (k // (2 * len(bases))) * 6
        img = np.clip(img.astype(np.int16) + shift, 0, 255).astype(np.uint8)
        paths.append(write_image(folder / f"img{k:02d}.png", img))
    return paths


def faceweave(*args: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "faceweave.cli", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"faceweave {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=20)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--source", default="grace_hopper.jpg")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    source = str(media_path(args.source))
    common = ["--device", args.device]
    with tempfile.TemporaryDirectory(prefix="fw-batch-bench-") as tmp:
        folder = Path(tmp) / "in"
        folder.mkdir()
        images = make_images(folder, args.images)

        t0 = time.perf_counter()
        for k, img in enumerate(images):
            faceweave("swap", "-s", source, "-t", str(img), "-o", str(Path(tmp) / f"single{k:02d}.png"), *common)
        separate_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        faceweave("swap", "-s", source, "-t", str(folder), "-o", str(Path(tmp) / "batch"), "--batch-size",
                  str(args.batch_size), *common)
        batch_s = time.perf_counter() - t0
        written = len(list((Path(tmp) / "batch").iterdir()))
        if written != len(images):
            raise SystemExit(f"the batch wrote {written} of {len(images)} images")

    n = len(images)
    result = {
        "images": n, "size": 512, "device": args.device, "batch_size": args.batch_size,
        "separate_s": round(separate_s, 2), "batch_s": round(batch_s, 2),
        "separate_images_per_s": round(n / separate_s, 3), "batch_images_per_s": round(n / batch_s, 3),
        "ratio": round(separate_s / batch_s, 2),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
                   f"Python {platform.python_version()}",
    }
    print(f"{n} images at 512² on {args.device}: {n} separate calls {separate_s:.1f} s "
          f"({result['separate_images_per_s']} img/s), one batch call {batch_s:.1f} s "
          f"({result['batch_images_per_s']} img/s): {result['ratio']}× ({result['machine']})")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
