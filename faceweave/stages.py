"""What the engine calls on each stage: one :class:`~typing.Protocol` per stage, satisfied structurally.

The implementations do not inherit from these (they live in ``analysis/``, ``models/``, ``swap/``, ``enhance/`` and
stay plain classes); ``tests/test_stages.py`` checks each against its protocol, at run time and with mypy.

- :class:`Detector`: BlazeFace (:class:`~faceweave.analysis.detect.FaceDetector`), RetinaFace and SCRFD (ONNX).
- :class:`Landmarker`: FaceMesh (:class:`~faceweave.analysis.landmarks.FaceMesh`).
- :class:`EmbeddingRecogniser` / :class:`DescriptorRecogniser`: the two kinds of recogniser (:data:`Recogniser`):
  ArcFace (batched on the device, from the 5 keypoints) and dlib (per image on the host, from the mesh's points).
- :class:`Swapper`: the built-in mesh swapper (source payload: a texture) and the ONNX swappers (a latent).
- :class:`Enhancer`: the ``detail`` sharpener and the ONNX restorers.

This module sits below ``analysis``'s detectors, ``swap``, ``enhance`` and ``pipeline``: it imports only
:class:`~faceweave.analysis.face.Face`.
"""

from __future__ import annotations

from typing import Protocol, TypeAlias, TypeVar, runtime_checkable

import numpy as np
import torch

from faceweave.analysis.face import Face

#: What a swapper computes once per source face and reuses for every frame (a texture, a latent…).
SourceT = TypeVar("SourceT")


@runtime_checkable
class Detector(Protocol):
    """Finds faces (box, score, 5 keypoints, roll) in a batch of frames."""

    def detect(self, frames: torch.Tensor, *, tiles: bool = True) -> list[list[Face]]:
        """``frames (B, 3, H, W)`` float ``[0, 1]`` RGB, any device → per frame, faces by descending score, in
        ``frames``' pixels. ``tiles=False``: skip any extra small-face views (a video between recall passes)."""
        ...


@runtime_checkable
class Landmarker(Protocol):
    """Adds the 468 FaceMesh landmarks (and mesh-derived keypoints) to detected or tracked faces."""

    def landmarks(self, frames: torch.Tensor, faces: list[list[Face]]) -> list[list[Face]]:
        """``frames (B, 3, H, W)`` float ``[0, 1]`` RGB and each frame's faces → the same faces with ``landmarks``
        ``(468, 3)`` (faces the mesh rejects are dropped)."""
        ...


@runtime_checkable
class EmbeddingRecogniser(Protocol):
    """A recogniser that embeds aligned crops on the device, batched over every face of a batch (ArcFace)."""

    def embed(self, frames: torch.Tensor, frame_index: torch.Tensor, keypoints: torch.Tensor) -> torch.Tensor:
        """Raw embeddings ``(N, D)`` float32 of the faces at ``keypoints (N, 5, 2)`` (pixels) in frames
        ``frame_index (N,)`` long of ``frames (B, 3, H, W)`` float ``[0, 1]`` RGB."""
        ...


@runtime_checkable
class DescriptorRecogniser(Protocol):
    """A recogniser that works on one host image at a time (dlib): from its five points, or from a box."""

    def descriptors(self, rgb: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """``rgb (H, W, 3)`` uint8 and ``boxes (F, 4)`` float ``x0, y0, x1, y1`` → ``(F, D)`` float32."""
        ...

    def descriptors_from_points(self, rgb: np.ndarray, points: np.ndarray) -> np.ndarray:
        """``rgb (H, W, 3)`` uint8 and ``points (F, 5, 2)`` float pixels → ``(F, D)`` float32."""
        ...


#: The identity stage: either kind (the engine's ``identify`` turns both into :attr:`Face.embedding`).
Recogniser: TypeAlias = EmbeddingRecogniser | DescriptorRecogniser


@runtime_checkable
class Swapper(Protocol[SourceT]):
    """Puts a prepared source face onto target faces. ``SourceT``: what :meth:`prepare_source` returns."""

    def prepare_source(self, image: torch.Tensor, face: Face) -> SourceT:
        """``image (1, 3, H, W)`` float ``[0, 1]`` RGB and a face of it → the swapper's source payload, computed
        once per job and reused for every frame."""
        ...

    def swap(self, frames: torch.Tensor, items: list[tuple[int, Face, SourceT]]) -> torch.Tensor:
        """``frames (B, 3, H, W)`` float ``[0, 1]`` RGB and ``(frame index, target face, source)`` items → swapped
        frames, same shape/dtype/device; frames without items come back unchanged."""
        ...


@runtime_checkable
class Enhancer(Protocol):
    """Restores or sharpens the swapped faces (after the swap)."""

    def enhance(self, frames: torch.Tensor, faces: list[list[Face]]) -> torch.Tensor:
        """``frames (B, 3, H, W)`` float ``[0, 1]`` RGB and the faces of each frame → enhanced frames, same
        shape/dtype/device; pixels away from every face are unchanged."""
        ...


__all__ = ["DescriptorRecogniser", "Detector", "EmbeddingRecogniser", "Enhancer", "Landmarker", "Recogniser",
           "SourceT", "Swapper"]
