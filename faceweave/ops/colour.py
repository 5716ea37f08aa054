"""Colour spaces and colour/lighting/fine-texture transfer on batches.

Conventions: images are ``(B, 3, H, W)`` floating tensors, **RGB** order, sRGB-encoded values in ``[0, 1]``;
masks are ``(B, 1, H, W)`` weights in ``[0, 1]``. CIELAB uses the D65 white point (as OpenCV does):
L in ``[0, 100]``, a and b roughly in ``[-128, 127]``. Ops follow the input's device and dtype; LAB maths on
float16/bfloat16 inputs is done in float32 (the cube root and the 100-scale lose too much) and cast back.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from faceweave.cuda_graphs import device_constant
from faceweave.errors import ShapeError, check_shape
from faceweave.ops.filters import gaussian_blur, normalised_blur

__all__ = ["rgb_to_lab", "lab_to_rgb", "masked_mean_std", "transfer_colour_lab", "transfer_colour_lab_from_lab",
           "lab_transfer_coefficients", "chroma_floor", "apply_lab_transfer", "luminance", "transfer_shading",
           "match_edge_colour", "edge_colour_correction", "match_fine_detail"]

# sRGB (linear) → XYZ, D65, as in OpenCV's documentation of cvtColor.
_RGB2XYZ = (
    (0.412453, 0.357580, 0.180423),
    (0.212671, 0.715160, 0.072169),
    (0.019334, 0.119193, 0.950227),
)
_WHITE = (0.950456, 1.0, 1.088754)
_XYZ2RGB = tuple(tuple(row) for row in torch.linalg.inv(torch.tensor(_RGB2XYZ, dtype=torch.float64)).tolist())
_DELTA = 6.0 / 29.0


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _srgb_to_linear(x: torch.Tensor) -> torch.Tensor:
    # clamp inside the power branch so torch.where never differentiates pow at negative values (NaN grads)
    return torch.where(x <= 0.04045, x / 12.92, ((x.clamp_min(0.04045) + 0.055) / 1.055) ** 2.4)


def _linear_to_srgb(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x <= 0.0031308, 12.92 * x, 1.055 * x.clamp_min(0.0031308) ** (1.0 / 2.4) - 0.055)


def rgb_to_lab(x: torch.Tensor) -> torch.Tensor:
    """sRGB → CIELAB (D65), matching ``cv2.cvtColor(float32_rgb, cv2.COLOR_RGB2Lab)``.

    Args:
        x: ``(B, 3, H, W)`` RGB in ``[0, 1]`` (sRGB-encoded).

    Returns:
        ``(B, 3, H, W)`` L in ``[0, 100]``, a/b in about ``[-128, 127]``; dtype and device of ``x``.
    """
    check_shape(x, ["B", "3", "H", "W"], "x")
    wd = _work_dtype(x.dtype)
    lin = _srgb_to_linear(x.to(wd))
    m = device_constant(_RGB2XYZ, x.device, wd)
    white = device_constant(_WHITE, x.device, wd).view(1, 3, 1, 1)
    xyz = torch.einsum("ij,bjhw->bihw", m, lin) / white
    eps = _DELTA**3
    f = torch.where(xyz > eps, xyz.clamp_min(eps) ** (1.0 / 3.0), xyz / (3 * _DELTA**2) + 4.0 / 29.0)
    fx, fy, fz = f[:, 0], f[:, 1], f[:, 2]
    lab = torch.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], dim=1)
    return lab.to(x.dtype)


def lab_to_rgb(lab: torch.Tensor, *, clamp: bool = True) -> torch.Tensor:
    """CIELAB (D65) → sRGB, the inverse of :func:`rgb_to_lab` (like ``cv2.COLOR_Lab2RGB`` on float32).

    Args:
        lab: ``(B, 3, H, W)`` L in ``[0, 100]``, a/b in about ``[-128, 127]``.
        clamp: clip the result to ``[0, 1]`` (out-of-gamut colours); gradients are zero where it clips.

    Returns:
        ``(B, 3, H, W)`` RGB, sRGB-encoded, dtype and device of ``lab``.
    """
    check_shape(lab, ["B", "3", "H", "W"], "lab")
    wd = _work_dtype(lab.dtype)
    v = lab.to(wd)
    fy = (v[:, 0] + 16.0) / 116.0
    fx = fy + v[:, 1] / 500.0
    fz = fy - v[:, 2] / 200.0
    f = torch.stack([fx, fy, fz], dim=1)
    xyz = torch.where(f > _DELTA, f**3, 3 * _DELTA**2 * (f - 4.0 / 29.0))
    white = device_constant(_WHITE, lab.device, wd).view(1, 3, 1, 1)
    m_inv = device_constant(_XYZ2RGB, lab.device, wd)
    lin = torch.einsum("ij,bjhw->bihw", m_inv, xyz * white)
    rgb = _linear_to_srgb(lin)
    if clamp:
        rgb = rgb.clamp(0.0, 1.0)
    return rgb.to(lab.dtype)


def masked_mean_std(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted per-channel mean and standard deviation.

    Args:
        x: ``(B, C, H, W)``. mask: ``(B, 1, H, W)`` non-negative weights.

    Returns:
        ``(mean, std)``, each ``(B, C, 1, 1)``; with an all-zero mask the mean is 0 and the std is ``sqrt(eps)``.
    """
    wsum = mask.sum(dim=(2, 3), keepdim=True)
    wn = mask / wsum.clamp_min(eps)
    mean = (x * wn).sum(dim=(2, 3), keepdim=True)
    var = ((x - mean) ** 2 * wn).sum(dim=(2, 3), keepdim=True)
    return mean, torch.sqrt(var + eps)


