"""The realism test set (issue 21), built from the bundled public-domain faces (data/media/ATTRIBUTION.md).

Every case is a (source, target) pair where the target may carry a synthetic change at a known place:

- occluders pasted in front of the face with their exact mask: ``flat`` (a skin-coloured patch over the lower face,
  the hardest for colour cues), ``object`` (a textured rounded bar, cut from a Big Buck Bunny frame, like a
  microphone), ``hand`` (a hand-shaped cut-out filled with skin taken from *another* photo) and ``hair`` (dark
  strands across the forehead and an eye);
- ``bald``: the hair above the forehead painted over with the forehead's skin (a high forehead / bald head);
- ``dark`` and ``bright``: the target's exposure changed.

The split is by target person: ``tune`` targets are astronaut and grace_hopper, ``heldout`` targets obama and
obama2 (so a parameter tuned on one split never saw the other's faces). ``mirror=True`` builds either split from
the photos mirrored left to right: the same people, but the light, the hair's parting and every synthetic occluder
fall on the other side of the face, a check that a rule found on the originals does not depend on where things
happened to lie in them. Group grids (detection recall) tile one
face many times at a chosen face size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import cv2
import numpy as np

from faceweave.data import media_path
from faceweave.models import topology

PEOPLE = {"astronaut.png": "astronaut", "grace_hopper.jpg": "hopper", "obama.jpg": "obama", "obama2.jpg": "obama"}
SPLITS = {"tune": ("astronaut.png", "grace_hopper.jpg"), "heldout": ("obama.jpg", "obama2.jpg")}
VARIANTS = ("plain", "flat", "object", "hand", "hair", "bald", "dark", "bright")
OCCLUDERS = ("flat", "object", "hand", "hair")


@dataclass
class Case:
    """One swap to judge: images are ``(H, W, 3)`` uint8 RGB; ``occluder`` ``(H, W)`` bool or None."""

    name: str
    split: str
    source_name: str
    target_name: str
    variant: str
    source: np.ndarray
    target: np.ndarray
    occluder: np.ndarray | None = None
    meta: dict[str, float] = field(default_factory=dict)


@lru_cache(maxsize=16)
def _read(name: str, mirror: bool = False) -> np.ndarray:
    from faceweave.media.image import read_image

    rgb = read_image(media_path(name)).rgb
    return np.ascontiguousarray(rgb[:, ::-1]) if mirror else rgb


def load(name: str, mirror: bool = False) -> np.ndarray:
    """A bundled image (a fresh copy), mirrored left to right when ``mirror``."""
    return _read(name, mirror).copy()


@lru_cache(maxsize=1)
def _bunny_frame() -> np.ndarray:
    import av

    with av.open(str(media_path("bigbuckbunny.mp4"))) as c:
        for k, frame in enumerate(c.decode(video=0)):
            if k == 60:
                return np.ascontiguousarray(frame.to_ndarray(format="rgb24"))
    raise RuntimeError("bigbuckbunny.mp4 has fewer than 61 frames")


def bunny_frames(count: int = 4, step: int = 30, start: int = 0) -> list[np.ndarray]:
    """``count`` face-less frames of the bundled Big Buck Bunny clip (for false-detection checks): frames ``start``,
    ``start + step``, …"""
    import av

    out = []
    with av.open(str(media_path("bigbuckbunny.mp4"))) as c:
        for k, frame in enumerate(c.decode(video=0)):
            if k >= start and (k - start) % step == 0:
                out.append(np.ascontiguousarray(frame.to_ndarray(format="rgb24")))
            if len(out) == count:
                break
    return out


def _skin(image: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """Median RGB of the cheeks (inside the oval, away from the features)."""
    from faceweave.eval.realism import face_oval_mask

    ring = face_oval_mask(lm, image.shape, 0.06) & ~face_oval_mask(lm, image.shape, 0.18)
    return np.median(image[ring], axis=0)


def _paste(image: np.ndarray, patch: np.ndarray, mask: np.ndarray) -> np.ndarray:
    out = image.copy()
    out[mask] = patch[mask]
    return out


def _face_geometry(lm: np.ndarray) -> tuple[np.ndarray, float]:
    pts = lm[:, :2]
    return pts, float((pts.max(0) - pts.min(0)).max())


def occlude_flat(image: np.ndarray, lm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A flat skin-coloured rectangle over the mouth and chin (its colour: the target's own cheeks)."""
    pts, size = _face_geometry(lm)
    mouth = pts[list(topology.LIPS_OUTER)].mean(0)
    mask = np.zeros(image.shape[:2], bool)
    x0, x1 = int(mouth[0] - 0.22 * size), int(mouth[0] + 0.22 * size)
    y0, y1 = int(mouth[1] - 0.08 * size), int(pts[:, 1].max() + 0.05 * size)
    mask[max(0, y0):y1, max(0, x0):x1] = True
    colour = _skin(image, lm).astype(np.uint8)
    return _paste(image, np.broadcast_to(colour, image.shape).copy(), mask), mask


