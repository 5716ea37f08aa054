"""Identity embeddings for detected faces, and distances between them.

Two recognisers: the built-in dlib ResNet (128-d, unnormalised) and the ArcFace plug-in (512-d, normalised here to
unit length). Both compare by Euclidean distance; their same-person limits differ, so every threshold that is not
given explicitly comes from :func:`same_person_distance`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from faceweave.analysis.face import Face
from faceweave.errors import InvalidOption
from faceweave.models.arcface import ArcFaceRecogniser, l2_normalise
from faceweave.models.dlib_identity import DLIB5_FROM_FACEMESH, DlibIdentity
from faceweave.stages import DescriptorRecogniser


def face_identity(image: np.ndarray, faces: Sequence[Face], *, identity: DescriptorRecogniser | None = None
                  ) -> list[Face]:
    """Faces with :attr:`Face.embedding` filled in.

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        faces: faces found in ``image`` (with landmarks for the best box; detector boxes also work).
        identity: a loaded :class:`DlibIdentity` (or another :class:`~faceweave.stages.DescriptorRecogniser` with
            dlib's five-point order) to reuse; default a new DlibIdentity (loading costs ~0.3 s).
    """
    if not faces:
        return []
    identity = identity or DlibIdentity()
    emb = np.zeros((len(faces), 128), np.float32)
    meshed = [i for i, f in enumerate(faces) if f.landmarks is not None]
    boxed = [i for i, f in enumerate(faces) if f.landmarks is None]
    if meshed:
        # dlib's chip from the mesh's own eye corners and nose base: no dependence on a detector's box style.
        pts = np.stack([faces[i].landmarks[list(DLIB5_FROM_FACEMESH), :2].double().numpy()  # type: ignore[index]
                        for i in meshed])
        emb[meshed] = identity.descriptors_from_points(image, pts)
    if boxed:
        emb[boxed] = identity.descriptors(image, np.stack([faces[i].box.double().numpy() for i in boxed]))
    return [f.with_(embedding=torch.from_numpy(e)) for f, e in zip(faces, emb, strict=True)]


def embed_faces(recogniser: ArcFaceRecogniser, frames: torch.Tensor, faces: list[list[Face]]) -> list[list[Face]]:
    """Faces of every frame with :attr:`Face.embedding` set to their unit-length ArcFace embedding ``(512,)``.

    One batched alignment + one forward over all faces of all frames; the 5 keypoints are each face's own
    (mesh-derived or detector). ``frames``: ``(B, 3, H, W)`` float ``[0, 1]`` RGB; ``faces``: one list per frame.
    """
    flat = [(b, f) for b, row in enumerate(faces) for f in row]
    if not flat:
        return [[] for _ in faces]
    index = torch.tensor([b for b, _ in flat], dtype=torch.long, device=frames.device)
    keypoints = torch.stack([f.keypoints.float() for _, f in flat]).to(frames.device)
    emb = l2_normalise(recogniser.embed(frames, index, keypoints)).cpu()
    out: list[list[Face]] = [[] for _ in faces]
    for k, (b, f) in enumerate(flat):
        out[b].append(f.with_(embedding=emb[k]))
    return out


# dlib's documented limit: same person < 0.6 (its LFW operating point).
DLIB_SAME_PERSON = 0.6
# ArcFace on unit vectors: FaceFusion's default reference distance is 0.6 in (1 − cosine), i.e. cosine ≥ 0.4,
# which is a Euclidean distance of sqrt(2 − 2·0.4) ≈ 1.095 between unit embeddings.
ARCFACE_SAME_PERSON = 1.095
_SAME_PERSON = {"dlib": DLIB_SAME_PERSON, "arcface": ARCFACE_SAME_PERSON}


def same_person_distance(recogniser: str) -> float:
    """Largest :func:`identity_distance` at which ``recogniser``'s embeddings count as the same person."""
    try:
        return _SAME_PERSON[recogniser]
    except KeyError:
        raise InvalidOption(f"unknown recogniser {recogniser!r}", hint="use 'dlib' or 'arcface'") from None


def identity_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Euclidean distance between two embeddings of the same recogniser (see :func:`same_person_distance`)."""
    return float(torch.linalg.vector_norm(a.float().cpu() - b.float().cpu()))
