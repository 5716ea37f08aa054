"""The shipped occluder net (faceweave/models/occluder_net.py): its file is the one its spec pins, it is listed with
its licence, and it computes the same on every device. What it keeps on real faces: tests/swapper/test_occlusion.py."""

from __future__ import annotations

import cv2
import numpy as np
import torch

from faceweave.eval.cases import load
from faceweave.models.occluder_net import GRID, SPEC, load_occluder_net, occluder_input
from faceweave.models.registry import all_specs, sha256_file


def test_shipped_weights_are_the_pinned_file() -> None:
    path = SPEC.require()  # raises ModelIntegrityError on any other file
    assert sha256_file(path) == SPEC.sha256
    assert path.stat().st_size == SPEC.size_bytes
    assert SPEC.embedded and "Apache-2.0" in SPEC.licence
    assert SPEC in all_specs()


def _face_input() -> torch.Tensor:
    """obama's face cut square to the grid, with an oval face mask and its inner part as the skin (not a mesh's
    masks: this checks arithmetic, not what the net keeps)."""
    image = load("obama.jpg")
    h, w = image.shape[:2]
    side = min(h, w) // 2
    y0, x0 = h // 5, (w - side) // 2
    crop = cv2.resize(image[y0:y0 + side, x0:x0 + side], (GRID, GRID), interpolation=cv2.INTER_AREA)
    face = np.zeros((GRID, GRID), np.float32)
    cv2.ellipse(face, (GRID // 2, GRID // 2), (GRID // 3, GRID * 2 // 5), 0, 0, 360, 1.0, -1)
    skin = cv2.erode(face, np.ones((15, 15), np.uint8))
    target = torch.from_numpy(crop).permute(2, 0, 1)[None].float() / 255
    masks = [torch.from_numpy(m)[None, None] for m in (face, skin, np.zeros_like(face), np.zeros_like(face))]
    return occluder_input(target, *masks)


def test_input_contract() -> None:
    x = _face_input()
    assert x.shape == (1, 7, GRID, GRID) and x.dtype == torch.float32
    assert x[:, :3].abs().max() <= 1.0 and x[:, 3:].min() >= 0 and x[:, 3:].max() <= 1
    # the skin's own colour is the normalisation's zero: its weighted mean is ~0 in each channel
    skin = x[:, 4:5]
    assert ((x[:, :3] * skin).sum((2, 3)) / skin.sum()).abs().max() < 1e-4


def test_same_logits_on_every_device(device: torch.device) -> None:
    x = _face_input()
    reference = load_occluder_net(torch.device("cpu"))(x)
    got = load_occluder_net(device)(x.to(device)).cpu()
    assert got.shape == (1, 1, GRID, GRID)
    assert torch.allclose(got, reference, atol=2e-3 if device.type == "cuda" else 1e-6)
