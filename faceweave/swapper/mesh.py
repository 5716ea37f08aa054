"""The built-in swapper: landmark-driven texture transfer, no trained weights (DESIGN.md §3).

For each target face: build the output geometry (the target's FaceMesh, optionally moved part of the way toward the
source's face shape), warp the source's face texture onto it with one batched piecewise-affine ``grid_sample``, match
colour and lighting to the target, keep the target's mouth interior/eyes if asked, and blend into the target through a
feathered, eroded face-hull mask (Laplacian pyramid, Poisson or feather). Everything is batched over faces and follows
the device/dtype of the frames.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, fields, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch.profiler import record_function

from faceweave.analysis.face import Face
from faceweave.cuda_graphs import GraphCache, GraphPool
from faceweave.device import to_device_async
from faceweave.errors import InvalidOption
from faceweave.models import topology
from faceweave.models.tflite_graph import cuda_batch_bucket
from faceweave.ops.blend import (
    feather_blend,
    laplacian_pyramid_blend,
    paste_back_region,
    poisson_blend,
    pyramid_support_radius,
)
from faceweave.ops.colour import (
    apply_lab_transfer,
    chroma_floor,
    edge_colour_correction,
    lab_to_rgb,
    lab_transfer_coefficients,
    masked_mean_std,
    match_fine_detail,
    rgb_to_lab,
    transfer_shading,
)
from faceweave.ops.crops import square_boxes as _square_box
from faceweave.ops.filters import area_window, gaussian_blur_traced
from faceweave.ops.geometry import transform_points
from faceweave.ops.masks import erode_mask, feather_mask, polygon_mask
from faceweave.ops.masks import mask_window as _mask_window
from faceweave.ops.masks import pad_polygons as _pad_polygons
from faceweave.ops.warp import piecewise_affine_warp, triangle_blocks, warp_affine
from faceweave.settings import BlendMode, ColourMode, SwapSettings
from faceweave.swapper.detail import band_sigmas, restore_in_frame
from faceweave.swapper.geometry import (
    CROP_MARGIN,
    GRAIN_MAX_SIGMA,
    GRAIN_MIN_MAGNIFICATION,
    block_capacity,
    face_size_in_crop,
    fixed_texture_box,
    output_geometry,
)
from faceweave.swapper.geometry import crop_matrix as _crop_matrix
from faceweave.swapper.geometry import crop_size as _crop_size
from faceweave.swapper.geometry import grain_parameters as _grain_parameters
from faceweave.swapper.geometry import magnifications as _magnifications
from faceweave.swapper.geometry import texture_box as _texture_box
from faceweave.swapper.hairline import exclude_source_hair, fill_source_hair, gate_textures
from faceweave.swapper.occlusion import occlusion_mask

#: Side of the aligned source texture crop. 512 keeps the detail of typical portraits (inswapper works at 128).
SOURCE_TEXTURE_SIZE = 512
#: Side of the grid (over the working crop) on which the masks and the colour statistics are built: the masks are
#: feathered over several pixels and the statistics are means over the skin, so a modest fixed grid gives the same
#: result as the crop's native resolution for a fraction of the work (crops up to MASK_SIZE use their own size).
MASK_SIZE = 160
#: Lighting transfer keeps the target's shading at scales above this fraction of the face size; finer shading is
#: facial structure (identity), which must come from the source.
SHADING_SIGMA = 0.4
#: Edge colour match (ops.colour.match_edge_colour): the ring's depth inside the outline and the correction's sigma,
#: fractions of the face size. Chroma only: with lightness too the face outline's shading (face shape) moved toward
#: the target's (tune: colour_de 1.47 instead of 2.19, but identity distance to the source 0.453 instead of 0.428).
EDGE_RING = 0.10
EDGE_SIGMA = 0.03
#: Bound of the colour transfer's a*/b* gain: an overexposed target's clipped red channel widens its skin's a*
#: spread (grace_hopper bright 13.4, plain 6.5), and a gain of 3.8 turned obama's beard shadow cyan (docs/quality.md).
CHROMA_MAX_GAIN = 2.0
#: Fine detail (ops.colour.match_fine_detail): the band's sigma (crop px) and its largest gain (3: about what three
#: bilinear resamplings take); the paste-back keeps the target's lost detail below this local amplitude (0–1 units).
DETAIL_SIGMA = 1.0
DETAIL_MAX_GAIN = 3.0
KEEP_DETAIL_LIMIT = 0.03

@dataclass(frozen=True)
class MeshSwapOptions:
    """The built-in swapper's options: the ten :class:`~faceweave.settings.SwapSettings` fields it reads (see
    there for their meaning and ranges), taken once per engine with :meth:`from_settings`."""

    shape_transfer: float
    keep_mouth: bool
    keep_eyes: bool
    colour_transfer: ColourMode
    blend: BlendMode
    mask_erosion: float
    mask_feather: float
    occlusion: bool = False
    detail_restore: bool = False
    hairline_fill: bool = False

    @classmethod
    def from_settings(cls, settings: SwapSettings) -> MeshSwapOptions:
        return cls(**{f.name: getattr(settings, f.name) for f in fields(cls)})  # the same names in both


@dataclass(frozen=True)
class SourceTexture:
    """A source face prepared once per job.

    Attributes:
        image: ``(1, 3, S, S)`` float ``[0, 1]`` RGB, the face cropped (axis-aligned) with margin, ``S = 512``.
        points: ``(468, 2)`` float32 FaceMesh landmarks in ``image``'s pixel coordinates, kept on the host (the
            swap's geometry is computed there; only ``image`` goes to the device).
        face: the source face in its original image (keeps ``embedding`` when computed).
        scale: texture pixels per source-image pixel (> 1: the texture was magnified).
        lab: ``image`` in CIELAB, ``(1, 3, S, S)`` float32 (see :func:`~faceweave.ops.colour.rgb_to_lab`): the
            colour transfer warps it instead of converting every warped face.
        filled: ``(image, lab)`` with the fringe filled (``hairline_fill``, :mod:`~faceweave.swapper.hairline`), taken
            per target by how far its forehead is skin; None when the source has no fringe or the fill is off.
    """

    image: torch.Tensor
    points: torch.Tensor
    face: Face
    scale: float = 1.0  # texture pixels per source-image pixel (>1: the texture was magnified)
    lab: torch.Tensor | None = None  # ``image`` in CIELAB (float32), converted once for the colour transfer
    filled: tuple[torch.Tensor, torch.Tensor] | None = None

    def to(self, device: torch.device | str) -> SourceTexture:
        """A copy with the images on ``device``; ``points`` stay on the host."""
        lab = None if self.lab is None else self.lab.to(device)
        filled = None if self.filled is None else (self.filled[0].to(device), self.filled[1].to(device))
        return replace(self, image=self.image.to(device), points=self.points.cpu(), lab=lab, filled=filled)


def prepare_source_texture(image: torch.Tensor, face: Face, size: int = SOURCE_TEXTURE_SIZE, *,
                           hairline_fill: bool = False) -> SourceTexture:
    """Crop the source face once so every later warp samples a small, fixed-size texture.

    Args:
        image: ``(1, 3, H, W)`` float ``[0, 1]`` RGB, the source image.
        face: a face of ``image`` with ``landmarks``.
        hairline_fill: also keep the texture with the source's hair above its eyebrows (a fringe) replaced by its
            own forehead skin (:func:`fill_source_hair`), which a bald or high-forehead target takes (``filled``).
    """
    if face.landmarks is None:
        raise InvalidOption("source face has no landmarks", hint="run face_landmarks before preparing the source")
    pts = face.landmarks[None, :, :2].to(image.device, torch.float32)
    m = _crop_matrix(_square_box(pts, CROP_MARGIN), size)
    crop = warp_affine(image.float(), m, (size, size), padding="border").to(image.dtype)
    points = transform_points(m, pts)[0].cpu()
    lab = rgb_to_lab(crop.float())
    filled = fill_source_hair(crop.float(), lab, points) if hairline_fill else None
    filled = None if filled is None else (filled[0].to(image.dtype), filled[1])  # None: no fringe to fill
    return SourceTexture(image=crop, points=points, face=face, scale=float(m[0, 0, 0]), lab=lab, filled=filled)


def _region_masks(pts: torch.Tensor, target_pts: torch.Tensor, size: int, options: MeshSwapOptions,
                  coverage: torch.Tensor, face_size: float, box: tuple[int, int, int, int] | None = None
                  ) -> tuple[torch.Tensor, ...]:
    """Blend mask, colour-statistics (skin) mask, the grown eyes/brows/lips (channel 0; channel 1 the lips alone) and
    the face eroded by :data:`EDGE_RING`, ``(F, 1 or 2, R, R)``, on a ``R = min(size, MASK_SIZE)`` grid spanning the
    ``size × size`` crop.

    Args:
        pts, target_pts: ``(F, 468, 2)`` output and target geometry in crop pixels (float32, any device).
        size: the crop's side.
        coverage: ``(F, 1, R, R)`` the warped texture's coverage, resampled to the mask grid.
        face_size: the faces' mean size in crop pixels (radii and feathering follow it).
        box: ``(y0, y1, x0, x1)`` crop pixels holding every ``pts`` with :data:`TEXTURE_PAD` (the texture box), or
            None: the outlines of ``pts`` are rasterised in its window of the grid only.

    Radii and sigmas are given in crop pixels and scaled to the grid (fractional radii are honoured); the eyes,
    brows and lips are grown from their outlines (:func:`polygon_mask` ``dilate``) rather than by a max filter,
    so a closed mouth thinner than a grid pixel keeps its area. The masks are feathered or only select
    statistics, so upsampling them bilinearly to the crop gives what a build at the crop's resolution gives (at
    480² the grid has 9× fewer pixels).
    """
    res = min(size, MASK_SIZE)
    sc = res / size
    # crop pixel centres → grid pixel centres (the convention of F.interpolate, align_corners=False)
    g_pts, g_tgt = (pts + 0.5) * sc - 0.5, (target_pts + 0.5) * sc - 0.5

    def outline(p: torch.Tensor, idx: Sequence[int]) -> torch.Tensor:
        return p[:, _index(tuple(idx), p.device)]

    # the texture box's pad (12 crop px) holds the features' growth (4) and a grid pixel (at most 3.2 crop px)
    window = None if box is None else (math.floor(box[0] * sc), math.ceil(box[1] * sc) + 1,
                                       math.floor(box[2] * sc), math.ceil(box[3] * sc) + 1)
    face = polygon_mask(outline(g_pts, topology.FACE_OVAL), (res, res), window=window) * coverage
    # Colour statistics from skin only: eyes, brows and lips (grown by 2 + 2 crop pixels: the dilation and the
    # erosion of the skin mask) would bias the mean and std; and only where the target's own face is too: past its
    # outline (shape transfer widens the face) the target is background or hair, and its colour became patches.
    features = [outline(g_pts, idx) for idx in (topology.LEFT_EYE, topology.RIGHT_EYE, topology.LEFT_EYEBROW,
                                                  topology.RIGHT_EYEBROW, topology.LIPS_OUTER)]
    n_feat = len(features)
    # statistics only: 2 scanlines per row are plenty (4 cost 23 ms per 8 faces at 160², 2 half that)
    grown = polygon_mask(_pad_polygons(features).flatten(0, 1), (res, res), dilate=4 * sc, subrows=2, window=window)
    parts = grown.view(-1, n_feat, res, res)
    grown = torch.cat([parts.sum(1, keepdim=True).clamp(0, 1), parts[:, -1:]], 1)  # all features; the lips
    target_face = polygon_mask(outline(g_tgt, topology.FACE_OVAL), (res, res), window=window)
    stats = erode_mask(face, 2 * sc) * erode_mask(target_face, 2 * sc) * (1 - grown[:, :1])

    erosion = max(1, round(face_size * options.mask_erosion))  # crop pixels, as at full resolution
    mask = erode_mask(face, erosion * sc)
    keep_parts: list[tuple[torch.Tensor, float]] = []
    if options.keep_mouth:
        keep_parts.append((outline(g_tgt, topology.LIPS_INNER), max(1, round(face_size * 0.01)) * sc))
    if options.keep_eyes:
        r = max(1, round(face_size * 0.02)) * sc
        keep_parts += [(outline(g_tgt, topology.LEFT_EYE), r), (outline(g_tgt, topology.RIGHT_EYE), r)]
    for outline_pts, radius in keep_parts:
        mask = mask * (1 - polygon_mask(outline_pts, (res, res), dilate=radius))
    sigma = max(0.5, face_size * options.mask_feather / 2 * sc)
    mask = feather_mask(mask, sigma) * feather_mask(erode_mask(face, max(1, erosion // 2) * sc), sigma / 2)
    return mask, stats, grown, erode_mask(face, EDGE_RING * face_size * sc)


def _restore_grain(warped: torch.Tensor, target: torch.Tensor, skin: torch.Tensor, grain: torch.Tensor | None
                   ) -> torch.Tensor:
    """Add the target's finest skin grain where the source texture was magnified (a small source face on a large
    target face comes out smooth and waxy, and its blur makes the blend border stand out).

    Only frequencies above the magnification's own blur are taken (sigma ≈ 0.5 × magnification, see
    :func:`_grain_parameters`), so the target's features (eyes, wrinkles at face scale) do not leak back;
    ``(F, 3, S, S)`` in and out. ``grain``: ``(F, 2)`` float32 on the device, each face's blur sigma and weight (0:
    unchanged), or None for no grain. The sigmas are a tensor so the kernels do not depend on them (CUDA graphs).
    """
    if grain is None:
        return warped
    detail = target - gaussian_blur_traced(target, grain[:, 0], GRAIN_MAX_SIGMA)
    return warped + grain[:, 1].to(warped.dtype).view(-1, 1, 1, 1) * skin * detail


def working_crop_size(items: Sequence[tuple[int, Face, SourceTexture]], options: MeshSwapOptions) -> int:
    """The crop size :func:`swap_faces` works at for ``items``: its largest face's (see ``SwapEngine.swap_key``)."""
    tgt = torch.stack([f.landmarks[:, :2] for _, f, _ in items]).to("cpu", torch.float32)  # type: ignore[index]
    src_pts = torch.stack([s.points for _, _, s in items]).to("cpu", torch.float32)
    return _crop_size(_square_box(output_geometry(tgt, src_pts, options.shape_transfer), CROP_MARGIN))


