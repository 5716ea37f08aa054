"""FaceMesh landmarks on real faces: inside the box, agree with the detector, flip/scale consistent, batched."""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np
import pytest
import torch

from faceweave.analysis.detect import FaceDetector, detect_faces
from faceweave.analysis.face import Face, FaceKeypoint
from faceweave.analysis.landmarks import FaceMesh, face_landmarks
from faceweave.errors import ShapeError
from faceweave.ops.crops import crop_matrices, sample_crops

FACES = ("astronaut.png", "grace_hopper.jpg", "obama.jpg")


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector(min_face=80)  # these images hold one large face; skip the small-face tiles for speed


@pytest.fixture(scope="module")
def mesh() -> FaceMesh:
    return FaceMesh()


def _analyse(rgb: np.ndarray, detector: FaceDetector, mesh: FaceMesh) -> Face:
    faces = face_landmarks(rgb, detect_faces(rgb, detector=detector), mesh=mesh)
    assert len(faces) == 1
    return faces[0]


def _iod(face: Face) -> float:
    return float(torch.linalg.norm(face.keypoints[FaceKeypoint.EYE_B] - face.keypoints[FaceKeypoint.EYE_A]))


@pytest.fixture(scope="module")
def analysed(media: Any, detector: FaceDetector, mesh: FaceMesh) -> dict[str, Face]:
    return {name: _analyse(media.rgb(name), detector, mesh) for name in FACES}


@pytest.mark.parametrize("name", FACES)
def test_mesh_on_real_faces(name: str, analysed: dict[str, Face]) -> None:
    face = analysed[name]
    assert face.landmarks is not None and face.landmarks.shape == (468, 3) and face.landmarks.dtype == torch.float32
    assert face.landmark_score is not None and face.landmark_score > 0.9
    # All 468 points lie in the face's crop box (detection box + 25 % margin: BlazeFace's box stops at the brows,
    # the mesh reaches the top of the forehead), and the mesh's own box overlaps the detection box well.
    x0, y0, x1, y1 = face.box.tolist()
    pad = 0.25 * (x1 - x0)
    xy = face.landmarks[:, :2]
    assert (xy[:, 0] > x0 - pad).all() and (xy[:, 0] < x1 + pad).all()
    assert (xy[:, 1] > y0 - pad).all() and (xy[:, 1] < y1 + pad).all()
    mx0, my0 = xy.amin(dim=0).tolist()
    mx1, my1 = xy.amax(dim=0).tolist()
    inter = max(0.0, min(x1, mx1) - max(x0, mx0)) * max(0.0, min(y1, my1) - max(y0, my0))
    assert inter / ((x1 - x0) * (y1 - y0) + (mx1 - mx0) * (my1 - my0) - inter) > 0.6
    # Mesh keypoints vs the detector's own keypoints (eyes, nose): within 10 % of the inter-ocular distance.
    blaze = face.extra["blazeface_keypoints"]
    iod = _iod(face)
    for mesh_index, blaze_index in ((FaceKeypoint.EYE_A, 0), (FaceKeypoint.EYE_B, 1), (FaceKeypoint.NOSE, 2)):
        assert float(torch.linalg.norm(face.keypoints[mesh_index] - blaze[blaze_index])) < 0.1 * iod
    # BlazeFace's mouth point follows the lip line, which moves with a smile: 20 % for the mouth centre.
    mouth_centre = face.keypoints[FaceKeypoint.MOUTH_A:].mean(dim=0)
    assert float(torch.linalg.norm(mouth_centre - blaze[3])) < 0.2 * iod
    assert abs(math.degrees(face.roll)) < 10


def test_twice_the_size_gives_twice_the_landmarks(media: Any, detector: FaceDetector, mesh: FaceMesh,
                                                  analysed: dict[str, Face]) -> None:
    rgb = media.rgb("grace_hopper.jpg")
    big = cv2.resize(rgb, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)
    face, face2 = analysed["grace_hopper.jpg"], _analyse(big, detector, mesh)
    assert face.landmarks is not None and face2.landmarks is not None
    # Pixel centres at integers: x_big = 2 x + 0.5.
    expected = face.landmarks[:, :2] * 2 + 0.5
    error = torch.linalg.norm(face2.landmarks[:, :2] - expected, dim=1) / (2 * _iod(face))
    assert error.max() < 0.02
    assert torch.allclose(face2.landmarks[:, 2], face.landmarks[:, 2] * 2, atol=0.02 * 2 * _iod(face))


