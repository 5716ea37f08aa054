"""Box overlap and non-maximum suppression shared by the face detectors and the tracker.

Conventions: boxes are ``x0, y0, x1, y1`` in pixels (pixel centres at integers); rotated rectangles are
``cx, cy, w, h, angle_deg`` (OpenCV's ``RotatedRect``, angle clockwise in the image).
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

# MediaPipe's NMS overlap threshold for BlazeFace (face_detection_*_common.pbtxt: min_suppression_threshold).
MEDIAPIPE_NMS_THRESHOLD = 0.3


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU matrix of boxes ``a`` ``(N, 4)`` and ``b`` ``(M, 4)`` (``x0, y0, x1, y1``) → ``(N, M)`` in ``[0, 1]``."""
    if a.numel() == 0 or b.numel() == 0:
        return torch.zeros(a.shape[0], b.shape[0], dtype=torch.float32)
    a, b = a.float().reshape(-1, 4), b.float().reshape(-1, 4)
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(-1)
    return inter / (area_a[:, None] + area_b[None, :] - inter).clamp(min=1e-6)



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



def rotated_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two rotated rectangles ``(cx, cy, w, h, angle_deg)`` (OpenCV ``rotatedRectangleIntersection``)."""
    ra = ((float(a[0]), float(a[1])), (float(a[2]), float(a[3])), float(a[4]))
    rb = ((float(b[0]), float(b[1])), (float(b[2]), float(b[3])), float(b[4]))
    kind, points = cv2.rotatedRectangleIntersection(ra, rb)
    if kind == cv2.INTERSECT_NONE or points is None or len(points) < 3:
        return 0.0
    inter = float(cv2.contourArea(cv2.convexHull(points)))
    union = float(a[2] * a[3] + b[2] * b[3]) - inter
    return inter / union if union > 0 else 0.0



def weighted_nms(rects: np.ndarray, keypoints: np.ndarray, scores: np.ndarray,
                 threshold: float = MEDIAPIPE_NMS_THRESHOLD) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """MediaPipe's weighted NMS on rotated rectangles.

    Args:
        rects: ``(N, 5)`` ``cx, cy, w, h, roll_deg`` in frame pixels.
        keypoints: ``(N, 6, 2)`` frame pixels.
        scores: ``(N,)`` in ``[0, 1]``.
        threshold: IoU above which a candidate is merged into the best remaining one.

    Returns:
        ``[(rect (5,), keypoints (6, 2), score)]`` best first; rect centre/size and keypoints are the
        score-weighted means of the merged candidates, the score is the best one's.
    """
    order = [int(i) for i in np.argsort(-scores, kind="stable")]
    out: list[tuple[np.ndarray, np.ndarray, float]] = []
    while order:
        best = order[0]
        merged: list[int] = []
        rest: list[int] = []
        for candidate in order:
            overlaps = candidate == best or rotated_iou(rects[best], rects[candidate]) > threshold
            (merged if overlaps else rest).append(candidate)
        idx = np.asarray(merged, dtype=np.int64)
        weights = scores[idx][:, None]
        total = float(weights.sum())
        rect = rects[best].copy()
        rect[:4] = (rects[idx, :4] * weights).sum(0) / total
        kps = (keypoints[idx] * weights[:, :, None]).sum(0) / total
        out.append((rect, kps, float(scores[best])))
        order = rest
    return out



__all__ = ["MEDIAPIPE_NMS_THRESHOLD", "box_iou", "nms", "rotated_iou", "weighted_nms"]
