"""Hairline fill of the built-in swap (issue 21, ``SwapSettings.hairline_fill``): the source's fringe above its
eyebrows replaced by its own forehead skin, so a bald or high-forehead target gets no band of the source's hair
(docs/quality.md, "Hairline fill"). The filled texture is made once per source (:func:`fill_source_hair`); each
target face then takes it only as far as its own forehead is skin up to and past the mask's top
(:func:`forehead_gate`, :func:`gate_textures`), and there the fringe's lower part, which the fill keeps, is left out of
the blend mask (:func:`exclude_source_hair`): elsewhere the band cannot show and the source stays as it is."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from faceweave.models import topology
from faceweave.ops.colour import lab_to_rgb, rgb_to_lab
from faceweave.ops.masks import dilate_mask, erode_mask, feather_mask, pad_polygons, polygon_mask
from faceweave.swapper.geometry import face_size_in_crop

#: Hairline fill (:func:`fill_source_hair`): colour distances (weighted CIELAB) from the source's cheek skin at which a
#: pixel above its eyebrows counts fully as skin, and fully as hair (a fringe).
SOURCE_SKIN_DE = (12.0, 24.0)
#: The fill starts this far above the eyebrows' top (fraction of the face) and is full 3 % higher (tune, astronaut's
#: fringe: 0.02 cost 0.044 of identity on its cases, 0.04 half that for the same seam_top; 0.08 changed nothing).
HAIRLINE_FILL_FROM = 0.04
#: Only the outer part of the fringe is filled: within this fraction of the face below the face oval's edge (the blend
#: mask ends 4 % inside it, feathered over 6 %), the lower fringe is kept for the recogniser (0: the whole forehead).
#: And the fill's lightness is raised this far toward the cheeks' (the skin next to a fringe is its shadow: tan and
#: dark, a band of its own on a lit bald head). Tuned on a bald grace_hopper painted with her cheeks' colour and, for
#: identity, on the 8 astronaut → grace_hopper cases with the gate forced open (docs/quality.md): 0.10 and 1.
HAIRLINE_FILL_DEPTH = 0.10
HAIRLINE_FILL_LIFT = 1.0
#: What is still hair in the swapped crop from this far above the eyebrows' top (fraction of the face) is left out of
#: the blend mask on gated faces (:func:`exclude_source_hair`). Held-out bald and plain obama targets, astronaut's
#: fringe: 0.04 left its lower edge (seam_top 0.471 against the target's 0.308), 0 and −0.02 about the same (0.424,
#: 0.411); 0 keeps the brows' own hairs out of the test.
HAIRLINE_EXCLUDE_FROM = 0.0
#: The largest crop side :func:`exclude_source_hair` works at (larger crops are area-averaged to it first).
EXCLUDE_WORK_SIZE = 256
#: FaceMesh's forehead-top and chin points: the face's up axis.
FOREHEAD_TOP, CHIN = 10, 152
#: Target gate (:func:`forehead_gate`): the face oval's top arc (FaceMesh indices, above the eyebrows), the probes'
#: distances outside it (fractions of the face; negative: inside; the blend mask ends 4 % inside, feathered), the
#: colour distances (CIELAB, as :data:`SOURCE_SKIN_DE`) from the target's cheeks at which a probe is fully skin and
#: fully not, and the skin fractions of the probes at which the gate starts to open and is fully open.
GATE_ARC = (103, 67, 109, 10, 338, 297, 332)
GATE_OFFSETS = (-0.02, 0.0, 0.02, 0.04)
GATE_CHEEKS = (50, 280, 101, 330, 36, 266, 205, 425, 117, 346)
GATE_DE = (12.0, 24.0)
GATE_FRACTION = (0.5, 0.8)


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
                     ) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The source texture with the hair above its eyebrows (a fringe, a hairline lower than the mesh's forehead
    line) replaced by its own skin, extrapolated from the forehead skin around it (:func:`_push_pull`) with its
    lightness raised toward the cheeks' (:data:`HAIRLINE_FILL_LIFT`).

    Pasted onto a bald or high-forehead target, the fringe the face mesh covers is a dark band across the
    forehead. Keeping the target there instead shows the target's forehead, which the recogniser reads as the
    target (1ec75d7); the source's own skin colour keeps the face the source's, and the swap then relights it with
    the target's shading like the rest of the face. The test applies from :data:`HAIRLINE_FILL_FROM` above the
    eyebrows (faded in over 3 % of the face), inside the face oval and within :data:`HAIRLINE_FILL_DEPTH` of its
    edge, so eyes, brows, cheeks and the fringe's lower part are untouched. dlib reads the fringe: the filled
    texture costs identity, so only targets whose forehead shows the band take it (:func:`gate_textures`).

    Args:
        image: ``(1, 3, S, S)`` float32 ``[0, 1]`` RGB texture; lab: the same in CIELAB (float32); points:
            ``(468, 2)`` its FaceMesh in texture pixels (host or device).

    Returns:
        ``(image, lab)`` like the inputs, or None when there is no hair above the eyebrows to fill.
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
    if HAIRLINE_FILL_DEPTH > 0:  # the ring along the oval's edge (at the forehead: its top), softened
        edge = 1 - erode_mask(polygon_mask(pts[None, list(topology.FACE_OVAL)], (size, size), subrows=1),
                              HAIRLINE_FILL_DEPTH * face_px)
        top = top * feather_mask(edge, 0.02 * face_px)
    # only the face mesh's forehead is ever sampled: the oval, with a margin for the feathering
    oval = polygon_mask(pts[None, list(topology.FACE_OVAL)], (size, size), subrows=1, dilate=0.03 * face_px)
    hair = feather_mask(top * oval * (1 - skin), max(0.5, 0.01 * face_px)).clamp(0, 1)
    if float(hair.max()) < 0.05:
        return None
    fill = _push_pull(lab, valid)
    below = (rows > brows).expand_as(valid) & (valid > 0.5)  # the skin below the brows (cheeks, nose, chin)
    if HAIRLINE_FILL_LIFT > 0 and bool(below.any()):
        ref_l = lab[:, :1][below].median()
        lift = HAIRLINE_FILL_LIFT * (ref_l - fill[:, :1]).clamp_min(0)  # lighter only: the swap relights it
        fill = torch.cat([fill[:, :1] + lift, fill[:, 1:]], 1)
    out_lab = lab * (1 - hair) + fill * hair
    # blended in RGB: the rest of the texture stays bit-identical (LAB → RGB is not an exact round trip)
    out = image * (1 - hair) + lab_to_rgb(fill).clamp(0, 1) * hair
    return out, out_lab


def _sample_area_average(image: torch.Tensor, points: torch.Tensor, face_px: float) -> torch.Tensor:
    """``image`` ``(F, C, S, S)`` box-averaged over about 2 % of the face (``face_px`` pixels), sampled bilinearly at
    ``points`` ``(F, P, 2)`` (pixel coordinates): ``(F, C, 1, P)`` (an image row, as the colour conversions take)."""
    size = image.shape[-1]
    step = max(1, round(0.02 * face_px))
    small = F.interpolate(image, size=(max(1, size // step),) * 2, mode="area") if step > 1 else image
    grid = (points + 0.5) / size * 2 - 1  # pixel centres → align_corners=False coordinates
    return F.grid_sample(small, grid[:, None], mode="bilinear", padding_mode="border", align_corners=False)


def _hair_distance(diff: torch.Tensor) -> torch.Tensor:
    """The CIELAB distance of :data:`GATE_DE` from ``diff`` ``(F, 3, ...)`` (colour minus the cheeks'): lightness at
    full weight when darker than the cheeks (hair, a hat's shadow), half when lighter (a lit forehead). ``(F, ...)``."""
    w_l = torch.where(diff[:, :1] < 0, 1.0, 0.5)
    return torch.cat([diff[:, :1] * w_l, diff[:, 1:]], 1).square().sum(1).sqrt()


def forehead_gate(crops: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """How far each target face's forehead is skin up to and past the top of the face mesh (a bald or high
    forehead), where the source's fringe would show as a band at the blend mask's top; 0 under a fringe, hair or a
    hat, where the source's hair meets the target's and no band shows.

    Probes along the face oval's top arc (:data:`GATE_ARC` and the midpoints between, moved outward from the oval's
    centre by each of :data:`GATE_OFFSETS`) are compared with the median colour of the target's cheeks
    (:data:`GATE_CHEEKS`) in CIELAB, lightness at full weight when darker than the cheeks (hair, shadow of a hat) and
    half weight when lighter (a lit forehead). Sampled bilinearly from the crops area-averaged over about 2 % of the
    face. Plain tensor ops, nothing read back to the host (CUDA graphs and streams stay asynchronous).

    Args:
        crops: ``(F, 3, S, S)`` float ``[0, 1]`` RGB target crops (any float dtype and device).
        points: ``(F, 468, 2)`` float32 the target's FaceMesh in crop pixels (the crops' device).

    Returns:
        ``(F,)`` float32 in ``[0, 1]`` on the crops' device: 1 where the forehead is skin (:data:`GATE_FRACTION`).
    """
    size = crops.shape[-1]
    pts = points.to(crops.device, torch.float32)
    face_px = (pts.amax(1) - pts.amin(1)).amax(-1)  # (F,)
    arc = pts[:, list(GATE_ARC)]
    arc = torch.cat([arc, (arc[:, 1:] + arc[:, :-1]) / 2], 1)  # (F, A, 2)
    centre = pts[:, list(topology.FACE_OVAL)].mean(1, keepdim=True)
    out = F.normalize(arc - centre, dim=-1)
    offsets = torch.tensor(GATE_OFFSETS, device=crops.device).view(1, -1, 1, 1)
    probes = (arc[:, None] + out[:, None] * offsets * face_px.view(-1, 1, 1, 1)).flatten(1, 2)  # (F, P, 2)
    cheeks = pts[:, list(GATE_CHEEKS)]
    # every crop holds its face at face_size_in_crop: no host read of points
    lab = rgb_to_lab(_sample_area_average(crops.float(), torch.cat([probes, cheeks], 1),
                                          face_size_in_crop(size)).clamp(0, 1))[:, :, 0]  # (F, 3, P + C)
    n_probe = probes.shape[1]
    ref = lab[..., n_probe:].median(-1, keepdim=True).values
    dist = _hair_distance(lab[..., :n_probe] - ref)  # (F, P)
    skin = ((GATE_DE[1] - dist) / (GATE_DE[1] - GATE_DE[0])).clamp(0, 1).mean(-1)
    return ((skin - GATE_FRACTION[0]) / (GATE_FRACTION[1] - GATE_FRACTION[0])).clamp(0, 1)


def gate_textures(textures: torch.Tensor, filled: list[torch.Tensor | None], crops: torch.Tensor,
                  points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each face's source texture moved toward its hairline-filled version as far as :func:`forehead_gate` of its
    target opens.

    Args:
        textures: ``(F, 3, T, T)`` the textures the swap warps (RGB or CIELAB, any float dtype, on the device).
        filled: per face, ``(1, 3, T, T)`` the same texture with the fringe filled (:func:`fill_source_hair`; same
            representation, any device), or None (nothing to fill: that face keeps its texture).
        crops, points: the target crops and meshes, as :func:`forehead_gate`.

    Returns:
        ``(textures, gate)``: ``(F, 3, T, T)`` like ``textures``, and ``(F,)`` float32 each face's gate (0 for a face
        with nothing to fill), for :func:`exclude_source_hair`.
    """
    gate = textures.new_zeros(textures.shape[0], dtype=torch.float32)
    rows = [k for k, f in enumerate(filled) if f is not None]
    if not rows:
        return textures, gate
    gate[rows] = forehead_gate(crops[rows], points[rows])
    alt = torch.cat([filled[k] for k in rows]).to(textures.device, textures.dtype)  # type: ignore[misc]
    out = textures.clone()
    out[rows] = torch.lerp(textures[rows], alt, gate[rows].to(textures.dtype).view(-1, 1, 1, 1))
    return out, gate


def exclude_source_hair(composite: torch.Tensor, mask: torch.Tensor, gate: torch.Tensor,
                        points: torch.Tensor) -> torch.Tensor:
    """The blend mask with the source's hair left out where the target's forehead is skin: what is still hair above
    the eyebrows of the swapped crop (the fringe below the filled ring of :func:`fill_source_hair`, which the
    recogniser reads and the fill keeps) shows the target's own forehead instead.

    On a bald or high-forehead target that lower fringe is the band's last part: a line of the source's hair just
    above the brows (docs/quality.md, "The source's fringe left out on bald foreheads"). Hair is what lies further
    than :data:`GATE_DE` from the crop's own cheek colour (the median at :data:`GATE_CHEEKS`, CIELAB, lightness at full
    weight when darker), from :data:`HAIRLINE_EXCLUDE_FROM` above the eyebrows' top along the face's own chin →
    forehead axis (faded in over 3 % of the face), grown and softened by 1 % of the face. Only as far as ``gate``
    opens: under the target's own fringe or hat the mask is unchanged.

    Args:
        composite: ``(F, 3, S, S)`` float ``[0, 1]`` RGB, the swapped crops (any float dtype and device).
        mask: ``(F, 1, S, S)`` float in ``[0, 1]``, their blend masks (same device).
        gate: ``(F,)`` float in ``[0, 1]``, :func:`forehead_gate` of each target (0: unchanged).
        points: ``(F, 468, 2)`` float32, the swapped face's mesh in crop pixels.

    Returns:
        ``(F, 1, S, S)`` like ``mask``, never larger.
    """
    size = composite.shape[-1]
    # the test runs on at most EXCLUDE_WORK_SIZE² pixels (the result is a soft mask): 512-px crops cost 24 → 4 ms
    work = min(size, EXCLUDE_WORK_SIZE)
    scale = work / size
    face_px = face_size_in_crop(size) * scale  # every crop holds its face at this size: no host read of the points
    pts = (points.to(composite.device, torch.float32) + 0.5) * scale - 0.5
    image = composite.float() if work == size else F.interpolate(composite.float(), size=(work, work), mode="area")
    lab = rgb_to_lab(image.clamp(0, 1))
    ref = _sample_area_average(lab, pts[:, list(GATE_CHEEKS)], face_px)[:, :, 0].median(-1).values.view(-1, 3, 1, 1)
    dist = _hair_distance(lab - ref)[:, None]
    hair = ((dist - GATE_DE[0]) / (GATE_DE[1] - GATE_DE[0])).clamp(0, 1)
    # "above" along the face's own up axis (chin → forehead), so a tilted face's brows are not cut across
    up = F.normalize(pts[:, FOREHEAD_TOP] - pts[:, CHIN], dim=-1)  # (F, 2)
    brows = (pts[:, list(topology.LEFT_EYEBROW) + list(topology.RIGHT_EYEBROW)] * up[:, None]).sum(-1).amax(1)
    coords = torch.arange(work, device=composite.device, dtype=torch.float32)
    height = coords.view(1, 1, 1, work) * up[:, :1, None, None] + coords.view(1, 1, work, 1) * up[:, 1:, None, None]
    above = ((height - brows.view(-1, 1, 1, 1) - HAIRLINE_EXCLUDE_FROM * face_px) / (0.03 * face_px)).clamp(0, 1)
    hair = feather_mask(dilate_mask(hair * above, 0.01 * face_px), 0.01 * face_px).clamp(0, 1)
    if work < size:
        hair = F.interpolate(hair, size=(size, size), mode="bilinear", align_corners=False)
    return mask * (1 - gate.to(composite.device).view(-1, 1, 1, 1) * hair).to(mask.dtype)
