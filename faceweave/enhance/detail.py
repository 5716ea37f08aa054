"""The built-in ``detail`` enhancer: face-masked unsharp masking, no trained weights.

A swapped face (especially a 128-px one, or a texture warped up from a smaller source) is softer than the frame
around it. Sharpening only inside a feathered face mask restores edge contrast where it is missing without
touching the background. The blur radius follows the face size (inter-ocular distance), so a face gets the same
relative treatment at any resolution; the strength is capped where the high-pass is large (``clip``) to avoid
halos on already-sharp edges.
"""

from __future__ import annotations

import math

import torch

from faceweave.analysis.face import Face
from faceweave.errors import InvalidOption, check_shape
from faceweave.ops.filters import gaussian_blur
from faceweave.ops.masks import feather_mask, polygon_mask


def face_region_polygon(face: Face, vertices: int = 32) -> torch.Tensor:
    """An ellipse polygon ``(vertices, 2)`` (x, y pixels) covering the face: from the FaceMesh points when present
    (their bounding ellipse), else from the detector box."""
    if face.landmarks is not None:
        pts = face.landmarks[:, :2].float()
        x0, y0 = pts.min(0).values.tolist()
        x1, y1 = pts.max(0).values.tolist()
    else:
        x0, y0, x1, y1 = face.box.float().tolist()
    cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
    t = torch.arange(vertices, dtype=torch.float32) * (2 * math.pi / vertices)
    return torch.stack([cx + rx * torch.cos(t), cy + ry * torch.sin(t)], -1)


def inter_ocular(face: Face) -> float:
    """Distance between the two eye keypoints, pixels."""
    return float((face.keypoints[1] - face.keypoints[0]).float().norm())


def sharpen_faces(
    frames: torch.Tensor, faces: list[list[Face]], *, strength: float = 0.8, clip: float = 0.08
) -> torch.Tensor:
    """Unsharp-mask the face regions of a batch.

    ``out = x + strength · m · clamp(x − blur_σ(x), −clip, clip)`` with ``m`` the feathered union of the face
    ellipses of each frame and ``σ`` = 4 % of the median inter-ocular distance (≥ 0.7 px).

    Args:
        frames: ``(B, 3, H, W)`` float ``[0, 1]`` RGB. faces: per frame. strength: 0 = no change.
        clip: cap of the high-pass (value units) — limits halos.
    Returns:
        ``(B, 3, H, W)`` in ``[0, 1]``, dtype/device of ``frames``; pixels outside every mask unchanged.
    """
    check_shape(frames, ["B", "3", "H", "W"], "frames")
    if len(faces) != frames.shape[0]:
        raise InvalidOption(f"faces has {len(faces)} entries for {frames.shape[0]} frames")
    all_faces = [f for fs in faces for f in fs]
    if not all_faces or strength <= 0:
        return frames
    h, w = frames.shape[-2:]
    iod = sorted(inter_ocular(f) for f in all_faces)[len(all_faces) // 2]
    sigma, feather = max(0.7, 0.04 * iod), max(1.0, 0.1 * iod)
    margin = math.ceil(3 * max(sigma, feather)) + 2
    out = frames.clone()
    # Work on each face's neighbourhood only (cost ∝ face area, not frame area); faces are applied one after
    # another, so overlapping faces compose.
    for b, fs in enumerate(faces):
        for f in fs:
            poly = face_region_polygon(f)
            x0 = max(0, int(poly[:, 0].min()) - margin)
            y0 = max(0, int(poly[:, 1].min()) - margin)
            x1 = min(w, int(poly[:, 0].max()) + margin + 1)
            y1 = min(h, int(poly[:, 1].max()) + margin + 1)
            if x1 <= x0 or y1 <= y0:
                continue
            region = out[b : b + 1, :, y0:y1, x0:x1].float()
            local = (poly - torch.tensor([x0, y0], dtype=poly.dtype)).to(frames.device)[None]
            mask = feather_mask(polygon_mask(local, (y1 - y0, x1 - x0)), feather)
            detail = (region - gaussian_blur(region, sigma)).clamp(-clip, clip)
            sharpened = (region + strength * mask * detail).clamp(0.0, 1.0)
            # Keep pixels with a zero mask bit-identical (the float round trip could otherwise touch them).
            sharpened = torch.where(mask > 0, sharpened, region)
            out[b : b + 1, :, y0:y1, x0:x1] = sharpened.to(frames.dtype)
    return out


class DetailEnhancer:
    """:func:`sharpen_faces` as an enhancer object (the engine's ``enhancer='detail'``)."""

    def __init__(self, strength: float = 0.8, clip: float = 0.08) -> None:
        self.strength, self.clip = strength, clip

    def enhance(self, frames: torch.Tensor, faces: list[list[Face]]) -> torch.Tensor:
        """See :func:`sharpen_faces`."""
        return sharpen_faces(frames, faces, strength=self.strength, clip=self.clip)
