"""468-point FaceMesh landmarks for detected faces, batched over all faces of all frames.

:meth:`FaceMesh.landmarks` crops every face as MediaPipe does (``face_detection_to_roi``): a square around the
box centre, side ``1.5 × max(w, h)`` (25 % margin each side), turned by the face's roll so the eyes are level,
sampled to 192² by ONE batched ``affine_grid`` + ``grid_sample``; runs FaceMesh once on the whole batch; and maps
the points back to frame pixels. A second pass re-crops every face from the bounding box of its own mesh and
roll (MediaPipe's tracking ROI), which centres and sizes the crop the way the net was trained on.
"""

from __future__ import annotations

import torch
from torch import nn

from faceweave.analysis.detect import image_to_frames
from faceweave.analysis.face import Face
from faceweave.cuda_graphs import device_constant
from faceweave.errors import ShapeError, check_shape
from faceweave.models.facemesh import INPUT_SIZE, FaceMeshNet, load_facemesh
from faceweave.models.iris import IRIS_CENTRE, IrisLandmarks, iris_landmarks, load_iris
from faceweave.models.topology import LEFT_EYE, MOUTH_LEFT, MOUTH_RIGHT, NOSE_TIP, RIGHT_EYE
from faceweave.ops.crops import crop_matrices, roll_from_eyes, sample_crops

# Inner lip corners (the two corners of topology.LIPS_INNER); the mouth keypoints average them with the outer
# corners MOUTH_RIGHT/MOUTH_LEFT (see mesh_keypoints).
MOUTH_RIGHT_INNER = 78
MOUTH_LEFT_INNER = 308
# The mesh point just above NOSE_TIP (1), the most forward point of the nose in the mesh's own depth on frontal faces;
# the nose keypoint is the midpoint of the two (see mesh_keypoints).
NOSE_TIP_UPPER = 4

# MediaPipe's ROI scale for the detection → landmark crop (face_detection_front_detection_to_roi.pbtxt).
DETECTION_ROI_SCALE = 1.5
# Mesh → next ROI: MediaPipe's face_landmark_landmarks_to_roi.pbtxt scales the landmark bounding box by 1.5.
MESH_ROI_SCALE = 1.5


def mesh_keypoints(points: torch.Tensor, iris_centres: torch.Tensor | None = None) -> torch.Tensor:
    """5 points in :class:`~faceweave.analysis.face.FaceKeypoint` order from ``(..., 468, ≥2)`` mesh points.

    Args:
        points: ``(..., 468, ≥2)`` FaceMesh points, any float dtype/device.
        iris_centres: optional ``(..., 2, ≥2)`` pupils (eye A, eye B) in the same pixels, from
            :func:`faceweave.models.iris.iris_landmarks` (``iris[..., IRIS_CENTRE, :]``).

    Returns:
        ``(..., 5, 2)``: eye A (subject's right, image-left when upright) = its pupil when ``iris_centres`` is given,
        else the mean of the ``RIGHT_EYE`` contour; eye B alike (``LEFT_EYE``); nose = ``(NOSE_TIP + 4) / 2``,
        i.e. ``(1 + 4) / 2``; mouth corners = midpoints of the outer and inner lip corners, ``(61 + 78) / 2`` and
        ``(291 + 308) / 2``.

    Why these points: the 5-point convention of WIDER FACE / RetinaFace / SCRFD (and so of the ArcFace template)
    puts the eyes on the pupils — a contour centre is not, once the subject looks sideways — and the mouth corners
    at the commissure, where the lips meet: between FaceMesh's outer lip-contour corner (61/291) and inner
    one (78/308). On the 120 carphone frames, not used for anything else, the RetinaFace mouth width / ours was
    0.94 with 61/291, 1.11 with 78/308 and 1.02 with the midpoints (sd 0.06). The nose tip of that convention is
    a rounded region spanning mesh points 1 (lower) and 4 (upper, the more forward one); on the same frames the
    (refined) RetinaFace nose lay 4.7 % of the inter-ocular distance above point 1 and 5.1 % below point 4, and its
    mean distance was 5.3 % to point 1, 5.6 % to point 4 and 2.7 % to their midpoint (points 5 / 19 / 94:
    17 / 11 / 13 %), see docs/models.md.
    """
    xy = points[..., :2]
    if iris_centres is not None:
        eye_a, eye_b = iris_centres[..., 0, :2].to(xy.dtype), iris_centres[..., 1, :2].to(xy.dtype)
    else:
        # cached index tensors: a list index is made into a tensor on every call
        eye_a = xy[..., device_constant(tuple(RIGHT_EYE), xy.device, torch.long), :].mean(dim=-2)
        eye_b = xy[..., device_constant(tuple(LEFT_EYE), xy.device, torch.long), :].mean(dim=-2)
    mouth_a = (xy[..., MOUTH_RIGHT, :] + xy[..., MOUTH_RIGHT_INNER, :]) / 2
    mouth_b = (xy[..., MOUTH_LEFT, :] + xy[..., MOUTH_LEFT_INNER, :]) / 2
    nose = (xy[..., NOSE_TIP, :] + xy[..., NOSE_TIP_UPPER, :]) / 2
    return torch.stack([eye_a, eye_b, nose, mouth_a, mouth_b], dim=-2)


