"""Capture the training crops of the occluder net: what the mesh swap hands its occlusion step, on faces of the
*tune* people only (astronaut, grace_hopper) and the carphone clip's speaker — never obama / obama2, the held-out
split's targets, so the held-out and mirrored-held-out figures of docs/quality.md judge faces the net never saw.

    PYTHONPATH=$PWD python benchmarks/occluder_net/capture.py --out .occnet/crops.npz   # 144 crops, 2 min on 2 cores

Each face (the two photos plain, mirrored, rotated ±12° and shrunk; every sixth frame of the clip) is swapped from
astronaut, grace_hopper and a frame of the clip, with ``occlusion=True`` and the step replaced by a recorder; half of
those outputs (one person's skin on another's shape and light) are swapped once more as targets, for more faces. The
recorder keeps the target crop and the mesh's masks resampled to the net's grid (:data:`GRID`): the image
(uint8 RGB) and four masks (uint8): the face mask, the skin, the eyes/brows and the lips. A second array holds
occluder textures: Big Buck Bunny frames (not frame 60, which the test set's objects are cut from) and the
photos' backgrounds.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

import faceweave.swapper.mesh as mesh
from faceweave.data import media_path
from faceweave.eval.cases import load
from faceweave.models.occluder_net import GRID
from faceweave.pipeline.engine import SwapEngine
from faceweave.pipeline.image import swap_image
from faceweave.settings import SwapSettings

TRAIN_PHOTOS = ("astronaut.png", "grace_hopper.jpg")
SOURCES = ("astronaut.png", "grace_hopper.jpg")  # a source sets the output mesh's shape


def _frames(name: str, every: int, skip: tuple[int, ...] = ()) -> list[np.ndarray]:
    import av

    out = []
    with av.open(str(media_path(name))) as c:
        for k, frame in enumerate(c.decode(video=0)):
            if k % every == 0 and k not in skip:
                out.append(np.ascontiguousarray(frame.to_ndarray(format="rgb24")))
    return out


def _poses(image: np.ndarray) -> list[np.ndarray]:
    """The photo, mirrored, rotated ±12° and shrunk (a small face in a big frame)."""
    out = []
    for img in (image, np.ascontiguousarray(image[:, ::-1])):
        h, w = img.shape[:2]
        out.append(img)
        for angle in (-12, 12):
            m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
            out.append(cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_REFLECT))
        out.append(cv2.resize(img, None, fx=0.45, fy=0.45, interpolation=cv2.INTER_AREA))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    torch.manual_seed(0)
    records: list[np.ndarray] = []

    def recorder(target, skin, region, features, *, face_px, lips):  # noqa: ANN001 - mirrors occlusion_mask
        def grid(x: torch.Tensor, mode: str) -> torch.Tensor:
            kw = {} if mode == "area" else {"align_corners": False}
            return F.interpolate(x.float(), size=(GRID, GRID), mode=mode, **kw)

        stack = torch.cat([grid(target, "area"), grid(region, "area"), grid(skin, "area"),
                           grid(features, "area"), grid(lips, "area")], 1)
        records.extend((stack.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy())
        return torch.zeros_like(region)

    mesh.occlusion_mask = recorder  # type: ignore[assignment]  # the capture's hook on the step it records
    engine = SwapEngine(SwapSettings.build(device="cpu", occlusion=True))
    targets = [p for name in TRAIN_PHOTOS for p in _poses(load(name))]
    clip = _frames("carphone_pristine.mp4", every=6)
    targets += clip
    sources = [load(name) for name in SOURCES] + [clip[5]]
    swapped: list[np.ndarray] = []
    for source in sources:
        prepared = engine.prepare_sources([source])
        for target in targets:
            try:
                swapped.append(swap_image(prepared, target, engine)[0])
            except Exception as exc:  # noqa: BLE001 - a pose with no face is skipped, and said
                print(f"skipped a target: {exc}")
    # more faces: the swaps' outputs (one person's skin on another's shape and light) are targets too
    prepared = engine.prepare_sources([sources[0]])
    for target in swapped[len(targets):: 2]:
        swap_image(prepared, target, engine)
    crops = np.stack(records)
    textures = [cv2.resize(f, (320, 180), interpolation=cv2.INTER_AREA)
                for f in _frames("bigbuckbunny.mp4", every=11, skip=(55, 66))]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, crops=crops, textures=np.stack(textures))
    print(f"{len(crops)} crops {crops.shape}, {len(textures)} textures -> {args.out}")


if __name__ == "__main__":
    main()
