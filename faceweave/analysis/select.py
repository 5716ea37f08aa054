"""Which target faces to swap, and with which source (``--selector one|many|reference|index``)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from faceweave.analysis.face import Face
from faceweave.analysis.identity import identity_distance, same_person_distance
from faceweave.errors import InvalidOption, NoMatchingFace
from faceweave.settings import SwapSettings

# FaceMesh indices used for a coarse head pose: cheek extremes, forehead top, chin.
_CHEEK_A, _CHEEK_B, _FOREHEAD, _CHIN = 234, 454, 10, 152


def head_pose(face: Face) -> tuple[float, float]:
    """Coarse ``(yaw, pitch)`` in ``[-1, 1]`` (±1 = ±90°) from the mesh's 3-D points.

    Yaw is the turn of the cheek-to-cheek line out of the image plane, pitch that of the forehead-to-chin line
    (FaceMesh's z is in the same pixel units as x and y). 0 is frontal; (0, 0) when there is no mesh.
    """
    if face.landmarks is None:
        return 0.0, 0.0
    p = face.landmarks.double()
    across = p[_CHEEK_B] - p[_CHEEK_A]
    down = p[_CHIN] - p[_FOREHEAD]
    yaw = math.atan2(float(across[2]), float(torch.linalg.vector_norm(across[:2])))
    pitch = math.atan2(float(down[2]), float(torch.linalg.vector_norm(down[:2])))
    return yaw / (math.pi / 2), pitch / (math.pi / 2)


def best_source_for(face: Face, source_faces: Sequence[Face]) -> int:
    """Index of the source whose head pose is closest to ``face``'s (several source photos of one person)."""
    if len(source_faces) <= 1:
        return 0
    yaw, pitch = head_pose(face)
    costs = [math.hypot(yaw - sy, pitch - sp) for sy, sp in (head_pose(s) for s in source_faces)]
    return int(min(range(len(costs)), key=costs.__getitem__))


def select_faces(
    faces: Sequence[Face],
    settings: SwapSettings,
    source_faces: Sequence[Face],
    reference: Sequence[torch.Tensor] | None = None,
) -> list[tuple[Face, int]]:
    """Target faces to swap, each with the index of the source face to put there.

    Args:
        faces: faces of one target image/frame (``embedding`` filled for ``reference``).
        settings: ``selector``, ``face_index``, ``reference_threshold`` (else the ``recogniser``'s limit).
        source_faces: the prepared source faces (with landmarks), one per source image.
        reference: identity embeddings to match for ``selector="reference"`` (the reference image's, or the sources').

    Returns:
        ``[(face, source_index), ...]``; empty when no face is present. For ``reference``, raises
        :class:`NoMatchingFace` when faces exist but none matches.
    """
    if not faces:
        return []
    mode = settings.selector
    if mode == "one":
        chosen = [max(faces, key=lambda f: f.area)]
    elif mode == "many":
        chosen = list(faces)
    elif mode == "index":
        ordered = sorted(faces, key=lambda f: (f.centre[0], f.centre[1]))
        if settings.face_index >= len(ordered):
            raise InvalidOption(
                f"face index {settings.face_index} asked for but the target has {len(ordered)} face(s)",
                hint=f"use an index from 0 to {len(ordered) - 1} (faces are numbered left to right)",
            )
        chosen = [ordered[settings.face_index]]
    elif mode == "reference":
        if not reference:
            raise InvalidOption("selector 'reference' needs reference embeddings", hint="pass --reference IMAGE")
        limit = settings.reference_threshold or same_person_distance(settings.recogniser)
        chosen = []
        for f in faces:
            if f.embedding is None:
                raise InvalidOption("selector 'reference' needs face embeddings", hint="run identify first")
            d = min(identity_distance(f.embedding, r) for r in reference)
            if d <= limit:
                chosen.append(f)
        if not chosen:
            raise NoMatchingFace(
                f"none of the {len(faces)} target face(s) is within distance {limit} "
                "of the reference identity",
                hint="check the reference image, or raise --reference-threshold",
            )
    else:  # pragma: no cover - SwapSettings validates the literal
        raise InvalidOption(f"unknown selector {mode!r}")
    return [(f, best_source_for(f, source_faces)) for f in chosen]
