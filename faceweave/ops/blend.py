"""Blending on batches: feather (alpha), Laplacian pyramid (Burt–Adelson), Poisson (seamless clone), paste-back.

Conventions: images are ``(B, C, H, W)`` floating tensors (any range, RGB order where colour matters); masks
are ``(B, 1, H, W)`` in ``[0, 1]`` and say where the foreground is wanted (1 = fg, 0 = bg); matrices are
``(B, 2, 3)`` in pixel coordinates with pixel centres at integers, each argument states its direction.

Exactness outside the mask is built into the formulas, not patched on: every blend is written as
``bg + (something that is exactly 0 where the mask and its neighbourhood are 0)``, so ``bg + 0.0 == bg``
bit for bit. Ops follow the input's device and dtype.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

from faceweave.errors import InvalidOption, ShapeError, check_shape
from faceweave.ops.filters import gaussian_blur
from faceweave.ops.geometry import compose_affine, invert_affine, transform_points
from faceweave.ops.warp import warp_affine

__all__ = ["feather_blend", "laplacian_pyramid_blend", "pyramid_support_radius", "poisson_blend", "paste_back",
           "paste_back_region"]


def _check_blend_args(fg: torch.Tensor, bg: torch.Tensor, mask: torch.Tensor) -> None:
    check_shape(fg, ["B", "C", "H", "W"], "fg")
    check_shape(bg, ["B", "C", "H", "W"], "bg")
    check_shape(mask, ["B", "1", "H", "W"], "mask")
    if fg.shape != bg.shape or mask.shape[0] != fg.shape[0] or mask.shape[-2:] != fg.shape[-2:]:
        raise ShapeError(
            f"fg {tuple(fg.shape)}, bg {tuple(bg.shape)} and mask {tuple(mask.shape)} must have the same batch "
            "and spatial size (mask with one channel)"
        )


def feather_blend(fg: torch.Tensor, bg: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Alpha blend ``mask·fg + (1 − mask)·bg``, computed as ``bg + mask·(fg − bg)`` so that ``mask == 0`` gives
    ``bg`` bit for bit.

    Args:
        fg, bg: ``(B, C, H, W)``. mask: ``(B, 1, H, W)`` in ``[0, 1]``.

    Returns:
        ``(B, C, H, W)``, dtype/device of ``bg``.
    """
    _check_blend_args(fg, bg, mask)
    return bg + mask.to(bg.dtype) * (fg.to(bg.dtype) - bg)


def _replicate_pad(x: torch.Tensor, dim: int, r: int) -> torch.Tensor:
    """``x`` padded by ``r`` copies of its first and last slice along ``dim`` (a replicate border on any axis)."""
    n = x.shape[dim]
    first, last = x.narrow(dim, 0, 1), x.narrow(dim, n - 1, 1)
    return torch.cat([first] * r + [x] + [last] * r, dim)


def _every_other(x: torch.Tensor, dim: int, start: int, count: int) -> torch.Tensor:
    """``count`` samples of ``x`` along ``dim`` (a non-negative axis), every other one from ``start`` (a view)."""
    index = [slice(None)] * x.dim()
    index[dim] = slice(start, start + 2 * (count - 1) + 1, 2)
    return x[tuple(index)]


def _down_axis(x: torch.Tensor, dim: int) -> torch.Tensor:
    """5-tap binomial blur along ``dim`` (replicate border) and keep every other sample: n → ceil(n/2).

    Along H the taps are row slices of the padded image (contiguous runs): no transposed copies."""
    dim %= x.dim()
    n = (x.shape[dim] + 1) // 2
    p = _replicate_pad(x, dim, 2)
    taps = [_every_other(p, dim, k, n) for k in range(5)]
    return (taps[0] + taps[4] + 4.0 * (taps[1] + taps[3]) + 6.0 * taps[2]) * (1.0 / 16.0)


def _up_axis(x: torch.Tensor, n: int, dim: int) -> torch.Tensor:
    """2× expansion along ``dim`` to length ``n`` (zero insertion + 5-tap binomial ×2, in polyphase form: even
    outputs ``(x[i−1] + 6x[i] + x[i+1])/8``, odd outputs ``(x[i] + x[i+1])/2``; replicate border)."""
    dim %= x.dim()
    length = x.shape[dim]
    p = _replicate_pad(x, dim, 1)
    left, mid, right = (p.narrow(dim, k, length) for k in range(3))
    even = (left + right + 6.0 * mid) * (1.0 / 8.0)
    odd = (mid + right) * 0.5
    return torch.stack([even, odd], dim=dim + 1).flatten(dim, dim + 1).narrow(dim, 0, n)


