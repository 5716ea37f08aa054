"""Built-in occlusion estimate (no trained weights): which pixels inside a target face are not the face.

Cues, each measured against the target's own visible skin (so a dark, bright or tinted target is judged by its own
statistics, not by a fixed skin colour):

- *chroma*: the distance of a pixel's (a, b) from the skin's robust mean, in units of the skin's spread. Objects,
  microphones, food and most backgrounds in front of a face differ in hue or saturation.
- *lightness*: far darker or brighter than the local shading allows (hair strands, glasses rims, dark objects).
- *texture*: skin has grain; a flat or much smoother surface over it (a patch, a blurred hand close to the
  camera, a sheet of paper) has a local standard deviation far below the skin's typical one.

The mesh says where eyes, brows and lips are: those are excluded (they are not skin, and are the face). The
skin statistics are robust (weighted median and MAD), and taken twice, the second time without the pixels the
first pass calls outliers, so an occluder or hair inside the statistics region does not widen the spread that
should reject it (with a mean and std, the astronaut's fringe made the lightness spread 21 L units and dark hair
strands passed as skin).

Conventions: ``(B, 3, H, W)`` float RGB in ``[0, 1]`` and ``(B, 1, H, W)`` masks in ``[0, 1]``; everything stays on
the device with fixed shapes (no host sync: it runs inside the swap's CUDA graph).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from faceweave.errors import check_shape
from faceweave.ops.colour import rgb_to_lab
from faceweave.ops.filters import gaussian_blur, max_filter

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
#: Soft ramp width of each test (in the same units).
RAMP = 1.0


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

    def median(v: torch.Tensor) -> torch.Tensor:
        flat = v.flatten(2)
        order = torch.argsort(flat, dim=-1)
        sv = torch.gather(flat, -1, order)
        sw = torch.gather(weights.flatten(2).expand_as(flat), -1, order)
        cum = torch.cumsum(sw, -1)
        idx = (cum < cum[..., -1:] / 2).sum(-1, keepdim=True).clamp(max=flat.shape[-1] - 1)
        return torch.gather(sv, -1, idx)[..., None]

    med = median(x)
    return med, 1.4826 * median((x - med).abs())


def occlusion_mask(target: torch.Tensor, skin: torch.Tensor, region: torch.Tensor, features: torch.Tensor,
                   *, face_px: float) -> torch.Tensor:
    """Where the target's face is covered by something else.

    Args:
        target: ``(B, 3, H, W)`` float RGB ``[0, 1]``, the target face crops.
        skin: ``(B, 1, H, W)`` weights of the target's skin (the colour-statistics region: face oval without the
            eyes, brows and lips).
        region: ``(B, 1, H, W)`` where occluders are looked for (the face mask).
        features: ``(B, 1, H, W)`` eyes, brows, lips (grown): never called occluders.
        face_px: the faces' size in pixels (filter radii follow it).

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
    lab = torch.cat([lab[:, :1] - shading, lab[:, 1:]], 1)  # lightness relative to the local shading

    def z_scores(weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, sd = weighted_median_mad(lab, weights)
        # floors (L relative to shading, a, b): shadowed skin at the jaw and the eyelids shifts its chroma by
        # ~6–10 units on evenly lit faces whose MAD is ~1.5; an object's or hair's colour differs by ≥ 12
        sd = torch.maximum(sd, torch.tensor([2.5, 3.0, 3.0], device=sd.device).view(1, 3, 1, 1))
        z = (lab - mu) / sd
        chroma = torch.sqrt(z[:, 1:2] ** 2 + z[:, 2:3] ** 2)
        t_mu, t_sd = weighted_median_mad(tex, weights)
        flat = (t_mu - tex) / t_sd.clamp(min=0.1)
        return chroma, z[:, :1].abs(), flat

    def score(chroma: torch.Tensor, light: torch.Tensor, flat: torch.Tensor) -> torch.Tensor:
        return torch.maximum(torch.maximum(((chroma - CHROMA_Z) / RAMP).clamp(0, 1),
                                           ((light - LIGHT_Z) / RAMP).clamp(0, 1)),
                             ((flat - TEXTURE_Z) / RAMP).clamp(0, 1))

    first = score(*z_scores(w))
    occ = score(*z_scores(w * (1 - first)))  # statistics again without the first pass's outliers
    occ = occ * region.float() * (1 - features.float())
    occ = gaussian_blur(max_filter(occ, 1), 0.7).clamp(0, 1)
    return occ.to(target.dtype)
