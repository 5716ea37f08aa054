"""Host cost of the face tracker per frame: `FaceTracker.update` with One-Euro smoothing of 468 landmarks.

The tracker runs once per frame and face on the thread that plans the video stream, so its Python and small-op cost
bounds the stream's frame rate on a fast GPU. Synthetic landmarks (a face drifting with noise; detection every 5th
frame, refinement between), since only the arithmetic is timed here.

    python benchmarks/tracker_update.py --frames 300 --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from faceweave.analysis.face import Face
from faceweave.analysis.track import FaceTracker


def drifting_faces(frames: int, seed: int = 0) -> list[Face]:
    gen = torch.Generator().manual_seed(seed)
    base = torch.rand(468, 3, generator=gen) * torch.tensor([200.0, 240.0, 30.0]) + torch.tensor([800.0, 400.0, 0.0])
    out = []
    for k in range(frames):
        lm = base + torch.tensor([k * 0.5, k * 0.2, 0.0]) + torch.randn(468, 3, generator=gen) * 0.5
        box = torch.stack([lm[:, 0].min(), lm[:, 1].min(), lm[:, 0].max(), lm[:, 1].max()])
        out.append(Face(box=box, score=0.9, keypoints=lm[:5, :2].clone(), landmarks=lm, landmark_score=0.99))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    faces = drifting_faces(args.frames)
    per_frame = []
    for _ in range(args.repeats):
        tracker = FaceTracker()
        t0 = time.perf_counter()
        for k, face in enumerate(faces):
            tracker.update([face], k / 30, detected=k % 5 == 0)
        per_frame.append((time.perf_counter() - t0) / len(faces) * 1000)
    print(f"FaceTracker.update, one face, {args.frames} frames: median {statistics.median(per_frame):.3f} ms per "
          f"frame (runs: {', '.join(f'{v:.3f}' for v in per_frame)})")


if __name__ == "__main__":
    main()