def swap_in_crops(
    target_crops: torch.Tensor,
    texture: torch.Tensor,
    faces: torch.Tensor,
    *,
    options: MeshSwapOptions,
    box: tuple[int, int, int, int],
    max_blocks: int | None = None,
    grain: bool = True,
    read_masks: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The swap inside the face crops: warp the source texture onto the output mesh, build the masks, match colour,
    lighting and grain, and blend. Shapes and kernels depend only on the arguments' shapes, ``box`` and the options
    when ``max_blocks`` is given, and nothing waits for the device, so a CUDA graph can replay it.

    Args:
        target_crops: ``(F, 3, S, S)`` float ``[0, 1]`` RGB target face crops (any float dtype).
        texture: ``(F, 3, T, T)`` each face's source texture: CIELAB float32 with ``colour_transfer="lab"``, else RGB
            in the crops' dtype.
        faces: ``(F, 12·468 + 2)`` float32: source points (texture pixels), output and target meshes (crop pixels),
            each ``(468, 2)`` flattened, then the grain's sigma and weight
            (:func:`~faceweave.swapper.geometry.grain_parameters`).
        options: the swapper's options (all but ``shape_transfer`` matter here; ``blend="poisson"`` waits for the
            device).
        box: ``(y0, y1, x0, x1)`` the texture box, holding every output mesh plus :data:`TEXTURE_PAD`.
        max_blocks: the rasteriser's fixed block count (None: the exact count, one device sync).
        grain: restore the target's grain (False skips the step: the caller knows its weight is 0).
        read_masks: the host may read the masks' values (free on the CPU; not in a CUDA graph): the Laplacian blend
            then runs on the window around them only (the same values).

    Returns:
        ``(composite, mask, keep)``: ``(F, 3, S, S)`` blended crops (crops' dtype, ``[0, 1]``), ``(F, 1, S, S)`` the
        blend mask and ``(F, 1, S, S)`` the paste-back's ``keep`` (:func:`~faceweave.ops.blend.paste_back_region`).
    """
    dev, dt = target_crops.device, target_crops.dtype
    size = target_crops.shape[-1]
    n_pts = (faces.shape[1] - 2) // 6
    src_d, geo_d, tgt_d = (faces[:, k * 2 * n_pts : (k + 1) * 2 * n_pts].reshape(-1, n_pts, 2) for k in range(3))
    face_px = face_size_in_crop(size)
    ry0, ry1, rx0, rx1 = box
    inner = (slice(ry0, ry1), slice(rx0, rx1))
    with record_function("swap.warp"):
        # The texture work (warp, colour, lighting, grain) only matters inside the output mesh: it runs on the
        # texture box, about half the crop (the crop's margin serves the blend).
        geo_in = torch.stack([geo_d[..., 0] - rx0, geo_d[..., 1] - ry0], -1)
        # coordinates stay float32 whatever the image dtype (see ops/warp.py)
        warped_in, cov_in = piecewise_affine_warp(texture, src_d, geo_in, _triangles(dev), (ry1 - ry0, rx1 - rx0),
                                                  max_blocks=max_blocks)

    with record_function("swap.mask"):
        res = min(size, MASK_SIZE)
        # Outside the texture box the texture, its coverage and what the colour steps measure are 0: resample to the
        # mask grid only the whole periods of the area resampling around the box (the same values, for about half
        # the work), rows ay0:ay1 / columns ax0:ax1 of the crop onto gy0:gy1 / gx0:gx1 of the grid.
        ay0, ay1, gy0, gy1 = area_window(size, res, ry0, ry1)
        ax0, ax1, gx0, gx1 = area_window(size, res, rx0, rx1)
        grid_win = (slice(gy0, gy1), slice(gx0, gx1))

        def to_grid(x: torch.Tensor) -> torch.Tensor:
            """Crop window ``ay0:ay1, ax0:ax1`` → grid window ``gy0:gy1, gx0:gx1`` (area)."""
            return x if res == size else F.interpolate(x, size=(gy1 - gy0, gx1 - gx0), mode="area")

        def in_window(x_box: torch.Tensor) -> torch.Tensor:
            """A texture-box image in the crop window around it, 0 outside the box."""
            out = x_box.new_zeros(*x_box.shape[:2], ay1 - ay0, ax1 - ax0)
            out[..., ry0 - ay0 : ry1 - ay0, rx0 - ax0 : rx1 - ax0] = x_box
            return out

        cov_small = cov_in.new_zeros(cov_in.shape[0], 1, res, res, dtype=torch.float32)
        cov_small[..., grid_win[0], grid_win[1]] = to_grid(in_window(cov_in.float()))
        mask, stats, features, inner_face = _region_masks(geo_d, tgt_d, size, options, cov_small, face_px, box)
        if res != size:
            mask = F.interpolate(mask, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
            skin = F.interpolate(stats, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
            features = F.interpolate(features, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
        else:
            skin = stats
        occ = None
        if options.occlusion:
            # what covers the target's face keeps the target; it also leaves the colour statistics
            occ = occlusion_mask(target_crops, skin, (mask > 0).float(), features[:, :1], face_px=face_px,
                                 lips=features[:, 1:]).float()
            skin = skin * (1 - occ)
            stats = stats * (1 - (occ if res == size else F.interpolate(occ, size=(res, res), mode="area")))
        mask, skin, stats = mask.to(dt), skin.to(dt), stats.to(dt)
    with record_function("swap.colour"):
        target_in, skin_in = target_crops[..., inner[0], inner[1]], skin[..., inner[0], inner[1]]
        if options.colour_transfer == "lab":
            # statistics on the mask grid (the skin lies inside the box), the transfer only inside the box
            stats_win = stats[..., grid_win[0], grid_win[1]].float()
            ref_lab = rgb_to_lab(to_grid(target_crops[..., ay0:ay1, ax0:ax1].float()))
            ref_stats = masked_mean_std(ref_lab, stats_win)  # the transfer and the floor share them
            scale, shift = lab_transfer_coefficients(to_grid(in_window(warped_in.float())), ref_lab, stats_win,
                                                     stats_win, max_chroma_gain=CHROMA_MAX_GAIN, ref_stats=ref_stats)
            floor = chroma_floor(*ref_stats)  # no cyan beard shadow on a pale face
            warped_in = lab_to_rgb(apply_lab_transfer(warped_in.float(), scale, shift, floor)).to(dt)
            sigma = max(2.0, face_px * SHADING_SIGMA)
            # lighting lives at tens of pixels: estimate it at ≥ 4 px per blur sigma (16× less work at 512²)
            warped_in = transfer_shading(warped_in, target_in, skin_in, sigma=sigma,
                                         downscale=max(1, int(sigma // 4)))
        warped_in = _restore_grain(warped_in, target_in, skin_in, faces[:, -2:] if grain else None)
        warped_in = match_fine_detail(warped_in, target_in, skin_in, sigma=DETAIL_SIGMA, max_gain=DETAIL_MAX_GAIN)
        warped_in = torch.where(cov_in > 0, warped_in, target_in).clamp(0, 1)
        warped = target_crops.clone()
        warped[..., ry0:ry1, rx0:rx1] = warped_in
        if options.colour_transfer == "lab":
            # the face's edge takes the chroma of the target's skin around it (jaw, temples, forehead): measured on
            # the skin of a ring inside the outline, fading out toward the middle (ops.colour.match_edge_colour,
            # with the difference to the target resampled from the box only: it is 0 elsewhere)
            edge_sigma = EDGE_SIGMA * face_px * res / size
            ramp = 1 - feather_mask(inner_face, edge_sigma)
            diff = cov_small.new_zeros(cov_small.shape[0], 3, res, res)
            diff[..., grid_win[0], grid_win[1]] = to_grid(in_window(target_in.float() - warped_in.float()))
            corr = edge_colour_correction(diff, (stats * (1 - inner_face.to(dt))).float(), ramp.float(),
                                          sigma=edge_sigma, lightness=0.0)
            if res != size:
                corr = F.interpolate(corr, size=(size, size), mode="bilinear", align_corners=False)
            warped = (warped.float() + corr).clamp(0.0, 1.0).to(dt)

    with record_function("swap.blend"):
        if options.blend == "laplacian":
            levels = max(2, min(5, int(size).bit_length() - 5))
            if read_masks:
                composite = _laplacian_blend_in_window(warped, target_crops, mask, levels)
            else:
                composite = laplacian_pyramid_blend(warped, target_crops, mask, levels=levels).clamp(0, 1)
        elif options.blend == "poisson":
            composite = poisson_blend(warped, target_crops, (mask > 0.5).to(dt)).clamp(0, 1)
        else:
            composite = feather_blend(warped, target_crops, mask).clamp(0, 1)
        if occ is not None:
            # the paste mask drops the occluders, so the frame keeps its own pixels there (not a resampled copy)
            keep = occ.to(dt)
            composite = composite * (1 - keep) + target_crops * keep
            mask = mask * (1 - keep)
        keep_detail = (1 - features[:, :1]).to(dt)  # the paste-back keeps the target's detail off the features
    return composite, mask, keep_detail


def _laplacian_blend_in_window(fg: torch.Tensor, bg: torch.Tensor, mask: torch.Tensor, levels: int) -> torch.Tensor:
    """``laplacian_pyramid_blend(fg, bg, mask, levels).clamp(0, 1)`` computed on the window around the masks only
    (reads ``mask``'s values: for the CPU).

    Outside :func:`~faceweave.ops.blend.pyramid_support_radius` of the mask the blend is ``bg`` exactly; a window
    that reaches that far (and a pyramid level further, for what its border's replicate padding changes) with its
    origin on the coarsest level's grid samples every level where the whole crop does, so it gives the same values,
    bit for bit, for the window's share of the work (the crop's margin is about a fifth of it).
    """
    size_y, size_x = mask.shape[-2:]
    y0, y1, x0, x1 = _mask_window(mask)
    if y1 <= y0:
        return bg.clamp(0, 1)
    grid = 2 ** (levels - 1)
    reach = pyramid_support_radius(levels) + grid
    y0, x0 = max(0, (y0 - reach) // grid * grid), max(0, (x0 - reach) // grid * grid)
    y1, x1 = min(size_y, y1 + reach), min(size_x, x1 + reach)
    win = (slice(y0, y1), slice(x0, x1))
    out = bg.clamp(0, 1)
    out[..., win[0], win[1]] = laplacian_pyramid_blend(fg[..., win[0], win[1]], bg[..., win[0], win[1]],
                                                       mask[..., win[0], win[1]], levels=levels).clamp(0, 1)
    return out


def swap_faces(
    frames: torch.Tensor,
    items: Sequence[tuple[int, Face, SourceTexture]],
    options: MeshSwapOptions,
    *,
    graphs: Callable[[Hashable, Sequence[torch.Tensor]], tuple[torch.Tensor, ...]] | None = None,
    crop_size: int | None = None,
) -> torch.Tensor:
    """Swap faces into frames.

    Args:
        frames: ``(B, 3, H, W)`` float ``[0, 1]`` RGB, any device/dtype (float32 on CPU).
        items: ``(frame index, target face with landmarks, prepared source)`` per face to swap.
        options: the swapper's options (:meth:`MeshSwapOptions.from_settings`).
        graphs: on CUDA, a :class:`~faceweave.cuda_graphs.GraphCache` of :func:`swap_in_crops` (see
            :func:`crop_graphs`): the work inside the crops is then replayed from a graph per crop size and padded
            face count, on the fixed texture box. None: run it eagerly on the faces' own box.
        crop_size: force the working crop size (warm-up); default: from the largest face.

    Returns:
        ``(B, 3, H, W)`` like ``frames``; pixels outside every face mask are bit-identical to the input.

    The geometry (output mesh, crop boxes and sizes, magnification) is computed on the host from the landmarks,
    which live there, and copied to the device once, so the batch needs no device→host sync for its sizes. Masks
    and colour statistics are built on a ``MASK_SIZE`` grid of the crop and only the image work runs at the crop's
    native resolution.
    """
    if not items:
        return frames
    dev, dt = frames.device, frames.dtype
    host = torch.device("cpu")
    # --- geometry, on the host ------------------------------------------------------------------------------
    tgt = torch.stack([f.landmarks[:, :2] for _, f, _ in items]).to(host, torch.float32)  # type: ignore[index]
    src_pts = torch.stack([s.points for _, _, s in items]).to(host, torch.float32)
    geo = output_geometry(tgt, src_pts, options.shape_transfer)
    box = _square_box(geo, CROP_MARGIN)
    size = crop_size or _crop_size(box)
    m = _crop_matrix(box, size)  # (F, 2, 3) frame → crop, float32
    geo_c = transform_points(m, geo)
    tgt_c = transform_points(m, tgt)
    scales = torch.tensor([s.scale for _, _, s in items])
    crop_magnification = _magnifications(src_pts, geo_c, scales)  # per face: its grain and detail bands are its own
    frame_of = [i for i, _, _ in items]
    n_faces = len(items)
    graphed = graphs is not None
    if graphed:
        tex_box = fixed_texture_box(size)
        n_graph = cuda_batch_bucket(n_faces)
        max_blocks = block_capacity(size, n_graph)
        y0, _, x0, _ = tex_box
        blocks = triangle_blocks(geo_c - torch.tensor([x0, y0]), _triangles(host),
                                 (tex_box[1] - tex_box[0], tex_box[3] - tex_box[2]))[2]
        # a margin for the device's rounding; a batch over the graph's capacity runs eagerly
        graphed = int(blocks.prod(-1).sum()) <= max_blocks - 16 * n_faces
    if not graphed:
        tex_box = _texture_box(geo_c, size)
    grain = torch.tensor([_grain_parameters(mag) for mag in crop_magnification])  # (F, 2)
    # one host→device copy (pinned, asynchronous on a GPU) for every per-face array the device stages need
    packed = torch.cat([src_pts.flatten(1), geo_c.flatten(1), tgt_c.flatten(1), grain,
                        torch.tensor(frame_of, dtype=torch.float32)[:, None]], 1)
    packed = to_device_async(packed, dev)
    idx = packed[:, -1].long()
    with record_function("swap.warp"):
        # one face per frame, in order (the usual video case): no gathered copy of whole frames
        source_frames = frames if frame_of == list(range(frames.shape[0])) else frames[idx]
        target_crops = warp_affine(source_frames, m, (size, size), padding="border")  # host m: no device sync
        # With the LAB transfer the texture is sampled in LAB (converted once per job): the per-frame work is then
        # one LAB→RGB conversion, not two conversions.
        in_lab = options.colour_transfer == "lab"
        tex = torch.cat([_texture(s, in_lab) for _, _, s in items]).to(dev, torch.float32 if in_lab else dt)
        meshes, hair_gate = packed[:, : 6 * src_pts.shape[1]].reshape(n_faces, 3, -1, 2), None  # source, output, target
        if any(s.filled is not None for _, _, s in items):  # the fringe filled where the target's forehead is skin
            filled = [None if s.filled is None else s.filled[int(in_lab)] for *_, s in items]
            tex, hair_gate = gate_textures(tex, filled, target_crops, meshes[:, 2])
    faces = packed[:, :-1]
    if graphed:
        assert graphs is not None
        pad = n_graph - n_faces  # padded with copies of the last face, whose results are dropped
        inputs = [x if pad == 0 else torch.cat([x, x[-1:].expand(pad, *x.shape[1:])])
                  for x in (target_crops, tex, faces)]
        # the cache keys by the inputs' shapes and dtypes (face count, crop size); the box follows the size
        composite, mask, keep_detail = (out[:n_faces] for out in graphs(tex_box, inputs)[:3])
    else:
        composite, mask, keep_detail = swap_in_crops(target_crops, tex, faces, options=options, box=tex_box,
                                                     grain=max(crop_magnification) >= GRAIN_MIN_MAGNIFICATION,
                                                     read_masks=dev.type == "cpu")
    if hair_gate is not None and (dev.type != "cpu" or bool(hair_gate.any())):  # and the rest of the fringe left out
        mask = exclude_source_hair(composite, mask, hair_gate, meshes[:, 1])
    # the source's magnification in frame pixels (the detail restoration's bands and share follow it; none ≤ 1×)
    detail_magnification = _magnifications(src_pts, geo, scales) if options.detail_restore else None
    if detail_magnification is not None and not any(band_sigmas(mag) for mag in detail_magnification):
        detail_magnification = None  # no face magnified enough to restore
    out = frames.clone()
    # On the CPU, blend only the footprint of the masks' window (a crop's margin is about half its area); on a
    # device, finding it would wait for the device
    support = _mask_window(mask) if dev.type == "cpu" else None
    if support is not None and (support[1] <= support[0] or support[3] <= support[2]):
        return out  # every mask is 0: nothing to paste
    # Paste face by face in rounds (at most one face per frame each round) so overlapping faces compose.
    rounds = _paste_rounds(frame_of)
    for k_round, this_round in enumerate(rounds):
        if len(rounds) == 1:  # one face per frame: no per-round index copies
            f_idx, crops, masks, targets, keeps = idx, composite, mask, target_crops, keep_detail
        else:
            k_idx = _index(tuple(this_round), dev)
            f_idx, crops, masks = idx[k_idx], composite[k_idx], mask[k_idx]
            targets, keeps = target_crops[k_idx], keep_detail[k_idx]
        with record_function("swap.paste"):
            # round 1 keeps the target's detail the crop lost (a later round's frame holds an earlier face already)
            base, keep = (targets, keeps) if k_round == 0 else (None, None)
            region, (x0, y0, x1, y1) = paste_back_region(out, f_idx, crops, masks, m[this_round], base=base, keep=keep,
                                                         detail_limit=KEEP_DETAIL_LIMIT, support=support)
            if region is not None and detail_magnification is not None:
                region = restore_in_frame(region, frames[f_idx, :, y0:y1, x0:x1], masks, keeps, m[this_round],
                                           (x0, y0), [detail_magnification[i] for i in this_round])
            if region is not None:
                out[f_idx, :, y0:y1, x0:x1] = region if keep is None else region.clamp(0, 1)
    return out


def crop_graphs(options: MeshSwapOptions, pool: GraphPool | None = None) -> GraphCache:
    """A CUDA-graph cache of :func:`swap_in_crops` for :func:`swap_faces` (``graphs=``), keyed by the texture box and
    the inputs' shapes and dtypes (padded face count, crop size). Not for ``blend="poisson"``, which waits for the
    device."""
    if options.blend == "poisson":
        raise InvalidOption("the Poisson blend cannot be replayed from a CUDA graph", hint="use cuda_graphs=False")

    def run(target_crops: torch.Tensor, texture: torch.Tensor, faces: torch.Tensor) -> tuple[torch.Tensor, ...]:
        size = target_crops.shape[-1]
        return swap_in_crops(target_crops, texture, faces, options=options, box=fixed_texture_box(size),
                             max_blocks=block_capacity(size, target_crops.shape[0]))

    return GraphCache(run, pool)


class MeshSwapper:
    """The built-in swapper as a stage (a :class:`~faceweave.stages.Swapper` of :class:`SourceTexture`): its
    options, and on CUDA its :func:`crop_graphs` (None: eager)."""

    def __init__(self, options: MeshSwapOptions, graphs: GraphCache | None = None) -> None:
        self.options, self.graphs = options, graphs

    def prepare_source(self, image: torch.Tensor, face: Face) -> SourceTexture:
        """See :func:`prepare_source_texture`."""
        return prepare_source_texture(image, face, hairline_fill=self.options.hairline_fill)

    def swap(self, frames: torch.Tensor, items: list[tuple[int, Face, SourceTexture]]) -> torch.Tensor:
        """See :func:`swap_faces`."""
        return swap_faces(frames, items, self.options, graphs=self.graphs)


def _texture(source: SourceTexture, lab: bool) -> torch.Tensor:
    """The texture to warp: ``(1, 3, S, S)`` RGB, or CIELAB (float32) for the LAB colour transfer."""
    if not lab:
        return source.image
    return source.lab if source.lab is not None else rgb_to_lab(source.image.float())


@functools.lru_cache(maxsize=256)
def _index(idx: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """``idx`` as a long tensor on ``device``, made once (a host→device copy per call would sync a GPU)."""
    return torch.tensor(idx, dtype=torch.long).to(device)


_TRIANGLES: dict[torch.device, torch.Tensor] = {}


def _triangles(device: torch.device) -> torch.Tensor:
    """The FaceMesh triangulation ``(T, 3)`` long on ``device`` (copied there once per process)."""
    if device not in _TRIANGLES:
        _TRIANGLES[device] = torch.as_tensor(np.array(topology.TRIANGLES), dtype=torch.long).to(device)
    return _TRIANGLES[device]


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

