"""SCRFD-style detectors (insightface SCRFD, FaceFusion's ``scrfd_2.5g`` / ``retinaface_10g``) — a plug-in ONNX.

Contract (insightface ``SCRFD.detect``): the image is scaled to fit 640×640 keeping its aspect ratio and placed
top-left on black; input ``(1,3,640,640)`` RGB ``(x - 127.5) / 128``. Nine outputs, in graph order: scores for
strides 8/16/32 (``(N,1)``), box distances for 8/16/32 (``(N,4)``, in stride units: left, top, right, bottom),
keypoint offsets for 8/16/32 (``(N,10)``, stride units), each optionally with a leading batch dim. Anchors: 2 per
cell at the cell's top-left corner ``(x·s, y·s)``, row-major, anchors innermost. Score > 0.5, NMS IoU 0.4.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F

from faceweave.errors import InvalidOption, check_shape
from faceweave.models.onnx_runtime import OnnxModel
from faceweave.ops.boxes import nms

STRIDES = (8, 16, 32)
NUM_ANCHORS = 2


def letterbox_top_left(frames: torch.Tensor, size: int) -> tuple[torch.Tensor, float]:
    """Scale ``frames`` ``(B, C, H, W)`` to fit ``size``×``size`` (aspect kept, like insightface: the long side
    becomes ``size``, the short side ``int(...)``), place top-left on zeros.

    Returns ``(canvas (B, C, size, size), scale)``; a point ``p`` of the canvas is ``p / scale`` in the input.
    """
    h, w = frames.shape[-2:]
    if h / w > 1.0:
        nh, nw = size, int(size / (h / w))
    else:
        nw, nh = size, int(size * (h / w))
    scale = nh / h
    # No antialiasing: insightface resizes with cv2.INTER_LINEAR, and the reference is what the model saw in training.
    resized = F.interpolate(frames, size=(nh, nw), mode="bilinear", align_corners=False)
    canvas = frames.new_zeros(frames.shape[0], frames.shape[1], size, size)
    canvas[..., :nh, :nw] = resized
    return canvas, scale


def anchor_centres(height: int, width: int, stride: int, *, device: torch.device) -> torch.Tensor:
    """``(H/s · W/s · 2, 2)`` float32 anchor centres ``(x, y)`` in input pixels (cell corners, anchors innermost)."""
    ny, nx = math.ceil(height / stride), math.ceil(width / stride)
    ys, xs = torch.meshgrid(
        torch.arange(ny, device=device, dtype=torch.float32),
        torch.arange(nx, device=device, dtype=torch.float32),
        indexing="ij",
    )
    centres = torch.stack([xs, ys], -1).reshape(-1, 1, 2) * stride
    return centres.expand(-1, NUM_ANCHORS, 2).reshape(-1, 2)


def decode_scrfd(
    outputs: list[torch.Tensor], height: int, width: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Decode the 9 SCRFD outputs of one image (batch dim removed).

    Returns scores ``(N,)``, boxes ``(N, 4)`` ``x0,y0,x1,y1`` and keypoints ``(N, 5, 2)``, input pixels.
    """
    if len(outputs) != 3 * len(STRIDES):
        raise InvalidOption(f"an SCRFD model must have 9 outputs (scores/boxes/kps × 3 strides), got {len(outputs)}")
    all_scores, all_boxes, all_kps = [], [], []
    for i, stride in enumerate(STRIDES):
        scores = outputs[i].reshape(-1)
        dist = outputs[i + 3].reshape(-1, 4) * stride
        kps = outputs[i + 6].reshape(-1, 5, 2) * stride
        centres = anchor_centres(height, width, stride, device=scores.device)
        boxes = torch.cat([centres - dist[:, :2], centres + dist[:, 2:]], -1)
        all_scores.append(scores)
        all_boxes.append(boxes)
        all_kps.append(centres[:, None, :] + kps)
    return torch.cat(all_scores), torch.cat(all_boxes), torch.cat(all_kps)


class ScrfdNet:
    """SCRFD ONNX detector, tensors out; frames go through the graph one by one if its batch dim is fixed at 1.

    Faces are built on it by ``ScrfdDetector`` (``analysis/onnx_detect.py``).

    Args:
        model_path: the located (and, if pinned, verified) ``.onnx``. device: of the caller's frames.
        size: square network input (640 for FaceFusion's exports). min_score, nms_iou: as insightface.
    """

    def __init__(
        self,
        model_path: Path,
        device: torch.device | str = "cpu",
        *,
        size: int = 640,
        min_score: float = 0.5,
        nms_iou: float = 0.4,
    ) -> None:
        self.device = torch.device(device)
        self.size, self.min_score, self.nms_iou = size, min_score, nms_iou
        self.model = OnnxModel(
            model_path, device=self.device, warmup_shapes={n: (1, 3, size, size) for n in ("input.1", "input")}
        )
        self.input_name = self.model.input_names[0]

    @torch.no_grad()
    def detect(self, frames: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """``frames (B, 3, H, W)`` float ``[0, 1]`` RGB → per frame, ``boxes (K, 4)`` ``x0, y0, x1, y1``,
        ``scores (K,)`` and ``keypoints (K, 5, 2)`` (``FaceKeypoint`` order), float32 image pixels, by descending
        score."""
        check_shape(frames, ["B", "3", "H", "W"], "frames")
        canvas, scale = letterbox_top_left(frames.float() * 255.0, self.size)
        x = (canvas - 127.5) / 128.0
        results: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        for b in range(x.shape[0]):
            outs = self.model.run({self.input_name: x[b : b + 1]})
            outs = [o[0] if o.dim() == 3 else o for o in outs]
            scores, boxes, kps = decode_scrfd(outs, self.size, self.size)
            keep = scores > self.min_score
            scores, boxes, kps = scores[keep], boxes[keep], kps[keep]
            if scores.numel() == 0:
                results.append((boxes, scores, kps))
                continue
            idx = nms(boxes, scores, self.nms_iou)
            results.append((boxes[idx] / scale, scores[idx], kps[idx] / scale))
        return results


__all__ = ["ScrfdNet", "anchor_centres", "decode_scrfd", "letterbox_top_left"]
