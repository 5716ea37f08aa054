"""Quality measured by the project itself (DESIGN.md §7): identity, pose/expression kept, seams, jitter.

All metrics use real analysis models: dlib 128-d identity distance (same person < 0.6), FaceMesh landmarks.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from faceweave.analysis.face import Face, FaceKeypoint
from faceweave.analysis.identity import identity_distance
from faceweave.errors import NoFaceInSource, NoFaceInTarget
from faceweave.eval import realism
from faceweave.models import topology
from faceweave.ops.masks import dilate_mask, erode_mask, polygon_mask
from faceweave.pipeline.engine import SwapEngine
from faceweave.settings import SwapSettings


@dataclass(frozen=True)
class SwapQuality:
    """One swap judged. Distances are dlib Euclidean; NME is relative to the target's inter-ocular distance."""

    identity_to_source: float
    identity_to_target: float
    landmark_nme: float
    seam_ratio: float
    identity_moved: bool
    seam_top: float = math.nan  # seam_ratio on the border's top arc (forehead / hairline band)
    seam_top_target: float = math.nan  # the same on the target (its natural forehead/hairline gradient)
    colour_de: float = math.nan  # median ΔE00 output vs target on the skin just inside the mask edge
    colour_de_step: float = math.nan  # median ΔE00 across the face outline in the output (inside vs outside)
    colour_de_step_target: float = math.nan  # the same on the target (the natural step)
    sharpness_vs_target: float = math.nan  # variance of the Laplacian of the face, output / target
    sharpness_vs_128: float = math.nan  # ... output / the output through a 128-px face crop
    occluder_mad: float | None = None  # mean abs difference inside a known occluder mask (8-bit levels)
    novel_colour: float = math.nan  # share of the face whose chroma neither input face has (a made-up patch)

    def to_dict(self) -> dict[str, float | bool | None]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def inter_ocular(face: Face) -> float:
    """Distance between the two eye centres, in pixels."""
    k = face.keypoints
    return float(torch.linalg.vector_norm(k[FaceKeypoint.EYE_A] - k[FaceKeypoint.EYE_B]))


def landmark_nme(a: Face, b: Face) -> float:
    """Mean distance between two faces' 468 (x, y) landmarks, over ``b``'s inter-ocular distance."""
    assert a.landmarks is not None and b.landmarks is not None
    d = torch.linalg.vector_norm(a.landmarks[:, :2].float() - b.landmarks[:, :2].float(), dim=1).mean()
    return float(d) / max(inter_ocular(b), 1e-6)


def face_blend_region(face: Face, size: tuple[int, int], erosion: float) -> torch.Tensor:
    """``(1, 1, H, W)`` binary face-oval mask eroded like the swapper's blend mask (``erosion`` × face size)."""
    assert face.landmarks is not None
    pts = face.landmarks[None, :, :2].float()
    mask = polygon_mask(pts[:, torch.as_tensor(topology.FACE_OVAL)], size)
    face_px = float((pts.max(1).values - pts.min(1).values).max())
    return (erode_mask(mask, max(1, round(face_px * erosion))) > 0.5).float()


def seam_ratio(image: np.ndarray, face: Face, erosion: float = SwapSettings().mask_erosion, *,
               top_only: bool = False) -> float:
    """Mean gradient magnitude on the blend-mask border over the mean inside the face (1 ≈ invisible seam).

    Args:
        image: ``(H, W, 3)`` uint8 RGB, the swapped image.
        face: the target face (its mesh gives the mask the swapper used).
        top_only: measure the border's top arc only (above the eyebrows: the forehead / hairline, where a band
            shows on bald and high-forehead targets).
    """
    h, w = image.shape[:2]
    mask = face_blend_region(face, (h, w), erosion)
    face_px = float((face.landmarks[:, :2].max(0).values - face.landmarks[:, :2].min(0).values).max())  # type: ignore[index]
    band = max(2, round(face_px * 0.03))
    border = dilate_mask(mask, band) - erode_mask(mask, band)
    if top_only:
        brows = face.landmarks[list(topology.LEFT_EYEBROW) + list(topology.RIGHT_EYEBROW), 1]  # type: ignore[index]
        rows = torch.arange(h, dtype=border.dtype)[None, None, :, None]
        border = border * (rows < float(brows.min())).to(border.dtype)
    inside = erode_mask(mask, max(band * 2, round(face_px * 0.12)))
    grey = torch.from_numpy(image.astype(np.float32)).mean(2)[None, None]
    kx = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]])[None, None] / 8
    gx = F.conv2d(F.pad(grey, (1, 1, 1, 1), mode="replicate"), kx)
    gy = F.conv2d(F.pad(grey, (1, 1, 1, 1), mode="replicate"), kx.transpose(2, 3))
    mag = torch.sqrt(gx**2 + gy**2)
    b = float((mag * border).sum() / border.sum().clamp(min=1))
    i = float((mag * inside).sum() / inside.sum().clamp(min=1))
    return b / max(i, 1e-6)


