"""Per-frame face sharpness of a video swap whose source face is magnified about 1.25× (issue 21, docs/quality.md):
the detail restoration with its ramp (the default) or switched on whole at 1.25× (``--cliff``, the old rule).

    PYTHONPATH=$PWD python benchmarks/detail_ramp_video.py --source-scale 0.43 [--cliff]

The astronaut photo is shrunk by ``--source-scale`` so that its face, swapped onto the carphone clip, is magnified
around 1.25×; the script prints the magnifications the swap used and the per-frame ratio of the face's variance of
the Laplacian to the input frame's (mean, spread, frame-to-frame step).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import cv2
import numpy as np

import faceweave.swapper.detail as detail
import faceweave.swapper.mesh as mesh


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source-scale", type=float, default=0.43)
    ap.add_argument("--cliff", action="store_true", help="the restoration switches on whole at 1.25× (no ramp)")
    args = ap.parse_args()
    if args.cliff:  # this script's process only: the ramp shrunk to nothing below FULL_MAGNIFICATION
        detail.MIN_MAGNIFICATION = detail.FULL_MAGNIFICATION - 1e-4
    seen: list[float] = []
    measure = mesh._magnifications

    def recorded(*a: object) -> list[float]:
        out = measure(*a)  # type: ignore[arg-type]
        seen.extend(out)
        return out

    mesh._magnifications = recorded  # type: ignore[assignment]

    import av

    from faceweave.api import swap
    from faceweave.data import media_path
    from faceweave.eval.realism import sharpness
    from faceweave.pipeline.engine import SwapEngine
    from faceweave.settings import SwapSettings

    work = Path(tempfile.mkdtemp(prefix="fw-ramp-"))
    src = cv2.imread(str(media_path("astronaut.png")))
    assert src is not None
    cv2.imwrite(str(work / "source.png"), cv2.resize(src, None, fx=args.source_scale, fy=args.source_scale,
                                                     interpolation=cv2.INTER_AREA))
    settings = SwapSettings(device="cpu")
    out = work / "swapped.mp4"
    swap(work / "source.png", media_path("carphone_pristine.mp4"), out, settings)

    def frames(path: Path) -> list[np.ndarray]:
        with av.open(str(path)) as c:
            return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]

    engine = SwapEngine(settings)
    ratios = []
    for before, after in zip(frames(media_path("carphone_pristine.mp4")), frames(out), strict=False):
        faces = engine.analyze(engine.to_tensor(before))[0]
        if faces:
            face = max(faces, key=lambda f: f.area)
            assert face.landmarks is not None
            lm = face.landmarks[:, :2].numpy().astype(np.float64)
            ratios.append(sharpness(after, before, lm)["sharpness_vs_target"])
    r = np.array(ratios)
    print(json.dumps({
        "cliff": args.cliff, "frames_judged": len(r), "magnification_min": round(min(seen), 3),
        "magnification_max": round(max(seen), 3), "below_1.25": sum(m < 1.25 for m in seen), "measured": len(seen),
        "sharpness_mean": round(float(r.mean()), 3), "sharpness_std": round(float(r.std()), 3),
        "frame_step_mean": round(float(np.abs(np.diff(r)).mean()), 4),
    }))


if __name__ == "__main__":
    main()
