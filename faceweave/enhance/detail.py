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
from faceweave.device import to_device_async
from faceweave.errors import InvalidOption, check_shape
from faceweave.ops.filters import gaussian_blur


def face_region_polygon(face: Face, vertices: int = 32) -> torch.Tensor:
    """An ellipse polygon ``(vertices, 2)`` (x, y pixels) covering the face: from the FaceMesh points when present
    (their bounding ellipse), else from the detector box."""
    cx, cy, rx, ry = _ellipse(face)
    t = torch.arange(vertices, dtype=torch.float32) * (2 * math.pi / vertices)
    return torch.stack([cx + rx * torch.cos(t), cy + ry * torch.sin(t)], -1)


def inter_ocular(face: Face) -> float:
    """Distance between the two eye keypoints, pixels."""
    return float((face.keypoints[1] - face.keypoints[0]).float().norm())


def _ellipse(face: Face) -> tuple[float, float, float, float]:
    """Centre and radii ``(cx, cy, rx, ry)`` (pixels) of the face ellipse of :func:`face_region_polygon`."""
    if face.landmarks is not None:
        pts = face.landmarks[:, :2].float()
        x0, y0 = pts.min(0).values.tolist()
        x1, y1 = pts.max(0).values.tolist()
    else:
        x0, y0, x1, y1 = face.box.float().tolist()
    return (x0 + x1) / 2, (y0 + y1) / 2, max((x1 - x0) / 2, 1.0), max((y1 - y0) / 2, 1.0)


def feathered_ellipse(ellipses: torch.Tensor, origins: torch.Tensor, size: tuple[int, int], sigma: float
                      ) -> torch.Tensor:
    """Soft ellipse masks, ``(N, 1, h, w)`` in ``[0, 1]``: what a gaussian feather (sigma ``sigma``) of each filled
    ellipse gives, computed in closed form from the (first-order) signed distance to the ellipse; exactly 0
    farther than ``3·sigma`` outside, like a truncated gaussian kernel.

    Args:
        ellipses: ``(N, 4)`` float ``cx, cy, rx, ry`` in frame pixels. origins: ``(N, 2)`` frame pixel ``(x, y)``
            of each window's top-left pixel. size: window ``(h, w)``. sigma: feather in pixels (> 0).
    """
    h, w = size
    dev, dt = ellipses.device, ellipses.dtype
    xs = torch.arange(w, device=dev, dtype=dt).view(1, 1, w) + origins[:, 0, None, None]
    ys = torch.arange(h, device=dev, dtype=dt).view(1, h, 1) + origins[:, 1, None, None]
    cx, cy, rx, ry = (ellipses[:, k, None, None] for k in range(4))
    u, v = (xs - cx) / rx, (ys - cy) / ry
    f = torch.sqrt(u * u + v * v)
    grad = torch.sqrt((u / rx) ** 2 + (v / ry) ** 2).clamp_min(1e-6) / f.clamp_min(1e-6)  # |∇f|
    dist = (f - 1) / grad  # > 0 outside, pixels
    mask = 0.5 * torch.special.erfc(dist / (sigma * math.sqrt(2.0)))
    return torch.where(dist < 3 * sigma, mask, torch.zeros_like(mask)).unsqueeze(1)


