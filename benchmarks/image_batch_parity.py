"""How far the cross-request image batch (``swap_image_batch``) is from one-by-one swaps, per dtype and graphs setting
(a diagnostic, not a test; issue 18: on CUDA fp16 the 512² job differed in 5114 pixels by > 2 levels, max 85).

Five jobs of four target sizes share one batch; for each job it prints the largest per-pixel difference (uint8
levels, any channel) and how many pixels differ by more than 2 levels. On the CPU it runs float32, eager only.
``--explain`` splits a difference by stage: the faces found (box and landmark offsets, batched analysis against
the image alone), the source face, and the swap given identical faces (alone, on the zero-padded canvas, in the
batch's shared call).

    python benchmarks/image_batch_parity.py --device cuda --explain
    python benchmarks/image_batch_parity.py --device cpu
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from faceweave.analysis.face import Face
from faceweave.data import media_path
from faceweave.media.image import read_image
from faceweave.pipeline.engine import SwapEngine, to_tensor, to_uint8
from faceweave.pipeline.image import swap_image_counted
from faceweave.pipeline.image_batch import CountingEngine, ImageJob, ImageOutcome, swap_image_batch
from faceweave.settings import SwapSettings


def _levels(a: np.ndarray, b: np.ndarray) -> str:
    diff = np.abs(a.astype(int) - b.astype(int)).max(-1)
    return f"max {int(diff.max())}, {int((diff > 2).sum())} px > 2"


def _face_offsets(alone: list[Face], batched: list[Face]) -> str:
    if len(alone) != len(batched):
        return f"{len(alone)} faces alone, {len(batched)} batched"
    parts = []
    for a, b in zip(sorted(alone, key=lambda f: f.box[0].item()), sorted(batched, key=lambda f: f.box[0].item()),
                    strict=True):
        box = (a.box.float().cpu() - b.box.float().cpu()).abs().max().item()
        marks = (float("nan") if a.landmarks is None or b.landmarks is None else
                 (a.landmarks[:, :2].float().cpu() - b.landmarks[:, :2].float().cpu()).abs().max().item())
        parts.append(f"box {box:.3f} px, landmarks {marks:.3f} px, score {a.score - b.score:+.4f}")
    return "; ".join(parts)


def explain(engine: SwapEngine, source: np.ndarray, targets: list[np.ndarray]) -> None:
    """Per job: the analysis offsets (batched canvas against alone) and the swap's own differences."""
    from faceweave.pipeline.image_batch import _stack

    with torch.inference_mode():
        canvas, sizes = _stack([source, *targets], engine.device, engine.dtype)
        faces_batched = engine.analyze(canvas, sizes)
        src_alone = engine.prepare_sources([source])[0]
        print(f"  source face: {_face_offsets([src_alone.face], faces_batched[0][:1])}", flush=True)
        rows = []
        for n, target in enumerate(targets):
            t = to_tensor(target, engine.device, engine.dtype)
            alone = engine.analyze(t)[0]
            offsets = _face_offsets(alone, faces_batched[n + 1])
            print(f"  job {n} {target.shape[1]}x{target.shape[0]}: analysis {offsets}", flush=True)
            if not alone:
                continue
            face = max(alone, key=lambda f: f.area)
            plan = [[(face, 0)]]
            single = to_uint8(engine.swap(t, plan, [src_alone]))[0]
            h, w = sizes[n + 1]
            padded = to_uint8(engine.swap(canvas[n + 1 : n + 2], plan, [src_alone])[:, :, :h, :w])[0]
            rows.append((n, face, single, padded))
            print(f"    swap, same faces: padded canvas vs alone {_levels(padded, single)}", flush=True)
        # the batch's shared call: every job's face with the one source, at each job's own crop size key
        keys: dict[int | None, list[int]] = {}
        for n, face, _, _ in rows:
            keys.setdefault(engine.swap_key([[(face, 0)]], [src_alone]), []).append(n)
        faces_of = {n: face for n, face, _, _ in rows}
        singles = {n: single for n, _, single, _ in rows}
        for key, members in keys.items():
            index = torch.tensor([m + 1 for m in members], device=canvas.device)
            out = engine.swap(canvas[index], [[(faces_of[m], 0)] for m in members], [src_alone])
            for k, m in enumerate(members):
                h, w = sizes[m + 1]
                shared = to_uint8(out[k : k + 1, :, :h, :w])[0]
                print(f"    job {m} in a shared call of {len(members)} (crop key {key}): vs alone "
                      f"{_levels(shared, singles[m])}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--explain", action="store_true", help="split each difference by stage")
    args = ap.parse_args()
    rgb = {n: read_image(media_path(n)).rgb for n in ("grace_hopper.jpg", "astronaut.png", "obama2.jpg")}
    hopper, astronaut = rgb["grace_hopper.jpg"], rgb["astronaut.png"]
    targets = [astronaut, rgb["obama2.jpg"], np.ascontiguousarray(hopper[40:, ::-1]),
               np.ascontiguousarray(astronaut[:400, 50:]), np.ascontiguousarray(astronaut[:, ::-1])]
    gpu = args.device.startswith("cuda")
    for dtype in ("float16", "float32") if gpu else ("float32",):
        for graphs in (True, False) if gpu else (False,):
            settings = SwapSettings(device=args.device, dtype=dtype, cuda_graphs=graphs)  # type: ignore[arg-type]
            engine = SwapEngine(settings)
            jobs = [ImageJob([hopper], t, settings) for t in targets]
            batched = swap_image_batch(jobs, lambda _s, e=engine: CountingEngine(e))
            row = []
            for job, got in zip(jobs, batched, strict=True):
                assert isinstance(got, ImageOutcome), got
                single, _, _ = swap_image_counted(engine.prepare_sources(job.sources), job.target, engine)
                row.append(f"{job.target.shape[1]}x{job.target.shape[0]}: {_levels(got.image, single)}")
            print(f"{dtype} {'graphs' if graphs else 'eager'}: " + "; ".join(row), flush=True)
            if args.explain:
                explain(engine, hopper, targets)


if __name__ == "__main__":
    main()
