"""Host-side geometry of the built-in swap (faceweave/swapper/mesh.py): the output mesh, the working crops (their
boxes, sizes and matrices), the texture box inside a crop, and how much a batch magnifies its source.

Points are ``(x, y)`` pixel coordinates, pixel centres at integers; boxes are ``(F, 4)`` squares ``x0, y0, side,
side`` in frame pixels; the texture box is ``(y0, y1, x0, x1)`` crop pixels.
"""

from __future__ import annotations

import functools
import math

import torch

from faceweave.cuda_graphs import device_constant
from faceweave.models import topology
from faceweave.ops.geometry import estimate_similarity, transform_points

#: Largest working crop for a target face; bigger faces are processed downscaled, then pasted back.
MAX_CROP = 512
MIN_CROP = 96
#: Margin around the face mesh's bounding box, as a fraction of its size.
CROP_MARGIN = 0.3
#: Pixels added around the meshes' box for the texture work: the grain filter (sigma ≤ 3) and the lighting blur's
#: pooling read this far past the skin mask, which reaches the mesh outline.
TEXTURE_PAD = 12
#: How much of the target's finest grain to put back on a magnified source texture (more hides blur, but also
#: brings back a little of the target's identity).
GRAIN_WEIGHT = 0.5
#: Grain is restored only on faces magnified more than this, with a blur of at most this sigma (px).
GRAIN_MIN_MAGNIFICATION = 1.25
GRAIN_MAX_SIGMA = 3.0

# Points whose position carries expression more than identity: shape transfer moves them less.
_EXPRESSIVE = sorted(set(topology.LIPS_INNER) | set(topology.LIPS_OUTER) | set(topology.LEFT_EYE)
                     | set(topology.RIGHT_EYE))
# Points for aligning the source mesh to the target's: every point that is neither expressive (lips, eyes) nor on
# the outline (which shape transfer is there to change): 360 points. With a hand-picked 14 (eye corners, nose) the
# fit followed FaceMesh's per-frame noise on those few points and moved the whole transferred shape with it: a
# swapped video re-measured 1.05× the input's landmark jitter instead of 0.90× (carphone ×2, 120 frames, no
# smoothing; 0.98× vs 0.82× with the tracker's smoothing).
_ALIGN_POINTS = sorted(set(range(topology.NUM_LANDMARKS)) - set(_EXPRESSIVE) - set(topology.FACE_OVAL))


def crop_matrix(box: torch.Tensor, size: int) -> torch.Tensor:
    """``(F, 2, 3)`` frame→crop: the square ``box`` ``(F, 4)`` maps onto a ``size × size`` crop (pixel centres)."""
    scale = size / box[:, 2]
    # x_crop + 0.5 = (x + 0.5 - x0) * scale; one stack, not a zeros tensor filled item by item (a live frame's
    # geometry is dispatch-bound: issue 20)
    t = (0.5 - box[:, :2]) * scale[:, None] - 0.5
    zero = torch.zeros_like(scale)
    return torch.stack([scale, zero, t[:, 0], zero, scale, t[:, 1]], 1).view(-1, 2, 3)


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
    idx = device_constant(tuple(_ALIGN_POINTS), target.device, torch.long)
    m = estimate_similarity(source[:, idx].float(), target[:, idx].float())
    aligned = transform_points(m, source.float()).to(target.dtype)
    return target + _shape_weights(target.shape[1], strength, target.device, target.dtype) * (aligned - target)