def _round_up(n: int, step: int) -> int:
    return -(-n // step) * step


def sharpen_faces(
    frames: torch.Tensor, faces: list[list[Face]], *, strength: float = 0.8, clip: float = 0.08,
    before: torch.Tensor | None = None, inplace: bool = False,
) -> torch.Tensor:
    """Unsharp-mask the face regions of a batch.

    ``out = x + strength · m · clamp(x − blur_σ(x), −clip, clip)`` with ``m`` the feathered face ellipse (feather
    10 % of the median inter-ocular distance, see :func:`feathered_ellipse`) and ``σ`` = 4 % of it (≥ 0.7 px).

    Every face is worked on in a window around it (cost ∝ face area, not frame area); all windows of a call share
    one size, rounded up to a multiple of 32, so the whole batch is one blur over ``(N, 3, h, w)`` and the shapes
    repeat from frame to frame (the CPU convolution backend compiles a kernel per new shape). Faces are written
    back in order, each where its own mask is non-zero: where two masks overlap, the later face's result wins.

    Args:
        frames: ``(B, 3, H, W)`` float ``[0, 1]`` RGB. faces: per frame. strength: 0 = no change.
        clip: cap of the high-pass (value units) — limits halos.
        before: ``frames`` as they were before the swap (same shape): only pixels the swap changed (in any
            channel) are sharpened, so what the swap kept (occluders, the frame around the face) stays bit for bit.
            Tested inside each face's window only (a full-frame test cost ~6 % of a 512² swap on the CPU).
        inplace: write into ``frames`` (which the caller owns, e.g. a swap's fresh output) and return it, instead of
            a copy: a batch of 480p frames is 30 MB of fresh memory, which costs more to fault in than to fill.
    Returns:
        ``(B, 3, H, W)`` in ``[0, 1]``, dtype/device of ``frames``; pixels outside every mask unchanged.
    """
    check_shape(frames, ["B", "3", "H", "W"], "frames")
    if len(faces) != frames.shape[0]:
        raise InvalidOption(f"faces has {len(faces)} entries for {frames.shape[0]} frames")
    flat = [(b, f) for b, fs in enumerate(faces) for f in fs]
    if not flat or strength <= 0:
        return frames
    h, w = frames.shape[-2:]
    iod = sorted(inter_ocular(f) for _, f in flat)[len(flat) // 2]
    sigma, feather = max(0.7, 0.04 * iod), max(1.0, 0.1 * iod)
    margin = math.ceil(3 * max(sigma, feather)) + 2
    ellipses = [_ellipse(f) for _, f in flat]
    # one window size for the batch (a multiple of 32, at most the frame), each window centred on its face
    win_h = min(h, _round_up(max(math.ceil(2 * ry) + 2 * margin + 1 for _, _, _, ry in ellipses), 32))
    win_w = min(w, _round_up(max(math.ceil(2 * rx) + 2 * margin + 1 for _, _, rx, _ in ellipses), 32))
    origins = [(min(max(0, round(cx) - win_w // 2), w - win_w), min(max(0, round(cy) - win_h // 2), h - win_h))
               for cx, cy, _, _ in ellipses]
    region = torch.stack([frames[b, :, y0 : y0 + win_h, x0 : x0 + win_w]
                          for (b, _), (x0, y0) in zip(flat, origins, strict=True)]).float()
    # one asynchronous copy of the per-face numbers (tensors made on the device from lists would each wait for it)
    geometry = torch.tensor([[*e, *o] for e, o in zip(ellipses, origins, strict=True)], dtype=torch.float32)
    geometry = to_device_async(geometry, frames.device)
    mask = feathered_ellipse(geometry[:, :4], geometry[:, 4:], (win_h, win_w), feather)
    # in place on the one high-pass buffer (the same values as out-of-place: fewer fresh window-sized buffers)
    detail = (region - gaussian_blur(region, sigma)).clamp_(-clip, clip)
    sharpened = detail.mul_(strength * mask).add_(region).clamp_(0.0, 1.0).to(frames.dtype)
    # pixels with a zero mask stay bit-identical (the float round trip could otherwise touch them); what the swap
    # changed is read before any window is written (in place, a face's window may overlap an earlier one's)
    writes = [mask[n] > 0 for n in range(len(flat))]
    if before is not None:
        writes = [write & (frames[b, :, y0 : y0 + win_h, x0 : x0 + win_w]
                           != before[b, :, y0 : y0 + win_h, x0 : x0 + win_w]).any(0, keepdim=True)
                  for write, (b, _), (x0, y0) in zip(writes, flat, origins, strict=True)]
    out = frames if inplace else frames.clone()
    for n, ((b, _), (x0, y0)) in enumerate(zip(flat, origins, strict=True)):
        window = out[b, :, y0 : y0 + win_h, x0 : x0 + win_w]
        window.copy_(torch.where(writes[n], sharpened[n], window))
    return out


class DetailEnhancer:
    """:func:`sharpen_faces` as an enhancer object (the engine's ``enhancer='detail'``)."""

    def __init__(self, strength: float = 0.8, clip: float = 0.08) -> None:
        self.strength, self.clip = strength, clip

    def enhance(self, frames: torch.Tensor, faces: list[list[Face]], *, before: torch.Tensor | None = None,
                inplace: bool = False) -> torch.Tensor:
        """See :func:`sharpen_faces`."""
        return sharpen_faces(frames, faces, strength=self.strength, clip=self.clip, before=before, inplace=inplace)
