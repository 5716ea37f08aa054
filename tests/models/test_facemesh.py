"""FaceMesh 468 in PyTorch: parity with the original tflite on real face crops, and the mesh topology."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from faceweave.analysis.detect import FaceDetector
from faceweave.analysis.landmarks import FaceMesh
from faceweave.errors import ShapeError
from faceweave.models import topology
from faceweave.models.facemesh import SPEC, load_facemesh
from faceweave.models.registry import EMBEDDED_DIR
from faceweave.ops.crops import crop_matrices, sample_crops

FACES = ("astronaut.png", "grace_hopper.jpg", "obama.jpg")


@pytest.fixture(scope="module")
def face_data(media: Any) -> list[tuple[np.ndarray, np.ndarray]]:
    """(192x192x3 float32 [0,1] upright face crop, (468,3) mesh in image pixels) for each real face."""
    detector, mesh = FaceDetector(), FaceMesh()
    out = []
    for name in FACES:
        rgb = media.rgb(name)
        frames = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255
        face = mesh.landmarks(frames, detector.detect(frames))[0][0]
        box = face.box
        m = crop_matrices(((box[:2] + box[2:]) / 2)[None], (box[2:] - box[:2]).amax()[None] * 1.5,
                          torch.tensor([face.roll]), 192)
        crop = sample_crops(frames, torch.zeros(1, dtype=torch.int64), m, 192)
        assert face.landmarks is not None
        out.append((crop[0].permute(1, 2, 0).numpy().astype(np.float32), face.landmarks.numpy()))
    return out


def test_parity_with_tflite(face_data: list[tuple[np.ndarray, np.ndarray]]) -> None:
    litert = pytest.importorskip("ai_edge_litert.interpreter", reason="ai-edge-litert (dev extra) is not installed")
    crops = np.stack([c for c, _ in face_data])
    interpreter = litert.Interpreter(model_path=str(EMBEDDED_DIR / str(SPEC.derived_from)))
    interpreter.allocate_tensors()
    net = load_facemesh()
    with torch.inference_mode():
        raw = net.net(torch.from_numpy(crops).permute(0, 3, 1, 2))  # the graph's own outputs, batch of 3
    for i, crop in enumerate(crops):
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], crop[None])
        interpreter.invoke()
        for k, detail in enumerate(interpreter.get_output_details()):
            ref = interpreter.get_tensor(detail["index"])[0]
            assert raw[k][i].shape == ref.shape
            assert np.abs(raw[k][i].numpy() - ref).max() <= 1e-3, f"face {i} output {k}"
    with torch.inference_mode():
        points, logit = net(torch.from_numpy(crops).permute(0, 3, 1, 2))
    assert points.shape == (3, 468, 3) and (torch.sigmoid(logit) > 0.9).all()  # real faces are recognised


def test_device_dtype(device: torch.device, dtype: torch.dtype, face_data: list) -> None:
    x = torch.from_numpy(face_data[0][0]).permute(2, 0, 1)[None]
    with torch.inference_mode():
        ref, _ = load_facemesh()(x)
        out, _ = load_facemesh(device, dtype)(x.to(device, dtype))
    assert out.dtype == dtype
    assert (out.float().cpu() - ref).abs().max() <= (1e-3 if dtype == torch.float32 else 0.5)


@pytest.mark.parametrize("count", [1, 3, 9])
def test_any_batch_size_gives_the_single_item_results(device: torch.device, face_data: list, count: int) -> None:
    # On a GPU the graph pads batches to a few fixed sizes (cuda_batch_bucket) and slices the outputs back: the
    # padding must not leak into the real items. On the CPU this checks plain batching the same way.
    crops = torch.stack([torch.from_numpy(face_data[k % len(face_data)][0]).permute(2, 0, 1) for k in range(count)])
    net = load_facemesh(device)
    with torch.inference_mode():
        batched, logits = net(crops.to(device))
        single = [net(crops[k : k + 1].to(device))[0] for k in range(count)]
    assert batched.shape == (count, 468, 3) and logits.shape[0] == count
    for k in range(count):
        assert float((batched[k] - single[k][0]).abs().max()) <= 1e-3


def test_input_shape_checked() -> None:
    with pytest.raises(ShapeError):
        load_facemesh()(torch.zeros(1, 3, 128, 128))


def _polygon_area(xy: np.ndarray) -> float:
    x, y = xy[:, 0], xy[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def test_topology_triangles_cover_face_oval(face_data: list[tuple[np.ndarray, np.ndarray]]) -> None:
    tris = topology.TRIANGLES
    assert tris.ndim == 2 and tris.shape[1] == 3 and tris.min() >= 0 and tris.max() < topology.NUM_LANDMARKS
    assert len(tris) == 898 and topology.NUM_TESSELATION_TRIANGLES == 852  # as MediaPipe's canonical model
    assert len({tuple(sorted(t)) for t in tris.tolist()}) == len(tris)  # no duplicates
    for _, mesh in face_data:
        xy = mesh[:, :2].astype(np.float64)
        a, b, c = xy[tris[:, 0]], xy[tris[:, 1]], xy[tris[:, 2]]
        areas = 0.5 * np.abs((b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0]))
        oval = abs(_polygon_area(xy[list(topology.FACE_OVAL)]))
        # Triangles tile the oval: no overlap (sum would exceed) and no hole (sum would fall short).
        assert abs(areas.sum() / oval - 1) < 0.03


def test_topology_contours_closed_and_ordered(face_data: list[tuple[np.ndarray, np.ndarray]]) -> None:
    edges = {frozenset(e) for t in topology.TRIANGLES.tolist() for e in ((t[0], t[1]), (t[1], t[2]), (t[2], t[0]))}
    contours = {"FACE_OVAL": topology.FACE_OVAL, "LIPS_OUTER": topology.LIPS_OUTER,
                "LIPS_INNER": topology.LIPS_INNER, "LEFT_EYE": topology.LEFT_EYE, "RIGHT_EYE": topology.RIGHT_EYE}
    for name, contour in contours.items():
        assert len(set(contour)) == len(contour) >= 10, name
        # Ordered and closed: every consecutive pair, last→first included, is a mesh edge.
        for p, q in zip(contour, contour[1:] + contour[:1], strict=True):
            assert frozenset((p, q)) in edges, (name, p, q)
    for brow in (topology.LEFT_EYEBROW, topology.RIGHT_EYEBROW):
        assert len(set(brow)) == len(brow) == 10
    mesh = face_data[1][1][:, :2]
    # On a real upright face: RIGHT_EYE (subject's right) is image-left, mouth corner 61 left of 291,
    # eyes above the nose tip above the mouth, and every ordered contour is a simple (non-degenerate) loop.
    right_eye, left_eye = mesh[list(topology.RIGHT_EYE)].mean(0), mesh[list(topology.LEFT_EYE)].mean(0)
    assert right_eye[0] < left_eye[0] and mesh[topology.MOUTH_RIGHT, 0] < mesh[topology.MOUTH_LEFT, 0]
    assert max(right_eye[1], left_eye[1]) < mesh[topology.NOSE_TIP, 1] < mesh[list(topology.LIPS_INNER), 1].mean()
    for contour in contours.values():
        assert abs(_polygon_area(mesh[list(contour)])) > 10.0
