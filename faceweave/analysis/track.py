"""Face tracks across video frames (IoU + identity association), One-Euro smoothing, and scene-cut detection.

Conventions: coordinates are ``(x, y)`` pixels of the frame, pixel centres at integers; boxes ``x0, y0, x1, y1``;
time is in seconds from the frames' presentation timestamps, so variable frame rate is handled exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import numpy as np
import torch

from faceweave.analysis.face import Face
from faceweave.analysis.landmarks import mesh_keypoints
from faceweave.models.topology import NUM_LANDMARKS
from faceweave.ops.boxes import box_iou

ArrayT = TypeVar("ArrayT", torch.Tensor, np.ndarray)


# ================================================================================================ One-Euro
class OneEuroFilter:
    """One-Euro low-pass filter (Casiez et al., CHI 2012) over a tensor of any shape, element-wise.

    The cutoff adapts to speed: ``cutoff = min_cutoff + beta * |dx/dt|``, so slow motion is smoothed hard (no
    jitter) and fast motion follows with little lag. ``min_cutoff`` and ``d_cutoff`` are in Hz; ``beta`` is in
    1/(unit of x). Takes a torch tensor (on its device and dtype) or a NumPy array (the tracker's per-frame geometry:
    NumPy's per-call cost on a few hundred numbers is a fraction of torch's); the first sample passes through
    unchanged.
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.0, d_cutoff: float = 1.0) -> None:
        self.min_cutoff = float(min_cutoff)
        self.beta = float(beta)
        self.d_cutoff = float(d_cutoff)
        self._x: Any = None
        self._dx: Any = None
        self._t: float | None = None

    @staticmethod
    def _alpha(cutoff: Any, dt: float) -> Any:
        tau = 1.0 / (2 * math.pi * cutoff)  # time constant of a first-order low-pass at `cutoff` Hz
        return 1.0 / (1.0 + tau / dt)

    def reset(self) -> None:
        self._x = self._dx = None
        self._t = None

    def __call__(self, x: ArrayT, t: float) -> ArrayT:
        """Filter sample ``x`` taken at time ``t`` (seconds, increasing). Returns the smoothed sample."""
        if (self._x is None or self._t is None or self._dx is None or x.shape != self._x.shape
                or type(x) is not type(self._x)):
            self._x, self._dx, self._t = x.copy() if isinstance(x, np.ndarray) else x.clone(), x * 0, t
            return x
        dt = t - self._t
        if dt <= 0:  # repeated/out-of-order timestamp: keep the state, return the last estimate
            return self._x
        dx = (x - self._x) / dt
        a_d = self._alpha(self.d_cutoff, dt)
        dx_hat = a_d * dx + (1 - a_d) * self._dx
        cutoff = self.min_cutoff + self.beta * abs(dx_hat)
        a = self._alpha(cutoff, dt)
        x_hat = a * x + (1 - a) * self._x
        self._x, self._dx, self._t = x_hat, dx_hat, t
        return cast(ArrayT, x_hat)


# ================================================================================================ geometry
def scene_change_score(prev_small: np.ndarray | None, small: np.ndarray) -> float:
    """Mean absolute difference in ``[0, 1]`` of two downscaled grey frames ``(h, w)`` uint8 (1.0 if no previous)."""
    if prev_small is None or prev_small.shape != small.shape:
        return 1.0
    return float(np.abs(prev_small.astype(np.int16) - small.astype(np.int16)).mean() / 255.0)


def thumbnail(rgb: np.ndarray, size: tuple[int, int] = (64, 36)) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB → ``(h, w)`` uint8 grey thumbnail (area average) for scene-cut checks."""
    import cv2

    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    return cv2.resize(grey, size, interpolation=cv2.INTER_AREA)


def fit_similarity(template: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Least-squares similarity from ``template`` to ``xy`` (both ``(N, 2)`` float; template centred): ``(4,)``
    float64 ``(a, b, tx, ty)`` with ``xy ≈ template · [[a, -b], [b, a]]ᵀ + (tx, ty)`` (closed form, no reflection)."""
    centre = xy.mean(0)
    c = xy - centre
    norm = max(float((template**2).sum()), 1e-9)
    a = float((template * c).sum()) / norm
    b = float((template[:, 0] * c[:, 1] - template[:, 1] * c[:, 0]).sum()) / norm
    return np.array([a, b, centre[0], centre[1]])


def to_shape(xy: np.ndarray, sim: np.ndarray) -> np.ndarray:
    """``(N, 2)`` frame points → the template's frame, inverting :func:`fit_similarity`'s ``sim``."""
    a, b = sim[0], sim[1]
    inv = np.array([[a, b], [-b, a]]) / (a * a + b * b)
    return (xy - sim[2:]) @ inv.T


