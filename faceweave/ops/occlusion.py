"""Built-in occlusion estimate (no trained weights): which pixels inside a target face are not the face.

Cues, each measured against the target's own visible skin (so a dark, bright or tinted target is judged by its own
statistics, not by a fixed skin colour):

- *chroma*: the distance of a pixel's (a, b) from the skin's robust mean, in units of the skin's spread. Objects,
  microphones, food and most backgrounds in front of a face differ in hue or saturation.
- *lightness*: far darker or brighter than the local shading allows (hair strands, glasses rims, dark objects).
- *texture*: skin has grain; a flat or much smoother surface over it (a patch, a blurred hand close to the
  camera, a sheet of paper) has a local standard deviation far below the skin's typical one.

- *dark ridge*: a pixel darker than both its neighbours 2-3 px across, in some direction (hair strands, rims);
  shading is a slope, not a ridge.

The tests are applied twice (hysteresis): pixels passing the thresholds are *strong*, pixels passing
:data:`WEAK` × the thresholds are *weak*, and only the weak pixels connected (a flood, :func:`_flood`) to a seed
are occluders. Seeds are strong pixels in the band along the face mask's border (hands, objects and hair enter from
outside the face) whose component crosses the outline (reaches :data:`CROSS_DEPTH` of the face inward with strong
pixels: a shadow or a crushed dark edge runs along the outline instead) through the occluder's own body (strong
pixels, or weak ones in a body at least :data:`THICK` wide: not through the face's wrinkles and fine shading), or
inside a strong blob thick enough to survive an erosion of :data:`BLOB_RADIUS` of the face (a patch). Chroma is
judged against the skin's own chroma at the pixel's lightness (:func:`_chroma_trend`): a gamma-crushed exposure
greys its shadows. Eye sockets, nasolabial
folds and wrinkles are faint or thin inner shading: unconnected, they are dropped. The mesh says where eyes, brows
and lips are: they are never seeds, and a flood enters them only through a flat surface, on the lips a colour that is
not redder than the skin (the lips are), or a ridge :data:`FEATURE_RIDGE` × darker than a hair strand's threshold
(brows and lashes are dark ridges): a hand over the mouth is kept, the lips are not called occluders. The face
mask's border band is where seeds lie but not a path: the final flood runs inside it only next to what it kept.
Hair strands are followed into the eyes and brows by their orientation, not their darkness (:func:`_strand_flood`):
a strand entering an eye or brow from above (falling: within :data:`STRAND_CROSS` of vertical; a brow's own hairs
run along it), from a candidate occluder outside it, is continued along its own line
through pixels darker than their surroundings at a strand's width (a black top-hat) whose line orientation agrees;
a continuation well inside the feature also counts as the strand crossing the outline. The kept strands are then
followed once more through any dark pixels, jumping up to :data:`STRAND_JUMP` of the face straight along their line
where they cross a band of the same darkness (a glasses rim). Brows, lashes and pupils are not reached: nothing
enters them along a line from outside. A 1-px dark ridge counts as a strand as well as a 2-3 px one.
The skin statistics are robust (weighted median and MAD), and taken twice, the second time
without the pixels the first pass calls outliers, so an occluder or hair inside the statistics region does not widen
the spread that should reject it (with a mean and std, the astronaut's fringe made the lightness spread 21 L units
and dark hair strands passed as skin); the grain's second pass also leaves out the first's weak flat pixels (a patch
or a hand over a sixth of the skin widened its spread).

Conventions: ``(B, 3, H, W)`` float RGB in ``[0, 1]`` and ``(B, 1, H, W)`` masks in ``[0, 1]``; everything stays on
the device with fixed shapes (no host sync: it runs inside the swap's CUDA graph).
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from faceweave.errors import check_shape
from faceweave.ops.colour import rgb_to_lab
from faceweave.ops.filters import gaussian_blur, max_filter
from faceweave.ops.masks import dilate_mask, erode_mask, mask_window

#: Outlier thresholds in units of the skin's spread (tuned on the tune split of benchmarks/quality_set.py).
CHROMA_Z = 4.0
#: Lightness is judged against the local shading (L minus its blur at SHADING_SCALE × face size): facial
#: structure (nasolabial folds, eye sockets, the jaw's shadow) is shading, darker than the mean skin by 3–4 robust
#: spreads, and must come from the source (with L itself at 3 spreads, identity stopped moving on obama targets);
#: a hair strand or a rim is a steep local step of many spreads.
LIGHT_Z = 7.0
SHADING_SCALE = 0.06
#: A pixel is "flat" when its local log-std is this many skin spreads below the skin's mean log-std.
TEXTURE_Z = 2.5
#: The chroma-on-lightness line of the skin (:func:`_chroma_trend`) is not extrapolated beyond this many spreads.
TREND_RANGE = 2.0
#: Soft ramp width of each test (in the same units).
RAMP = 1.0
#: Hysteresis: the flood from the seeds runs through pixels passing the tests at WEAK × the thresholds.
WEAK = 0.6
#: A dark ridge (L units darker than both sides) that is a hair strand or a rim.
RIDGE_L = 18.0
#: On the eyes and brows a ridge must be this many times darker (lashes and brows are dark ridges too).
FEATURE_RIDGE = 2.0
#: The face's border band where occluders enter (fraction of the face size), and the erosion a seed blob survives.
BORDER_BAND = 0.04
#: A border seed counts only when its strong component reaches this deep into the face (fraction of the face
#: size): an occluder crosses the outline and enters; a shadow or a crushed dark edge runs along it.
CROSS_DEPTH = 0.10
BLOB_RADIUS = 0.04
#: The flood's grid and step count (a strand from the hairline to an eye is ~0.5 face = 80 grid pixels).
FLOOD_GRID = 160
FLOOD_STEPS = 100
#: The strand flood (:func:`_strand_flood`): orientation bins over 180°, the tolerance (in bins) between a pixel's
#: line orientation and a bin's, the structure tensor's blur (fraction of the face) and the reach (fraction of the
#: face) into the eyes and brows.
STRAND_BINS = 8
STRAND_TOL = 1.0
STRAND_SIGMA = 0.015
STRAND_REACH = 0.3
#: The widest strand (fraction of the face): the black top-hat's radius.
STRAND_WIDTH = 0.03
#: A seed's line must be within this angle (radians) of the eye/brow outline's normal (it enters).
STRAND_CROSS = math.pi / 3
#: A strand is crossing evidence this far (fraction of the face) inside an eye/brow region.
STRAND_DEPTH = 0.03
#: The longest stretch (fraction of the face) a kept strand is followed across where it does not show.
STRAND_JUMP = 0.04
#: Kept occluders grow by this many pixels (their anti-aliased edge keeps the target too).
GROW = 2
#: The final flood crosses gaps up to twice this (fraction of the face) between *thick* strong parts outside the
#: features.
GAP = 0.02
#: A strong part is thick (an object, a hand, a finger) when it survives an opening of this radius (fraction of the
#: face); thinner strong pixels are edges, wrinkles, hair strands and glasses rims.
THICK = 0.02
#: A thick border component crosses the outline when its thick part reaches this deep (fraction of the face): a
#: hat's brim or a fringe lies along the top of the face mask as a band of about 0.1 face.
THICK_DEPTH = 0.16
#: A thin strong pixel is a falling strand when this share of the strong pixels around it
#: lie along steep lines (within STRAND_CROSS of vertical), at a blur of twice STRAND_WIDTH.
STEEP_SHARE = 0.9
#: Thin crossing evidence counts where at least EVIDENCE_LENGTH × r of it lies within the (2r+1)² box around it, r =
#: EVIDENCE_RADIUS of the face: a strand crossing the box is 2r+1 long; a crow's foot is a few strong pixels.
EVIDENCE_RADIUS = 0.02
EVIDENCE_LENGTH = 2.0


def _local_log_std(lum: torch.Tensor, radius: int) -> torch.Tensor:
    """``log`` of the local standard deviation of ``lum`` ``(B, 1, H, W)`` over a ``(2r+1)²`` box."""
    k = 2 * radius + 1
    mean = F.avg_pool2d(F.pad(lum, (radius,) * 4, mode="replicate"), k, stride=1)
    sq = F.avg_pool2d(F.pad(lum * lum, (radius,) * 4, mode="replicate"), k, stride=1)
    # floor: std 3e-4 (0.03 L units), far below any real surface's grain, so a flat patch is still "flat"
    return 0.5 * torch.log((sq - mean * mean).clamp(min=0) + 1e-7)


def weighted_median_mad(x: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel weighted median and MAD (scaled by 1.4826, a std for normal data) of ``x`` ``(B, C, H, W)`` under
    ``weights`` ``(B, 1, H, W)``: ``(B, C, 1, 1)`` each. Fixed shapes (a sort, a cumulative sum, a gather), so it
    runs in a CUDA graph. Robust where a mean/std is not: hair or an occluder inside the region do not widen it."""

    def median_of(flat: torch.Tensor, fw: torch.Tensor) -> torch.Tensor:
        order = torch.argsort(flat, dim=-1)
        sv = torch.gather(flat, -1, order)
        sw = torch.gather(fw.expand_as(flat), -1, order)
        cum = torch.cumsum(sw, -1)
        idx = (cum < cum[..., -1:] / 2).sum(-1, keepdim=True).clamp(max=flat.shape[-1] - 1)
        return torch.gather(sv, -1, idx)

    def median(v: torch.Tensor) -> torch.Tensor:
        flat, fw = v.flatten(2), weights.flatten(2)
        if flat.device.type != "cpu" or fw.shape[1] != 1:
            return median_of(flat, fw)[..., None]
        # on the CPU, only the pixels of positive weight are sorted (zero weights never move the cumulative sum:
        # the same median; a host sync elsewhere)
        out = []
        for b in range(flat.shape[0]):
            keep = fw[b, 0] > 0
            out.append(median_of(flat[b:b + 1], fw[b:b + 1]) if not bool(keep.any())
                       else median_of(flat[b:b + 1, :, keep], fw[b:b + 1, :, keep]))
        return torch.cat(out)[..., None]

    med = median(x)
    return med, 1.4826 * median((x - med).abs())


