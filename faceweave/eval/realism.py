"""Realism metrics of a swap (issue 21): colour consistency at the mask edge, sharpness, occluder preservation,
video colour flicker. Each is a plain function of images and the target's FaceMesh landmarks, so a test can feed
known inputs (identical images give ΔE 0, a known colour shift gives its ΔE).

Conventions: images are ``(H, W, 3)`` uint8 RGB numpy arrays; landmarks are ``(468, 2+)`` (x, y) pixels.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch

from faceweave.models import topology
from faceweave.ops.colour import rgb_to_lab

#: Where the colour-consistency probes sit, as fractions of the face size (the larger side of the mesh's box):
#: inside the face at 0.07 (past the swapper's default erosion 0.04 and most of its feather, so the pixel is
#: mostly the swapped face) and outside at 0.01 (the target's skin just beyond the face outline: jaw, neck,
#: temples, forehead margin).
INNER_PROBE = 0.07
OUTER_PROBE = 0.01
#: A probe outside the face counts as skin when its colour is within this ΔE2000 of the target's own cheek skin
#: (hair, background, collars and occluders are left out of the comparison).
SKIN_DELTA_E = 14.0
#: Side of the face crop of the 128-px swap-and-upscale baseline (the working size of 128-px ONNX swappers).
BASELINE_CROP = 128


def ciede2000(lab1: np.ndarray, lab2: np.ndarray) -> np.ndarray:
    """CIEDE2000 colour difference (Sharma, Wu & Dalal 2005, kL = kC = kH = 1).

    Args:
        lab1, lab2: ``(..., 3)`` CIELAB (L in [0, 100]), broadcastable.

    Returns:
        ``(...)`` float64 ΔE00 ≥ 0.
    """
    a = np.asarray(lab1, np.float64)
    b = np.asarray(lab2, np.float64)
    l1, a1, b1 = a[..., 0], a[..., 1], a[..., 2]
    l2, a2, b2 = b[..., 0], b[..., 1], b[..., 2]
    c1, c2 = np.hypot(a1, b1), np.hypot(a2, b2)
    cbar7 = ((c1 + c2) / 2) ** 7
    g = 0.5 * (1 - np.sqrt(cbar7 / (cbar7 + 25.0**7)))
    a1p, a2p = (1 + g) * a1, (1 + g) * a2
    c1p, c2p = np.hypot(a1p, b1), np.hypot(a2p, b2)
    h1p = np.degrees(np.arctan2(b1, a1p)) % 360
    h2p = np.degrees(np.arctan2(b2, a2p)) % 360
    dlp, dcp = l2 - l1, c2p - c1p
    dh = h2p - h1p
    dh = np.where(dh > 180, dh - 360, np.where(dh < -180, dh + 360, dh))
    dh = np.where(c1p * c2p == 0, 0.0, dh)
    dhp = 2 * np.sqrt(c1p * c2p) * np.sin(np.radians(dh) / 2)
    lbar, cbarp = (l1 + l2) / 2, (c1p + c2p) / 2
    hsum = h1p + h2p
    hbar = np.where(np.abs(h1p - h2p) > 180, np.where(hsum < 360, (hsum + 360) / 2, (hsum - 360) / 2), hsum / 2)
    hbar = np.where(c1p * c2p == 0, hsum, hbar)
    t = (1 - 0.17 * np.cos(np.radians(hbar - 30)) + 0.24 * np.cos(np.radians(2 * hbar))
         + 0.32 * np.cos(np.radians(3 * hbar + 6)) - 0.20 * np.cos(np.radians(4 * hbar - 63)))
    dtheta = 30 * np.exp(-(((hbar - 275) / 25) ** 2))
    cbarp7 = cbarp**7
    rc = 2 * np.sqrt(cbarp7 / (cbarp7 + 25.0**7))
    sl = 1 + 0.015 * (lbar - 50) ** 2 / np.sqrt(20 + (lbar - 50) ** 2)
    sc = 1 + 0.045 * cbarp
    sh = 1 + 0.015 * cbarp * t
    rt = -np.sin(np.radians(2 * dtheta)) * rc
    return np.sqrt((dlp / sl) ** 2 + (dcp / sc) ** 2 + (dhp / sh) ** 2 + rt * (dcp / sc) * (dhp / sh))


def to_lab(rgb: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB → ``(H, W, 3)`` float32 CIELAB (D65, the swapper's own conversion)."""
    t = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float() / 255.0
    return rgb_to_lab(t)[0].permute(1, 2, 0).numpy()