class FaceMesh(nn.Module):
    """FaceMesh on a device/dtype; :meth:`landmarks` adds 468 points to detected faces.

    Args:
        device: where the net runs. dtype: float32 (any device) or float16 (CUDA only).
        refine: run the second pass (re-crop from the first pass's mesh). On the bundled faces it moved the
            mesh keypoints ~1–2 % of the inter-ocular distance closer to the upright-crop answer and costs one
            more forward; default on.
        iris: also run MediaPipe Iris on both eyes (one more batched forward of 2 × 64² crops per face) and use
            the pupils as the eye keypoints (what RetinaFace/SCRFD and the ArcFace template call the eye). Off by
            default: the built-in swapper and tracking need the mesh only; turn it on where the 5 points align a
            crop for a trained model or are compared with a 5-point detector.
    """

    def __init__(self, device: torch.device = torch.device("cpu"), dtype: torch.dtype = torch.float32, *,
                 refine: bool = True, iris: bool = False) -> None:
        super().__init__()
        self.net: FaceMeshNet = load_facemesh(device, dtype)
        self.iris_net: IrisLandmarks | None = load_iris(device, dtype) if iris else None
        self.device, self.dtype, self.refine = device, dtype, refine

    def _run(self, frames: torch.Tensor, frame_index: torch.Tensor, centres: torch.Tensor, sizes: torch.Tensor,
             rolls: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Points ``(N, 468, 3)`` in frame pixel-centre coordinates (z scaled like x) and logits ``(N,)``."""
        matrices = crop_matrices(centres, sizes, rolls, INPUT_SIZE)
        crops = sample_crops(frames, frame_index, matrices, INPUT_SIZE)
        raw, logits = self.net(crops)
        # one device→host copy (one sync on a GPU) for the points and the logits
        host = torch.cat([raw.flatten(1), logits.reshape(-1, 1).to(raw.dtype)], 1).float().cpu()
        raw, logits = host[:, :-1].view(raw.shape), host[:, -1]
        linear, offset = matrices[:, :, :2], matrices[:, :, 2]
        xy = torch.einsum("nij,npj->npi", linear, raw[..., :2]) + offset[:, None, :] - 0.5
        z = raw[..., 2:] * (sizes / INPUT_SIZE)[:, None, None]
        return torch.cat([xy, z], dim=-1), logits

    @torch.inference_mode()
    def landmarks(self, frames: torch.Tensor, faces: list[list[Face]]) -> list[list[Face]]:
        """Add landmarks to every face of every frame.

        Args:
            frames: ``(B, 3, H, W)`` float RGB in ``[0, 1]``.
            faces: per frame, faces with ``box`` and ``keypoints`` in that frame's pixels (from the detector).

        Returns:
            The same structure with new :class:`Face` objects: ``landmarks (468, 3)`` float32 ``(x, y, z)`` frame
            pixels (pixel centres at integers; z relative to the face, same scale as x, negative = towards the
            camera), ``landmark_score`` = sigmoid of the face-presence output, ``keypoints`` refined from the
            mesh (eye contour centres — or, with ``iris``, the pupils —, nose tip, mouth corners) and ``roll``
            from the mesh's eye contour centres (steadier than the pupils, which follow the gaze). With ``iris``,
            ``extra["iris"]`` holds ``(2, 5, 3)`` float32 iris points (eye A then B; centre, then 4 edge points)
            in frame pixels.
        """
        check_shape(frames, ["B", "3", "H", "W"], "frames")
        if len(faces) != frames.shape[0]:
            raise ShapeError(f"faces has {len(faces)} lists for {frames.shape[0]} frames",
                             hint="pass one list of faces per frame")
        flat = [(i, f) for i, per_frame in enumerate(faces) for f in per_frame]
        if not flat:
            return [[] for _ in faces]
        frames = frames.to(device=self.device, dtype=self.dtype)
        frame_index = torch.tensor([i for i, _ in flat], dtype=torch.int64)
        boxes = torch.stack([f.box.float().cpu() for _, f in flat])
        kps = torch.stack([f.keypoints.float().cpu() for _, f in flat])
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        sizes = (boxes[:, 2:] - boxes[:, :2]).amax(dim=1) * DETECTION_ROI_SCALE
        rolls = roll_from_eyes(kps[:, 0], kps[:, 1])
        points, logits = self._run(frames, frame_index, centres, sizes, rolls)
        if self.refine:
            centres, sizes, rolls = self._mesh_roi(points)
            points, logits = self._run(frames, frame_index, centres, sizes, rolls)
        contour_keypoints = mesh_keypoints(points)
        new_rolls = roll_from_eyes(contour_keypoints[:, 0], contour_keypoints[:, 1])
        iris: torch.Tensor | None = None
        keypoints = contour_keypoints
        if self.iris_net is not None:
            _, iris = iris_landmarks(self.iris_net, frames, frame_index, points)
            keypoints = mesh_keypoints(points, iris[:, :, IRIS_CENTRE])
        # host tensors: one list each, not two ops per face to read a value
        scores, roll_values = torch.sigmoid(logits).tolist(), new_rolls.tolist()
        out: list[list[Face]] = [[] for _ in faces]
        for n, (i, face) in enumerate(flat):
            changes: dict[str, object] = {}
            if iris is not None:
                changes["extra"] = {**face.extra, "iris": iris[n].clone()}
            out[i].append(face.with_(landmarks=points[n].clone(), landmark_score=scores[n],
                                     keypoints=keypoints[n].clone(), roll=roll_values[n], **changes))
        return out

    @staticmethod
    def _mesh_roi(points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """MediaPipe's landmarks→ROI: box of the mesh in the face's own (rolled) frame, scaled by 1.5."""
        rolls = roll_from_eyes(*mesh_keypoints(points)[:, :2].unbind(dim=1))
        cos, sin = torch.cos(rolls)[:, None], torch.sin(rolls)[:, None]
        xy = points[..., :2]
        # Coordinates along the eye line (u) and across it (v).
        u = xy[..., 0] * cos + xy[..., 1] * sin
        v = -xy[..., 0] * sin + xy[..., 1] * cos
        u_mid = (u.amax(1) + u.amin(1)) / 2
        v_mid = (v.amax(1) + v.amin(1)) / 2
        centres = torch.stack([u_mid * cos[:, 0] - v_mid * sin[:, 0], u_mid * sin[:, 0] + v_mid * cos[:, 0]], dim=1)
        sizes = torch.maximum(u.amax(1) - u.amin(1), v.amax(1) - v.amin(1)) * MESH_ROI_SCALE
        return centres, sizes, rolls


def face_landmarks(image: object, faces: list[Face], *, mesh: FaceMesh | None = None) -> list[Face]:
    """Landmarks for the faces of one image.

    Args:
        image: numpy ``(H, W, 3)`` uint8 RGB, or tensor ``(3, H, W)`` uint8 / float ``[0, 1]`` RGB.
        faces: faces of that image (from :func:`~faceweave.analysis.detect.detect_faces`).
        mesh: a :class:`FaceMesh` to reuse (one is built on the CPU if omitted).

    Returns:
        The faces with ``landmarks``, ``landmark_score``, refined ``keypoints`` and ``roll``, same order.
    """
    mesh = mesh or FaceMesh()
    frames = image_to_frames(image)  # type: ignore[arg-type]
    return mesh.landmarks(frames, [list(faces)])[0]


__all__ = ["FaceMesh", "face_landmarks", "mesh_keypoints"]
