"""Masks on batches: anti-aliased polygons, convex hulls, triangle unions, erosion/dilation, feathering.

Conventions: masks are ``(B, 1, H, W)`` floating tensors in ``[0, 1]``; points are ``(x, y)`` pixel
coordinates with pixel centres at integers, so pixel ``(x, y)`` covers ``[x−½, x+½] × [y−½, y+½]``.
Ops follow the input's device and dtype (geometry is computed in float32 for half inputs).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

from faceweave.errors import InvalidOption, ShapeError, check_shape
from faceweave.ops.filters import gaussian_blur, max_filter, min_filter, sliding_max
from faceweave.ops.warp import rasterise_triangles

__all__ = [
    "polygon_mask",
    "convex_hull_indices",
    "convex_hull_mask",
    "erode_mask",
    "dilate_mask",
    "feather_mask",
    "triangles_mask",
    "pad_polygons",
    "mask_window",
]


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def polygon_mask(poly: torch.Tensor, size: Sequence[int], *, subrows: int = 4, dilate: float = 0.0,
                 window: tuple[int, int, int, int] | None = None) -> torch.Tensor:
    """Anti-aliased fill of a polygon (even–odd rule), rasterised by scanlines on the device.

    Each pixel row is sampled by ``subrows`` horizontal scanlines; along a scanline the covered length of each
    pixel is computed exactly from the sorted edge crossings ``c_k``: the inside length left of ``u`` is
    ``F(u) = Σ_{c_k<u} (−1)^k (u − c_k)``, and the pixel's coverage is ``F(x+½) − F(x−½)``, evaluated with a
    difference array and one prefix sum per scanline (work ``O(B·H·subrows·(W + P log P))``, not ``O(H·W·P)``). The
    mask is the mean over the scanlines: exact horizontally, ``subrows`` levels vertically. Thresholding at 0.5
    gives (up to boundary ties) what ``cv2.fillPoly`` fills.

    ``dilate=r`` rasterises the polygon grown by a ``2r × 2r`` square (what :func:`dilate_mask` does to a binary
    mask, but from the geometry): along each scanline every inside interval is widened by ``r`` at both ends
    (exact, any real ``r``), then each sub-row takes the maximum over the sub-rows within ``r`` (to ``1/subrows``
    px). Unlike a grey-level dilation of the anti-aliased mask, this keeps its area right for features thinner
    than a pixel (a closed mouth on a coarse grid), where a max filter cannot add coverage.

    Args:
        poly: ``(B, P, 2)`` ordered vertices (x, y), either orientation, P >= 3; closed implicitly. To pad
            polygons of different lengths in a batch, repeat a vertex (zero-length edges are ignored).
        size: output ``(H, W)``.
        subrows: vertical supersampling factor (>= 1).
        dilate: growth in pixels (>= 0).
        window: ``(y0, y1, x0, x1)`` rows and columns of the output that hold every polygon grown by ``dilate``
            and a pixel: the scanlines are only run there (the rest is 0), which gives the same mask (up to float
            rounding) for the window's share of the work. What lies outside it is cut off.

    Returns:
        ``(B, 1, H, W)`` coverage in ``[0, 1]``, dtype/device of ``poly``.
    """
    check_shape(poly, ["B", "P", "2"], "poly")
    if poly.shape[1] < 3:
        raise ShapeError(f"a polygon needs at least 3 vertices, got {poly.shape[1]}")
    if subrows < 1:
        raise InvalidOption(f"subrows must be >= 1, got {subrows}", hint="use 1..8")
    if not dilate >= 0:
        raise InvalidOption(f"dilate must be >= 0, got {dilate}", hint="a growth in pixels")
    h, w = int(size[0]), int(size[1])
    if window is not None:
        wy0, wy1, wx0, wx1 = max(0, window[0]), min(h, window[1]), max(0, window[2]), min(w, window[3])
        out = poly.new_zeros(poly.shape[0], 1, h, w)
        if wy1 > wy0 and wx1 > wx0:
            # the window's own mask, its pixel (0, 0) at (x0, y0) (no tensor from host data: CUDA graphs)
            p = poly.to(_work_dtype(poly.dtype))
            shifted = torch.stack([p[..., 0] - wx0, p[..., 1] - wy0], -1)
            out[..., wy0:wy1, wx0:wx1] = polygon_mask(shifted, (wy1 - wy0, wx1 - wx0), subrows=subrows, dilate=dilate)
        return out
    wd = _work_dtype(poly.dtype)
    dev = poly.device
    p0 = poly.to(wd)
    p1 = torch.roll(p0, shifts=-1, dims=1)
    bsz, n_edges = p0.shape[0], p0.shape[1]
    # scanline y positions, sub-rows centred within each pixel row
    sub = (torch.arange(subrows, device=dev, dtype=wd) + 0.5) / subrows - 0.5
    ys = (torch.arange(h, device=dev, dtype=wd).view(h, 1) + sub.view(1, subrows)).reshape(1, -1, 1)  # (1,S,1)
    y0, y1 = p0[..., 1].unsqueeze(1), p1[..., 1].unsqueeze(1)  # (B,1,P)
    x0, x1 = p0[..., 0].unsqueeze(1), p1[..., 0].unsqueeze(1)
    crosses = (y0 <= ys) != (y1 <= ys)  # half-open rule: every vertex is counted once
    dy = torch.where(y1 == y0, torch.ones_like(y1), y1 - y0)
    xc = x0 + (ys - y0) * (x1 - x0) / dy  # (B,S,P)
    # Clip crossings to just outside the image: the overlap of intervals with any pixel is unchanged, and it
    # makes room for a finite "no crossing" sentinel that sorts last (inf would poison the prefix sums).
    lo, hi = -1.0, float(w)
    sentinel = float(w) + 1.0
    sign = 1.0 - 2.0 * (torch.arange(n_edges, device=dev) % 2).to(wd)  # +1, −1, +1, ... (entry, exit, ...)
    if dilate > 0:
        # Sorted crossings alternate entry/exit (even–odd rule): entries move left, exits right. Intervals that now
        # overlap are summed and the coverage clamped below (exact but for a pixel that holds both ends of an
        # overlap); the crossings are re-sorted with their signs.
        xc, _ = torch.sort(torch.where(crosses, xc, torch.full_like(xc, math.inf)), dim=-1)
        valid = torch.isfinite(xc)
        xc = torch.where(valid, (xc - float(dilate) * sign).clamp(lo, hi), torch.full_like(xc, sentinel))
        xc, order = torch.sort(xc, dim=-1)
        signs = torch.gather(sign.expand_as(xc), -1, order)
    else:
        xc = torch.where(crosses, xc.clamp(lo, hi), torch.full_like(xc, sentinel))
        xc, _ = torch.sort(xc, dim=-1)
        signs = sign.expand_as(xc)
    # Pixel x covers [x−½, x+½]; the inside indicator is Σ_k sign_k·[u > c_k], so each crossing adds
    # sign·(x+½−c) to the pixel j = floor(c+½) that holds it and sign to every pixel right of it. Scatter those
    # two parts into a difference array and prefix-sum it along the row: O(P + W) per scanline, no search.
    j = torch.floor(xc + 0.5)  # in [-1, w + 1]; sentinels land at w + 1, past the row
    part = signs * (j + 0.5 - xc)
    slot = (j + 1).long()  # difference-array slot of pixel j (slot 0 = pixel −1)
    diff = torch.zeros(bsz, xc.shape[1], w + 3, device=dev, dtype=wd)
    diff.scatter_add_(-1, slot, part)
    diff.scatter_add_(-1, (slot + 1).clamp(max=w + 2), signs - part)
    cov = torch.cumsum(diff, dim=-1)[..., 1 : w + 1].clamp(0.0, 1.0)  # (B,S,W)
    reach = round(float(dilate) * subrows)
    if reach > 0:  # vertical growth: the union of the sub-rows within reach (their max, exact for nested rows)
        cov = sliding_max(cov, reach, -2)
    cov = cov.reshape(bsz, h, subrows, w).mean(dim=2)
    # The prefix sum leaves rounding dust (~1e-6) where exact arithmetic gives 0 or 1: snap it, so that pixels
    # outside the polygon are exactly 0 (blends keep "mask == 0 ⇒ unchanged" bit for bit) and inside exactly 1.
    cov = cov.masked_fill_(cov < 1e-5, 0.0).masked_fill_(cov > 1.0 - 1e-5, 1.0)
    return cov.unsqueeze(1).to(poly.dtype)


def convex_hull_indices(points: torch.Tensor) -> list[list[int]]:
    """Vertex indices of the convex hull of each item (``cv2.convexHull`` on the host: one device→host copy).

    Args:
        points: ``(B, N, 2)`` points (x, y), N >= 3.

    Returns:
        One list of indices per batch item, in outline order.
    """
    check_shape(points, ["B", "N", "2"], "points")
    import cv2  # a core dependency; imported here so that the tensor-only ops never need it

    arr = points.detach().to("cpu", torch.float32).numpy()
    return [[int(i) for i in cv2.convexHull(np.ascontiguousarray(a), returnPoints=False).reshape(-1)] for a in arr]


def convex_hull_mask(
    points: torch.Tensor, size: Sequence[int], *, hull: torch.Tensor | None = None, subrows: int = 4
) -> torch.Tensor:
    """Anti-aliased mask of the convex hull of each item's points.

    Two ways to get the hull, documented choice: pass ``hull`` — a stable ``(K,)`` long index list of the
    outline (e.g. the FaceMesh face-oval indices) — to stay on the device with no host sync; otherwise the hull
    is computed per item on the host (:func:`convex_hull_indices`, Andrew's monotone chain, one small copy) and
    the outlines are padded to equal length by repeating their last vertex.

    Args:
        points: ``(B, N, 2)`` points (x, y).
        size: output ``(H, W)``.
        hull: optional ``(K,)`` long indices into N, in outline order.
        subrows: vertical supersampling of :func:`polygon_mask`.

    Returns:
        ``(B, 1, H, W)`` in ``[0, 1]``, dtype/device of ``points``.
    """
    check_shape(points, ["B", "N", "2"], "points")
    if hull is not None:
        check_shape(hull, ["K"], "hull")
        poly = points[:, hull.to(device=points.device, dtype=torch.long)]
        return polygon_mask(poly, size, subrows=subrows)
    lists = convex_hull_indices(points)
    k = max(len(ix) for ix in lists)
    if k < 3:
        return torch.zeros(points.shape[0], 1, int(size[0]), int(size[1]), device=points.device, dtype=points.dtype)
    padded = [ix + [ix[-1]] * (k - len(ix)) for ix in lists]
    idx = torch.tensor(padded, device=points.device, dtype=torch.long)  # (B,K)
    poly = torch.gather(points, 1, idx.unsqueeze(-1).expand(-1, -1, 2))
    return polygon_mask(poly, size, subrows=subrows)


def _fractional(op: Callable[[torch.Tensor, int], torch.Tensor], mask: torch.Tensor, radius: float) -> torch.Tensor:
    """``op`` with a real radius: the blend of the two integer radii around it (moves an edge by the fraction)."""
    low = math.floor(radius)
    frac = float(radius) - low
    out = op(mask, low)
    if frac > 1e-6:
        out = out + frac * (op(mask, low + 1) - out)
    return out


def dilate_mask(mask: torch.Tensor, radius_px: float) -> torch.Tensor:
    """Grey-level dilation with a ``(2r+1)²`` square (separable max-pool).

    Args:
        mask: ``(B, 1, H, W)`` (any channel count works) in ``[0, 1]``. radius_px: r >= 0; a fractional radius
            blends the dilations by ``floor(r)`` and ``floor(r) + 1`` (an edge moves by the fraction), which lets
            a radius given at one resolution be used on a coarser grid.

    Returns:
        Same shape, dtype and device.
    """
    check_shape(mask, ["B", "C", "H", "W"], "mask")
    return _fractional(max_filter, mask, radius_px)


def erode_mask(mask: torch.Tensor, radius_px: float) -> torch.Tensor:
    """Grey-level erosion with a ``(2r+1)²`` square (separable min-pool). The image border does not erode.

    Args:
        mask: ``(B, 1, H, W)`` in ``[0, 1]``. radius_px: r >= 0 (fractional: as :func:`dilate_mask`).

    Returns:
        Same shape, dtype and device.
    """
    check_shape(mask, ["B", "C", "H", "W"], "mask")
    return _fractional(min_filter, mask, radius_px)


def feather_mask(mask: torch.Tensor, sigma_px: float) -> torch.Tensor:
    """Soften a mask with a gaussian (replicate border). The result spreads ~``3σ`` beyond the input mask:
    erode by ``ceil(3σ)`` first if nothing may leak outside it.

    Args:
        mask: ``(B, 1, H, W)`` in ``[0, 1]``. sigma_px: gaussian sigma in pixels (0 = unchanged).

    Returns:
        Same shape, dtype and device, in ``[0, 1]``.
    """
    check_shape(mask, ["B", "C", "H", "W"], "mask")
    if sigma_px <= 0:
        return mask
    return gaussian_blur(mask, float(sigma_px), padding="replicate").clamp(0.0, 1.0)


def triangles_mask(pts: torch.Tensor, triangles: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Union of triangles of a mesh (e.g. the eye or mouth triangles of FaceMesh), binary at pixel centres.

    Args:
        pts: ``(B, N, 2)`` vertices (x, y) in output pixel coordinates.
        triangles: ``(T, 3)`` long vertex indices.
        size: output ``(H, W)``.

    Returns:
        ``(B, 1, H, W)`` with values 0/1, dtype/device of ``pts``; feather it for a soft edge.
    """
    ids = rasterise_triangles(pts, triangles, size)
    return (ids >= 0).unsqueeze(1).to(pts.dtype)


def pad_polygons(polys: Sequence[torch.Tensor]) -> torch.Tensor:
    """``(F, P_i, 2)`` outlines → ``(F, len, L, 2)``, short ones padded by repeating their last vertex (zero-length
    edges, which :func:`polygon_mask` ignores)."""
    length = max(p.shape[1] for p in polys)
    return torch.stack([torch.cat([p, p[:, -1:].expand(-1, length - p.shape[1], -1)], 1) for p in polys], 1)


def mask_window(mask: torch.Tensor, margin: int = 0) -> tuple[int, int, int, int]:
    """``(y0, y1, x0, x1)``: the rows and columns of ``(B, C, H, W)`` masks holding every positive value, grown by
    ``margin`` and cut to the image; empty (``y1 <= y0``) when none is positive. Reads the values: one device sync
    off the CPU."""
    check_shape(mask, ["B", "C", "H", "W"], "mask")
    h, w = mask.shape[-2:]
    positive = (mask > 0).any(0).any(0)
    rows, cols = positive.any(1).nonzero().flatten().tolist(), positive.any(0).nonzero().flatten().tolist()
    if not rows:
        return 0, 0, 0, 0
    return (max(0, rows[0] - margin), min(h, rows[-1] + 1 + margin),
            max(0, cols[0] - margin), min(w, cols[-1] + 1 + margin))
