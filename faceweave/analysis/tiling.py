"""Small-face views for crowded frames (group photos): overlapping square tiles at every scale a face can have.

The full-range BlazeFace net scores a face reliably from ~:data:`MIN_VIEW_FACE` pixels of its 192² input. A
whole-frame view of a 1280-px frame shrinks a 50 px face to 7.5 net pixels, so group photos need tiles. One level
of tiles covers faces from ``MIN_VIEW_FACE`` net pixels up to about a third of the tile (a larger face is cut by
the tile's border, or seen whole by the next coarser level or the whole view), so the levels halve the tile side
from the frame's long side down to the side where a ``min_face`` face reaches ``MIN_VIEW_FACE`` net pixels.
Neighbouring tiles overlap by half a tile, so any face smaller than half a tile lies wholly inside one of them;
detections touching a tile's inner border are partial faces and are dropped (:func:`cut_by_tile`).
"""

from __future__ import annotations

import math

import torch

#: Net pixels a face needs in a view of the full-range net (measured on the bundled faces: 18 px → score ~0.9,
#: 12 px → 0.76 or missed depending on position).
MIN_VIEW_FACE = 18.0
#: The finest level shows a ``min_face`` face this large: at exactly MIN_VIEW_FACE, 3 of 20 faces of 40 px on a
#: 5×4 grid of astronaut scored under 0.5 (depending on where they fell in the tile).
FINEST_VIEW_FACE = 22.0
#: Tiles are never smaller than this many frame pixels (a 192² view of fewer pixels magnifies the frame).
MIN_TILE = 192
#: Most tiles per frame: on very large frames the finest levels are left out (the smallest face found then grows,
#: e.g. 45 px on a 1920×1080 frame) rather than running hundreds of forwards per frame.
MAX_TILES = 64


def _starts(extent: int, side: float) -> list[float]:
    """Left/top edges of tiles of ``side`` covering ``extent`` with (at least) half-tile overlap."""
    if extent <= side:
        return [(extent - side) / 2]
    count = math.ceil((extent - side) / (side / 2) - 1e-6) + 1  # tolerance: exact fits stay exact
    return [i * (extent - side) / (count - 1) for i in range(count)]


def tile_sides(height: int, width: int, size: int, min_face: float) -> list[float]:
    """Tile sides (frame pixels), coarsest first, so that every face from ``min_face`` pixels up to what the
    whole-frame view sees is at least :data:`MIN_VIEW_FACE` net pixels in some level; empty when the whole view
    already suffices."""
    long_side = float(max(height, width))
    # the largest tile in which a min_face face spans FINEST_VIEW_FACE net pixels
    finest = max(float(MIN_TILE), size * min_face / FINEST_VIEW_FACE)
    sides: list[float] = []
    side = long_side
    # the whole view (side = long_side) sees faces ≥ long_side/size·MIN_VIEW_FACE; each level halves that
    while side * MIN_VIEW_FACE / size > min_face and side > finest:
        side = max(finest, side / 2)
        sides.append(side)
    return sides


def _levels(height: int, width: int, size: int, min_face: float) -> list[tuple[float, list[torch.Tensor]]]:
    """The levels :func:`tile_pyramid` scans (:data:`MAX_TILES` in all): each level's side and its tiles' maps."""
    levels: list[tuple[float, list[torch.Tensor]]] = []
    count = 0
    for side in tile_sides(height, width, size, min_face):
        scale = side / size
        level = [torch.tensor([[scale, 0.0, x0], [0.0, scale, y0]])
                 for y0 in _starts(height, side) for x0 in _starts(width, side)]
        if levels and count + len(level) > MAX_TILES:
            break
        levels.append((side, level))
        count += len(level)
    return levels


def tile_pyramid(height: int, width: int, size: int, min_face: float) -> torch.Tensor:
    """Affine maps view pixel → frame pixel (continuous coordinates) of every tile of every level.

    Returns:
        ``(T, 2, 3)`` float32; ``T = 0`` when no tiles are needed.
    """
    mats = [m for _, level in _levels(height, width, size, min_face) for m in level]
    return torch.stack(mats) if mats else torch.zeros(0, 2, 3)


def level_views(height: int, width: int, size: int, min_face: float, multiple: int
                ) -> list[tuple[torch.Tensor, tuple[int, int]]]:
    """The levels of :func:`tile_pyramid` as one view each: the whole frame at the level's scale, its top left at
    the view's, black to the right and below up to sides that are multiples of ``multiple`` (at least ``size``).

    A fully convolutional net slid over that view sees every face the level's tiles would show, at the same scale,
    without computing the tiles' overlaps (half a tile each way) again: at 512² one 288² view instead of 4 tiles of
    192² (0.56× the pixels), at 640×480 one 352×288 view instead of 6 (0.46×). Nothing is cut by a tile border.

    Returns:
        per level (coarsest first), the ``(1, 2, 3)`` view→frame map and the view's ``(height, width)``.
    """
    out = []
    for side, _ in _levels(height, width, size, min_face):
        scale = side / size
        view_h, view_w = (max(size, multiple * math.ceil(extent / scale / multiple)) for extent in (height, width))
        out.append((torch.tensor([[[scale, 0.0, 0.0], [0.0, scale, 0.0]]]), (view_h, view_w)))
    return out


def cut_by_tile(view_boxes: torch.Tensor, matrices: torch.Tensor, size: int, height: int | torch.Tensor,
                width: int | torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """Which detections touch an inner border of their tile (a border that is not the frame's): those are partial
    faces, which an overlapping tile sees whole.

    Args:
        view_boxes: ``(N, 4)`` ``x0, y0, x1, y1`` in view pixels (continuous). matrices: ``(N, 2, 3)`` each
            detection's view→frame map (axis-aligned tiles). size: the view side. height, width: the frame's
            size, or ``(N,)`` each detection's frame's (frames of several sizes).
        margin: view pixels from the border that count as touching.

    Returns:
        ``(N,)`` bool.
    """
    scale = matrices[:, 0, 0]
    x0f, y0f = matrices[:, 0, 2], matrices[:, 1, 2]
    x1f, y1f = x0f + scale * size, y0f + scale * size
    inner_left, inner_top = x0f > 0.5, y0f > 0.5
    inner_right, inner_bottom = x1f < width - 0.5, y1f < height - 0.5
    b = view_boxes
    return ((inner_left & (b[:, 0] <= margin)) | (inner_top & (b[:, 1] <= margin))
            | (inner_right & (b[:, 2] >= size - margin)) | (inner_bottom & (b[:, 3] >= size - margin)))


def contained(boxes: torch.Tensor, fraction: float = 0.5) -> torch.Tensor:
    """``(N,)`` bool: boxes ``(N, 4)`` (x0, y0, x1, y1) that lie mostly (> ``fraction`` of their area) inside a box
    at least twice their area: a detection of part of a face (an eye and a cheek seen in a fine tile), not a
    face of its own."""
    n = boxes.shape[0]
    if n < 2:
        return torch.zeros(n, dtype=torch.bool)
    area = (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)
    lo = torch.maximum(boxes[:, None, :2], boxes[None, :, :2])
    hi = torch.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
    inter = (hi - lo).clamp(min=0).prod(-1)
    bigger = area[None, :] >= 2 * area[:, None]
    return ((inter / area[:, None].clamp(min=1e-6) > fraction) & bigger).any(1)