def test_horizontal_flip_maps_back(media: Any, detector: FaceDetector, mesh: FaceMesh,
                                   analysed: dict[str, Face]) -> None:
    rgb = media.rgb("obama.jpg")
    width = rgb.shape[1]
    flipped = _analyse(np.ascontiguousarray(rgb[:, ::-1]), detector, mesh)
    face = analysed["obama.jpg"]
    back = flipped.keypoints.clone()
    back[:, 0] = width - 1 - back[:, 0]
    # Mirroring swaps the subject's sides: eye A <-> eye B, mouth A <-> mouth B.
    back = back[[FaceKeypoint.EYE_B, FaceKeypoint.EYE_A, FaceKeypoint.NOSE, FaceKeypoint.MOUTH_B, FaceKeypoint.MOUTH_A]]
    error = torch.linalg.norm(back - face.keypoints, dim=1) / _iod(face)
    assert error.mean() < 0.08 and error.max() < 0.12
    assert abs(flipped.roll + face.roll) < math.radians(3)


def test_rolled_face_mesh(media: Any, detector: FaceDetector, mesh: FaceMesh, analysed: dict[str, Face]) -> None:
    rgb = media.rgb("grace_hopper.jpg")
    h, w = rgb.shape[:2]
    turn = cv2.getRotationMatrix2D((w / 2, h / 2), -45, 1.0)  # clockwise 45 degrees in the image
    rolled = _analyse(cv2.warpAffine(rgb, turn, (w, h), flags=cv2.INTER_CUBIC), detector, mesh)
    face = analysed["grace_hopper.jpg"]
    assert face.landmarks is not None and rolled.landmarks is not None
    expected = face.landmarks[:, :2].numpy() @ turn[:, :2].T + turn[:, 2]
    error = np.linalg.norm(rolled.landmarks[:, :2].numpy() - expected, axis=1) / _iod(face)
    assert error.mean() < 0.05
    assert abs(math.degrees(rolled.roll - face.roll) - 45) < 5


def test_batched_equals_single(media: Any, detector: FaceDetector, mesh: FaceMesh) -> None:
    frames = torch.stack([
        torch.from_numpy(cv2.resize(media.rgb(n), (512, 512), interpolation=cv2.INTER_AREA)).permute(2, 0, 1)
        for n in FACES
    ]).float() / 255
    faces = detector.detect(frames)
    batched = mesh.landmarks(frames, faces)
    for i in range(3):
        single = mesh.landmarks(frames[i:i + 1], [faces[i]])[0]
        assert len(single) == len(batched[i]) == 1
        a, b = single[0], batched[i][0]
        assert a.landmarks is not None and b.landmarks is not None
        # oneDNN picks other kernels for batch 3 than for batch 1, so float32 sums round differently: the
        # points (~250 px, 1 ulp = 1.5e-5 px) differed by up to 1.2e-4 px, i.e. 2.4e-7 of the image size (cuDNN on
        # an H100, batches padded to 8: 3.0e-4 px).
        assert (a.landmarks - b.landmarks).abs().max() <= 5e-4
        assert (a.keypoints - b.keypoints).abs().max() <= 5e-4
    assert mesh.landmarks(frames[:1], [[]]) == [[]]
    with pytest.raises(ShapeError):
        mesh.landmarks(frames, faces[:2])


def test_crop_sampling_is_a_rotation(device: torch.device, dtype: torch.dtype, media: Any) -> None:
    rgb = media.rgb("astronaut.png")
    frames = (torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255).to(device, dtype)
    centre = torch.tensor([[255.5, 255.5]])
    m = crop_matrices(centre, torch.tensor([512.0]), torch.tensor([math.pi / 2]), 512)
    crop = sample_crops(frames, torch.zeros(1, dtype=torch.int64), m, 512)
    assert crop.dtype == dtype and crop.device.type == device.type
    # A 90-degree turn about the image centre at 1:1 scale is an exact pixel permutation (crop→frame: +90°).
    expected = torch.rot90(frames[0], k=1, dims=(1, 2))
    # fp16 sampling coordinates are only ~0.25 px precise at 512 px, so single pixels at edges blend neighbours.
    tol = 1e-4 if dtype == torch.float32 else 0.12
    assert (crop[0] - expected).abs().max() <= tol
