"""Image warps on batches: global affine (OpenCV ``warpAffine`` semantics) and piecewise-affine over a mesh.

Conventions:
    * images are ``(B, C, H, W)`` floating tensors (any range; RGB order where colour matters);
    * points are ``(x, y)`` pixel coordinates, pixel centres at integers (OpenCV's convention);
    * matrices are ``(B, 2, 3)`` and each argument states its direction (src→dst).

Sampling uses ``grid_sample(align_corners=False)``: a pixel coordinate ``x`` maps to the normalised coordinate
``(2x + 1) / W − 1``, which puts pixel centres where OpenCV puts them.

Half precision: grids are built in float32 and the texture is sampled in float32 for float16/bfloat16 inputs
(an fp16 grid has ~0.5 px resolution at 1024 px, and fp16 ``grid_sample`` on CPU crashed with torch 2.13); the
result is cast back to the input dtype. Pass points and matrices in float32 even with fp16/bf16 images: they are
accepted in any dtype, but bfloat16 coordinates are only ~1 px precise at 256 px (measured on an H100: a bf16 matrix
moved ``paste_back`` output by up to 0.23).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F

from faceweave.device import to_device_async
from faceweave.errors import InvalidOption, ShapeError, check_shape
from faceweave.ops.geometry import invert_affine

__all__ = ["affine_grid", "affine_theta", "warp_affine", "pixel_to_normalised", "rasterise_triangles",
           "triangle_blocks", "piecewise_affine_warp"]

_PADDING = {"zeros": "zeros", "border": "border", "reflection": "reflection"}


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def pixel_to_normalised(size: Sequence[int], *, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The ``(3, 3)`` matrix mapping pixel (x, y, 1) of an image of ``size=(h, w)`` to grid_sample's normalised
    coordinates with ``align_corners=False`` (``x_n = (2x + 1)/w − 1``)."""
    h, w = size
    return torch.tensor(
        [[2.0 / w, 0.0, 1.0 / w - 1.0], [0.0, 2.0 / h, 1.0 / h - 1.0], [0.0, 0.0, 1.0]], device=device, dtype=dtype
    )