@functools.lru_cache(maxsize=16)
def _shape_weights(points: int, strength: float, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``(points, 1)`` :func:`output_geometry`'s per-point strength (half on lips and eyes), made once per strength:
    a list index per call cost a live frame more host time than the weighting itself. Read only."""
    w = torch.full((points, 1), strength, dtype=dtype)
    w[_EXPRESSIVE] = strength * 0.5
    return w.to(device)


def grain_parameters(magnification: float) -> tuple[float, float]:
    """``(sigma, weight)`` of the mesh swap's grain restoration for a face magnified ``magnification``× (its
    target-face size over the source face's size in its own image's pixels, :func:`magnifications`); weight 0
    below 1.25×."""
    if magnification < GRAIN_MIN_MAGNIFICATION:
        return 1.0, 0.0
    return min(GRAIN_MAX_SIGMA, 0.5 * magnification), GRAIN_WEIGHT * min(1.0, (magnification - 1.0) / 2.0)


def magnifications(src_pts: torch.Tensor, dst_pts: torch.Tensor, src_scale: torch.Tensor) -> list[float]:
    """Each face's ratio of output face size to the source face's size in its own image (host tensors ``(F, N, 2)``
    and ``(F,)``). Per face, not per batch: a face's swap must not depend on which faces share its batch (a live
    session's frame batched with another session's, a :sync request with another client's)."""
    # the source face's size in its own image's pixels: the texture crop may already have magnified it
    src_size = (src_pts.max(1).values - src_pts.min(1).values).max(1).values / src_scale
    dst_size = (dst_pts.max(1).values - dst_pts.min(1).values).max(1).values
    return [float(v) for v in dst_size / src_size.clamp(min=1)]


def texture_box(points: torch.Tensor, size: int) -> tuple[int, int, int, int]:
    """``(y0, y1, x0, x1)``: the bounding box of every face's ``(F, N, 2)`` crop-pixel ``points`` (host), grown by
    :data:`TEXTURE_PAD` and clipped to the ``size × size`` crop."""
    lo = points.amin(dim=(0, 1)).floor() - TEXTURE_PAD
    hi = points.amax(dim=(0, 1)).ceil() + TEXTURE_PAD + 1
    x0, y0 = max(0, int(lo[0])), max(0, int(lo[1]))
    x1, y1 = min(size, max(x0 + 1, int(hi[0]))), min(size, max(y0 + 1, int(hi[1])))
    return y0, y1, x0, x1


def face_size_in_crop(size: int) -> float:
    """A face's size (the larger side of its mesh's bounding box) in a ``size`` crop: every crop is cut around its
    face's mesh with :data:`CROP_MARGIN`, so this depends on the crop size alone."""
    return size / (1 + 2 * CROP_MARGIN)


@functools.lru_cache(maxsize=64)
def fixed_texture_box(size: int) -> tuple[int, int, int, int]:
    """The texture box that holds any face's mesh in a ``size`` crop (a square of :func:`face_size_in_crop` around
    the crop's centre, grown like :func:`texture_box`): its shape depends on ``size`` alone, as a CUDA graph
    needs. Wider than a face's own box along x (faces are taller than wide)."""
    centre, half = size / 2 - 0.5, face_size_in_crop(size) / 2
    lo = max(0, math.floor(centre - half) - TEXTURE_PAD)
    hi = min(size, max(lo + 1, math.ceil(centre + half) + TEXTURE_PAD + 1))
    return lo, hi, lo, hi


def block_capacity(size: int, faces: int) -> int:
    """Rasteriser blocks (8 × 8 px) a CUDA graph of ``faces`` faces at crop ``size`` tests: the triangles' bounding
    boxes overlap and cut blocks at their edges, so a face needs more blocks than its area holds. Real faces use
    about half of this (tests/swapper/test_crop_graphs.py); a batch over it runs eagerly."""
    y0, y1, x0, x1 = fixed_texture_box(size)
    area_blocks = ((y1 - y0) // 8 + 1) * ((x1 - x0) // 8 + 1)
    return faces * (3 * area_blocks + 4 * len(topology.TRIANGLES))


def crop_size(boxes: torch.Tensor) -> int:
    """One working size for a batch: the largest face's native size, clamped, a multiple of 32."""
    side = float(boxes[:, 2].max())
    return int(min(MAX_CROP, max(MIN_CROP, 32 * round(side / 32))))


#: Every crop size :func:`crop_size` can pick (a CUDA-graph warm-up captures each).
CROP_SIZES = tuple(range(MIN_CROP, MAX_CROP + 1, 32))