def _down(x: torch.Tensor) -> torch.Tensor:
    """Gaussian pyramid step (5-tap binomial, replicate border): (N,C,H,W) → (N,C,ceil(H/2),ceil(W/2)).
    Written with strided slices, along W then H: 3–5× faster than depthwise ``conv2d`` on the CPU for a 5-tap
    kernel, and working on rows for H (rather than on a transposed view) saves another quarter."""
    return _down_axis(_down_axis(x, -1), -2)


def _up(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Expand one pyramid level to exactly ``size`` (N,C,h,w), along W then H."""
    return _up_axis(_up_axis(x, size[1], -1), size[0], -2)


def pyramid_support_radius(levels: int) -> int:
    """An upper bound, in pixels, of how far a Laplacian-pyramid blend with ``levels`` levels moves a change of
    the mask: beyond it the output equals ``bg`` exactly. Level ``k`` of the mask pyramid reaches
    ``Σ_{j<k} 2·2^j = 2(2^k − 1)`` px past the mask (5-tap blur, 2 samples at each scale), and collapsing level
    ``k`` back to full resolution spreads it as far again, so the reach is ``4(2^(levels−1) − 1) < 2^(levels+1)``."""
    return 2 ** (max(int(levels), 1) + 1)


def laplacian_pyramid_blend(fg: torch.Tensor, bg: torch.Tensor, mask: torch.Tensor, levels: int = 5) -> torch.Tensor:
    """Burt–Adelson multiband blend: each Laplacian band of fg and bg is mixed with the matching level of the
    mask's gaussian pyramid, then the pyramid is collapsed.

    Written as ``bg + collapse(G_k(mask) · L_k(fg − bg))``: the Laplacian pyramid is linear and collapses
    exactly, so this equals the classic formula, and where the mask is 0 in a neighbourhood wider than
    :func:`pyramid_support_radius` every term is an exact zero, so the output equals ``bg`` bit for bit
    (the product's "pixels well outside the face stay as in the target"). Any size works (no padding to a
    power of two); the number of levels is capped so that the top level is at least 2 px.

    Args:
        fg, bg: ``(B, C, H, W)`` floating images.
        mask: ``(B, 1, H, W)`` in ``[0, 1]`` (1 = fg).
        levels: number of pyramid levels (>= 1; 1 = plain feather blend).

    Returns:
        ``(B, C, H, W)``, dtype/device of ``bg``.
    """
    _check_blend_args(fg, bg, mask)
    if levels < 1:
        raise InvalidOption(f"levels must be >= 1, got {levels}", hint="use 3..6")
    h, w = bg.shape[-2:]
    levels = min(int(levels), max(1, int(math.log2(max(min(h, w), 2)))))  # top level >= ~2 px
    diff = fg.to(bg.dtype) - bg
    m = mask.to(bg.dtype)
    gauss: list[torch.Tensor] = [diff]
    masks: list[torch.Tensor] = [m]
    for _ in range(levels - 1):
        gauss.append(_down(gauss[-1]))
        masks.append(_down(masks[-1]))
    # collapse from the top: the top band is the coarsest gaussian level (the masks broadcast over the channels)
    acc = gauss[-1] * masks[-1]
    for k in range(levels - 2, -1, -1):
        size = (gauss[k].shape[-2], gauss[k].shape[-1])
        band = gauss[k] - _up(gauss[k + 1], size)
        acc = _up(acc, size) + band * masks[k]
    return bg + acc


def _neighbour_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum of the 4 neighbours with a replicate border (a Neumann boundary at the image edge)."""
    p = F.pad(x, (1, 1, 1, 1), mode="replicate")
    return p[..., :-2, 1:-1] + p[..., 2:, 1:-1] + p[..., 1:-1, :-2] + p[..., 1:-1, 2:]


def _smooth(e: torch.Tensor, rhs: torch.Tensor, inside: torch.Tensor, sweeps: int, omega: float = 0.8) -> torch.Tensor:
    """Weighted-Jacobi sweeps for ``Σ_nb e − 4e = rhs`` on ``inside``, with ``e = 0`` elsewhere."""
    zero = torch.zeros((), device=e.device, dtype=e.dtype)
    for _ in range(sweeps):
        e = torch.where(inside, (1 - omega) * e + omega * 0.25 * (_neighbour_sum(e) - rhs), zero)
    return e


def _v_cycle(rhs: torch.Tensor, inside: torch.Tensor, min_size: int, sweeps: int = 2) -> torch.Tensor:
    """One multigrid V-cycle for ``L e = rhs`` on ``inside`` with ``e = 0`` outside (L = 5-point Laplacian).

    Restriction averages 2×2 children (a coarse cell is inside if all children are); the coarse equation is
    ``L_c e_c = 4·rhs_c`` (the grid spacing doubles); prolongation is bilinear."""
    if min(rhs.shape[-2:]) <= min_size:
        return _smooth(torch.zeros_like(rhs), rhs, inside, _COARSE_SWEEPS)
    e = _smooth(torch.zeros_like(rhs), rhs, inside, sweeps)
    zero = torch.zeros((), device=rhs.device, dtype=rhs.dtype)
    res = torch.where(inside, rhs - (_neighbour_sum(e) - 4 * e), zero)
    res_c = F.avg_pool2d(res, 2, ceil_mode=True)
    # A coarse cell is inside only if all its children are: a coarse domain that reaches past the fine one
    # over-corrects near the border and the cycle diverges (measured); this one converges.
    inside_c = -F.max_pool2d(-inside.to(rhs.dtype), 2, ceil_mode=True) > 0
    e_c = _v_cycle(4 * res_c, inside_c, min_size, sweeps)
    e = e + torch.where(inside, F.interpolate(e_c, size=rhs.shape[-2:], mode="bilinear", align_corners=False), zero)
    return _smooth(e, rhs, inside, sweeps)


# Pixels with a fainter mask are not solved for (f = bg there, so out = bg up to mask·0): a 1e-14 tail from
# bilinear resampling would otherwise move the solve domain's border by a pixel between near-identical calls.
_POISSON_MIN_MASK = 1.0 / 512.0
_COARSE_SWEEPS = 24  # converges the coarsest (<= 4 px) grid


def _membrane(d: torch.Tensor, inside: torch.Tensor, cycles: int, min_size: int = 4) -> torch.Tensor:
    """Harmonic interpolation (Laplace membrane) of ``d`` into the region ``inside`` (N,C,H,W): ``L h = 0`` on
    ``inside``, ``h = d`` elsewhere. Starts from a pull-push fill (known values averaged down a pyramid and
    interpolated back up), then applies ``cycles`` multigrid V-cycles to the correction."""
    zero = torch.zeros((), device=d.device, dtype=d.dtype)
    known_w = (~inside).to(d.dtype)
    vals, ws = [d * known_w], [known_w]
    while min(vals[-1].shape[-2:]) > 1:
        vals.append(F.avg_pool2d(vals[-1], 2, ceil_mode=True))
        ws.append(F.avg_pool2d(ws[-1], 2, ceil_mode=True))
    fill = vals[-1] / ws[-1].clamp_min(1e-12)
    for v, w in zip(reversed(vals[:-1]), reversed(ws[:-1]), strict=True):
        up = F.interpolate(fill, size=v.shape[-2:], mode="bilinear", align_corners=False)
        fill = torch.where(w > 0, v / w.clamp_min(1e-12), up)
    h = torch.where(inside, fill, d)
    for _ in range(cycles):
        res = torch.where(inside, -(_neighbour_sum(h) - 4 * h), zero)
        h = h + _v_cycle(res, inside, min_size)
    return h


def poisson_blend(
    fg: torch.Tensor, bg: torch.Tensor, mask: torch.Tensor, *, iterations: int = 4, crop_to_mask: bool = True
) -> torch.Tensor:
    """Gradient-domain (Poisson) blend, the seamless clone of Pérez et al.

    Inside ``Ω = {mask > 1/512}`` it solves ``Δf = Δfg`` with ``f = bg`` on the pixels just outside Ω, written as
    ``f = fg + h`` with ``h`` the harmonic membrane interpolating ``bg − fg`` from the border. ``h`` is found on
    the device by multigrid: a pull-push fill as the start, then ``iterations`` V-cycles (weighted Jacobi,
    2+2 sweeps per level), so the cost is bounded and known. The result is composited with the (soft) mask:
    ``out = bg + mask·(f − bg)`` — exactly ``bg`` where ``mask == 0``. The work is restricted to the union
    bounding box of ``mask > 0`` over the batch (one host sync) when ``crop_to_mask``.

    Args:
        fg, bg: ``(B, C, H, W)`` floating images (any range).
        mask: ``(B, 1, H, W)`` in ``[0, 1]``; ``mask > 1/512`` is the solve region.
        iterations: number of multigrid V-cycles (>= 1); each cuts the error by ~5-10×, see the tests.
        crop_to_mask: solve only inside the union bbox of the mask (+1 px for the boundary condition).

    Returns:
        ``(B, C, H, W)``, dtype/device of ``bg``. Gradients flow to fg, bg and mask (not through ``mask > 0``).
    """
    _check_blend_args(fg, bg, mask)
    if iterations < 1:
        raise InvalidOption(f"iterations must be >= 1, got {iterations}", hint="use 2..8 V-cycles")
    fg = fg.to(bg.dtype)
    m = mask.to(bg.dtype)
    if crop_to_mask:
        rows = (m > _POISSON_MIN_MASK).any(dim=3).any(dim=1).any(dim=0)
        cols = (m > _POISSON_MIN_MASK).any(dim=2).any(dim=1).any(dim=0)
        if not bool(rows.any()):
            return bg.clone()
        ys = torch.nonzero(rows).flatten()
        xs = torch.nonzero(cols).flatten()
        y0, y1 = max(int(ys[0]) - 1, 0), min(int(ys[-1]) + 2, bg.shape[-2])
        x0, x1 = max(int(xs[0]) - 1, 0), min(int(xs[-1]) + 2, bg.shape[-1])
        inner = poisson_blend(
            fg[..., y0:y1, x0:x1],
            bg[..., y0:y1, x0:x1],
            m[..., y0:y1, x0:x1],
            iterations=iterations,
            crop_to_mask=False,
        )
        top = bg[..., :y0, :]
        bottom = bg[..., y1:, :]
        middle = torch.cat([bg[..., y0:y1, :x0], inner, bg[..., y0:y1, x1:]], dim=-1)
        return torch.cat([top, middle, bottom], dim=-2)
    inside = (m > _POISSON_MIN_MASK).expand_as(bg)
    # the multigrid residuals lose too much in half precision: solve in float32, keep bg exact outside
    wd = torch.float32 if bg.dtype in (torch.float16, torch.bfloat16) else bg.dtype
    d = bg.to(wd) - fg.to(wd)
    h = _membrane(d, inside, iterations)
    return bg + m * (fg.to(wd) + h - bg.to(wd)).to(bg.dtype)


BlendMode = Literal["feather", "laplacian", "poisson"]
_LAPLACIAN_FADE = 0.05
_DETAIL_SIGMA = 1.5  # px, the blur of the lost detail's energy (paste_back_region's gate)


def paste_back(
    frame: torch.Tensor,
    crop: torch.Tensor,
    crop_mask: torch.Tensor,
    M: torch.Tensor,  # noqa: N803
    *,
    blend: BlendMode = "feather",
    levels: int = 4,
    iterations: int = 4,
) -> torch.Tensor:
    """Warp a processed crop and its mask back into the frame and blend them in.

    The crop and mask are warped with ``M⁻¹`` (bilinear, zeros outside the crop) into the union bounding box
    (over the batch) of the crop's footprint in the frame only — one host sync for the box unless ``M`` is on the
    host — and blended there with ``blend``. Pixels where the warped mask is 0 stay EXACTLY equal to ``frame``
    (bitwise); pixels outside the box are copied untouched. With ``"laplacian"`` the box is padded by the pyramid's
    reach and snapped to its coarsest grid (so the result does not depend on the batch), and the blend fades to
    the frame where the mask is below 0.05 — give a feathered mask so that this tail has some width.

    Args:
        frame: ``(B, C, H, W)`` floating frames.
        crop: ``(B, C, h, w)`` floating crops (e.g. the swapped face), same value range as ``frame``.
        crop_mask: ``(B, 1, h, w)`` in ``[0, 1]``, where the crop replaces the frame.
        M: ``(B, 2, 3)`` matrix mapping frame pixel coords → crop pixel coords (the one used to cut the crop);
            any device (a host ``M`` saves the device→host sync for the box).
        blend: ``"feather"`` (alpha), ``"laplacian"`` (pyramid with ``levels``) or ``"poisson"`` (``iterations``).

    Returns:
        ``(B, C, H, W)`` new tensor, dtype/device of ``frame``.
    """
    check_shape(frame, ["B", "C", "H", "W"], "frame")
    index = torch.arange(frame.shape[0], device=frame.device)
    region, (x0, y0, x1, y1) = paste_back_region(frame, index, crop, crop_mask, M, blend=blend, levels=levels,
                                                 iterations=iterations)
    out = frame.clone()
    if region is not None:
        out[..., y0:y1, x0:x1] = region
    return out


def paste_back_region(
    frames: torch.Tensor,
    frame_index: torch.Tensor,
    crop: torch.Tensor,
    crop_mask: torch.Tensor,
    M: torch.Tensor,  # noqa: N803
    *,
    blend: BlendMode = "feather",
    levels: int = 4,
    iterations: int = 4,
    base: torch.Tensor | None = None,
    keep: torch.Tensor | None = None,
    detail_limit: float = math.inf,
    support: tuple[int, int, int, int] | None = None,
) -> tuple[torch.Tensor | None, tuple[int, int, int, int]]:
    """:func:`paste_back` without copying whole frames: the blended box only, for the caller to write in place.

    Args:
        frames: ``(N, C, H, W)`` floating frames (read only).
        frame_index: ``(B,)`` long, the frame of each crop (distinct within one call).
        crop, crop_mask, M, blend, levels, iterations: as :func:`paste_back`, batch ``B``.
        base, keep: the crops as cut from the frames (``(B, C, h, w)``, what ``crop`` was made from) and ``(B, 1,
            h, w)`` weights in ``[0, 1]``, or None: keep the frame's own detail that the crop's sampling lost (a
            face larger than the crop, the bilinear round trip's blur): ``keep · g · (frame − warp(base))`` is
            added to the foreground, with the gate ``g = (l² / (l² + E))²``, ``l = detail_limit`` and ``E`` the
            local energy of that lost detail (blurred, sigma 1.5 px): grain and pores (small ``E``) pass, the
            strong edges of what the crop replaced (a glasses rim) do not come back.
        support: ``(y0, y1, x0, x1)`` crop rows and columns outside which every ``crop_mask`` is 0 (e.g. the face's
            window in a crop with a margin), or None: only the footprint of that window (grown by the bilinear
            reach and the detail gate's blur) is blended. The frame keeps its pixels elsewhere, as it does where
            the warped mask is 0, and the pixels inside get what the whole crop gives (up to float rounding).

    Returns:
        ``(region, (x0, y0, x1, y1))``: ``region`` ``(B, C, y1 − y0, x1 − x0)`` is what
        ``frames[frame_index, :, y0:y1, x0:x1]`` becomes (pixels with a zero warped mask bit-identical), or
        ``None`` when the crops fall outside the frames.
    """
    check_shape(frames, ["N", "C", "H", "W"], "frames")
    check_shape(crop, ["B", "C", "H", "W"], "crop")
    check_shape(crop_mask, ["B", "1", "H", "W"], "crop_mask")
    check_shape(M, ["B", "2", "3"], "M")
    if (crop.shape[1] != frames.shape[1] or crop_mask.shape[-2:] != crop.shape[-2:] or M.shape[0] != crop.shape[0]
            or frame_index.shape != (crop.shape[0],)):
        raise ShapeError(
            f"frames {tuple(frames.shape)}, frame_index {tuple(frame_index.shape)}, crop {tuple(crop.shape)}, "
            f"crop_mask {tuple(crop_mask.shape)} and M {tuple(M.shape)} disagree (one index and matrix per crop, "
            "same channels; mask of the crop's size)"
        )
    if blend not in ("feather", "laplacian", "poisson"):
        raise InvalidOption(f"unknown blend {blend!r}", hint="use feather, laplacian or poisson")
    big_h, big_w = frames.shape[-2:]
    ch, cw = crop.shape[-2:]
    wd = torch.float32 if frames.dtype in (torch.float16, torch.bfloat16) else frames.dtype
    crop_to_frame = invert_affine(M.to(wd))
    corners = torch.tensor(
        [[-0.5, -0.5], [cw - 0.5, -0.5], [cw - 0.5, ch - 0.5], [-0.5, ch - 0.5]], device=M.device, dtype=wd
    ).expand(crop.shape[0], 4, 2)
    fc = transform_points(crop_to_frame, corners)
    lo = fc.amin(dim=(0, 1)).floor()
    hi = fc.amax(dim=(0, 1)).ceil()
    if support is not None:
        # a frame pixel's warped mask is non-zero only if a bilinear neighbour of its crop position is in the
        # window: crop positions in [x0 − 1, x1] × [y0 − 1, y1]
        sy0, sy1, sx0, sx1 = support
        inner = torch.tensor([[sx0 - 1.0, sy0 - 1.0], [sx1, sy0 - 1.0], [sx1, sy1], [sx0 - 1.0, sy1]], device=M.device,
                             dtype=wd).expand(crop.shape[0], 4, 2)
        fi = transform_points(crop_to_frame, inner)
        # the detail gate's blur (sigma 1.5: 5 px) must see what it sees in the whole footprint
        grow = 1 + (math.ceil(3 * _DETAIL_SIGMA) if base is not None and keep is not None else 0)
        lo = torch.maximum(lo, fi.amin(dim=(0, 1)).floor() - grow)
        hi = torch.minimum(hi, fi.amax(dim=(0, 1)).ceil() + grow)
    box = torch.cat([lo, hi]).tolist()  # the one host sync (none when M is on the host)
    x0, y0, x1, y1 = int(box[0]), int(box[1]), int(box[2]) + 1, int(box[3]) + 1
    if blend == "laplacian":
        # Pad the box by the pyramid's reach and snap its origin to the coarsest grid: then the result does not
        # depend on the box (the same with a union box over the batch as item by item, or on the whole frame).
        grid = 2 ** (max(int(levels), 1) - 1)
        reach = pyramid_support_radius(levels)
        x0, y0 = (x0 - reach) // grid * grid, (y0 - reach) // grid * grid
        x1, y1 = x1 + reach, y1 + reach
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, big_w), min(y1, big_h)
    if x1 <= x0 or y1 <= y0:
        return None, (x0, y0, x1, y1)
    shift = torch.tensor([[1.0, 0.0, -x0], [0.0, 1.0, -y0]], device=M.device, dtype=wd).expand_as(crop_to_frame)
    crop_to_box = compose_affine(shift, crop_to_frame)  # where M is: warp_affine copies it once, asynchronously
    size = (y1 - y0, x1 - x0)
    # crop, mask (and base, keep) share the map: ONE grid and grid_sample for all of them (channels are sampled
    # independently, so each gets what its own warp gives), each cast back to its own dtype as its own warp did
    parts = [crop, crop_mask] + ([base, keep] if base is not None and keep is not None else [])
    warped = warp_affine(torch.cat([x.to(wd) for x in parts], 1), crop_to_box, size)
    fg_w, m_w, *detail = warped.split([x.shape[1] for x in parts], 1)
    fg = fg_w.to(crop.dtype).to(frames.dtype)
    # bilinear weights are convex, so only rounding can leave [0, 1]; no clamp at 0 (kink exactly where mask = 0)
    m = m_w.to(crop_mask.dtype).clamp(max=1.0).to(frames.dtype)
    bg = frames[frame_index.to(frames.device), :, y0:y1, x0:x1]
    if base is not None and keep is not None:
        lost = bg - detail[0].to(base.dtype).to(frames.dtype)
        if math.isfinite(detail_limit):
            # a gate on the local energy, not a clip: a clipped edge still shows as a faint line (looked at: the
            # target's glasses rims came back on a swapped face with a tanh clip at 0.03)
            energy = gaussian_blur(lost.square().mean(1, keepdim=True), _DETAIL_SIGMA)
            lost = lost * (detail_limit**2 / (detail_limit**2 + energy)) ** 2
        fg = fg + detail[1].to(keep.dtype).to(frames.dtype) * lost
    if blend == "feather":
        region = feather_blend(fg, bg, m)
    elif blend == "laplacian":
        region = laplacian_pyramid_blend(fg, bg, m, levels=levels)
        # The pyramid reaches past the mask, but the contract is that mask == 0 keeps the frame bit for bit.
        # A hard cut at mask > 0 would leave a visible step where the coarse bands spread; fading the blend out
        # over the mask's faint tail (0 < mask < _LAPLACIAN_FADE) keeps it continuous and exact at 0.
        fade = (m / _LAPLACIAN_FADE).clamp(max=1.0)
        region = bg + fade * (region - bg)
    else:
        region = poisson_blend(fg, bg, m, iterations=iterations)
    return region, (x0, y0, x1, y1)
