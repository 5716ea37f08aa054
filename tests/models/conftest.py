"""Fixtures of the model tests: upright crops of the bundled faces."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from faceweave.analysis.detect import FaceDetector
from faceweave.models.facemesh import INPUT_SIZE
from faceweave.ops.crops import crop_matrices, sample_crops

FACES = ("astronaut.png", "grace_hopper.jpg", "obama.jpg", "obama2.jpg")


@pytest.fixture(scope="module")
def crops(media: Any) -> torch.Tensor:
    """``(4, 3, 192, 192)`` float32 ``[0, 1]`` upright crops (1.5× the box) of the four bundled faces."""
    detector = FaceDetector()
    out = []
    for name in FACES:
        frames = torch.from_numpy(media.rgb(name)).permute(2, 0, 1)[None].float() / 255
        face = detector.detect(frames)[0][0]
        m = crop_matrices(((face.box[:2] + face.box[2:]) / 2)[None], (face.box[2:] - face.box[:2]).amax()[None] * 1.5,
                          torch.tensor([face.roll]), INPUT_SIZE)
        out.append(sample_crops(frames, torch.zeros(1, dtype=torch.int64), m, INPUT_SIZE)[0])
    return torch.stack(out)
