"""Face selection and per-face source choice on real faces."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from faceweave.analysis.select import best_source_for, head_pose, select_faces
from faceweave.errors import InvalidOption
from faceweave.pipeline.engine import SwapEngine
from faceweave.settings import SwapSettings
from faceweave.swapper.mesh import _paste_rounds


@pytest.fixture(scope="module")
def engine() -> SwapEngine:
    return SwapEngine(SwapSettings(device="cpu"))


def test_head_pose_sign_flips_with_a_mirror(engine: SwapEngine, media: type) -> None:
    img = media.rgb("obama2.jpg")  # head turned ~13°
    face = engine.analyze(engine.to_tensor(img))[0][0]
    mirrored = engine.analyze(engine.to_tensor(np.ascontiguousarray(img[:, ::-1])))[0][0]
    yaw, _ = head_pose(face)
    yaw_m, _ = head_pose(mirrored)
    assert abs(yaw) > 0.08
    assert np.sign(yaw) == -np.sign(yaw_m)
    assert abs(abs(yaw) - abs(yaw_m)) < 0.1


def test_best_source_matches_pose(engine: SwapEngine, media: type) -> None:
    img = media.rgb("obama2.jpg")
    face = engine.analyze(engine.to_tensor(img))[0][0]
    mirrored = engine.analyze(engine.to_tensor(np.ascontiguousarray(img[:, ::-1])))[0][0]
    assert best_source_for(face, [mirrored, face]) == 1
    assert best_source_for(mirrored, [mirrored, face]) == 0


def test_selector_modes_on_fake_layout(engine: SwapEngine, media: type) -> None:
    img = media.rgb("astronaut.png")
    face = engine.analyze(engine.to_tensor(img))[0][0]
    shifted = face.with_(box=face.box + torch.tensor([-100.0, 0, -120, 0]))  # smaller, further left
    faces = [face, shifted]
    assert select_faces(faces, SwapSettings(selector="one"), [face])[0][0] is face
    assert len(select_faces(faces, SwapSettings(selector="many"), [face])) == 2
    assert select_faces(faces, SwapSettings(selector="index", face_index=0), [face])[0][0] is shifted
    with pytest.raises(InvalidOption):
        select_faces(faces, SwapSettings(selector="index", face_index=2), [face])
    assert select_faces([], SwapSettings(), [face]) == []


def test_paste_rounds_one_face_per_frame_per_round() -> None:
    assert _paste_rounds([0, 0, 1, 0, 2]) == [[0, 2, 4], [1], [3]]
    assert _paste_rounds([]) == []
