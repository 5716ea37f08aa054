"""The :class:`Face` record that every analysis stage fills in and every later stage reads."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import IntEnum
from typing import Any

import torch


class FaceKeypoint(IntEnum):
    """Order of :attr:`Face.keypoints` — the ArcFace/insightface 5-point order, in image terms.

    ``EYE_A`` is the eye with the smaller x in an upright face (the subject's right eye).
    """

    EYE_A = 0
    EYE_B = 1
    NOSE = 2
    MOUTH_A = 3
    MOUTH_B = 4


@dataclass(frozen=True)
class Face:
    """One face in one image. Coordinates are ``(x, y)`` pixels of the original image, pixel centres at integers.

    Attributes:
        box: ``(4,)`` float32 ``x0, y0, x1, y1``.
        score: detector confidence in ``[0, 1]``.
        keypoints: ``(5, 2)`` float32 in :class:`FaceKeypoint` order (refined from the mesh once it exists).
        roll: in-plane rotation in radians (positive: clockwise in the image), from the eye line.
        landmarks: ``(468, 3)`` float32 FaceMesh points ``(x, y, z)``, z in pixels relative to the face, or None.
        landmark_score: FaceMesh face-presence confidence in ``[0, 1]``, or None.
        embedding: identity embedding, float32: ``(128,)`` dlib descriptor or ``(512,)`` unit-length ArcFace,
            or None until the engine's ``identify`` runs.
    """

    box: torch.Tensor
    score: float
    keypoints: torch.Tensor
    roll: float = 0.0
    landmarks: torch.Tensor | None = None
    landmark_score: float | None = None
    embedding: torch.Tensor | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def area(self) -> float:
        x0, y0, x1, y1 = self.box.tolist()
        return max(0.0, x1 - x0) * max(0.0, y1 - y0)

    @property
    def centre(self) -> tuple[float, float]:
        x0, y0, x1, y1 = self.box.tolist()
        return (x0 + x1) / 2, (y0 + y1) / 2

    def with_(self, **changes: Any) -> Face:
        """A copy with some fields replaced (faces are immutable)."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready view (lists of floats), as ``faceweave analyze`` prints it."""
        out: dict[str, Any] = {
            "box": [round(v, 2) for v in self.box.tolist()],
            "score": round(float(self.score), 4),
            "keypoints": [[round(v, 2) for v in p] for p in self.keypoints.tolist()],
            "roll_degrees": round(float(torch.rad2deg(torch.tensor(self.roll))), 2),
        }
        if self.landmarks is not None:
            out["landmarks"] = [[round(v, 2) for v in p] for p in self.landmarks.tolist()]
            out["landmark_score"] = None if self.landmark_score is None else round(float(self.landmark_score), 4)
        if self.embedding is not None:
            out["embedding"] = [round(v, 5) for v in self.embedding.tolist()]
        return out