def affine_grid(theta: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """``F.affine_grid(theta, (N, C, h, w), align_corners=False)`` built as a broadcast sum.

    Args:
        theta: ``(N, 2, 3)`` floating, normalised output coords → normalised input coords.
        size: output ``(h, w)``.

    Returns:
        ``(N, h, w, 2)`` grid for ``grid_sample(align_corners=False)``, dtype/device of ``theta``.

    The same values as torch's (up to float rounding), without its ``(N, h·w, 3) × (N, 3, 2)`` batched matmul over
    a base grid it first materialises: on CPU that took 5 ms per 480p frame of the video swap, ~4× this.
    """
    check_shape(theta, ["N", "2", "3"], "theta")
    xs, ys = _grid_axes(int(size[0]), int(size[1]), theta.device, theta.dtype)
    coef = theta.transpose(1, 2)[:, None, None]  # (N, 1, 1, 3, 2): the x, y and 1 terms of (gx, gy)
    col = coef[..., 0, :] * xs  # (N, 1, w, 2): x's contribution to (gx, gy)
    row = coef[..., 1, :] * ys  # (N, h, 1, 2)
    return (col + coef[..., 2, :]) + row


@functools.lru_cache(maxsize=64)
def _grid_axes(h: int, w: int, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`affine_grid`'s normalised pixel centres, ``(1, 1, w, 1)`` along x and ``(1, h, 1, 1)`` along y, made
    once per size (a live frame builds several grids of the same few sizes; each op costs its dispatch). Read only."""
    xs = (torch.arange(w, device=device, dtype=dtype) * 2 + 1) / w - 1
    ys = (torch.arange(h, device=device, dtype=dtype) * 2 + 1) / h - 1
    return xs.view(1, 1, w, 1), ys.view(1, h, 1, 1)


def affine_theta(M: torch.Tensor, src_size: Sequence[int], dst_size: Sequence[int]) -> torch.Tensor:  # noqa: N803
    """``grid_sample``'s ``(B, 2, 3)`` theta (normalised dst → normalised src, ``align_corners=False``) for a warp
    by ``M`` (``(B, 2, 3)`` src→dst pixel coordinates) from a ``src_size`` to a ``dst_size`` image (``(h, w)``).

    Closed form in three ops on ``M``'s device (float32 for half inputs): with ``M⁻¹ = [L | t]`` and the
    pixel↔normalised maps diagonal, ``theta = S · (M⁻¹ · R) + O`` for per-size constants ``S``, ``R``, ``O``
    (made once per size). A live frame's geometry is a few
    such tiny ops, and each one's dispatch, not its arithmetic, is what it costs (issue 20).
    """
    (src_h, src_w), (h, w) = (int(v) for v in src_size), (int(v) for v in dst_size)
    wd = _work_dtype(M.dtype)
    # normalised dst → dst pixels (x = (x_n + 1)·w/2 − 0.5, exact in float32), then M⁻¹, then src pixels →
    # normalised src (x_n = (2x + 1)/W − 1: a row scale and an offset)
    right, scale, offset = _theta_constants(src_h, src_w, h, w, M.device, wd)
    return torch.addcmul(offset, scale, invert_affine(M.to(wd)) @ right)


@functools.lru_cache(maxsize=64)
def _theta_constants(src_h: int, src_w: int, h: int, w: int, device: torch.device, dtype: torch.dtype
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`affine_theta`'s ``R``, ``S``, ``O``. Their own cache, not device_constant's: a paste box's size changes
    every frame, and churning that shared cache would drop constants that captured CUDA graphs still read."""
    right = torch.tensor(((w / 2, 0.0, w / 2 - 0.5), (0.0, h / 2, h / 2 - 0.5), (0.0, 0.0, 1.0)), dtype=dtype)
    scale = torch.tensor(((2.0 / src_w,), (2.0 / src_h,)), dtype=dtype)
    offset = torch.tensor(((0.0, 0.0, 1.0 / src_w - 1.0), (0.0, 0.0, 1.0 / src_h - 1.0)), dtype=dtype)
    return right.to(device), scale.to(device), offset.to(device)


def warp_affine(
    img: torch.Tensor,
    M: torch.Tensor,  # noqa: N803
    size: Sequence[int],
    *,
    mode: Literal["bilinear", "nearest"] = "bilinear",
    padding: Literal["zeros", "border", "reflection"] = "zeros",
) -> torch.Tensor:
    """Warp images with an affine map, like ``cv2.warpAffine(img, M, (w, h), flags=INTER_LINEAR)``.

    Each output pixel ``p`` takes the input value at ``M⁻¹ p`` (bilinear). ``padding="zeros"`` matches OpenCV's
    ``BORDER_CONSTANT`` with value 0, ``"border"`` matches ``BORDER_REPLICATE``.

    Args:
        img: ``(B, C, H, W)`` floating images.
        M: ``(B, 2, 3)`` matrix mapping input pixel coords → output pixel coords (src→dst, OpenCV's direction);
            on the host or on ``img``'s device (a host matrix costs a CUDA image no device sync).
        size: output ``(h, w)``.
        mode: ``"bilinear"`` or ``"nearest"``.
        padding: ``"zeros"``, ``"border"`` or ``"reflection"``.

    Returns:
        ``(B, C, h, w)``, same device and dtype as ``img``.
    """
    check_shape(img, ["B", "C", "H", "W"], "img")
    check_shape(M, ["B", "2", "3"], "M")
    if M.shape[0] != img.shape[0]:
        raise ShapeError(f"M has batch {M.shape[0]} but img has batch {img.shape[0]}")
    if padding not in _PADDING:
        raise InvalidOption(f"unknown padding {padding!r}", hint="use zeros, border or reflection")
    if mode not in ("bilinear", "nearest"):
        raise InvalidOption(f"unknown mode {mode!r}", hint="use bilinear or nearest")
    h, w = int(size[0]), int(size[1])
    wd = _work_dtype(img.dtype)
    # The matrices are computed where M is: from host matrices (the geometry of a batch usually lives there) a
    # device image gets one asynchronous copy of theta; building them on the device would wait for it (small
    # tensors made from host data, a 3×3 inverse) three times per call.
    theta = to_device_async(affine_theta(M, (img.shape[-2], img.shape[-1]), (h, w)), img.device)
    grid = affine_grid(theta[:, :2, :], (h, w))
    out = F.grid_sample(img.to(wd), grid, mode=mode, padding_mode=padding, align_corners=False)
    return out.to(img.dtype)


def _triangle_setup(dst_pts: torch.Tensor, triangles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per (batch, triangle): first vertex ``v0`` (B,T,2), inverse edge matrix ``E⁻¹`` (B,T,2,2) giving the
    barycentric coordinates (l1, l2) of a point p as ``E⁻¹ (p − v0)``, and a validity flag (B,T) that is
    False for degenerate (zero-area) triangles."""
    tri = dst_pts[:, triangles]  # (B,T,3,2)
    v0 = tri[:, :, 0]
    e1 = tri[:, :, 1] - v0
    e2 = tri[:, :, 2] - v0
    det = e1[..., 0] * e2[..., 1] - e1[..., 1] * e2[..., 0]
    valid = det.abs() > 1e-9
    safe = torch.where(valid, det, torch.ones_like(det))
    # E = [e1 e2] (columns); E⁻¹ = 1/det [[e2y, -e2x], [-e1y, e1x]]
    einv = (
        torch.stack(
            [torch.stack([e2[..., 1], -e2[..., 0]], dim=-1), torch.stack([-e1[..., 1], e1[..., 0]], dim=-1)], dim=-2
        )
        / safe[..., None, None]
    )
    return v0, einv, valid


def triangle_blocks(dst_pts: torch.Tensor, triangles: torch.Tensor, size: Sequence[int], tile: int = 8
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ``tile × tile`` blocks :func:`rasterise_triangles` tests for each triangle, on the points' device.

    Returns:
        ``(lo, hi, ntiles)``: ``(B, T, 2)`` first and last pixel centre (x, y) inside each triangle's bounding box
        (clipped to the image) and ``(B, T, 2)`` long block counts along x and y (0 for degenerate triangles), so a
        triangle has ``ntiles[..., 0] · ntiles[..., 1]`` blocks. Call it on host points to know a batch's block
        count without a device sync.
    """
    pts = dst_pts.to(_work_dtype(dst_pts.dtype))
    tri_long = triangles.to(device=pts.device, dtype=torch.long)
    _, _, valid = _triangle_setup(pts, tri_long)
    return _block_grid(pts[:, tri_long], valid, int(size[0]), int(size[1]), tile)


def _block_grid(tri: torch.Tensor, valid: torch.Tensor, h: int, w: int, tile: int
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`triangle_blocks` from the triangles' vertices ``(B, T, 3, 2)`` and validity ``(B, T)``."""
    lo = torch.ceil(tri.amin(dim=2)).clamp_min(0)  # first pixel centre inside the bbox
    hi = torch.floor(tri.amax(dim=2))
    hi = torch.stack([hi[..., 0].clamp(max=w - 1), hi[..., 1].clamp(max=h - 1)], -1)
    ext = (hi - lo + 1).clamp_min(0)  # (B,T,2) bbox extent in pixels (0 if outside/empty)
    ntiles = torch.ceil(ext / tile).long()
    ntiles = torch.where(valid.unsqueeze(-1), ntiles, torch.zeros_like(ntiles))
    return lo, hi, ntiles


def rasterise_triangles(
    dst_pts: torch.Tensor, triangles: torch.Tensor, size: Sequence[int], *, tile: int = 8,
    max_blocks: int | None = None,
) -> torch.Tensor:
    """Index of the triangle covering each pixel centre, rasterised on the device.

    Each triangle's bounding box is cut into ``tile × tile`` blocks; all blocks of all triangles are tested
    at once with barycentric coordinates (work ∝ total bbox area, not T·H·W). Where triangles share an edge the
    higher index wins (deterministic ``scatter_reduce(amax)``); either is correct since adjacent piecewise-affine
    maps agree on the shared edge. One host sync (the number of blocks) per call, unless ``max_blocks`` is given.

    Args:
        dst_pts: ``(B, N, 2)`` mesh vertices (x, y) in output pixel coordinates.
        triangles: ``(T, 3)`` long vertex indices.
        size: output ``(H, W)``.
        tile: block size in pixels.
        max_blocks: a fixed number of blocks to test (shapes then depend only on the arguments' shapes, as a CUDA
            graph needs): blocks past the batch's own count are inert, and blocks past ``max_blocks`` are NOT
            rasterised — check the count first (:func:`triangle_blocks` on host points).

    Returns:
        ``(B, H, W)`` long tensor, triangle index or −1 where no triangle covers the pixel centre.
    """
    check_shape(dst_pts, ["B", "N", "2"], "dst_pts")
    check_shape(triangles, ["T", "3"], "triangles")
    h, w = int(size[0]), int(size[1])
    dev = dst_pts.device
    bsz, n_tri = dst_pts.shape[0], triangles.shape[0]
    pts = dst_pts.to(_work_dtype(dst_pts.dtype))
    tri_long = triangles.to(device=dev, dtype=torch.long)
    v0, einv, valid = _triangle_setup(pts, tri_long)
    lo, hi, ntiles = _block_grid(pts[:, tri_long], valid, h, w, tile)
    per_tri = (ntiles[..., 0] * ntiles[..., 1]).reshape(-1)  # (B*T,)
    ends = torch.cumsum(per_tri, 0)
    if max_blocks is None:
        flat_ids = torch.repeat_interleave(torch.arange(bsz * n_tri, device=dev), per_tri)  # the host sync
        in_use = None
    else:
        # block k belongs to the triangle whose running block count first exceeds k; blocks past the total are
        # marked unused (they test triangle 0's first block and scatter nothing)
        flat_ids = torch.searchsorted(ends, torch.arange(int(max_blocks), device=dev), right=True)
        in_use = flat_ids < bsz * n_tri
        flat_ids = torch.where(in_use, flat_ids, torch.zeros_like(flat_ids))
    ids = torch.full((bsz, h * w), -1, device=dev, dtype=torch.long)
    if flat_ids.numel() == 0:
        return ids.view(bsz, h, w)
    # index of each block within its triangle's bbox
    starts = ends - per_tri
    local = torch.arange(flat_ids.numel(), device=dev) - starts[flat_ids]
    ntx = ntiles.reshape(-1, 2)[flat_ids, 0].clamp_min(1)  # unused blocks may point at a degenerate triangle
    bx = (local % ntx) * tile
    by = torch.div(local, ntx, rounding_mode="floor") * tile
    lo_f = lo.reshape(-1, 2)[flat_ids]
    hi_f = hi.reshape(-1, 2)[flat_ids]
    offs = torch.arange(tile, device=dev, dtype=lo.dtype)[:, None]
    # Blocks are the last axis (tile, tile, K): every full-size op below then runs along one long contiguous axis
    # (with a block axis of 8 in the middle the broadcasts were 4-5x slower on the CPU); the values are the same.
    px = (lo_f[:, 0] + bx.to(lo.dtype))[None, :] + offs  # (tile, K), x of each column of the block
    py = (lo_f[:, 1] + by.to(lo.dtype))[None, :] + offs  # (tile, K), y of each row
    v0_f = v0.reshape(-1, 2)[flat_ids]
    ei = einv.reshape(-1, 2, 2)[flat_ids]
    # Barycentric coords are affine in (x, y): split each into a column term and a row term so that only three
    # full-size adds are needed per block.
    dx = px - v0_f[:, 0]
    dy = py - v0_f[:, 1]
    c1, r1 = ei[:, 0, 0] * dx, ei[:, 0, 1] * dy
    c2, r2 = ei[:, 1, 0] * dx, ei[:, 1, 1] * dy
    l1 = c1[None] + r1[:, None]  # (tile y, tile x, K)
    l2 = c2[None] + r2[:, None]
    l12 = (c1 + c2)[None] + (r1 + r2)[:, None]
    eps = 1e-5  # closes cracks between neighbours from rounding; a pixel on a shared edge may hit both
    inside = (l1 >= -eps) & (l2 >= -eps) & (l12 <= 1 + eps)
    inside &= (px <= hi_f[:, 0])[None] & (py <= hi_f[:, 1])[:, None]
    if in_use is not None:
        inside &= in_use
    batch_idx = torch.div(flat_ids, n_tri, rounding_mode="floor")
    tri_idx = flat_ids - batch_idx * n_tri
    col = px.clamp(max=w - 1).long()
    row = py.clamp(max=h - 1).long() * w + batch_idx * (h * w)
    # No boolean indexing (nonzero is slow and syncs): outside pixels scatter −1, which amax ignores; their
    # coordinates are clamped so the flat index stays on the right image row.
    lin = (row[:, None] + col[None]).reshape(-1)
    val = torch.where(inside, tri_idx, torch.full_like(tri_idx, -1)).reshape(-1)
    ids.view(-1).scatter_reduce_(0, lin, val, reduce="amax")
    return ids.view(bsz, h, w)


def _triangle_maps(src_pts: torch.Tensor, dst_pts: torch.Tensor, triangles: torch.Tensor) -> torch.Tensor:
    """Per (batch, triangle) affine map dst→src pixel coords, ``(B, T, 2, 3)``, via barycentric coordinates."""
    v0, einv, _ = _triangle_setup(dst_pts, triangles)
    s = src_pts[:, triangles]  # (B,T,3,2)
    s_edges = torch.stack([s[:, :, 1] - s[:, :, 0], s[:, :, 2] - s[:, :, 0]], dim=-1)  # (B,T,2,2) columns
    lin = s_edges @ einv  # src = s0 + S E⁻¹ (p − v0)
    t = s[:, :, 0] - (lin @ v0.unsqueeze(-1)).squeeze(-1)
    return torch.cat([lin, t.unsqueeze(-1)], dim=-1)


def piecewise_affine_warp(
    src_img: torch.Tensor,
    src_pts: torch.Tensor,
    dst_pts: torch.Tensor,
    triangles: torch.Tensor,
    out_size: Sequence[int],
    *,
    grid_size: int | None = None,
    max_blocks: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Piecewise-affine warp of a texture from a source mesh onto a destination mesh.

    Every output pixel centre inside triangle ``t`` of the DST mesh samples the source image (bilinear) at the
    point with the same barycentric coordinates in triangle ``t`` of the SRC mesh. Pixels outside every triangle
    get 0 and coverage 0. The triangle ids are rasterised on the device (:func:`rasterise_triangles`), the map
    is evaluated per pixel, and the texture is sampled with ONE ``grid_sample``.

    With ``grid_size=g`` the sampling map and coverage are computed on a ``g × g`` grid spanning the output and
    upsampled bilinearly (cheaper for large outputs; coverage becomes soft at the mesh border, and the map is
    smoothed across triangle edges). Uncovered coarse cells next to the mesh take the mean map of their covered
    neighbours (two passes) so that upsampling near the border does not pull in garbage coordinates.

    Args:
        src_img: ``(B, C, Hs, Ws)`` floating texture.
        src_pts: ``(B, N, 2)`` mesh vertices (x, y) in ``src_img`` pixel coordinates.
        dst_pts: ``(B, N, 2)`` the same vertices in output pixel coordinates.
        triangles: ``(T, 3)`` long vertex indices (shared by the batch).
        out_size: output ``(H, W)``.
        grid_size: optional coarse grid resolution for the sampling map.
        max_blocks: rasterise with this fixed number of blocks (no host sync; see :func:`rasterise_triangles`).

    Returns:
        ``(warped, coverage)``: ``(B, C, H, W)`` in the dtype of ``src_img`` and ``(B, 1, H, W)`` in [0, 1]
        (exactly 0/1 without ``grid_size``).
    """
    check_shape(src_img, ["B", "C", "H", "W"], "src_img")
    check_shape(src_pts, ["B", "N", "2"], "src_pts")
    check_shape(dst_pts, ["B", "N", "2"], "dst_pts")
    check_shape(triangles, ["T", "3"], "triangles")
    if src_pts.shape != dst_pts.shape or src_pts.shape[0] != src_img.shape[0]:
        raise ShapeError(
            f"src_pts {tuple(src_pts.shape)}, dst_pts {tuple(dst_pts.shape)} and src_img batch "
            f"{src_img.shape[0]} must agree"
        )
    h, w = int(out_size[0]), int(out_size[1])
    wd = _work_dtype(src_img.dtype)
    dev = src_img.device
    bsz = src_img.shape[0]
    tri = triangles.to(device=dev, dtype=torch.long)
    sp, dp = src_pts.to(wd), dst_pts.to(wd)
    if grid_size is None:
        rh, rw = h, w
        dp_r = dp
    else:
        rh = rw = int(grid_size)
        # coarse cell centres span the output with the same pixel-centre convention (resize semantics)
        scale = torch.tensor([rw / w, rh / h], device=dev, dtype=wd)
        dp_r = (dp + 0.5) * scale - 0.5
    ids = rasterise_triangles(dp_r, tri, (rh, rw), max_blocks=max_blocks)  # (B,rh,rw)
    maps = _triangle_maps(sp, dp_r, tri)  # (B,T,2,3) coarse-dst → src
    covered = ids >= 0
    safe_ids = ids.clamp_min(0).view(bsz, -1)
    m = torch.gather(maps.view(bsz, -1, 6), 1, safe_ids.unsqueeze(-1).expand(-1, -1, 6)).view(bsz, rh, rw, 2, 3)
    ys = torch.arange(rh, device=dev, dtype=wd).view(1, rh, 1)
    xs = torch.arange(rw, device=dev, dtype=wd).view(1, 1, rw)
    sx = m[..., 0, 0] * xs + m[..., 0, 1] * ys + m[..., 0, 2]
    sy = m[..., 1, 0] * xs + m[..., 1, 1] * ys + m[..., 1, 2]
    src_xy = torch.stack([sx, sy], dim=-1)  # (B,rh,rw,2) source pixel coords
    cov = covered.to(wd).unsqueeze(1)
    if grid_size is not None:
        # Fill uncovered coarse cells with the covered neighbours' values so the bilinear upsampling stays
        # inside the texture near the mesh border; a few dilation passes reach one cell deep, which is all the
        # bilinear footprint needs.
        src_xy = _fill_uncovered(src_xy.permute(0, 3, 1, 2), cov, passes=2)
        src_xy = F.interpolate(src_xy, size=(h, w), mode="bilinear", align_corners=False).permute(0, 2, 3, 1)
        cov = F.interpolate(cov, size=(h, w), mode="bilinear", align_corners=False)
    hs, ws = src_img.shape[-2:]
    grid = torch.stack([(2 * src_xy[..., 0] + 1) / ws - 1, (2 * src_xy[..., 1] + 1) / hs - 1], dim=-1)
    warped = F.grid_sample(src_img.to(wd), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    warped = warped * cov
    return warped.to(src_img.dtype), cov.to(src_img.dtype)


def _fill_uncovered(values: torch.Tensor, cov: torch.Tensor, passes: int) -> torch.Tensor:
    """Replace values at cov == 0 with the mean of covered 3×3 neighbours, ``passes`` times (B,C,H,W)."""
    k = torch.ones(1, 1, 3, 3, device=values.device, dtype=values.dtype)
    c = values.shape[1]
    for _ in range(passes):
        num = F.conv2d(values * cov, k.expand(c, 1, 3, 3), padding=1, groups=c)
        den = F.conv2d(cov, k, padding=1)
        filled = num / den.clamp_min(1e-6)
        values = torch.where(cov > 0, values, filled)
        cov = torch.where(cov > 0, cov, (den > 0).to(cov.dtype))
    return values