def evaluate(
    source: np.ndarray, target: np.ndarray, output: np.ndarray, engine: SwapEngine | None = None,
    occluder: np.ndarray | None = None,
) -> SwapQuality:
    """Judge one swap of the largest faces. Images are ``(H, W, 3)`` uint8 RGB; ``occluder`` an optional ``(H, W)``
    bool mask of what stands in front of the target's face (it is left out of the colour and sharpness probes)."""
    engine = engine or SwapEngine(SwapSettings())

    def largest(rgb: np.ndarray, what: str) -> Face:
        t = engine.to_tensor(rgb)
        faces = engine.analyze(t)[0]
        if not faces:
            exc = NoFaceInSource if what == "source" else NoFaceInTarget
            raise exc(f"no face found in the {what} image", hint="eval needs a visible face in each image")
        return engine.identify(t, [[max(faces, key=lambda f: f.area)]])[0][0]

    fs, ft, fo = largest(source, "source"), largest(target, "target"), largest(output, "output")
    assert fs.embedding is not None and ft.embedding is not None and fo.embedding is not None
    d_src = identity_distance(fo.embedding, fs.embedding)
    d_tgt = identity_distance(fo.embedding, ft.embedding)
    assert ft.landmarks is not None
    lm = ft.landmarks[:, :2].numpy().astype(np.float64)
    colour = realism.colour_consistency(output, target, lm, exclude=occluder)
    sharp = realism.sharpness(output, target, lm, exclude=occluder)
    assert fs.landmarks is not None
    novel = realism.novel_colour_share(output, target, lm, source, fs.landmarks[:, :2].numpy().astype(np.float64),
                                       exclude=occluder)
    return SwapQuality(
        identity_to_source=d_src,
        identity_to_target=d_tgt,
        landmark_nme=landmark_nme(fo, ft),
        seam_ratio=seam_ratio(output, ft),
        seam_top=seam_ratio(output, ft, top_only=True),
        seam_top_target=seam_ratio(target, ft, top_only=True),
        identity_moved=d_src < d_tgt,
        colour_de=colour["colour_de"],
        colour_de_step=colour["colour_de_step"],
        colour_de_step_target=colour["colour_de_step_target"],
        sharpness_vs_target=sharp["sharpness_vs_target"],
        sharpness_vs_128=sharp["sharpness_vs_128"],
        occluder_mad=None if occluder is None else realism.occluder_preservation(output, target, occluder),
        novel_colour=novel,
    )


def evaluate_files(source: Path, target: Path, output: Path, occluder: Path | None = None,
                   engine: SwapEngine | None = None) -> SwapQuality:
    """:func:`evaluate` on image files; ``occluder``: a mask image (non-zero = occluder)."""
    from faceweave.media.image import read_image

    mask = None if occluder is None else read_image(occluder).rgb.max(2) > 127
    return evaluate(read_image(source).rgb, read_image(target).rgb, read_image(output).rgb, engine, mask)


def landmark_jitter(tracks: list[torch.Tensor]) -> float:
    """Mean frame-to-frame landmark displacement after removing global similarity motion, over IOD.

    Args:
        tracks: per frame ``(468, 2)`` landmarks of one face (consecutive frames).
    """
    from faceweave.ops.geometry import estimate_similarity, transform_points

    if len(tracks) < 2:
        return 0.0
    pts = torch.stack([t[:, :2].float() for t in tracks])
    prev, cur = pts[:-1], pts[1:]
    m = estimate_similarity(prev, cur)
    residual = torch.linalg.vector_norm(cur - transform_points(m, prev), dim=2).mean(1)
    eyes = torch.linalg.vector_norm(pts[:, 33] - pts[:, 263], dim=1)[1:]
    return float((residual / eyes.clamp(min=1e-6)).mean())