def face_size(landmarks: np.ndarray) -> float:
    """The larger side of the mesh's bounding box, in pixels."""
    pts = np.asarray(landmarks)[:, :2]
    return float((pts.max(0) - pts.min(0)).max())


def face_oval_mask(landmarks: np.ndarray, shape: tuple[int, ...], erode_frac: float = 0.0) -> np.ndarray:
    """``(H, W)`` bool: the FaceMesh face oval, eroded by ``erode_frac`` × face size (negative: dilated)."""
    pts = np.asarray(landmarks)[list(topology.FACE_OVAL), :2]
    mask: np.ndarray = np.zeros(shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1)
    r = round(abs(erode_frac) * face_size(landmarks))
    if r > 0:
        k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
        mask = cv2.erode(mask, k) if erode_frac > 0 else cv2.dilate(mask, k)
    return mask.astype(bool)


def _oval_probes(landmarks: np.ndarray, inner: float, outer: float) -> tuple[np.ndarray, np.ndarray]:
    """Probe points on the face outline's normals: ``(P, 2)`` inside at ``inner`` × face size and ``(P, 2)``
    outside at ``outer`` × face size, 4 probes per outline edge (the outline is densified so the probes are
    evenly spread)."""
    oval = np.asarray(landmarks)[list(topology.FACE_OVAL), :2].astype(np.float64)
    centre = oval.mean(0)
    nxt = np.roll(oval, -1, 0)
    pts = np.concatenate([oval + (nxt - oval) * f for f in (0.0, 0.25, 0.5, 0.75)])
    # the outward normal is approximated by the direction from the oval's centroid (the oval is convex-ish)
    d = pts - centre
    d /= np.linalg.norm(d, axis=1, keepdims=True).clip(1e-6)
    size = face_size(landmarks)
    return pts - d * inner * size, pts + d * outer * size