def from_shape(shape: np.ndarray, sim: np.ndarray) -> np.ndarray:
    """``(N, 2)`` template-frame points → frame pixels with ``sim`` ``(a, b, tx, ty)``."""
    a, b = sim[0], sim[1]
    return shape @ np.array([[a, -b], [b, a]]).T + sim[2:]


def _host64(t: torch.Tensor) -> np.ndarray:
    """``t`` as a float64 NumPy array on the host (the tracker's working form)."""
    return t.detach().cpu().double().numpy()


def _track_box(track: Track) -> np.ndarray:
    """The track's box on the host (kept beside its face, so matching copies nothing from the device)."""
    if track.box is None:
        track.box = _host64(track.face.box)
    return track.box


def _like(values: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    """``values`` as a tensor with ``like``'s dtype and device. To a GPU from pinned memory, without waiting: a
    copy from pageable memory synchronises the stream, so it waits for every kernel queued there (on a GPU that
    live sessions share, the other sessions' too)."""
    host = torch.from_numpy(values).to(like.dtype)
    if like.device.type != "cuda":
        return host.to(like.device)
    return host.pin_memory().to(like.device, non_blocking=True)


@dataclass(frozen=True)
class _HostGeometry:
    """A face's geometry on the host in float64 (the tracker's working form): box ``(4,)``, keypoints ``(K, 2)``,
    landmarks ``(N, 2|3)`` or None."""

    box: np.ndarray
    keypoints: np.ndarray
    landmarks: np.ndarray | None


def _geometry_to_host(faces: list[Face]) -> list[_HostGeometry]:
    """Every face's box, keypoints and landmarks in one device→host copy (each copy waits for the device), exactly
    the values of :func:`_host64` on each."""
    tensors = [t for f in faces for t in (f.box, f.keypoints, f.landmarks) if t is not None]
    if not tensors:
        return []
    if len({t.device for t in tensors}) > 1:  # mixed devices: one copy per tensor
        flat = np.concatenate([_host64(t).reshape(-1) for t in tensors])
    else:
        flat = torch.cat([t.detach().reshape(-1).to(torch.float64) for t in tensors]).cpu().numpy()
    out, at = [], 0

    def take(t: torch.Tensor) -> np.ndarray:
        nonlocal at
        n = t.numel()
        at += n
        return flat[at - n : at].reshape(tuple(t.shape))

    for f in faces:
        box, keypoints = take(f.box), take(f.keypoints)
        out.append(_HostGeometry(box, keypoints, take(f.landmarks) if f.landmarks is not None else None))
    return out


# ================================================================================================ tracks
@dataclass
class Track:
    """One face followed over time. ``source_index``/``selected`` are decided once, when the track is born."""

    track_id: int
    face: Face
    born_at: float
    last_seen: float
    selected: bool = False
    source_index: int = 0
    decided: bool = False
    misses: int = 0
    embedding: torch.Tensor | None = None
    box: np.ndarray | None = field(default=None, repr=False)  # (4,) float64: ``face.box`` on the host
    unit: float | None = None  # the face's RMS radius (pixels) when its smoothing started
    template: np.ndarray | None = field(default=None, repr=False)  # (N, 2) its first landmarks, normalised
    filters: dict[str, OneEuroFilter] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class SmoothingParams:
    """One-Euro parameters for face geometry, in face-size units so that one setting fits a 60 px face and a
    600 px face alike.

    Landmarks are split into a similarity transform (where the head is: translation, scale, roll) and the residual
    shape in the face's own normalised frame (expression and detector noise), and the two are smoothed separately:

    - ``rigid_*`` for the similarity, in units of the face's RMS radius. Head motion must be followed with almost
      no lag: the swapped face is pasted into the *unsmoothed* head, so any lag shows as the face sliding over
      the head (on carphone ×2, smoothing the similarity as hard as the shape raised the re-measured jitter
      1.33× → 1.57×).
    - ``shape_*`` for the residual shape (unit: the face's RMS radius): this is where FaceMesh's frame-to-frame
      noise lives, so it is smoothed hard; ``beta`` opens the filter while the mouth or eyes really move.
    - ``min_cutoff``/``beta`` for the box and, for faces without landmarks, the keypoints (face-box diagonal
      units), as before.
    """

    min_cutoff: float = 8.0
    beta: float = 20.0
    d_cutoff: float = 1.0
    rigid_min_cutoff: float = 8.0
    rigid_beta: float = 20.0
    shape_min_cutoff: float = 1.0
    shape_beta: float = 10.0


class FaceTracker:
    """Associate per-frame detections with persistent tracks and smooth their geometry over time.

    Association is greedy on ``IoU - identity_weight * identity distance`` (identity only when both sides carry an
    embedding); a pair needs IoU ≥ ``iou_threshold``. A track unseen for more than ``max_misses`` updates ends.
    """

    def __init__(
        self,
        *,
        iou_threshold: float = 0.3,
        identity_threshold: float = 0.6,
        identity_weight: float = 0.5,
        max_misses: int = 2,
        smoothing: bool = True,
        params: SmoothingParams | None = None,
    ) -> None:
        self.iou_threshold = iou_threshold
        self.identity_threshold = identity_threshold
        self.identity_weight = identity_weight
        self.max_misses = max_misses
        self.smoothing = smoothing
        self.params = params or SmoothingParams()
        self.tracks: list[Track] = []
        self._next_id = 0
        self.tracks_started = 0

    def reset(self) -> None:
        """Forget every track (scene cut)."""
        self.tracks = []

    def _new_track(self, face: Face, t: float) -> Track:
        track = Track(self._next_id, face, t, t, embedding=face.embedding)
        self._next_id += 1
        self.tracks_started += 1
        self.tracks.append(track)
        return track

    def _filter(self, track: Track, name: str, min_cutoff: float, beta: float) -> OneEuroFilter:
        return track.filters.setdefault(name, OneEuroFilter(min_cutoff, beta, self.params.d_cutoff))

    def _smooth(self, track: Track, face: Face, host: _HostGeometry, t: float) -> tuple[Face, np.ndarray]:
        """``face`` smoothed along ``track`` (``host``: its geometry on the host); returns it and its box on the
        host."""
        # The geometry is filtered in NumPy float64 on the host (one copy out per frame, one back per tensor): a few
        # dozen small ops per face and frame, which cost 0.8 ms per frame as CPU torch ops (one face, 2-core VM).
        if not self.smoothing:
            return face, host.box
        p = self.params
        box = host.box
        scale = max(math.hypot(box[2] - box[0], box[3] - box[1]), 1.0)
        box_hat = self._filter(track, "box", p.min_cutoff, p.beta)(box / scale, t) * scale
        changes: dict[str, torch.Tensor] = {"box": _like(box_hat, face.box)}
        if face.landmarks is not None and host.landmarks is not None and face.landmarks.shape[0] >= 3:
            landmarks = self._smooth_landmarks(track, host.landmarks, t)
            changes["landmarks"] = _like(landmarks, face.landmarks)
            if face.landmarks.shape[0] == NUM_LANDMARKS:
                keypoints = mesh_keypoints(changes["landmarks"])
                changes["keypoints"] = keypoints.to(face.keypoints.device, face.keypoints.dtype)
            else:  # not a FaceMesh: the keypoints keep their own filter
                changes["keypoints"] = self._smooth_points(track, "keypoints", face.keypoints, host.keypoints, scale,
                                                           t)
        else:
            changes["keypoints"] = self._smooth_points(track, "keypoints", face.keypoints, host.keypoints, scale, t)
        # the box as the device holds it (rounded to its dtype), for the next frame's matching
        return face.with_(**changes), torch.from_numpy(box_hat).to(face.box.dtype).double().numpy()

    def _smooth_points(self, track: Track, name: str, value: torch.Tensor, host: np.ndarray, scale: float,
                       t: float) -> torch.Tensor:
        p = self.params
        return _like(self._filter(track, name, p.min_cutoff, p.beta)(host / scale, t) * scale, value)

    def _smooth_landmarks(self, track: Track, pts: np.ndarray, t: float) -> np.ndarray:
        """Smooth ``(N, 2|3)`` float64 landmarks as a similarity (lightly) and a residual shape (hard), in face
        units.

        The similarity is the least-squares fit of the track's template (its first landmarks, centred, RMS radius
        1) to the current points; the shape is the current points mapped back into the template's frame, so it
        holds expression and detector noise but no head motion. z is divided by the current scale alike.
        """
        p = self.params
        xy = pts[:, :2]
        if track.template is None or track.template.shape[0] != xy.shape[0]:
            c = xy - xy.mean(0)
            radius = max(float(np.sqrt((c**2).sum(1).mean())), 1e-3)
            track.template, track.unit = c / radius, radius
            track.filters.pop("rigid", None)
            track.filters.pop("shape", None)
        unit = float(track.unit or 1.0)
        sim = fit_similarity(track.template, xy)  # a, b in pixels per template unit; t in pixels
        scale = max(math.hypot(sim[0], sim[1]), 1e-3)
        shape = np.concatenate([to_shape(xy, sim), pts[:, 2:] / scale], 1)  # (N, 2|3) template units
        sim_hat = self._filter(track, "rigid", p.rigid_min_cutoff, p.rigid_beta)(sim / unit, t) * unit
        shape_hat = self._filter(track, "shape", p.shape_min_cutoff, p.shape_beta)(shape, t)
        out_xy = from_shape(shape_hat[:, :2], sim_hat)
        return np.concatenate([out_xy, shape_hat[:, 2:] * math.hypot(sim_hat[0], sim_hat[1])], 1)

    def update(self, faces: list[Face], t: float, *, detected: bool = True) -> list[tuple[Track, Face]]:
        """Match ``faces`` of the frame at time ``t`` to tracks; returns ``(track, smoothed face)`` per face.

        ``detected``: the faces come from the detector (unmatched ones start tracks). With ``detected=False``
        (landmark refinement seeded by the tracks) unmatched faces are dropped rather than starting tracks.
        """
        host = _geometry_to_host(faces)
        boxes_t = torch.from_numpy(np.stack([_track_box(tr) for tr in self.tracks])).float() if self.tracks \
            else torch.zeros(0, 4)
        boxes_f = torch.from_numpy(np.stack([h.box for h in host])).float() if faces else torch.zeros(0, 4)
        iou = box_iou(boxes_t, boxes_f)
        score = iou.clone()
        for i, tr in enumerate(self.tracks):
            for j, f in enumerate(faces):
                if tr.embedding is not None and f.embedding is not None:
                    d = float(torch.linalg.vector_norm(tr.embedding.float().cpu() - f.embedding.float().cpu()))
                    score[i, j] -= self.identity_weight * max(0.0, d - self.identity_threshold)
        pairs: list[tuple[int, int]] = []
        used_t: set[int] = set()
        used_f: set[int] = set()
        if score.numel():
            order = torch.argsort(score.flatten(), descending=True).tolist()
            for k in order:
                i, j = divmod(k, score.shape[1])
                if i in used_t or j in used_f or float(iou[i, j]) < self.iou_threshold:
                    continue
                pairs.append((i, j))
                used_t.add(i)
                used_f.add(j)
        out: list[tuple[Track, Face]] = []
        matched: dict[int, tuple[Track, Face]] = {}
        for i, j in pairs:
            tr = self.tracks[i]
            smoothed, tr.box = self._smooth(tr, faces[j], host[j], t)
            tr.face, tr.last_seen, tr.misses = smoothed, t, 0
            if faces[j].embedding is not None and tr.embedding is None:
                tr.embedding = faces[j].embedding
            matched[j] = (tr, smoothed)
        for i, tr in enumerate(self.tracks):
            if i not in used_t:
                tr.misses += 1
        self.tracks = [tr for tr in self.tracks if tr.misses <= self.max_misses]
        for j, f in enumerate(faces):
            if j in matched:
                out.append(matched[j])
            elif detected:
                tr = self._new_track(f, t)
                smoothed, tr.box = self._smooth(tr, f, host[j], t)
                out.append((tr, smoothed))
        return out

    def seeds(self) -> list[Face]:
        """The latest face of each live track: seeds for landmark refinement on the next frame."""
        return [tr.face for tr in self.tracks if tr.misses == 0]


def landmark_jitter(landmarks: list[np.ndarray]) -> float:
    """Mean frame-to-frame landmark displacement after removing global similarity motion, in face-size units.

    Args:
        landmarks: per frame ``(N, 2)`` float ``(x, y)`` pixels of the same face (same point order).

    Each consecutive pair is aligned with a least-squares similarity transform (previous → current, Umeyama);
    what remains is jitter and expression change. Divided by the face size (RMS distance to the centroid).
    """
    import cv2

    values = []
    for a, b in zip(landmarks, landmarks[1:], strict=False):
        a32, b32 = a[:, :2].astype(np.float32), b[:, :2].astype(np.float32)
        m, _ = cv2.estimateAffinePartial2D(a32, b32, method=cv2.LMEDS)
        if m is None:
            continue
        moved = a32 @ m[:, :2].T + m[:, 2]
        size = float(np.sqrt(((b32 - b32.mean(0)) ** 2).sum(1).mean())) or 1.0
        values.append(float(np.linalg.norm(moved - b32, axis=1).mean()) / size)
    return float(np.mean(values)) if values else 0.0


__all__ = [
    "FaceTracker",
    "OneEuroFilter",
    "SmoothingParams",
    "Track",
    "landmark_jitter",
    "scene_change_score",
    "thumbnail",
]