def _resample_area(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``x`` area-resampled to the spatial size of ``like`` (unchanged when it already has it)."""
    if x.shape[-2:] == like.shape[-2:]:
        return x
    return F.interpolate(x, size=like.shape[-2:], mode="area")


def transfer_colour_lab(
    src: torch.Tensor,
    ref: torch.Tensor,
    src_mask: torch.Tensor,
    ref_mask: torch.Tensor,
    *,
    strength: float = 1.0,
    max_gain: float = 4.0,
) -> torch.Tensor:
    """Reinhard colour transfer in LAB: the masked mean/std of ``src`` become those of ``ref``.

    ``lab' = (lab_src − μ_src) · σ_ref/σ_src + μ_ref`` per channel, where the statistics are weighted by the
    masks (e.g. the skin region of each face), then ``src + strength·(lab' − lab_src)``. The whole image is
    transformed; compose with a mask to limit it. The per-channel gain is clamped to ``[1/max_gain, max_gain]``
    so that a near-flat source region does not explode.

    A mask may be smaller than its image: the statistics are then taken on the image area-resampled to the mask's
    size (a mask grid spanning the whole image). That is much cheaper for large images and gives nearly the same
    statistics for regions many pixels wide.

    Args:
        src: ``(B, 3, H, W)`` RGB ``[0, 1]`` image to recolour (e.g. the warped source face).
        ref: ``(B, 3, H', W')`` RGB ``[0, 1]`` reference (e.g. the target face crop); may differ in size.
        src_mask: ``(B, 1, h, w)`` weights in ``[0, 1]`` selecting the statistics region of ``src``
            (``h <= H``, ``w <= W``).
        ref_mask: ``(B, 1, h', w')`` weights in ``[0, 1]`` for ``ref`` (``h' <= H'``, ``w' <= W'``).
        strength: 0 = unchanged, 1 = full transfer.
        max_gain: bound of the std ratio.

    Returns:
        ``(B, 3, H, W)`` RGB in ``[0, 1]`` (clipped), dtype/device of ``src``.
    """
    check_shape(src, ["B", "3", "H", "W"], "src")
    wd = _work_dtype(src.dtype)
    return transfer_colour_lab_from_lab(rgb_to_lab(src.to(wd)), ref, src_mask, ref_mask, strength=strength,
                                        max_gain=max_gain).to(src.dtype)


def transfer_colour_lab_from_lab(
    src_lab: torch.Tensor,
    ref: torch.Tensor,
    src_mask: torch.Tensor,
    ref_mask: torch.Tensor,
    *,
    strength: float = 1.0,
    max_gain: float = 4.0,
    region: tuple[slice, slice] | None = None,
) -> torch.Tensor:
    """:func:`transfer_colour_lab` for a source already in CIELAB (e.g. a texture converted once per job and then
    warped in LAB), which saves the per-call sRGB→LAB conversion of the large image.

    Args:
        src_lab: ``(B, 3, H, W)`` CIELAB (as :func:`rgb_to_lab`) image to recolour.
        ref, src_mask, ref_mask, strength, max_gain: as :func:`transfer_colour_lab` (a smaller ``src_mask`` takes
            the statistics from ``src_lab`` area-resampled to its size).
        region: ``(rows, cols)`` slices: the statistics still come from the whole images, but only
            ``src_lab[..., rows, cols]`` is transferred and returned (where the caller needs pixels).

    Returns:
        ``(B, 3, H, W)`` RGB in ``[0, 1]`` (clipped), dtype/device of ``src_lab``; with ``region``, that part.
    """
    check_shape(src_lab, ["B", "3", "H", "W"], "src_lab")
    check_shape(ref, ["B", "3", "H", "W"], "ref")
    check_shape(src_mask, ["B", "1", "H", "W"], "src_mask")
    check_shape(ref_mask, ["B", "1", "H", "W"], "ref_mask")
    for img, m in ((src_lab, src_mask), (ref, ref_mask)):
        if m.shape[-2] > img.shape[-2] or m.shape[-1] > img.shape[-1]:
            raise ShapeError(f"a mask {tuple(m.shape[-2:])} may not be larger than its image {tuple(img.shape[-2:])}")
    wd = _work_dtype(src_lab.dtype)
    lab_s = src_lab.to(wd)
    scale, shift = lab_transfer_coefficients(_resample_area(lab_s, src_mask), rgb_to_lab(_resample_area(ref.to(wd),
                                             ref_mask)), src_mask.to(wd), ref_mask.to(wd), strength=strength,
                                             max_gain=max_gain)
    part = lab_s if region is None else lab_s[..., region[0], region[1]]
    return lab_to_rgb(torch.addcmul(shift, part, scale)).to(src_lab.dtype)


#: How far below the reference's mean chroma (in its standard deviations) :func:`chroma_floor` lets a* and b* reach.
CHROMA_FLOOR_SD = 2.0


def chroma_floor(ref_mean: torch.Tensor, ref_std: torch.Tensor) -> torch.Tensor:
    """``(B, 2, 1, 1)`` the lowest a* and b* the reference's masked region reaches in practice, and never above 0:
    ``min(0, μ − 2σ)`` per channel (:func:`apply_lab_transfer`'s floor). For skin in ordinary light both are 0;
    under a blue or green cast the skin's own negative chroma stays reachable.

    Args:
        ref_mean, ref_std: ``(B, 3, 1, 1)`` the reference's masked CIELAB statistics (:func:`masked_mean_std`, the
            same that :func:`lab_transfer_coefficients` takes as ``ref_stats``).
    """
    return (ref_mean[:, 1:] - CHROMA_FLOOR_SD * ref_std[:, 1:]).clamp(max=0.0)


def apply_lab_transfer(lab: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, floor: torch.Tensor
                       ) -> torch.Tensor:
    """``scale · lab + shift`` (:func:`lab_transfer_coefficients`) for a face, except that a* and b* stop at
    ``min(floor, lab)``: the transfer takes no colour further to the complementary side of the skin than the
    reference's skin goes (``floor``, :func:`chroma_floor`) or the source pixel itself was.

    A reference whose mean chroma is low (a pale or overexposed face) shifts every colour toward neutral, and the
    source's parts below its own mean chroma (brows, a beard shadow, the eye sockets) then land on the complementary
    side: cyan, green or blue patches that neither face has. They stop at neutral instead; a source colour that was
    there already (blue or green eyes) keeps its own chroma.

    Args:
        lab: ``(B, 3, H, W)`` CIELAB. scale, shift: ``(B, 3, 1, 1)``; floor: ``(B, 2, 1, 1)`` (≤ 0), lab's dtype.

    Returns:
        ``(B, 3, H, W)`` CIELAB, lab's dtype.
    """
    out = torch.addcmul(shift, lab, scale)
    chroma = torch.maximum(out[:, 1:], torch.minimum(lab[:, 1:], floor))
    return torch.cat([out[:, :1], chroma], 1)


def lab_transfer_coefficients(
    src_lab: torch.Tensor,
    ref_lab: torch.Tensor,
    src_mask: torch.Tensor,
    ref_mask: torch.Tensor,
    *,
    strength: float = 1.0,
    max_gain: float = 4.0,
    max_chroma_gain: float | None = None,
    ref_stats: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-channel affine map of :func:`transfer_colour_lab`, from images and masks of one size (e.g. both on a
    mask grid, or on a part of it outside which the masks are 0): ``lab' = scale · lab + shift``.

    Args:
        src_lab, ref_lab: ``(B, 3, h, w)`` CIELAB (float32 or float64). src_mask, ref_mask: ``(B, 1, h, w)``
            weights in ``[0, 1]``, their dtype. strength, max_gain: as :func:`transfer_colour_lab`.
        max_chroma_gain: a tighter bound for a* and b* (None: ``max_gain``). A reference's chroma spread can be
            far wider than any skin's (an overexposed face, its red channel clipped on the bright side only), and
            a gain that wide turns the source's greyer parts (a beard shadow) cyan or green.
        ref_stats: ``masked_mean_std(ref_lab, ref_mask)`` when the caller has it already (None: computed here).

    Returns:
        ``(scale, shift)``, ``(B, 3, 1, 1)`` each.
    """
    mu_s, sd_s = masked_mean_std(src_lab, src_mask)
    mu_r, sd_r = masked_mean_std(ref_lab, ref_mask) if ref_stats is None else ref_stats
    gain = (sd_r / sd_s).clamp(1.0 / max_gain, max_gain)
    if max_chroma_gain is not None:
        gain = torch.cat([gain[:, :1], gain[:, 1:].clamp(1.0 / max_chroma_gain, max_chroma_gain)], 1)
    # lab_s + strength·((lab_s − μ_s)·gain + μ_r − lab_s), as one per-channel affine map of lab_s
    return 1.0 + strength * (gain - 1.0), strength * (mu_r - gain * mu_s)


def luminance(x: torch.Tensor) -> torch.Tensor:
    """Rec. 601 luma of sRGB values: ``(B, 3, H, W)`` → ``(B, 1, H, W)``, same range as the input."""
    check_shape(x, ["B", "3", "H", "W"], "x")
    w = device_constant((0.299, 0.587, 0.114), x.device, x.dtype).view(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True)


def transfer_shading(
    src: torch.Tensor,
    ref: torch.Tensor,
    mask: torch.Tensor,
    *,
    sigma: float,
    max_gain: float = 3.0,
    eps: float = 1e-3,
    downscale: int = 1,
) -> torch.Tensor:
    """Apply ``ref``'s low-frequency lighting to ``src``: ``src · blur(L_ref) / blur(L_src)`` inside ``mask``.

    The blurs are mask-normalised convolutions (``blur(L·m)/blur(m)``), so the lighting estimate near the
    mask border is the mean of the pixels inside the mask and the border does not darken. The ratio is
    clamped to ``[1/max_gain, max_gain]``; outside the mask (``mask == 0``) the output equals ``src``
    (the gain is blended with the mask: ``src · (1 + mask·(gain − 1))``).

    Args:
        src: ``(B, 3, H, W)`` RGB ``[0, 1]`` texture already aligned with ``ref`` (e.g. the warped source face).
        ref: ``(B, 3, H, W)`` RGB ``[0, 1]`` image whose lighting is wanted (the target face).
        mask: ``(B, 1, H, W)`` weights in ``[0, 1]`` (face region valid in both).
        sigma: gaussian sigma in pixels of the lighting scale (e.g. 1/20 of the face width).
        max_gain: bound of the luminance ratio.
        eps: added to both blurred luminances.
        downscale: estimate the lighting on ``downscale``× average-pooled images (sigma scaled alike) and
            upsample the gain: the same low frequencies for ``downscale²`` less work when sigma is large.

    Returns:
        ``(B, 3, H, W)`` RGB in ``[0, 1]`` (clipped), dtype/device of ``src``.
    """
    check_shape(src, ["B", "3", "H", "W"], "src")
    check_shape(ref, ["B", "3", "H", "W"], "ref")
    check_shape(mask, ["B", "1", "H", "W"], "mask")
    if ref.shape != src.shape or mask.shape[-2:] != src.shape[-2:]:
        raise ShapeError(f"src {tuple(src.shape)}, ref {tuple(ref.shape)} and mask {tuple(mask.shape)} must align")
    wd = _work_dtype(src.dtype)
    s, r, m = src.to(wd), ref.to(wd), mask.to(wd)
    both = torch.cat([luminance(s), luminance(r)], dim=1)
    if downscale > 1:
        small_m = F.avg_pool2d(m, downscale, ceil_mode=True)
        small = F.avg_pool2d(both * m, downscale, ceil_mode=True) / small_m.clamp(min=1e-6)
        smooth = normalised_blur(small, small_m, sigma / downscale)
    else:
        smooth = normalised_blur(both, m, sigma)
    gain = ((smooth[:, 1:2] + eps) / (smooth[:, 0:1] + eps)).clamp(1.0 / max_gain, max_gain)
    if downscale > 1:
        gain = F.interpolate(gain, size=s.shape[-2:], mode="bilinear", align_corners=False)
    out = (s * (1.0 + m * (gain - 1.0))).clamp(0.0, 1.0)
    return out.to(src.dtype)


def match_edge_colour(src: torch.Tensor, ref: torch.Tensor, ring: torch.Tensor, weight: torch.Tensor, *,
                      sigma: float, lightness: float = 1.0) -> torch.Tensor:
    """Pull ``src`` toward ``ref``'s local colour and light near a region's edge: ``src + weight · c`` with the
    correction ``c = normalised_blur(ref − src, ring, sigma)``, the smooth difference measured on ``ring`` (e.g.
    the skin just inside a face's outline, where the swapped face meets the target's neck, ears and forehead).
    Only the difference's low frequencies (scales above ``sigma``) move, so features of ``src`` finer than that stay.

    ``ring`` and ``weight`` may be on a coarser grid than the images (a mask grid spanning them): the difference is
    then measured on the images area-resampled to it and the correction upsampled bilinearly.

    Args:
        src: ``(B, 3, H, W)`` RGB ``[0, 1]`` to correct. ref: ``(B, 3, H, W)`` RGB ``[0, 1]`` aligned with it.
        ring: ``(B, 1, h, w)`` weights in ``[0, 1]`` where both images show the colour to match (``h <= H``).
        weight: ``(B, 1, h, w)`` in ``[0, 1]``, how much of the correction each pixel takes (0: unchanged).
        sigma: gaussian sigma of the correction's smoothness, in pixels of the ``h × w`` grid.
        lightness: share of the correction's lightness (luma) part that is applied; 0 moves chroma only.

    Returns:
        ``(B, 3, H, W)`` RGB in ``[0, 1]`` (clipped), dtype/device of ``src``.
    """
    check_shape(src, ["B", "3", "H", "W"], "src")
    check_shape(ref, ["B", "3", "H", "W"], "ref")
    check_shape(ring, ["B", "1", "H", "W"], "ring")
    check_shape(weight, ["B", "1", "H", "W"], "weight")
    if ref.shape != src.shape or ring.shape != weight.shape or ring.shape[-2] > src.shape[-2]:
        raise ShapeError(f"src {tuple(src.shape)}, ref {tuple(ref.shape)}, ring {tuple(ring.shape)} and weight "
                         f"{tuple(weight.shape)} must align (the masks' grid no finer than the images)")
    wd = _work_dtype(src.dtype)
    s, r = src.to(wd), ref.to(wd)
    diff = _resample_area(r, ring) - _resample_area(s, ring)
    corr = edge_colour_correction(diff, ring.to(wd), weight.to(wd), sigma=sigma, lightness=lightness)
    if corr.shape[-2:] != s.shape[-2:]:
        corr = F.interpolate(corr, size=s.shape[-2:], mode="bilinear", align_corners=False)
    return (s + corr).clamp(0.0, 1.0).to(src.dtype)


def edge_colour_correction(diff: torch.Tensor, ring: torch.Tensor, weight: torch.Tensor, *, sigma: float,
                           lightness: float = 1.0) -> torch.Tensor:
    """The correction :func:`match_edge_colour` adds, on the masks' grid, from the difference ``ref − src`` on that
    grid (e.g. area-resampled from only the part of the images where they differ).

    Args:
        diff: ``(B, 3, h, w)`` RGB difference, float32/float64. ring, weight, sigma, lightness: as
            :func:`match_edge_colour`, ``(B, 1, h, w)`` in ``diff``'s dtype.

    Returns:
        ``(B, 3, h, w)``, to add (upsampled to the images' size) to ``src``.
    """
    corr = normalised_blur(diff, ring, sigma) * weight
    if lightness != 1.0:
        # the correction's grey part (equal in R, G, B) is its luma, the weights summing to 1
        corr = corr - (1.0 - lightness) * luminance(corr)
    return corr


def match_fine_detail(src: torch.Tensor, ref: torch.Tensor, mask: torch.Tensor, *, sigma: float,
                      max_gain: float) -> torch.Tensor:
    """Amplify ``src``'s own finest luminance band toward ``ref``'s texture energy (e.g. a face texture softened by
    resampling, next to a grainy target): the band is ``L − blur_sigma(L)``; per item, with ``E`` its mean square on
    ``mask``, ``src`` gets ``(g − 1)·band`` added in all three channels, ``g = sqrt(E_ref / E_src)`` clamped to
    ``[1, max_gain]`` (the band is not a pure frequency band, so the result falls somewhat short of the reference's
    energy). A source as textured as the reference is unchanged, and the detail added is the source's own
    (adding the reference's band instead brings its structure: wrinkles, glasses rims).

    Args:
        src, ref: ``(B, 3, H, W)`` RGB ``[0, 1]``, aligned. mask: ``(B, 1, H, W)`` weights in ``[0, 1]`` (the skin;
            outside it ``src`` is unchanged). sigma: the band's gaussian sigma, pixels. max_gain: ``>= 1``.

    Returns:
        ``(B, 3, H, W)``, dtype/device of ``src`` (not clipped).
    """
    check_shape(src, ["B", "3", "H", "W"], "src")
    check_shape(mask, ["B", "1", "H", "W"], "mask")
    if ref.shape != src.shape or mask.shape[-2:] != src.shape[-2:]:
        raise ShapeError(f"src {tuple(src.shape)}, ref {tuple(ref.shape)} and mask {tuple(mask.shape)} must align")
    lum_r, lum_s = luminance(ref), luminance(src)
    band_r = lum_r - gaussian_blur(lum_r, sigma)
    band_s = lum_s - gaussian_blur(lum_s, sigma)
    area = mask.sum((2, 3), keepdim=True).clamp(min=1.0)
    e_r = (band_r.square() * mask).sum((2, 3), keepdim=True) / area
    e_s = (band_s.square() * mask).sum((2, 3), keepdim=True) / area
    gain = (e_r / e_s.clamp(min=1e-10)).sqrt().clamp(1.0, max_gain)
    return src + (mask * (gain - 1) * band_s).to(src.dtype)