def occlude_object(image: np.ndarray, lm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A textured rounded bar (a microphone-like object) rising diagonally over a cheek and the mouth corner."""
    pts, size = _face_geometry(lm)
    mouth = pts[list(topology.LIPS_OUTER)].mean(0)
    start = mouth + np.array([0.05, 0.0]) * size
    end = start + np.array([0.35, 0.9]) * size
    mask8 = np.zeros(image.shape[:2], np.uint8)
    cv2.line(mask8, tuple(int(v) for v in start), tuple(int(v) for v in end), 1, max(3, int(0.12 * size)))
    mask = mask8.astype(bool)
    tex = cv2.resize(_bunny_frame(), (image.shape[1], image.shape[0]), interpolation=cv2.INTER_AREA)
    return _paste(image, tex, mask), mask


def _hand_polygon(base: np.ndarray, size: float) -> list[np.ndarray]:
    """A palm with four fingers and a thumb, pointing up from ``base`` (shapes in pixels)."""
    palm_w, palm_h = 0.42 * size, 0.35 * size
    shapes = [np.array([[base[0] - palm_w / 2, base[1]], [base[0] + palm_w / 2, base[1]],
                        [base[0] + palm_w / 2, base[1] - palm_h], [base[0] - palm_w / 2, base[1] - palm_h]])]
    finger_w = palm_w / 4.4
    lengths = (0.22, 0.28, 0.30, 0.25)
    for k, length in enumerate(lengths):
        cx = base[0] - palm_w / 2 + finger_w * (0.6 + 1.07 * k) + finger_w / 2
        top = base[1] - palm_h - length * size
        shapes.append(np.array([[cx - finger_w / 2, base[1] - palm_h + 2], [cx + finger_w / 2, base[1] - palm_h + 2],
                                [cx + finger_w / 2, top + finger_w / 2], [cx, top],
                                [cx - finger_w / 2, top + finger_w / 2]]))
    tx = base[0] - palm_w / 2
    shapes.append(np.array([[tx + 2, base[1] - 0.05 * size], [tx + 2, base[1] - palm_h * 0.7],
                            [tx - 0.18 * size, base[1] - palm_h * 1.1], [tx - 0.22 * size, base[1] - palm_h * 0.9]]))
    return shapes


def occlude_hand(image: np.ndarray, lm: np.ndarray, donor: str) -> tuple[np.ndarray, np.ndarray]:
    """A hand-shaped cut-out over the mouth and a cheek, filled with skin cut from another photo (``donor``),
    shaded a little so it is not flat."""
    from faceweave.eval.realism import face_oval_mask

    pts, size = _face_geometry(lm)
    mouth = pts[list(topology.LIPS_OUTER)].mean(0)
    base = mouth + np.array([-0.1, 0.45]) * size
    mask8 = np.zeros(image.shape[:2], np.uint8)
    cv2.fillPoly(mask8, [np.round(s).astype(np.int32) for s in _hand_polygon(base, size)], 1)
    mask = mask8.astype(bool)
    # the donor's skin: its cheek region, tiled to the image (texture and colour of another person's skin)
    donor_img = load(donor)
    donor_lm = donor_landmarks(donor)
    cheek = face_oval_mask(donor_lm, donor_img.shape, 0.1) & ~face_oval_mask(donor_lm, donor_img.shape, 0.2)
    ys, xs = np.nonzero(cheek)
    y0, y1, x0, x1 = ys.min(), ys.max(), xs.min(), xs.max()
    patch = donor_img[y0:y0 + max(8, (y1 - y0) // 6), x0 + (x1 - x0) // 8:x0 + (x1 - x0) // 4]
    tex = cv2.resize(patch, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_CUBIC).astype(np.float32)
    yy = np.linspace(0.85, 1.1, image.shape[0], dtype=np.float32)[:, None, None]
    tex = np.clip(tex * yy, 0, 255).astype(np.uint8)
    return _paste(image, tex, mask), mask


def occlude_hair(image: np.ndarray, lm: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Dark hair strands (curved, 1–3 px) falling from above the forehead across it and over an eye."""
    pts, size = _face_geometry(lm)
    rng = np.random.default_rng(seed)
    top = pts[10]  # forehead top of the mesh
    eye = pts[list(topology.RIGHT_EYE)].mean(0)
    mask8 = np.zeros(image.shape[:2], np.uint8)
    for _ in range(9):
        x = top[0] + rng.uniform(-0.25, 0.1) * size
        p0 = np.array([x, top[1] - 0.12 * size])
        p2 = np.array([eye[0] + rng.uniform(-0.15, 0.2) * size, eye[1] + rng.uniform(0.0, 0.2) * size])
        p1 = (p0 + p2) / 2 + rng.uniform(-0.08, 0.08, 2) * size
        t = np.linspace(0, 1, 40)[:, None]
        curve = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2
        cv2.polylines(mask8, [np.round(curve).astype(np.int32)], False, 1, int(rng.integers(1, 4)))
    mask = mask8.astype(bool)
    colour = np.array([38, 28, 22], np.uint8)
    return _paste(image, np.broadcast_to(colour, image.shape).copy(), mask), mask


def make_bald(image: np.ndarray, lm: np.ndarray, colour: np.ndarray | None = None) -> np.ndarray:
    """Paint the hair above the forehead with the forehead's own skin, lit from above, with a little grain:
    a high forehead / bald head whose skin continues well past the top of the face mesh. ``colour``: the painted
    skin's RGB instead (grace_hopper's forehead under her hat is nearly black: tests paint her cheeks' colour)."""
    pts, size = _face_geometry(lm)
    forehead = pts[[10, 109, 338, 67, 297, 151]].mean(0)
    r = max(2, int(0.04 * size))
    fpatch = image[int(forehead[1]) - r:int(forehead[1]) + r, int(forehead[0]) - r:int(forehead[0]) + r]
    if colour is None:
        colour = np.median(fpatch.reshape(-1, 3), axis=0)
    colour = np.asarray(colour, np.float32)
    lo, hi = pts.min(0), pts.max(0)
    centre = ((lo[0] + hi[0]) / 2, pts[10][1] + 0.12 * size)
    axes = (int(0.55 * (hi[0] - lo[0])), int(0.42 * size))
    mask8 = np.zeros(image.shape[:2], np.uint8)
    cv2.ellipse(mask8, (int(centre[0]), int(centre[1])), axes, 0, 180, 360, 1, -1)
    # keep the face itself (below the mesh's forehead line) untouched
    oval = np.zeros_like(mask8)
    cv2.fillPoly(oval, [np.round(pts[list(topology.FACE_OVAL)]).astype(np.int32)], 1)
    mask = (mask8 > 0) & (oval == 0)
    mask |= (mask8 > 0) & (np.arange(image.shape[0])[:, None] < pts[10][1] + 0.06 * size) & (oval > 0)
    h, w = image.shape[:2]
    yy = ((np.arange(h)[:, None] - centre[1]) / axes[1]).clip(-1, 0)
    shade = (1.0 + 0.08 * yy)[..., None]  # slightly darker toward the crown
    grain = np.random.default_rng(1).normal(0, 2.0, (h, w, 1)).astype(np.float32)
    painted = np.clip(colour * shade + grain, 0, 255).astype(np.uint8)
    soft = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), max(1.0, 0.01 * size))[..., None]
    return np.clip(image * (1 - soft) + painted * soft, 0, 255).astype(np.uint8)


