"""A face's swap does not depend on the faces that share its batch: the grain restoration and the detail restoration
follow each face's own magnification, not the batch's largest (live sessions' frames, :sync requests of different
clients and a video's frames are batched together). Real faces: one target, a large source (not magnified) and the
same source shrunk (magnified about 2.5×)."""

from __future__ import annotations

import cv2
import torch

from faceweave.pipeline.engine import SwapEngine
from faceweave.settings import SwapSettings
from faceweave.swapper import geometry
from faceweave.swapper.detail import band_sigmas


def test_a_face_comes_out_the_same_alone_and_batched(device: torch.device, media: type) -> None:
    engine = SwapEngine(SwapSettings(device=device.type))
    source = media.rgb("obama.jpg")
    small = cv2.resize(source, None, fx=0.15, fy=0.15, interpolation=cv2.INTER_AREA)
    sources = engine.prepare_sources([source, small])
    frame = engine.to_tensor(media.rgb("astronaut.png"))
    (face,) = engine.analyze(frame)[0]
    frames = torch.cat([frame, frame])
    # the two faces differ in what the restorations do: the shrunk source's face is magnified, the other's is not
    target = face.landmarks[None, :, :2].float().cpu()
    mags = [geometry.magnifications(s.texture.points[None].float(), target, torch.tensor([s.texture.scale]))[0]
            for s in sources]
    assert band_sigmas(mags[0]) == () and len(band_sigmas(mags[1])) == 2, mags
    assert mags[0] < geometry.GRAIN_MIN_MAGNIFICATION <= mags[1], mags

    batched = engine.swap(frames, [[(face, 0)], [(face, 1)]], sources)
    alone = [engine.swap(frame, [[(face, k)]], sources) for k in (0, 1)]
    assert not torch.equal(alone[0], alone[1])
    for k in (0, 1):
        # rounding only: the batch's texture box is the union of both faces' (measured on the CPU: 0.002 of a
        # level at most; before the restorations were per face, the large source's face differed by 19 levels)
        torch.testing.assert_close(batched[k : k + 1], alone[k], atol=0.5 / 255, rtol=0)