def _sample(image: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Values of ``image`` at ``pts`` (nearest pixel, clipped to the frame)."""
    h, w = image.shape[:2]
    x = np.clip(np.round(pts[:, 0]).astype(int), 0, w - 1)
    y = np.clip(np.round(pts[:, 1]).astype(int), 0, h - 1)
    return image[y, x]


def _inside(pts: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    h, w = shape[:2]
    return (pts[:, 0] >= 0) & (pts[:, 0] <= w - 1) & (pts[:, 1] >= 0) & (pts[:, 1] <= h - 1)


def skin_reference(target: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """``(3,)`` CIELAB median of the target's cheek skin (between the eroded oval and the features)."""
    lab = to_lab(target)
    cheeks = face_oval_mask(landmarks, target.shape, 0.06) & ~face_oval_mask(landmarks, target.shape, 0.18)
    return np.median(lab[cheeks], axis=0)


def colour_consistency(output: np.ndarray, target: np.ndarray, landmarks: np.ndarray,
                       exclude: np.ndarray | None = None) -> dict[str, float]:
    """Colour consistency of the swapped face with the target's surrounding skin, at the mask edge.

    Probes sit in pairs on the face outline's normals: :data:`INNER_PROBE` inside (the swapped face's own skin,
    past the blend mask's erosion) and :data:`OUTER_PROBE` outside (the target's skin, which the swap leaves
    untouched); each probe is the mean of a small neighbourhood. Only pairs where both probes are skin in the
    *target* (within :data:`SKIN_DELTA_E` of its cheek colour) and not in ``exclude`` count.

    Two figures, both medians over the pairs:

    - ``colour_de``: ΔE00 between the output and the target at the inner probe. Near the edge the target's skin is
      continuous with the skin just outside the mask, so this is the tone/lightness step a viewer sees between the
      swapped face and its surroundings, without the natural shading across the outline (jaw shadow, ear).
    - ``colour_de_step``: ΔE00 across the pair in the output (inner vs outer), and ``colour_de_step_target`` the
      same on the target: the natural step, which a good swap reproduces.

    Args:
        output: the swapped image. target: the image before the swap (same size).
        landmarks: the target's ``(468, 2+)`` mesh.
        exclude: optional ``(H, W)`` bool mask of pixels to ignore (a known occluder).

    Returns:
        the three medians and ``colour_probes`` (the pair count); NaN where no pair is skin.
    """
    size = face_size(landmarks)
    sigma = max(1.0, size * 0.012)
    blur_o = cv2.GaussianBlur(to_lab(output), (0, 0), sigma)
    blur_t = cv2.GaussianBlur(to_lab(target), (0, 0), sigma)
    inner, outer = _oval_probes(landmarks, INNER_PROBE, OUTER_PROBE)
    ok = _inside(inner, target.shape) & _inside(outer, target.shape)
    ref = skin_reference(target, landmarks)
    ok &= (ciede2000(_sample(blur_t, outer), ref) < SKIN_DELTA_E) & (ciede2000(_sample(blur_t, inner), ref)
                                                                     < SKIN_DELTA_E)
    if exclude is not None:
        ex = cv2.dilate(exclude.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=max(1, round(sigma * 2)))
        ok &= ~_sample(ex, inner).astype(bool) & ~_sample(ex, outer).astype(bool)
    if not ok.any():
        return {"colour_de": math.nan, "colour_de_step": math.nan, "colour_de_step_target": math.nan,
                "colour_probes": 0}
    o_in, o_out = _sample(blur_o, inner[ok]), _sample(blur_o, outer[ok])
    t_in, t_out = _sample(blur_t, inner[ok]), _sample(blur_t, outer[ok])
    return {"colour_de": float(np.median(ciede2000(o_in, t_in))),
            "colour_de_step": float(np.median(ciede2000(o_in, o_out))),
            "colour_de_step_target": float(np.median(ciede2000(t_in, t_out))),
            "colour_probes": int(ok.sum())}


def laplacian_variance(image: np.ndarray, mask: np.ndarray) -> float:
    """Variance of the Laplacian of the grey image inside ``mask`` (``(H, W)`` bool)."""
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float64)
    lap = cv2.Laplacian(grey, cv2.CV_64F, ksize=3)
    return float(lap[mask].var()) if mask.any() else 0.0


def upscale_baseline(image: np.ndarray, landmarks: np.ndarray, crop: int = BASELINE_CROP) -> np.ndarray:
    """``image`` with the face region replaced by itself through a ``crop``-px face crop (area down, cubic up):
    what a swapper working at ``crop`` px would paste back at best."""
    pts = np.asarray(landmarks)[:, :2]
    lo, hi = pts.min(0), pts.max(0)
    side = (hi - lo).max() * 1.3
    cx, cy = (lo + hi) / 2
    x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
    s = int(round(side))
    h, w = image.shape[:2]
    x0, y0 = max(0, x0), max(0, y0)
    x1, y1 = min(w, x0 + s), min(h, y0 + s)
    patch = image[y0:y1, x0:x1]
    small = cv2.resize(patch, (crop, crop), interpolation=cv2.INTER_AREA)
    out = image.copy()
    out[y0:y1, x0:x1] = cv2.resize(small, (x1 - x0, y1 - y0), interpolation=cv2.INTER_CUBIC)
    return out