def occlusion_mask(target: torch.Tensor, skin: torch.Tensor, region: torch.Tensor, features: torch.Tensor,
                   *, face_px: float, lips: torch.Tensor | None = None) -> torch.Tensor:
    """Where the target's face is covered by something else.

    Args:
        target: ``(B, 3, H, W)`` float RGB ``[0, 1]``, the target face crops.
        skin: ``(B, 1, H, W)`` weights of the target's skin (the colour-statistics region: face oval without the
            eyes, brows and lips).
        region: ``(B, 1, H, W)`` where occluders are looked for (the face mask).
        features: ``(B, 1, H, W)`` eyes, brows, lips (grown): never called occluders.
        face_px: the faces' size in pixels (filter radii follow it).
        lips: ``(B, 1, H, W)``, the lips' part of ``features``: only there does a colour that is not redder than the
            skin enter a feature (a hand over the mouth); None: every feature (the caller cannot tell them apart).

    Returns:
        ``(B, 1, H, W)`` in ``[0, 1]``: 1 = an occluder (keep the target), grown by one pixel and softened by a
        one-pixel feather so the edge of a kept occluder does not show a line of swapped pixels.
    """
    check_shape(target, ["B", "3", "H", "W"], "target")
    x = target.float()
    lab = rgb_to_lab(x)
    # a light blur: a single noisy pixel is not an occluder, a 1-px hair strand still stands out
    lab = gaussian_blur(lab, 0.7)
    w = skin.float()
    tex = _local_log_std(lab[:, :1] / 100.0, max(1, round(face_px / 100)))
    shading = gaussian_blur(lab[:, :1], max(1.0, face_px * SHADING_SCALE))
    lum = lab[:, :1]
    lab = torch.cat([lum - shading, lab[:, 1:]], 1)  # lightness relative to the local shading

    def z_scores(weights: torch.Tensor, tex_weights: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        # chroma is judged against the skin's own chroma at the pixel's lightness
        rel = torch.cat([lab[:, :1], lab[:, 1:] - _chroma_trend(lum, lab[:, 1:], weights)], 1)
        mu, sd = weighted_median_mad(rel, weights)
        # floors (L relative to shading, a, b): shadowed skin at the jaw and the eyelids shifts its chroma by
        # ~6–10 units on evenly lit faces whose MAD is ~1.5; an object's or hair's colour differs by ≥ 12
        sd = torch.maximum(sd, torch.tensor([2.5, 3.0, 3.0], device=sd.device).view(1, 3, 1, 1))
        z = (rel - mu) / sd
        chroma = torch.sqrt(z[:, 1:2] ** 2 + z[:, 2:3] ** 2)
        t_mu, t_sd = weighted_median_mad(tex, tex_weights)
        flat = (t_mu - tex) / t_sd.clamp(min=0.1)
        return chroma, z[:, :1].abs(), flat, z[:, 1:2]

    def score(chroma: torch.Tensor, light: torch.Tensor, flat: torch.Tensor, k: float = 1.0) -> torch.Tensor:
        return torch.maximum(torch.maximum(((chroma - k * CHROMA_Z) / RAMP).clamp(0, 1),
                                           ((light - k * LIGHT_Z) / RAMP).clamp(0, 1)),
                             ((flat - k * TEXTURE_Z) / RAMP).clamp(0, 1))

    chroma, light, flat, _ = z_scores(w, w)
    first = score(chroma, light, flat)
    # statistics again without the first pass's outliers; the grain's also without the first pass's *weak* flat
    # pixels: a flat occluder over a sixth of the skin (a patch, a hand) widened the grain's spread that should
    # reject it (obama's patch, 17x smoother than his skin's median grain, stayed at 2.6 spreads: never a seed)
    chroma, light, flat, red = z_scores(w * (1 - first),
                                        w * (1 - first) * (1 - ((flat - WEAK * TEXTURE_Z) / RAMP).clamp(0, 1)))
    feats = features.float()
    reg = region.float()
    # dark thin ridges (hair strands, rims): darker than both sides at 2-3 px or 1 px across, in some direction
    ridge = _dark_ridge(lab[:, :1] + shading, max(2, round(face_px / 120)))
    ridge = torch.maximum(ridge, _dark_ridge(lab[:, :1] + shading, 1))
    strong = torch.maximum(score(chroma, light, flat), (ridge / RIDGE_L - 1).clamp(0, 1) * 2)
    weak = torch.maximum(score(chroma, light, flat, WEAK), (ridge / (WEAK * RIDGE_L) - 1).clamp(0, 1) * 2)
    # on the eyes, brows and lips (not skin: their colour and darkness are the face's) a flat surface (a hand or
    # patch over the mouth), a colour that is not redder than the skin (the lips are) and a ridge darker than the
    # brows and lashes are something else; only reached from outside (the flood), never seeds
    # (the colour only on the lips: the white of an eye and a brow's grey hair are "not redder" than the skin too,
    # and a flood along the outline entered them from the temple: held-out astronaut -> obama hand stopped moving)
    feat_weak = torch.maximum(((flat - WEAK * TEXTURE_Z) / RAMP).clamp(0, 1),
                              ((chroma - CHROMA_Z) / RAMP).clamp(0, 1) * (red < 1).float()
                              * (1.0 if lips is None else (lips > 0.5).float()))
    feat_weak = torch.maximum(feat_weak, (ridge / (FEATURE_RIDGE * RIDGE_L) - 1).clamp(0, 1) * 2)
    weak = (weak * (1 - feats) + feat_weak * feats).clamp(0, 1) * reg
    strong = strong * (1 - feats) * reg
    # seeds: strong outliers entering from the face's border, or thick enough to be an object (an eye socket or
    # a fold is a thin or faint shading, not a blob that survives an erosion of 4 % of the face)
    band = reg - erode_mask(reg, max(1.0, face_px * BORDER_BAND))
    strong_b = (strong > 0.5).float()
    blob = dilate_mask(erode_mask(strong_b, face_px * BLOB_RADIUS), face_px * BLOB_RADIUS)
    # a border seed must cross the outline: its component (a flood through weak pixels from the band) has strong
    # pixels deeper than CROSS_DEPTH; those seed, and the flood below brings back the border part
    deep = erode_mask(reg, max(1.0, face_px * CROSS_DEPTH))
    weak_b = (weak > 0.5).float()
    cand = _flood(strong_b * band, weak_b, face_px)
    # inside the eyes and brows a strand is admitted as the continuation of one entering from outside: a flood
    # along the strand's own orientation from the candidates outside, through dark pixels of that orientation
    # (dark: darker than the closing of the lightness at a strand's width, a black top-hat; the local shading
    # is no reference there, a bundle of strands darkens it)
    rad = max(2, round(face_px * STRAND_WIDTH))
    closing = -max_filter(-max_filter(lum, rad), rad)
    dark_b = (torch.maximum(closing - lum - WEAK * RIDGE_L, weak) > 0.5).float()
    feats_b = (feats > 0.5).float()
    theta = _line_orientation(lum, face_px)
    steep = (torch.sin(theta).abs() >= math.cos(STRAND_CROSS)).float()  # within STRAND_CROSS of vertical
    strand = _strand_flood(cand * (1 - feats_b), torch.maximum(weak_b, dark_b * feats_b) * (reg > 0).float(),
                           lum, feats_b, face_px, theta=theta) * feats_b
    allowed = torch.maximum(weak_b, strand)
    # a strand that runs well inside an eye or brow region crosses the outline too (a hair over the eye); one that
    # only touches its edge (the side hair at a brow's corner) does not
    strand_deep = strand * erode_mask(feats_b, max(1.0, face_px * STRAND_DEPTH))
    # what crosses: a thick part (a hand, an object) reaching THICK_DEPTH inside (a hat's brim is a shallow band
    # along the top), or a thin one (a strand) reaching CROSS_DEPTH along a steep line (hair falls; a glasses arm
    # enters from the temple at eye height, nearly level, and its rim frames the eye: not an occluder of that skin)
    thick_r = max(1, round(face_px * THICK))
    thick_b = dilate_mask(erode_mask(strong_b, thick_r), thick_r)
    deep_thick = erode_mask(reg, max(1.0, face_px * THICK_DEPTH))
    # steep along the strand, not only at a point (a rim's rounded corner turns through vertical)
    sig = max(1.0, 2 * face_px * STRAND_WIDTH)
    steep = (gaussian_blur(steep * strong_b, sig) >= STEEP_SHARE * gaussian_blur(strong_b, sig)).float()
    thin_ev = strong_b * (1 - thick_b) * deep * steep
    # ... and a strand's evidence is a length of it, not a few pixels: 2 strong pixels at obama's outer eye corner
    # (a crow's foot) counted as a strand crossing the outline once a hand had shifted the skin's statistics
    er = max(1, round(face_px * EVIDENCE_RADIUS))
    ev_len = F.avg_pool2d(F.pad(thin_ev, (er,) * 4), 2 * er + 1, stride=1) * (2 * er + 1) ** 2
    evidence = torch.maximum(thick_b * deep_thick, thin_ev * (ev_len >= EVIDENCE_LENGTH * er).float())
    # the final flood also crosses narrow gaps between thick strong parts (a closing of GAP): an edge inside an
    # occluder (a hand's fingers pasted over its palm) fails every test for a few pixels and cut the fingers off;
    # closing every strong pixel (edges, wrinkles) swallowed the skin around a hand (held-out obama 0.48 -> 0.76)
    gap = max(1.0, face_px * GAP)
    # ... and between bodies of weak pixels at least a finger wide (an opening of THICK): fingers of a hand the
    # face's colour are weak, cut apart by the 1-3 px of face showing between them (held-out obama2: no finger kept)
    body = dilate_mask(erode_mask(weak_b, thick_r), thick_r) * weak_b
    closed = erode_mask(dilate_mask(thick_b, gap), gap) * (1 - feats_b)
    allowed = torch.maximum(allowed, erode_mask(dilate_mask(torch.maximum(thick_b, body), gap), gap) * (1 - feats_b))
    # the crossing evidence must be reached through the occluder's own body from the outline: strong pixels, the
    # closed thick parts, or weak pixels of a body at least a finger wide (an opening of THICK: a bar whose inside
    # is a weak outlier). Through thin weak pixels (wrinkles, fine shading) the temple's hair reached a few strong
    # pixels at obama's outer eye corner, and the brow reached the white of obama2's eye outside its mesh region:
    # 0.05-0.30 of held-out faces without an occluder were kept
    solid = torch.maximum(torch.maximum(strong_b, closed), body)
    crossing = torch.maximum(_flood(strong_b * band, allowed, face_px) * strand_deep * deep,
                             _flood(strong_b * band, solid, face_px) * evidence)
    # a blob seeds where it lies THICK_DEPTH inside (a patch, an object); a brim's band along the top is a blob too
    seeds = torch.maximum(crossing, blob * strong_b * deep_thick)
    # the face's border band is no path: background or hair along the outline next to an occluder carried the flood
    # to the temple (held-out obama2's patch kept the background beside his cheek up to his eye); the band is added
    # back next to what the flood kept, where the occluder itself crosses it
    band_b = (band > 0.5).float()
    occ = _flood(seeds, allowed * (1 - band_b), face_px)
    near = dilate_mask(occ, max(1.0, 1.5 * face_px * BORDER_BAND))
    occ = torch.maximum(occ, _flood(max_filter(occ, 2), allowed * band_b * near, face_px))
    # the kept strands continued along their orientation through any dark pixels, jumping where they cross a
    # darker band of the same darkness (a glasses rim): a strand's part below the rim, over the eye
    occ = torch.maximum(occ, _strand_flood(occ * strand, torch.maximum(weak_b, dark_b) * (reg > 0).float(),
                                           lum, feats_b, face_px, jump=round(face_px * STRAND_JUMP), theta=theta))
    occ = gaussian_blur(max_filter(occ, GROW), 0.7).clamp(0, 1) * reg
    return occ.to(target.dtype)


def _chroma_trend(lum: torch.Tensor, ab: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The part of the chroma ``ab`` ``(B, 2, H, W)`` that the skin's lightness explains: a weighted least-squares
    line of each chroma channel on ``lum`` ``(B, 1, H, W)`` over the skin ``weights``, evaluated at each pixel's
    lightness (clamped to the skin's range, TREND_RANGE spreads around its mean) minus its value at the skin's mean
    lightness. A gamma-crushed exposure greys the shadows in step with their lightness, and the skin's own shadows
    show it; on an evenly lit face the line is nearly flat and a dark, grey strand stays a chroma outlier."""
    wsum = weights.sum((-2, -1), keepdim=True).clamp(min=1e-6)
    m_l = (weights * lum).sum((-2, -1), keepdim=True) / wsum
    d_l = lum - m_l
    var = (weights * d_l * d_l).sum((-2, -1), keepdim=True) / wsum
    m_ab = (weights * ab).sum((-2, -1), keepdim=True) / wsum
    cov = (weights * d_l * (ab - m_ab)).sum((-2, -1), keepdim=True) / wsum
    beta = cov / var.clamp(min=1e-6)
    # only the greying part: chroma shrinking toward neutral with the lightness (a capture's crushed shadows); a
    # real shadow on evenly lit skin is as saturated or more, and there the line stays flat
    u = m_ab / m_ab.norm(dim=1, keepdim=True).clamp(min=1e-6)
    beta = (beta * u).sum(1, keepdim=True).clamp(min=0) * u
    sd_l = var.clamp(min=1e-6).sqrt()
    return beta * torch.maximum(torch.minimum(d_l, TREND_RANGE * sd_l), -TREND_RANGE * sd_l)


def _dark_ridge(lum: torch.Tensor, d: int) -> torch.Tensor:
    """How much darker each pixel of ``lum`` ``(B, 1, H, W)`` is than both its neighbours ``d`` px away across a
    line, at the best of four orientations (L units, >= 0)."""
    p = F.pad(lum, (d, d, d, d), mode="replicate")
    h, w = lum.shape[-2:]

    def at(dy: int, dx: int) -> torch.Tensor:
        return p[..., d + dy:d + dy + h, d + dx:d + dx + w]

    out = torch.zeros_like(lum)
    for dy, dx in ((0, d), (d, 0), (d, d), (d, -d)):
        out = torch.maximum(out, torch.minimum(at(dy, dx), at(-dy, -dx)) - lum)
    return out


def _line_orientation(lum: torch.Tensor, face_px: float) -> torch.Tensor:
    """``(B, 1, H, W)``: the orientation (radians, 0 = along x, pi/2 = along y) of a line at each pixel of ``lum``
    ``(B, 1, H, W)``: the structure tensor's minor axis at STRAND_SIGMA of the face."""
    p = F.pad(lum, (1, 1, 1, 1), mode="replicate")
    gx = (p[..., 1:-1, 2:] - p[..., 1:-1, :-2]) / 2
    gy = (p[..., 2:, 1:-1] - p[..., :-2, 1:-1]) / 2
    j = gaussian_blur(torch.cat([gx * gx, gx * gy, gy * gy], 1), max(1.0, face_px * STRAND_SIGMA))
    # the gradient's orientation; a line runs across it
    return 0.5 * torch.atan2(2 * j[:, 1:2], j[:, 0:1] - j[:, 2:3]) + torch.pi / 2


def _orientation_bins(lum: torch.Tensor, face_px: float, theta: torch.Tensor | None = None) -> torch.Tensor:
    """``(B, STRAND_BINS, H, W)``: 1 where a line's orientation at that pixel (:func:`_line_orientation` of ``lum``
    ``(B, 1, H, W)``, or ``theta`` when given) lies within STRAND_TOL bins of each bin's orientation (bins of
    180° / STRAND_BINS)."""
    if theta is None:
        theta = _line_orientation(lum, face_px)
    centres = torch.arange(STRAND_BINS, device=lum.device, dtype=lum.dtype).view(1, -1, 1, 1) * torch.pi / STRAND_BINS
    diff = torch.remainder(theta - centres + torch.pi / 2, torch.pi) - torch.pi / 2  # (-90°, 90°]
    return (diff.abs() <= STRAND_TOL * torch.pi / STRAND_BINS).to(lum.dtype)


@functools.lru_cache(maxsize=16)
def _strand_kernel(jump: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``(STRAND_BINS, 1, K, K)`` 0/1 structuring elements of :func:`_strand_flood`: per orientation bin, the
    centre and the steps of 1-2 px along the bin's direction ± half a bin, plus 3..``jump`` px straight along it."""
    r = max(2, jump)
    kernel = torch.zeros(STRAND_BINS, 1, 2 * r + 1, 2 * r + 1)
    for k in range(STRAND_BINS):
        steps = [(a, t) for a in (k - 0.5, k, k + 0.5) for t in (1, 2)] + [(k, t) for t in range(3, jump + 1)]
        kernel[k, 0, r, r] = 1
        for a, t in steps:
            vy, vx = round(t * math.sin(a * math.pi / STRAND_BINS)), round(t * math.cos(a * math.pi / STRAND_BINS))
            kernel[k, 0, r + vy, r + vx] = kernel[k, 0, r - vy, r - vx] = 1
    return kernel.to(device, dtype)


def _strand_flood(seeds: torch.Tensor, allowed: torch.Tensor, lum: torch.Tensor, region: torch.Tensor,
                  face_px: float, jump: int = 0, use_conv: bool | None = None,
                  theta: torch.Tensor | None = None) -> torch.Tensor:
    """A flood from ``seeds`` through ``allowed`` (``(B, 1, H, W)`` binary) that moves only along the local line
    orientation of ``lum``: each orientation bin's flood steps 1-2 px along its direction (± half a bin), through
    pixels whose own orientation agrees. A strand is followed across a dark region (an eye, a brow) without
    spreading over it. Only lines that cross ``region``'s outline from above (within STRAND_CROSS of its normal,
    the normal within STRAND_CROSS of the crop's down axis: hair falls) seed: a glasses rim running along a brow
    or entering it from the temple is not continued into it. ``jump`` > 2: a step may also jump up to ``jump`` px
    straight along its direction (over a stretch where the strand does not show: across a dark glasses rim).
    Fixed step count (no host sync). ``use_conv``: the dilation as a grouped convolution (default: off the CPU);
    the result is the same."""
    ok = _orientation_bins(lum, face_px, theta) * allowed
    # the outline's normal near the seeds (the gradient of the blurred region)
    rb = F.pad(gaussian_blur(region, max(1.0, face_px * 0.03)), (1, 1, 1, 1), mode="replicate")
    ny = rb[..., 2:, 1:-1] - rb[..., :-2, 1:-1]
    nx = rb[..., 1:-1, 2:] - rb[..., 1:-1, :-2]
    norm = torch.sqrt(nx * nx + ny * ny).clamp(min=1e-6)
    ang = torch.arange(STRAND_BINS, device=lum.device, dtype=lum.dtype).view(1, -1, 1, 1) * torch.pi / STRAND_BINS
    across = ((torch.cos(ang) * nx + torch.sin(ang) * ny).abs() / norm >= math.cos(STRAND_CROSS)).to(lum.dtype)
    # hair falls from above: the seed lies above the eye or brow (the outline's normal points down into it)
    above = (ny / norm >= math.cos(STRAND_CROSS)).to(lum.dtype)
    # and the strand itself falls: its line within STRAND_CROSS of vertical (a brow's own hairs run along it, and
    # at its outer end, sloping down, they entered it from the temple's side hair on obama)
    falls = (torch.sin(ang).abs() >= math.cos(STRAND_CROSS)).to(lum.dtype)
    g = ok * seeds * across * above * falls
    kernel = _strand_kernel(jump, lum.device, lum.dtype)
    r = kernel.shape[-1] // 2
    conv = lum.device.type != "cpu" if use_conv is None else use_conv
    h, w = g.shape[-2:]
    steps = max(1, round(face_px * STRAND_REACH / 2))
    if conv:
        for _ in range(steps):
            # a binary dilation per bin by its own line-shaped element: one grouped convolution (few kernels, for
            # the CUDA graph)
            g = (F.conv2d(g, kernel, padding=r, groups=STRAND_BINS) > 0.5).to(g.dtype) * ok
        return g.amax(1, keepdim=True)
    # on the CPU the same dilation as a max over shifted copies (a grouped convolution with a mostly empty 17²
    # kernel is ~6x slower there), only in each bin's window around its flooded pixels, and no more steps once the
    # flood has converged (host syncs are free here): the same result, several times less work. g only grows,
    # inside ok, so a step's window holds the state of two steps before: two padded buffers, swapped
    # the offsets of each bin's element (host lists from the host copy: no device sync)
    offsets = [torch.nonzero(kk[0]).tolist() for kk in _strand_kernel(jump, torch.device("cpu"), torch.float32)]
    cur = F.pad(g, (r, r, r, r))
    nxt = cur.clone()
    total = float(cur.sum())
    for _ in range(steps):
        for k in range(STRAND_BINS):
            inner = cur[:, k:k + 1, r:r + h, r:r + w]
            if not bool(inner.amax((0, 1, 3)).any()):
                continue
            y0, y1, x0, x1 = mask_window(inner, r)
            acc = cur[:, k:k + 1, r + y0:r + y1, r + x0:r + x1]
            for y, x in offsets[k]:
                acc = torch.maximum(acc, cur[:, k:k + 1, y + y0:y + y1, x + x0:x + x1])
            nxt[:, k:k + 1, r + y0:r + y1, r + x0:r + x1] = acc * ok[:, k:k + 1, y0:y1, x0:x1]
        cur, nxt = nxt, cur
        new_total = float(cur.sum())
        if new_total == total:
            break
        total = new_total
    return cur[..., r:r + h, r:r + w].amax(1, keepdim=True)


def _flood(seeds: torch.Tensor, allowed: torch.Tensor, face_px: float) -> torch.Tensor:
    """The parts of ``allowed`` connected to ``seeds`` (both ``(B, 1, H, W)`` binary): a geodesic dilation on a
    max-pooled grid of at most FLOOD_GRID² (thin strands survive a max pool), a fixed number of steps (a
    fixed-shape loop: no host sync), then back to full resolution and cut to ``allowed``."""
    # binary: a fractional erosion or closing radius leaves a 1-px ring of fractional values, and a flood through
    # it carried that fraction on (0.4 of obama2's brow and eyelid kept the target, below any > 0.5 test)
    allowed = (allowed > 0.5).to(allowed.dtype)
    seeds = (seeds > 0.5).to(seeds.dtype)
    h, w = allowed.shape[-2:]
    f = max(1, -(-max(h, w) // FLOOD_GRID))
    a = F.max_pool2d(allowed, f, ceil_mode=True) if f > 1 else allowed
    g = (F.max_pool2d(seeds, f, ceil_mode=True) if f > 1 else seeds) * a
    cpu = g.device.type == "cpu"
    for step in range(FLOOD_STEPS):
        nxt = max_filter(g, 1) * a
        # on the CPU, no more steps once converged (g only grows, inside a: equal sums are equal maps; the same
        # result); a host sync on a device
        if cpu and step % 4 == 3 and bool(nxt.sum() == g.sum()):
            break
        g = nxt
    if f > 1:
        g = F.interpolate(g, scale_factor=f, mode="nearest")[..., :h, :w]
    return g * allowed
