"""Hairline fill of the built-in swap (issue 21, opt-in ``SwapSettings.hairline_fill``): the source's fringe above
its eyebrows replaced by its own forehead skin when the source texture is prepared, so a bald or high-forehead target
gets no band of the source's hair (docs/quality.md, "Hairline fill")."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from faceweave.models import topology
from faceweave.ops.colour import lab_to_rgb
from faceweave.ops.masks import erode_mask, feather_mask, pad_polygons, polygon_mask

#: Hairline fill (:func:`fill_source_hair`): colour distances (weighted CIELAB) from the source's cheek skin at which a
#: pixel above its eyebrows counts fully as skin, and fully as hair (a fringe).
SOURCE_SKIN_DE = (12.0, 24.0)
#: The fill starts this far above the eyebrows' top (fraction of the face) and is full 3 % higher (tune, astronaut's
#: fringe: 0.02 cost 0.044 of identity on its cases, 0.04 half that for the same seam_top; 0.08 changed nothing).
HAIRLINE_FILL_FROM = 0.04


def source_skin(lab: torch.Tensor, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """How much each pixel of a source texture looks like the source's own cheek skin, and where that can be read.

    Skin is what lies within :data:`SOURCE_SKIN_DE` of the median CIELAB colour of the cheeks (lightness weighted by
    half: shading is not hair).

    Args:
        lab: ``(1, 3, S, S)`` float32 CIELAB of the texture (any device). points: ``(468, 2)`` its FaceMesh in
            texture pixels (any device).

    Returns:
        ``(skin, valid)``, ``(1, 1, S, S)`` float32 in ``[0, 1]`` each: the colour test everywhere, and the same
        inside the face oval off the eyes, brows and lips (the skin a fill may copy from). ``skin`` is all 1 when
        too little cheek skin is seen to measure it.
    """
    size = lab.shape[-1]
    pts = points.to(lab.device, torch.float32)
    face_px = float((pts.max(0).values - pts.min(0).values).max())
    oval = polygon_mask(pts[None, list(topology.FACE_OVAL)], (size, size), subrows=1)
    feats = [pts[None, list(idx)] for idx in (topology.LEFT_EYE, topology.RIGHT_EYE, topology.LEFT_EYEBROW,
                                              topology.RIGHT_EYEBROW, topology.LIPS_OUTER)]
    grown = polygon_mask(pad_polygons(feats).flatten(0, 1), (size, size), dilate=0.04 * face_px, subrows=1)
    off_features = 1 - grown.amax(0, keepdim=True)
    ref_region = (erode_mask(oval, 0.12 * face_px) * off_features) > 0.5
    if int(ref_region.sum()) < 16:
        ones = torch.ones_like(lab[:, :1])
        return ones, ones * oval
    ref = lab[0][:, ref_region[0, 0]].median(dim=1).values.view(1, 3, 1, 1)
    weights = torch.tensor([0.5, 1.0, 1.0], device=lab.device).view(1, 3, 1, 1)
    dist = ((lab - ref) * weights).square().sum(1, keepdim=True).sqrt()
    skin = ((SOURCE_SKIN_DE[1] - dist) / (SOURCE_SKIN_DE[1] - SOURCE_SKIN_DE[0])).clamp(0, 1)
    return skin, skin * erode_mask(oval, 0.02 * face_px) * off_features


def _push_pull(x: torch.Tensor, w: torch.Tensor, min_size: int = 4) -> torch.Tensor:
    """Fill ``x`` where its weight ``w`` is low from the weighted mean of its neighbourhood, the nearest valid
    pixels first (push–pull: a weighted pyramid down, then each level filled from the one below).

    Args:
        x: ``(N, C, H, W)`` float; w: ``(N, 1, H, W)`` float in ``[0, 1]`` (0: unknown).

    Returns:
        ``(N, C, H, W)``: ``x`` where ``w`` is 1, its smooth extrapolation where ``w`` is 0.
    """
    if min(x.shape[-2:]) <= min_size:
        mean = (x * w).sum((-2, -1), keepdim=True) / w.sum((-2, -1), keepdim=True).clamp_min(1e-6)
        return x * w + mean * (1 - w)
    ws = F.avg_pool2d(w, 2, ceil_mode=True)
    xs = F.avg_pool2d(x * w, 2, ceil_mode=True) / ws.clamp_min(1e-6)
    coarse = _push_pull(xs, (ws * 4).clamp(0, 1), min_size)
    up = F.interpolate(coarse, size=x.shape[-2:], mode="bilinear", align_corners=False)
    return x * w + up * (1 - w)


def fill_source_hair(image: torch.Tensor, lab: torch.Tensor, points: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """The source texture with the hair above its eyebrows (a fringe, a hairline lower than the mesh's forehead
    line) replaced by its own skin, extrapolated from the forehead skin around it (:func:`_push_pull`).

    Pasted onto a bald or high-forehead target, the fringe the face mesh covers is a dark band across the
    forehead. Keeping the target there instead shows the target's forehead, which the recogniser reads as the
    target (1ec75d7); the source's own skin colour keeps the face the source's, and the swap then relights it with
    the target's shading like the rest of the face. The test applies from :data:`HAIRLINE_FILL_FROM` above the
    eyebrows (faded in over 3 % of the face), inside the face oval, so eyes, brows and cheeks are untouched. Opt-in
    (``SwapSettings.hairline_fill``): dlib reads the fringe, and the tune identity mean is worse with it
    (docs/quality.md).

    Args:
        image: ``(1, 3, S, S)`` float32 ``[0, 1]`` RGB texture; lab: the same in CIELAB (float32); points:
            ``(468, 2)`` its FaceMesh in texture pixels (host or device).

    Returns:
        ``(image, lab)`` like the inputs.
    """
    size = image.shape[-1]
    pts = points.to(image.device, torch.float32)
    face_px = float((pts.max(0).values - pts.min(0).values).max())
    skin, valid = source_skin(lab, pts)
    # light strands inside a fringe pass the colour test: skin must hold over 1.5 % of the face around a pixel
    skin = erode_mask(skin, 0.015 * face_px)
    valid = valid * skin
    brows = pts[list(topology.LEFT_EYEBROW) + list(topology.RIGHT_EYEBROW), 1].min()
    rows = torch.arange(size, device=image.device, dtype=torch.float32).view(1, 1, size, 1)
    top = ((brows - HAIRLINE_FILL_FROM * face_px - rows) / (0.03 * face_px)).clamp(0, 1)
    # only the face mesh's forehead is ever sampled: the oval, with a margin for the feathering
    oval = polygon_mask(pts[None, list(topology.FACE_OVAL)], (size, size), subrows=1, dilate=0.03 * face_px)
    hair = feather_mask(top * oval * (1 - skin), max(0.5, 0.01 * face_px)).clamp(0, 1)
    if float(hair.max()) < 0.05:
        return image, lab
    fill = _push_pull(lab, valid)
    out_lab = lab * (1 - hair) + fill * hair
    # blended in RGB: the rest of the texture stays bit-identical (LAB → RGB is not an exact round trip)
    out = image * (1 - hair) + lab_to_rgb(fill).clamp(0, 1) * hair
    return out, out_lab