def sharpness(output: np.ndarray, target: np.ndarray, landmarks: np.ndarray,
              exclude: np.ndarray | None = None) -> dict[str, float]:
    """Face sharpness (variance of the Laplacian inside the eroded face oval) relative to the target's face and to
    the 128-px swap-and-upscale baseline of the same output. ``exclude`` (a known occluder, ``(H, W)`` bool) is
    left out with the pixels whose Laplacian reaches into it.

    Returns:
        ``{"sharpness_vs_target": out/target, "sharpness_vs_128": out/baseline}``.
    """
    region = face_oval_mask(landmarks, target.shape, 0.08)
    if exclude is not None:
        # the Laplacian's 3×3 kernel reaches one pixel: next to the occluder it measures the occluder's own edge
        # (a hair strand's border is most of a hair case's variance), which is not the face's sharpness
        region &= ~cv2.dilate(exclude.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    v_out = laplacian_variance(output, region)
    v_tgt = laplacian_variance(target, region)
    v_128 = laplacian_variance(upscale_baseline(output, landmarks), region)
    return {"sharpness_vs_target": v_out / max(v_tgt, 1e-9), "sharpness_vs_128": v_out / max(v_128, 1e-9)}


#: Bin width of the chroma histogram of :func:`novel_colour_share` (CIELAB a*, b* units) and how far (in a*, b*
#: units) an output colour may lie from every colour of the two inputs' faces before it counts as new. 6 is about
#: the chroma step a viewer notices on skin (ΔE00 ~3 at skin chroma), doubled for the spread within one face.
CHROMA_BIN = 2.0
NOVEL_CHROMA = 6.0


def novel_colour_share(output: np.ndarray, target: np.ndarray, landmarks: np.ndarray, source: np.ndarray,
                       source_landmarks: np.ndarray, exclude: np.ndarray | None = None) -> float:
    """Share of the output face's pixels whose chroma neither input face has: a colour patch made by the swap (a
    cyan beard shadow, a green cast on the lips) rather than taken from the source or the target.

    The chroma (a*, b*) of the target's and the source's face ovals (eroded by 8 %) are binned
    (:data:`CHROMA_BIN`); the bins they fill, grown by :data:`NOVEL_CHROMA`, are the inputs' gamut. The
    result is the share of the output's face oval (the target's landmarks; ``exclude`` left out) outside it, in
    ``[0, 1]``; 0 when every colour came from an input.
    """
    n = int(round(256 / CHROMA_BIN))

    def bins(image: np.ndarray, region: np.ndarray) -> np.ndarray:
        ab = to_lab(image)[region][:, 1:3]
        return np.clip(np.floor((ab + 128.0) / CHROMA_BIN).astype(np.int64), 0, n - 1)

    region = face_oval_mask(landmarks, target.shape, 0.08)
    if exclude is not None:
        region &= ~exclude
    if not region.any():
        return 0.0
    seen = np.zeros((n, n), np.int32)
    for image, lm in ((target, landmarks), (source, source_landmarks)):
        b = bins(image, face_oval_mask(lm, image.shape, 0.08))
        np.add.at(seen, (b[:, 0], b[:, 1]), 1)
    r = int(math.ceil(NOVEL_CHROMA / CHROMA_BIN))
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    gamut = cv2.dilate((seen > 0).astype(np.uint8), k).astype(bool)
    b = bins(output, region)
    return float(1.0 - gamut[b[:, 0], b[:, 1]].mean())


def occluder_preservation(output: np.ndarray, target: np.ndarray, occluder: np.ndarray) -> float:
    """Mean absolute difference (8-bit levels, over pixels and channels) inside a known occluder mask
    (``(H, W)`` bool); 0 = the occluder is untouched."""
    if not occluder.any():
        return 0.0
    return float(np.abs(output.astype(np.int16) - target.astype(np.int16))[occluder].mean())


def face_mean_lab(frame: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """``(3,)`` mean CIELAB of the face region (the face oval eroded by 8 %) of one frame."""
    region = face_oval_mask(landmarks, frame.shape, 0.08)
    return to_lab(frame)[region].mean(0)


def colour_flicker(frames_in: list[np.ndarray], frames_out: list[np.ndarray],
                   landmarks: list[np.ndarray]) -> dict[str, float]:
    """Video colour flicker: mean frame-to-frame ΔE00 of the face region's mean colour, output vs input.

    Args:
        frames_in, frames_out: consecutive frames before and after the swap. landmarks: the input's mesh per frame.

    Returns:
        ``{"flicker_de": output's, "flicker_de_input": input's, "flicker_ratio": output / input}``.
    """
    if len(frames_in) < 2:
        return {"flicker_de": 0.0, "flicker_de_input": 0.0, "flicker_ratio": 1.0}
    m_in = np.stack([face_mean_lab(f, lm) for f, lm in zip(frames_in, landmarks, strict=True)])
    m_out = np.stack([face_mean_lab(f, lm) for f, lm in zip(frames_out, landmarks, strict=True)])
    f_in = float(ciede2000(m_in[1:], m_in[:-1]).mean())
    f_out = float(ciede2000(m_out[1:], m_out[:-1]).mean())
    return {"flicker_de": f_out, "flicker_de_input": f_in, "flicker_ratio": f_out / max(f_in, 1e-6)}