def expose(image: np.ndarray, gain: float, gamma: float) -> np.ndarray:
    """Exposure change: ``255 · (gain · x) ** gamma`` on ``x`` in [0, 1], clipped."""
    x = image.astype(np.float32) / 255.0
    return (np.clip(gain * x, 0, 1) ** gamma * 255 + 0.5).astype(np.uint8)


@lru_cache(maxsize=8)
def _landmarks_cached(name: str, mirror: bool = False) -> np.ndarray:
    from faceweave.pipeline.engine import SwapEngine
    from faceweave.settings import SwapSettings

    engine = SwapEngine(SwapSettings(device="cpu", enhancer=None))
    faces = engine.analyze(engine.to_tensor(_read(name, mirror)))[0]
    face = max(faces, key=lambda f: f.area)
    assert face.landmarks is not None
    return face.landmarks[:, :2].numpy().astype(np.float64)


def donor_landmarks(name: str, mirror: bool = False) -> np.ndarray:
    """The largest face's ``(468, 2)`` mesh in a bundled image (computed once per process)."""
    return _landmarks_cached(name, mirror)


def make_variant(target_name: str, variant: str, mirror: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """The target image of ``variant`` and its occluder mask (None when nothing is in front of the face);
    ``mirror``: built on the photo mirrored left to right."""
    img = load(target_name, mirror)
    lm = donor_landmarks(target_name, mirror)
    donor = "grace_hopper.jpg" if PEOPLE[target_name] != "hopper" else "astronaut.png"
    if variant == "plain":
        return img, None
    if variant == "flat":
        return occlude_flat(img, lm)
    if variant == "object":
        return occlude_object(img, lm)
    if variant == "hand":
        return occlude_hand(img, lm, donor)
    if variant == "hair":
        return occlude_hair(img, lm)
    if variant == "bald":
        return make_bald(img, lm), None
    if variant == "dark":
        return expose(img, 0.8, 1.8), None
    if variant == "bright":
        return expose(img, 1.35, 0.8), None
    raise ValueError(f"unknown variant {variant!r}")


def build_cases(split: str, variants: tuple[str, ...] = VARIANTS, mirror: bool = False) -> list[Case]:
    """Every (source, target variant) case of ``split`` (``tune`` or ``heldout``); sources are the other people.
    ``mirror``: every photo mirrored left to right (case names ``tune-mirror/…``, ``heldout-mirror/…``)."""
    out = []
    label = f"{split}-mirror" if mirror else split
    for target_name in SPLITS[split]:
        sources = [s for s in ("astronaut.png", "grace_hopper.jpg", "obama.jpg")
                   if PEOPLE[s] != PEOPLE[target_name]]
        for variant in variants:
            tgt, occ = make_variant(target_name, variant, mirror)
            for source_name in sources:
                name = f"{label}/{PEOPLE[source_name]}->{target_name.split('.')[0]}:{variant}"
                out.append(Case(name, label, source_name, target_name, variant, load(source_name, mirror), tgt, occ))
    return out


def group_grid(name: str, face_px: float, cols: int = 5, rows: int = 4,
               size: tuple[int, int] = (1280, 1200)) -> tuple[np.ndarray, int]:
    """``cols × rows`` copies of a bundled portrait, scaled so the face mesh is ``face_px`` tall, each centred in
    its cell of a ``size = (W, H)`` canvas (the scaled photo around the face, grey where it ends).

    Returns:
        the image and the number of faces in it.
    """
    img = load(name)
    lm = donor_landmarks(name)
    lo, hi = lm.min(0), lm.max(0)
    scale = face_px / float(hi[1] - lo[1])
    small = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    cx, cy = (lo + hi) / 2 * scale
    w, h = size
    cw, ch = w // cols, h // rows
    canvas = np.zeros((h, w, 3), np.uint8)
    # a plain border (not a reflection, which would mirror the face into extra, upside-down faces)
    pad = cv2.copyMakeBorder(small, ch, ch, cw, cw, cv2.BORDER_CONSTANT, value=(96, 96, 96))
    # the face centred horizontally, at 40 % of the cell's height (room for the shoulders below)
    x0, y0 = int(round(cx + cw - cw / 2)), int(round(cy + ch - 0.4 * ch))
    cell = pad[y0:y0 + ch, x0:x0 + cw]
    for r in range(rows):
        for c in range(cols):
            canvas[r * ch:(r + 1) * ch, c * cw:(c + 1) * cw] = cell
    return canvas, cols * rows
