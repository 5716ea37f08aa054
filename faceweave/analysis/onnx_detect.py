"""The ONNX face detectors' stage: :class:`Face` objects from the RetinaFace and SCRFD networks' tensors
(:mod:`faceweave.models.retinaface`, :mod:`faceweave.models.scrfd`), and RetinaFace's keypoint refinement.

RetinaFace keypoint refinement (``refine=True``, default): the 5 points of MobileNet0.25 move by 2–6 % of the
inter-ocular distance with the input scale alone, so each face found in the whole frame is cropped again at canonical
scales (its box side = each of ``refine_face_px`` pixels, crop side = ``refine_margin`` × that), rotated upright by the
first pass's eye line; each scale is one batch of every face's crop and its mirror image, and the points of all
views (mirrors flipped back, left/right swapped) are averaged. Each view's points are the score-weighted mean over
the anchors that overlap its best detection. The scales and margin were chosen on held-out frames
(docs/models.md, "The embedded RetinaFace").
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F

from faceweave.analysis.face import Face
from faceweave.errors import InvalidOption
from faceweave.models.retinaface import BGR_MEAN, RetinaFaceNet, decode_retinaface
from faceweave.models.scrfd import ScrfdNet
from faceweave.ops.boxes import box_iou
from faceweave.ops.crops import crop_matrices, roll_from_eyes


def refine_crop_matrices(
    boxes: torch.Tensor, keypoints: torch.Tensor, face_px: float, size: int
) -> torch.Tensor:
    """Crop → frame matrices that put each face upright at a canonical scale in the middle of a ``size``² crop.

    Args:
        boxes: ``(N, 4)`` ``x0, y0, x1, y1``; keypoints: ``(N, 5, 2)`` in :class:`FaceKeypoint` order, frame pixels.
        face_px: the box's longer side becomes this many crop pixels. size: crop side.
    Returns:
        ``(N, 3, 3)`` float32, crop pixel centre ``(u, v, 1)`` → frame pixel centre ``(x, y, 1)``; rotated by the
        roll of the eye line ``EYE_A → EYE_B`` so the eyes are level in the crop.
    """
    boxes, keypoints = boxes.float(), keypoints.float()
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    side = (boxes[:, 2:] - boxes[:, :2]).amax(-1).clamp(min=1.0) * (size / face_px)  # crop side in frame pixels
    m = crop_matrices(centre, side, roll_from_eyes(keypoints[:, 0], keypoints[:, 1]), size)
    # crop_matrices maps continuous coordinates (0 = outer edge of the first pixel); here both sides are pixel
    # centres: p_centre = M (u_centre + 0.5) - 0.5.
    linear = m[:, :, :2]
    out = torch.zeros(boxes.shape[0], 3, 3, device=boxes.device)
    out[:, :2, :2] = linear
    out[:, :2, 2] = m[:, :, 2] + 0.5 * linear.sum(-1) - 0.5
    out[:, 2, 2] = 1.0
    return out


def sample_refine_crops(
    frames: torch.Tensor, frame_index: torch.Tensor, crop_to_frame: torch.Tensor, size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bilinear ``size``² crops of ``frames`` (``(B, C, H, W)`` float) through ``crop_to_frame`` (``(N, 3, 3)``,
    pixel centres), zero outside the frame. A crop that shrinks the frame by ``f`` ≥ 2 samples a ``f × f``
    box-filtered copy of the region it covers (a cheap antialias, mip-map style), so the bilinear step never shrinks
    by more than 2.

    Returns:
        crops ``(N, C, size, size)`` and ``(N, 1, size, size)`` coverage: the same sampling of an all-ones frame
        (1 inside, 0 outside, bilinear in between), so ``crops - c * coverage`` is the sampling of ``frames - c``.
    """
    n = crop_to_frame.shape[0]
    height, width = frames.shape[-2:]
    scale = crop_to_frame[:, :2, :2].det().abs().sqrt()  # frame pixels per crop pixel
    factor = scale.floor().clamp(min=1).long().cpu()
    out = frames.new_zeros(n, frames.shape[1], size, size)
    coverage = frames.new_zeros(n, 1, size, size)
    axis = torch.arange(size, device=frames.device, dtype=torch.float32)
    grid = torch.stack([axis.expand(size, size), axis[:, None].expand(size, size),
                        torch.ones(size, size, device=frames.device)], -1)  # (size, size, 3): (u, v, 1)
    for f in factor.unique().tolist():
        sel = (factor == f).nonzero().flatten().to(frames.device)
        pts = torch.einsum("nij,hwj->nhwi", crop_to_frame[sel, :2], grid)  # frame pixel centres
        # Only the frame region these crops cover (aligned to f) is pooled and sampled.
        lo = (pts.flatten(0, 2).amin(0) - f).floor().clamp(min=0)
        x0, y0 = (int(lo[0]) // f) * f, (int(lo[1]) // f) * f
        hi = pts.flatten(0, 2).amax(0) + f + 1
        x1, y1 = min(width, max(x0 + f, int(hi[0]))), min(height, max(y0 + f, int(hi[1])))
        src = frames[..., y0:y1, x0:x1]
        src = src if f == 1 else F.avg_pool2d(src, f)
        # Region pixel centre x ↔ pooled (x - x0 - (f - 1) / 2) / f; grid_sample wants (2 x' + 1) / W' - 1.
        sh, sw = src.shape[-2:]
        px = (pts[..., 0] - x0 - (f - 1) / 2) / f
        py = (pts[..., 1] - y0 - (f - 1) / 2) / f
        norm = torch.stack([(2 * px + 1) / sw - 1, (2 * py + 1) / sh - 1], -1)
        out[sel] = F.grid_sample(src[frame_index[sel].to(src.device)], norm.to(src.dtype), mode="bilinear",
                                 padding_mode="zeros", align_corners=False)
        # Coverage of the whole frame (not the region) in closed form: bilinear, zero-padded, of a constant 1.
        gx, gy = pts[..., 0], pts[..., 1]
        full_w, full_h = width // f * f, height // f * f  # the pooled copy drops a remainder < f
        cx = torch.minimum((gx + 1 + (f - 1) / 2) / f, (full_w + (f - 1) / 2 - gx) / f).clamp(0, 1)
        cy = torch.minimum((gy + 1 + (f - 1) / 2) / f, (full_h + (f - 1) / 2 - gy) / f).clamp(0, 1)
        coverage[sel] = (cx * cy)[:, None].to(coverage.dtype)
    return out, coverage


def make_face(box: torch.Tensor, score: float, keypoints: torch.Tensor) -> Face:
    """A :class:`Face` from a detector box ``(4,)`` and 5 keypoints ``(5, 2)`` (float32, image pixels)."""
    eye_a, eye_b = keypoints[0], keypoints[1]
    roll = math.atan2(float(eye_b[1] - eye_a[1]), float(eye_b[0] - eye_a[0]))
    return Face(box=box.float().cpu(), score=float(score), keypoints=keypoints.float().cpu(), roll=roll)


def faces_from_tensors(boxes: torch.Tensor, scores: torch.Tensor, keypoints: torch.Tensor) -> list[Face]:
    """One :class:`Face` per row of a network's ``boxes (K, 4)``, ``scores (K,)``, ``keypoints (K, 5, 2)``."""
    return [make_face(boxes[i], float(scores[i]), keypoints[i]) for i in range(boxes.shape[0])]


class RetinaFaceDetector:
    """Batched RetinaFace face detection through ONNX Runtime.

    Args:
        device: device of the frames passed to :meth:`detect` (and of ORT, see ``OnnxModel``).
        dtype: compute dtype of the caller (pre/post-processing runs in float32 regardless; the graph is float32).
        model_path: another RetinaFace export with the same contract (e.g. ResNet-50); default the embedded one.
        max_side: frames are scaled so their longer side is this many pixels before detection.
        min_score: keep detections with face probability above this. nms_iou: NMS IoU threshold.
        refine: re-run each found face at canonical scales, upright, with its mirror image, and keep the averaged
            keypoints (box and score stay those of the whole-frame pass). Costs one more ONNX call per scale on
            ``2 × faces`` crops of ``refine_margin × face px`` pixels (256² and 384² by default).
        refine_face_px: the face box sides (pixels) of the refinement crops, one pass each.
        refine_margin: crop side / face box side (rounded up to a multiple of 32).
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
        refine: bool = True,
        refine_face_px: tuple[int, ...] = (160, 256),
        refine_margin: float = 1.5,
    ) -> None:
        self.device = torch.device(device)
        self.dtype = dtype
        self.net = RetinaFaceNet(self.device, model_path=model_path, max_side=max_side, min_score=min_score,
                                 nms_iou=nms_iou)
        if not refine_face_px or min(refine_face_px) < 16 or refine_margin < 1.0:
            raise InvalidOption(f"refine_face_px={refine_face_px}, refine_margin={refine_margin}",
                                hint="one or more face sizes >= 16 px, and refine_margin >= 1")
        self.refine, self.refine_face_px = refine, tuple(refine_face_px)
        # Crop side per scale, a multiple of 32 (the graph's largest stride).
        self.refine_sizes = tuple(math.ceil(px * refine_margin / 32) * 32 for px in self.refine_face_px)

    @torch.no_grad()
    def detect(self, frames: torch.Tensor, *, tiles: bool = True) -> list[list[Face]]:  # no tiles: ignored
        """Detect faces.

        Args:
            frames: ``(B, 3, H, W)`` float in ``[0, 1]``, RGB.
        Returns:
            per frame, faces sorted by descending score; boxes and keypoints in ``(x, y)`` pixels of ``frames``,
            pixel centres at integers, keypoints in :class:`FaceKeypoint` order.
        """
        faces = [faces_from_tensors(*found) for found in self.net.detect(frames)]
        if self.refine:
            faces = self._refine(frames, faces)
        return faces

    def _refine(self, frames: torch.Tensor, faces: list[list[Face]]) -> list[list[Face]]:
        """Replace each face's keypoints by the mean over canonical-scale, upright crops and their mirrors."""
        items = [(b, i) for b, per_frame in enumerate(faces) for i in range(len(per_frame))]
        if not items:
            return faces
        n = len(items)
        boxes = torch.stack([faces[b][i].box for b, i in items]).to(frames.device).float()
        keypoints = torch.stack([faces[b][i].keypoints for b, i in items]).to(frames.device).float()
        frame_index = torch.tensor([b for b, _ in items], device=frames.device)
        mean = torch.tensor(BGR_MEAN, device=frames.device).view(1, 3, 1, 1)
        wh = boxes[:, 2:] - boxes[:, :2]
        total = torch.zeros(n, 5, 2, device=frames.device)
        count = torch.zeros(n, device=frames.device)
        for face_px, size in zip(self.refine_face_px, self.refine_sizes, strict=True):
            crop_to_frame = refine_crop_matrices(boxes, keypoints, face_px, size)
            rgb, coverage = sample_refine_crops(frames.float(), frame_index, crop_to_frame, size)
            # = the crop of the mean-subtracted frame: outside the frame is the mean colour (0), as in the first pass.
            crops = rgb.flip(1) * 255.0 - mean * coverage
            loc, conf, landmarks, priors = self.net.run(torch.cat([crops, crops.flip(-1)]))
            # The first-pass box in crop pixels (centred; its rotation ignored) picks the detection to keep.
            side = wh * (face_px / wh.amax(-1, keepdim=True).clamp(min=1.0))
            half = (size - 1) / 2
            expected = torch.cat([half - side / 2, half + side / 2], -1)
            for view in range(2 * n):
                k = view % n
                pts = self._voted_points(loc[view], conf[view, :, 1], landmarks[view], priors, expected[k])
                if pts is None:
                    continue
                if view >= n:  # the mirror: x → size − 1 − x, and image-left/right swap roles
                    pts = pts[[1, 0, 2, 4, 3]]
                    pts[:, 0] = size - 1 - pts[:, 0]
                m = crop_to_frame[k]
                total[k] += pts.to(m.device) @ m[:2, :2].T + m[:2, 2]
                count[k] += 1
        out = [list(per_frame) for per_frame in faces]
        for k, (b, i) in enumerate(items):
            if count[k] > 0:  # else no view found the face again: keep the whole-frame points
                face = faces[b][i]
                out[b][i] = make_face(face.box, face.score, total[k] / count[k])
        return out

    def _voted_points(
        self, loc: torch.Tensor, scores: torch.Tensor, landmarks: torch.Tensor, priors: torch.Tensor,
        expected: torch.Tensor,
    ) -> torch.Tensor | None:
        """Points ``(5, 2)`` of the best detection overlapping ``expected`` (IoU > 0.3), as the score-weighted
        mean over the anchors whose boxes overlap that detection by more than ``nms_iou``; None if there is none."""
        keep = scores > self.net.min_score
        if not bool(keep.any()):
            return None
        boxes, pts = decode_retinaface(loc[keep][None], landmarks[keep][None], priors[keep])
        boxes, pts, scores = boxes[0], pts[0], scores[keep]
        near = box_iou(boxes, expected.to(boxes.device)[None])[:, 0] > 0.3
        if not bool(near.any()):
            return None
        best = int(torch.where(near, scores, torch.zeros_like(scores)).argmax())
        weights = scores * (box_iou(boxes, boxes[best][None])[:, 0] > self.net.nms_iou)
        return (pts * weights[:, None, None]).sum(0) / weights.sum()


class ScrfdDetector:
    """SCRFD ONNX detector (insightface SCRFD, FaceFusion's ``scrfd_2.5g`` / ``retinaface_10g``), Faces out.

    Args:
        model_path: the located (and, if pinned, verified) ``.onnx``. device/dtype: of the caller's frames.
        size: square network input (640 for FaceFusion's exports). min_score, nms_iou: as insightface.
    """

    def __init__(
        self,
        model_path: Path,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        *,
        size: int = 640,
        min_score: float = 0.5,
        nms_iou: float = 0.4,
    ) -> None:
        self.device, self.dtype = torch.device(device), dtype
        self.net = ScrfdNet(model_path, self.device, size=size, min_score=min_score, nms_iou=nms_iou)

    @torch.no_grad()
    def detect(self, frames: torch.Tensor, *, tiles: bool = True) -> list[list[Face]]:  # no tiles: ignored
        """``frames (B, 3, H, W)`` float ``[0, 1]`` RGB → per frame, faces by descending score (image pixels)."""
        return [faces_from_tensors(*found) for found in self.net.detect(frames)]


__all__ = ["RetinaFaceDetector", "ScrfdDetector", "faces_from_tensors", "make_face",
           "refine_crop_matrices", "sample_refine_crops"]
