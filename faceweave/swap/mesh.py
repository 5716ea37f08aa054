"""The built-in swapper: landmark-driven texture transfer, no trained weights (DESIGN.md §3).

For each target face: build the output geometry (the target's FaceMesh, optionally moved part of the way toward the
source's face shape), warp the source's face texture onto it with one batched piecewise-affine ``grid_sample``, match
colour and lighting to the target, keep the target's mouth interior/eyes if asked, and blend into the target through a
feathered, eroded face-hull mask (Laplacian pyramid, Poisson or feather). Everything is batched over faces and follows
the device/dtype of the frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.profiler import record_function

from faceweave.analysis.face import Face
from faceweave.errors import InvalidOption
from faceweave.models import topology
from faceweave.ops.blend import feather_blend, laplacian_pyramid_blend, paste_back, poisson_blend
from faceweave.ops.colour import transfer_colour_lab, transfer_shading
from faceweave.ops.filters import gaussian_blur
from faceweave.ops.geometry import estimate_similarity, transform_points
from faceweave.ops.masks import dilate_mask, erode_mask, feather_mask, polygon_mask
from faceweave.ops.warp import piecewise_affine_warp, warp_affine
from faceweave.settings import SwapSettings

#: Side of the aligned source texture crop. 512 keeps the detail of typical portraits (inswapper works at 128).
SOURCE_TEXTURE_SIZE = 512
#: Largest working crop for a target face; bigger faces are processed downscaled, then pasted back.
MAX_CROP = 512
MIN_CROP = 96
#: Margin around the face mesh's bounding box, as a fraction of its size.
CROP_MARGIN = 0.3
#: Lighting transfer keeps the target's shading at scales above this fraction of the face size; finer shading is
#: facial structure (identity), which must come from the source.
SHADING_SIGMA = 0.4
#: How much of the target's finest grain to put back on a magnified source texture (more hides blur, but also
#: brings back a little of the target's identity).
GRAIN_WEIGHT = 0.5

# Points whose position carries expression more than identity: shape transfer moves them less.
_EXPRESSIVE = sorted(set(topology.LIPS_INNER) | set(topology.LIPS_OUTER) | set(topology.LEFT_EYE)
                     | set(topology.RIGHT_EYE))
# Stable points for aligning the source mesh to the target's: eye corners, nose bridge/tip, face-oval top.
_ALIGN_POINTS = [33, 133, 362, 263, 168, 6, 197, 195, 5, 4, 1, 10, 151, 9]


@dataclass(frozen=True)
class SourceTexture:
    """A source face prepared once per job.

    Attributes:
        image: ``(1, 3, S, S)`` float ``[0, 1]`` RGB, the face cropped (axis-aligned) with margin, ``S = 512``.
        points: ``(468, 2)`` the FaceMesh landmarks in ``image``'s pixel coordinates.
        face: the source face in its original image (keeps ``embedding`` when computed).
    """

    image: torch.Tensor
    points: torch.Tensor
    face: Face
    scale: float = 1.0  # texture pixels per source-image pixel (>1: the texture was magnified)


def _square_box(points: torch.Tensor, margin: float) -> torch.Tensor:
    """``(F, 4)`` square ``x0, y0, side, side`` around each ``(F, N, 2)`` point set, with ``margin`` × size added."""
    lo, hi = points.min(1).values, points.max(1).values
    centre = (lo + hi) / 2
    side = (hi - lo).max(1).values * (1 + 2 * margin)
    return torch.cat([centre - side[:, None] / 2, side[:, None], side[:, None]], 1)


def _crop_matrix(box: torch.Tensor, size: int) -> torch.Tensor:
    """``(F, 2, 3)`` frame→crop: the square ``box`` ``(F, 4)`` maps onto a ``size × size`` crop (pixel centres)."""
    scale = size / box[:, 2]
    m = torch.zeros(box.shape[0], 2, 3, dtype=box.dtype, device=box.device)
    m[:, 0, 0] = scale
    m[:, 1, 1] = scale
    # x_crop + 0.5 = (x + 0.5 - x0) * scale
    m[:, 0, 2] = (0.5 - box[:, 0]) * scale - 0.5
    m[:, 1, 2] = (0.5 - box[:, 1]) * scale - 0.5
    return m


def prepare_source_texture(image: torch.Tensor, face: Face, size: int = SOURCE_TEXTURE_SIZE) -> SourceTexture:
    """Crop the source face once so every later warp samples a small, fixed-size texture.

    Args:
        image: ``(1, 3, H, W)`` float ``[0, 1]`` RGB, the source image.
        face: a face of ``image`` with ``landmarks``.
    """
    if face.landmarks is None:
        raise InvalidOption("source face has no landmarks", hint="run face_landmarks before preparing the source")
    pts = face.landmarks[None, :, :2].to(image.device, torch.float32)
    m = _crop_matrix(_square_box(pts, CROP_MARGIN), size)
    crop = warp_affine(image.float(), m, (size, size), padding="border").to(image.dtype)
    return SourceTexture(image=crop, points=transform_points(m, pts)[0], face=face, scale=float(m[0, 0, 0]))


def output_geometry(target: torch.Tensor, source: torch.Tensor, strength: float) -> torch.Tensor:
    """The mesh the swapped face takes: the target's, moved ``strength`` of the way toward the source's shape.

    Args:
        target: ``(F, 468, 2)`` target landmarks (pixels).
        source: ``(F, 468, 2)`` source landmarks (any frame; similarity-aligned to the target here).
        strength: 0 keeps the target's geometry exactly; 1 takes the source's face shape (aligned).

    Returns:
        ``(F, 468, 2)``. Lips and eyes move at half strength so the target's expression stays.
    """
    if strength <= 0:
        return target
    idx = torch.as_tensor(_ALIGN_POINTS, device=target.device)
    m = estimate_similarity(source[:, idx].float(), target[:, idx].float())
    aligned = transform_points(m, source.float()).to(target.dtype)
    w = torch.full((target.shape[1], 1), strength, dtype=target.dtype, device=target.device)
    w[_EXPRESSIVE] = strength * 0.5
    return target + w * (aligned - target)


def _region_masks(pts: torch.Tensor, target_pts: torch.Tensor, size: int, settings: SwapSettings,
                  coverage: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Blend mask and colour-statistics mask, ``(F, 1, size, size)`` each, in crop coordinates."""
    dev, dt = pts.device, pts.dtype
    hw = (size, size)

    def poly(p: torch.Tensor, idx: Sequence[int]) -> torch.Tensor:
        return polygon_mask(p[:, torch.as_tensor(list(idx), device=dev)], hw)

    face = poly(pts, topology.FACE_OVAL) * coverage
    lo, hi = pts.min(1).values, pts.max(1).values
    face_size = (hi - lo).max(1).values  # (F,) pixels in the crop
    eyes = torch.clamp(poly(pts, topology.LEFT_EYE) + poly(pts, topology.RIGHT_EYE), 0, 1)
    brows = torch.clamp(poly(pts, topology.LEFT_EYEBROW) + poly(pts, topology.RIGHT_EYEBROW), 0, 1)
    mouth_outer = poly(pts, topology.LIPS_OUTER)
    # Colour statistics from skin only: eyes, brows and lips would bias the mean and std.
    stats = face * (1 - dilate_mask(torch.clamp(eyes + brows + mouth_outer, 0, 1), 2))
    stats = erode_mask(stats, 2)

    erosion = max(1, round(float(face_size.mean()) * settings.mask_erosion))
    mask = erode_mask(face, erosion)
    keep = torch.zeros_like(mask)
    if settings.keep_mouth:
        inner = poly(target_pts, topology.LIPS_INNER)
        keep = torch.maximum(keep, dilate_mask(inner, max(1, round(float(face_size.mean()) * 0.01))))
    if settings.keep_eyes:
        teyes = torch.clamp(poly(target_pts, topology.LEFT_EYE) + poly(target_pts, topology.RIGHT_EYE), 0, 1)
        keep = torch.maximum(keep, dilate_mask(teyes, max(1, round(float(face_size.mean()) * 0.02))))
    mask = mask * (1 - keep)
    sigma = max(0.5, float(face_size.mean()) * settings.mask_feather / 2)
    mask = feather_mask(mask, sigma) * feather_mask(erode_mask(face, max(1, erosion // 2)), sigma / 2)
    return mask.to(dt), stats.to(dt)


def _restore_grain(warped: torch.Tensor, target: torch.Tensor, src_pts: torch.Tensor, dst_pts: torch.Tensor,
                   skin: torch.Tensor, src_scale: torch.Tensor) -> torch.Tensor:
    """Add the target's finest skin grain where the source texture was magnified (a small source face on a large
    target face comes out smooth and waxy, and its blur makes the blend border stand out).

    Only frequencies above the magnification's own blur are taken (sigma ≈ 0.5 × magnification), so the target's
    features (eyes, wrinkles at face scale) do not leak back; ``(F, 3, S, S)`` in and out.
    """
    # the source face's size in its own image's pixels: the texture crop may already have magnified it
    src_size = (src_pts.max(1).values - src_pts.min(1).values).max(1).values / src_scale
    dst_size = (dst_pts.max(1).values - dst_pts.min(1).values).max(1).values
    magnification = float((dst_size / src_size.clamp(min=1)).max())
    if magnification < 1.25:
        return warped
    sigma = min(3.0, 0.5 * magnification)
    grain = target - gaussian_blur(target, sigma)
    weight = GRAIN_WEIGHT * min(1.0, (magnification - 1.0) / 2.0)
    return warped + weight * skin * grain


def _crop_size(boxes: torch.Tensor) -> int:
    """One working size for a batch: the largest face's native size, clamped, a multiple of 32."""
    side = float(boxes[:, 2].max())
    return int(min(MAX_CROP, max(MIN_CROP, 32 * round(side / 32))))


def swap_faces(
    frames: torch.Tensor,
    items: Sequence[tuple[int, Face, SourceTexture]],
    settings: SwapSettings,
) -> torch.Tensor:
    """Swap faces into frames.

    Args:
        frames: ``(B, 3, H, W)`` float ``[0, 1]`` RGB, any device/dtype (float32 on CPU).
        items: ``(frame index, target face with landmarks, prepared source)`` per face to swap.
        settings: swapper options (``shape_transfer``, ``keep_mouth``, ``keep_eyes``, ``colour_transfer``,
            ``blend``, ``mask_erosion``, ``mask_feather``).

    Returns:
        ``(B, 3, H, W)`` like ``frames``; pixels outside every face mask are bit-identical to the input.
    """
    if not items:
        return frames
    dev, dt = frames.device, frames.dtype
    tgt = torch.stack([f.landmarks[:, :2] for _, f, _ in items]).to(dev, torch.float32)  # type: ignore[index]
    src_pts = torch.stack([s.points for _, _, s in items]).to(dev, torch.float32)
    geo = output_geometry(tgt, src_pts, settings.shape_transfer)

    box = _square_box(geo, CROP_MARGIN)
    size = _crop_size(box)
    m = _crop_matrix(box, size)  # (F, 2, 3) frame → crop, float32
    geo_c = transform_points(m, geo)
    tgt_c = transform_points(m, tgt)
    idx = torch.as_tensor([i for i, _, _ in items], device=dev)
    with record_function("swap.warp"):
        target_crops = warp_affine(frames[idx], m.to(dt), (size, size), padding="border")
        tex = torch.cat([s.image for _, _, s in items]).to(dev, dt)
        tri = torch.as_tensor(np.array(topology.TRIANGLES), device=dev, dtype=torch.long)
        warped, coverage = piecewise_affine_warp(tex, src_pts.to(dt), geo_c.to(dt), tri, (size, size))

    with record_function("swap.mask"):
        mask, stats = _region_masks(geo_c.to(dt), tgt_c.to(dt), size, settings, coverage.to(dt))
    face_px = float((geo_c.max(1).values - geo_c.min(1).values).max())
    with record_function("swap.colour"):
        if settings.colour_transfer == "lab":
            warped = transfer_colour_lab(warped, target_crops, stats, stats)
            sigma = max(2.0, face_px * SHADING_SIGMA)
            # lighting lives at tens of pixels: estimate it at ≥ 4 px per blur sigma (16× less work at 512²)
            warped = transfer_shading(warped, target_crops, stats, sigma=sigma, downscale=max(1, int(sigma // 4)))
        src_scale = torch.tensor([s.scale for _, _, s in items], device=dev)
        warped = _restore_grain(warped, target_crops, src_pts, geo_c, stats, src_scale)
        warped = torch.where(coverage > 0, warped, target_crops).clamp(0, 1)

    with record_function("swap.blend"):
        if settings.blend == "laplacian":
            levels = max(2, min(5, int(size).bit_length() - 5))
            composite = laplacian_pyramid_blend(warped, target_crops, mask, levels=levels)
        elif settings.blend == "poisson":
            composite = poisson_blend(warped, target_crops, (mask > 0.5).to(dt))
        else:
            composite = feather_blend(warped, target_crops, mask)
        composite = composite.clamp(0, 1)

    out = frames.clone()
    # Paste face by face in rounds (at most one face per frame each round) so overlapping faces compose.
    for this_round in _paste_rounds([i for i, _, _ in items]):
        k_idx = torch.as_tensor(this_round, device=dev)
        f_idx = idx[k_idx]
        with record_function("swap.paste"):
            out[f_idx] = paste_back(out[f_idx], composite[k_idx], mask[k_idx], m[k_idx].to(dt))
    return out


def _paste_rounds(frame_of_item: Sequence[int]) -> list[list[int]]:
    """Group item indices into rounds with at most one item per frame, keeping order (2nd face of a frame → round 2)."""
    rounds: list[list[int]] = []
    count: dict[int, int] = {}
    for k, frame in enumerate(frame_of_item):
        r = count.get(frame, 0)
        count[frame] = r + 1
        if r == len(rounds):
            rounds.append([])
        rounds[r].append(k)
    return rounds

