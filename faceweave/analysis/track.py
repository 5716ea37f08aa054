"""Face tracks across video frames (IoU + identity association), One-Euro smoothing, and scene-cut detection.

Conventions: coordinates are ``(x, y)`` pixels of the frame, pixel centres at integers; boxes ``x0, y0, x1, y1``;
time is in seconds from the frames' presentation timestamps, so variable frame rate is handled exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from faceweave.analysis.face import Face


# ================================================================================================ One-Euro
class OneEuroFilter:
    """One-Euro low-pass filter (Casiez et al., CHI 2012) over a tensor of any shape, element-wise.

    The cutoff adapts to speed: ``cutoff = min_cutoff + beta * |dx/dt|``, so slow motion is smoothed hard (no
    jitter) and fast motion follows with little lag. ``min_cutoff`` and ``d_cutoff`` are in Hz; ``beta`` is in
    1/(unit of x). Works on the input's device and dtype; the first sample passes through unchanged.
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.0, d_cutoff: float = 1.0) -> None:
        self.min_cutoff = float(min_cutoff)
        self.beta = float(beta)
        self.d_cutoff = float(d_cutoff)
        self._x: torch.Tensor | None = None
        self._dx: torch.Tensor | None = None
        self._t: float | None = None

    @staticmethod
    def _alpha(cutoff: torch.Tensor | float, dt: float) -> torch.Tensor | float:
        tau = 1.0 / (2 * math.pi * cutoff)  # time constant of a first-order low-pass at `cutoff` Hz
        return 1.0 / (1.0 + tau / dt)

    def reset(self) -> None:
        self._x = self._dx = None
        self._t = None

    def __call__(self, x: torch.Tensor, t: float) -> torch.Tensor:
        """Filter sample ``x`` taken at time ``t`` (seconds, increasing). Returns the smoothed sample."""
        if self._x is None or self._t is None or self._dx is None or x.shape != self._x.shape:
            self._x, self._dx, self._t = x.clone(), torch.zeros_like(x), t
            return x
        dt = t - self._t
        if dt <= 0:  # repeated/out-of-order timestamp: keep the state, return the last estimate
            return self._x
        dx = (x - self._x) / dt
        a_d = self._alpha(self.d_cutoff, dt)
        dx_hat = a_d * dx + (1 - a_d) * self._dx
        cutoff = self.min_cutoff + self.beta * dx_hat.abs()
        a = self._alpha(cutoff, dt)
        x_hat = a * x + (1 - a) * self._x
        self._x, self._dx, self._t = x_hat, dx_hat, t
        return x_hat


# ================================================================================================ geometry
def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU matrix of boxes ``a`` ``(N, 4)`` and ``b`` ``(M, 4)`` (``x0, y0, x1, y1``) → ``(N, M)`` in ``[0, 1]``."""
    if a.numel() == 0 or b.numel() == 0:
        return torch.zeros(a.shape[0], b.shape[0], dtype=torch.float32)
    a, b = a.float().reshape(-1, 4), b.float().reshape(-1, 4)
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(-1)
    return inter / (area_a[:, None] + area_b[None, :] - inter).clamp(min=1e-6)


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
    filters: dict[str, OneEuroFilter] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class SmoothingParams:
    """One-Euro parameters for face geometry, in face-size units (coordinates divided by the box diagonal) so
    that one setting fits a 60 px face and a 600 px face alike."""

    # Measured on carphone ×2 (120 frames): lighter smoothing lags less behind the real head, and lag shows up
    # as jitter of the swapped face relative to the head. (1.5, 2) gave 1.23× the input's jitter, (4, 10)
    # 1.11×, (8, 20) 1.03×, smoothing off 1.05×.
    min_cutoff: float = 8.0
    beta: float = 20.0
    d_cutoff: float = 1.0


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

    def _smooth(self, track: Track, face: Face, t: float) -> Face:
        if not self.smoothing:
            return face
        p = self.params
        x0, y0, x1, y1 = face.box.tolist()
        scale = max(math.hypot(x1 - x0, y1 - y0), 1.0)
        changes: dict[str, torch.Tensor] = {}
        for name in ("box", "keypoints", "landmarks"):
            value = getattr(face, name)
            if value is None:
                continue
            filt = track.filters.setdefault(name, OneEuroFilter(p.min_cutoff, p.beta, p.d_cutoff))
            changes[name] = (filt(value.float() / scale, t) * scale).to(value.dtype)
        return face.with_(**changes)

    def update(self, faces: list[Face], t: float, *, detected: bool = True) -> list[tuple[Track, Face]]:
        """Match ``faces`` of the frame at time ``t`` to tracks; returns ``(track, smoothed face)`` per face.

        ``detected``: the faces come from the detector (unmatched ones start tracks). With ``detected=False``
        (landmark refinement seeded by the tracks) unmatched faces are dropped rather than starting tracks.
        """
        boxes_t = torch.stack([tr.face.box.float().cpu() for tr in self.tracks]) if self.tracks else torch.zeros(0, 4)
        boxes_f = torch.stack([f.box.float().cpu() for f in faces]) if faces else torch.zeros(0, 4)
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
            smoothed = self._smooth(tr, faces[j], t)
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
                out.append((tr, self._smooth(tr, f, t)))
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
    "box_iou",
    "landmark_jitter",
    "scene_change_score",
    "thumbnail",
]
