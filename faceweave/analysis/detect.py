"""Face detection with MediaPipe BlazeFace (short + full range), batched on the device.

Pipeline of :meth:`FaceDetector.detect` (every step batched over frames, on the frames' device):

1. *Views*: each frame is sampled into the square input of both nets by ``grid_sample`` from an antialiased
   downscale of the frame. The plain view is MediaPipe's letterbox (aspect kept, black padding). Frames too
   large for a ``min_face`` face to reach ~18 net pixels are also cut into 2×2..3×3 overlapping tiles for the
   full-range net (small-face pass). Rotated views (the retry, below) turn the frame about its centre.
2. Both BlazeFace nets run, one forward each over all views of all frames; boxes and 6 keypoints are decoded
   with the MediaPipe anchors and mapped back into frame pixels through each view's affine map.
3. Candidates of both nets and all views are merged per frame by MediaPipe's *weighted* NMS (overlapping
   detections are blended, weighted by score). The overlap is the IoU of rectangles turned by each candidate's
   roll (from its eye line), so a rolled face found in two views is one face.
4. Frames where nothing reached ``min_score`` are retried on copies rotated by ±30° and ±60°: BlazeFace was
   trained on roughly upright faces and its score drops with roll.
5. Refinement: every face is looked at again by the short-range net in an upright crop twice its size (one
   batched forward); box and keypoints become the score-weighted mean of both looks. A face inside the frame that
   no look scores ``CONFIRM_SCORE`` is dropped, and one with a doubtful first look (the retry's, or a weak one)
   needs ``RETRY_CONFIRM_SCORE`` from its first look or a second look centred on it. Frames whose upright
   candidates were all dropped so get the retry of step 4 then (one more batched pass over those frames alone),
   and its faces the same refinement: a face rolled by 90° may have an upright candidate that no look confirms.

Why two nets: the full-range model (192², stride-4 anchors) finds faces down to ~40 px in a 640×480 frame but
is weaker on close-ups; the short-range one (128²) is best for faces filling much of the frame.

Coordinates returned are ``(x, y)`` pixels of the input frame with pixel centres at integers.
"""

from __future__ import annotations

import math
from collections.abc import Generator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from faceweave.analysis.face import Face
from faceweave.analysis.tiling import MIN_VIEW_FACE, contained, cut_by_tile, level_views, tile_pyramid
from faceweave.errors import InvalidOption, ShapeError, check_shape
from faceweave.models.blazeface import VIEW_MULTIPLE, BlazeFace, load_blazeface
from faceweave.models.tflite_graph import cuda_batch_bucket
from faceweave.ops.boxes import MEDIAPIPE_NMS_THRESHOLD, weighted_nms
from faceweave.ops.crops import crop_matrices, roll_from_eyes, sample_crops, sample_views, view_matrices

# Rotations (degrees, clockwise in the image) tried when the upright views find nothing.
RETRY_ANGLES = (30.0, -30.0, 60.0, -60.0)
# Refinement crop side / face box side: the face then spans about half of the short-range input.
REFINE_CROP_SCALE = 2.0
MAX_TILES_PER_AXIS = 3
# A face inside the frame needs one look (first or refinement) scoring at least this; faces cut by the frame's
# border score lower by nature (0.58–0.61 for half a face) and are kept at the detection threshold.
CONFIRM_SCORE = 0.75
# A face inside the frame that a doubtful first look found, only the rotated retry's copies (``extra["from_retry"]``)
# or an upright first look under WEAK_FIRST_SCORE, needs its first look or a refinement look centred on it to reach
# RETRY_CONFIRM_SCORE. Big Buck Bunny's chest, found by the retry, scored 0.76–0.83 (best look, 14 frames), and
# upright at 0.51–0.55 first with 0.77–0.80 second (5 frames); real faces: first looks ≥ 0.67 (upright, rotated
# to ±120° and group grids), and no rotated face of 300 (0..±120°) came from the retry. The faces the retry finds
# on real photos when made to (upright views blinded) reach 0.85 in 212 of 217 cases up to ±90° (the 5 others
# are found by the upright views); faces cut by the border (the retry finds real ones at 0.51–0.87) keep the
# detection threshold. benchmarks/retry_false_faces.py; docs/quality.md.
WEAK_FIRST_SCORE = 0.6
RETRY_CONFIRM_SCORE = 0.85
# Most views one CPU forward takes (a larger batch leaves the caches: slower per view).
CPU_VIEW_CHUNK = 32
# Ratio of mouth width to inter-ocular distance in the ArcFace 5-point template (29.18 / 35.24 px).
MOUTH_TO_EYE_RATIO = 0.828


def tile_matrices(height: int, width: int, size: int, min_face: float) -> torch.Tensor:
    """Affine maps view pixel → frame pixel for overlapping square tiles (the small-face pass).

    The full-range net needs a face to span about ``MIN_VIEW_FACE`` view pixels. If the whole-frame view already
    shows ``min_face`` that large, no tiles are needed. Otherwise the long axis is covered by ``n`` (2 or 3)
    tiles overlapping by half a tile (so a small face lies wholly inside one), and the short axis likewise.

    Returns:
        ``(T, 2, 3)`` float32 continuous-coordinate matrices; ``T = 0`` when no tiles are needed.
    """
    long_side = float(max(height, width))
    needed = long_side / size * MIN_VIEW_FACE / min_face  # how much finer than the whole view we must look
    if needed <= 1.0:
        return torch.zeros(0, 2, 3)
    per_axis = 2 if needed <= 1.5 else MAX_TILES_PER_AXIS  # n tiles of side 2L/(n+1) zoom by (n+1)/2
    side = 2.0 * long_side / (per_axis + 1)
    scale = side / size

    def starts(extent: int) -> list[float]:
        if extent <= side:
            return [(extent - side) / 2]
        count = math.ceil((extent - side) / (side / 2) - 1e-6) + 1  # tolerance: exact fits stay exact
        return [i * (extent - side) / (count - 1) for i in range(count)]

    return torch.stack([torch.tensor([[scale, 0.0, x0], [0.0, scale, y0]])
                        for y0 in starts(height) for x0 in starts(width)])


def five_point_keypoints(blaze_keypoints: torch.Tensor) -> torch.Tensor:
    """5 points in :class:`FaceKeypoint` order from BlazeFace's 6 keypoints ``(..., 6, 2)`` → ``(..., 5, 2)``.

    BlazeFace gives the mouth *centre*; the corners are put on the line through it parallel to the eye line,
    ``0.414`` inter-ocular distances either side (ArcFace template proportions). Eye A is the subject's right
    eye (BlazeFace keypoint 0), which is the image-left eye of an upright face.
    """
    eye_a, eye_b, nose, mouth = (blaze_keypoints[..., i, :] for i in range(4))
    half_mouth = (eye_b - eye_a) * (MOUTH_TO_EYE_RATIO / 2)
    return torch.stack([eye_a, eye_b, nose, mouth - half_mouth, mouth + half_mouth], dim=-2)


class FaceDetector(nn.Module):
    """Both BlazeFace nets on one device/dtype; :meth:`detect` finds faces in a batch of frames.

    Args:
        device: where the nets run (frames are moved there).
        dtype: ``torch.float32`` (any device) or ``torch.float16`` (CUDA only).
        min_score: default detection threshold in ``[0, 1]``.
        rotation_retry: retry frames without any face on copies rotated by ±30°/±60° (also those whose upright
            faces the refinement all dropped).
        min_face: smallest face width (frame pixels) to look for; frames where the whole view finds no face and
            would show such a face under ``MIN_VIEW_FACE`` net pixels are scanned again in 2×2..3×3 overlapping
            tiles by the full-range net.
        refine: re-detect every face in an upright crop around it (one batched short-range forward) for
            better keypoints and roll.
        level_views: scan each level of small-face tiles as one view of the whole frame at the level's scale
            (:func:`~faceweave.analysis.tiling.level_views`; one full-range forward per level and image size)
            instead of its overlapping tiles. Default: on the CPU, where the net's time follows the pixels it sees
            (0.56× of the tiles' at 512², 0.46× at 640×480); on CUDA the tiles, whose fixed 192² shape the CUDA
            graphs of the warm-up batch sizes replay.
    """

    def __init__(self, device: torch.device = torch.device("cpu"), dtype: torch.dtype = torch.float32, *,
                 min_score: float = 0.5, rotation_retry: bool = True, min_face: float = 40.0,
                 refine: bool = True, level_views: bool | None = None) -> None:
        super().__init__()
        self.short: BlazeFace = load_blazeface("short", device, dtype)
        self.full: BlazeFace = load_blazeface("full", device, dtype)
        self.device, self.dtype = device, dtype
        self.min_score = min_score
        self.rotation_retry = rotation_retry
        if min_face <= 0:
            raise InvalidOption(f"min_face must be positive, got {min_face}")
        self.min_face = float(min_face)
        self.refine = refine
        self.level_views = device.type == "cpu" if level_views is None else bool(level_views)

    def forward_batch_sizes(self, height: int, width: int, batch: int) -> dict[str, list[int]]:
        """The padded batch sizes (:func:`cuda_batch_bucket`) each net can be run at by :meth:`detect` on up to
        ``batch`` frames of ``height × width``: whole-frame views of any subset of the frames, small-face tiles and
        rotated retries for any number of frames without a face, and refinement crops of up to one face per frame.
        (The retry of frames whose faces the refinement all dropped, and the refinement of its faces, run on other
        frames than the first retry: again k of them, at the same sizes.)
        """
        tiles = tile_pyramid(height, width, self.full.input_size, self.min_face).shape[0]
        retries = len(RETRY_ANGLES) if self.rotation_retry else 0
        frames = range(1, batch + 1)  # views of k frames, refinement crops of k faces, k frames without a face
        short = [*frames, *(retries * k for k in frames)]
        full = [*frames, *(retries * k for k in frames), *((tiles + 1) * k for k in frames)]
        return {name: sorted({cuda_batch_bucket(n) for n in sizes if n}) for name, sizes in
                (("short", short), ("full", full))}

    def warm_up(self, height: int, width: int, batch: int) -> None:
        """Run each net once at every size of :meth:`forward_batch_sizes`, so that on a GPU all their CUDA graphs are
        captured before the first frame (a job's memory then does not depend on when a video first loses a face).
        Nothing to do on the CPU."""
        for _ in self.warm_up_steps(height, width, batch):
            pass

    def warm_up_steps(self, height: int, width: int, batch: int) -> Generator[str, None, None]:
        """:meth:`warm_up` one forward at a time (at most one CUDA-graph capture each), naming each after it ran, so
        that a caller can let other work use the device between them (``SwapEngine.warm_up_steps``)."""
        if self.device.type != "cuda":
            return
        for name, sizes in self.forward_batch_sizes(height, width, batch).items():
            net = self.short if name == "short" else self.full
            for n in sizes:
                # inference mode per forward, not across the yield: it is the calling thread's state
                with torch.inference_mode():
                    net(torch.zeros(n, 3, net.input_size, net.input_size, device=self.device, dtype=self.dtype))
                yield f"detector {name} x{n}"

    @torch.inference_mode()
    def detect(self, frames: torch.Tensor, *, min_score: float | None = None,
               sizes: Sequence[tuple[int, int]] | None = None, tiles: bool = True) -> list[list[Face]]:
        """Detect faces in every frame.

        Args:
            frames: ``(B, 3, H, W)`` float RGB in ``[0, 1]`` (grayscale: three equal channels), any device.
            min_score: detection threshold in ``[0, 1]`` (default: the detector's).
            sizes: per frame, ``(height, width)`` of the image at the top left of a zero-padded frame (images of
                different sizes stacked on one canvas); default: every frame is a whole image. Each image is looked
                at as if alone (its own views, tiles, retries and refinement crops), so the faces equal those of
                detecting it alone; the nets still run once over the views of all images.
            tiles: also scan the small-face tiles (:func:`tile_pyramid`; 6 more full-range views at 640×480, 34
                at 1080p). A video tracks its faces between detections and needs them only now and then
                (:class:`~faceweave.pipeline.video_faces.VideoFaceProcessor`); images always scan them.

        Returns:
            One list per frame of :class:`Face` (box, score, 5 keypoints, roll; BlazeFace's 6 raw keypoints in
            ``extra["blazeface_keypoints"]``; with tiles, ``extra["tile_only"]``: True for a face that the whole
            views alone did not find; ``extra["from_retry"]``: True for a face found by the rotated copies; with
            refinement, ``extra["looks"]``: ``(first score, refinement score, refinement centred on the face)``),
            sorted by area, largest first; coordinates in frame pixels, pixel centres at integers, on the CPU as
            float32.
        """
        check_shape(frames, ["B", "3", "H", "W"], "frames")
        if not frames.is_floating_point():
            raise ShapeError(f"frames must be float in [0, 1], got {frames.dtype}",
                             hint="divide uint8 frames by 255 (or use detect_faces for one image)")
        threshold = self.min_score if min_score is None else float(min_score)
        if not 0.0 <= threshold <= 1.0:
            raise InvalidOption(f"min_score must be in [0, 1], got {threshold}")
        frames = frames.to(device=self.device, dtype=self.dtype)
        batch, _, height, width = frames.shape
        image_sizes = [(int(height), int(width))] * batch if sizes is None else [(int(h), int(w)) for h, w in sizes]
        if len(image_sizes) != batch or any(not (0 < h <= height and 0 < w <= width) for h, w in image_sizes):
            raise ShapeError(f"sizes must give 0 < (height, width) <= {(height, width)} for each of {batch} frames")
        upright = torch.zeros(1)
        by_size = group_by_size(image_sizes)
        parts = []
        for (h, w), index in by_size.items():
            plan = [_Views(self.short, view_matrices(h, w, self.short.input_size, upright)),
                    _Views(self.full, view_matrices(h, w, self.full.input_size, upright))]
            # Small faces (group photos): tiles at every scale a face from min_face up can have, on every frame,
            # merged with the whole views' candidates in one NMS (a crowd beside one large face is not missed).
            size = self.full.input_size
            pyramid = tile_pyramid(h, w, size, self.min_face) if tiles else torch.zeros(0, 2, 3)
            if pyramid.shape[0] > 0 and self.level_views:
                # each level as one larger view of the whole frame, one forward per level. A tile reports only faces
                # wholly inside it, and its level is there for faces under half a tile (larger ones the coarser
                # levels and the whole view see): a level view, which no border cuts, keeps to that range too
                plan += [_Views(self.full, m, view, small=True, max_face=size / 2)
                         for m, view in level_views(h, w, size, self.min_face, VIEW_MULTIPLE)]
            elif pyramid.shape[0] > 0:
                # one forward of the full-range net over the whole view and the tiles
                plan.append(_Views(self.full, pyramid, small=True, tiles=True))
            parts.append(_Part(index, _image_frames(frames, index, h, w), plan, pyramid.shape[0] > 0))
        candidates = self._candidates(parts, threshold, batch)
        results = [self._merge(*c[:3]) for c in candidates]
        if any(part.tiles for part in parts):
            # which faces only the tiles found: a video keeps scanning tiles while its frames have such faces
            whole = [self._merge(*(a[~c[3]] for a in c[:3])) for c in candidates]
            results = [_mark_tile_only(faces, plain) for faces, plain in zip(results, whole, strict=True)]
        retried: set[int] = set()
        if self.rotation_retry and any(not faces for faces in results):
            retried = {i for i, faces in enumerate(results) if not faces}
            for i, faces in self._retry(frames, by_size, retried, threshold, batch).items():
                results[i] = faces
        if self.refine:
            had_faces = [bool(faces) for faces in results]
            results = self._refine(frames, results, image_sizes)
            # Frames whose candidates the refinement all rejected (a rolled face's upright candidate under
            # CONFIRM_SCORE: carphone turned 90°) get the retry they skipped: one more batched pass over those frames
            # alone, whose faces are refined by the same rules; a frame with a face or retried already gets none.
            rejected = {i for i in range(batch) if had_faces[i] and not results[i] and i not in retried}
            if self.rotation_retry and rejected:
                again: list[list[Face]] = [[] for _ in range(batch)]
                for i, faces in self._retry(frames, by_size, rejected, threshold, batch).items():
                    again[i] = faces
                for i, faces in enumerate(self._refine(frames, again, image_sizes)):
                    if i in rejected:
                        results[i] = faces
        return results

    def _retry(self, frames: torch.Tensor, by_size: dict[tuple[int, int], list[int]], frame_set: set[int],
               threshold: float, batch: int) -> dict[int, list[Face]]:
        """The rotation retry of the frames ``frame_set``: their copies turned by ``RETRY_ANGLES`` through both nets
        (one forward each over all of them), merged per frame and marked ``extra["from_retry"]``."""
        angles = torch.tensor(RETRY_ANGLES)
        retry_parts = []
        for (h, w), index in by_size.items():
            chosen = [i for i in index if i in frame_set]
            if chosen:
                retry_plan = [_Views(net, view_matrices(h, w, net.input_size, angles))
                              for net in (self.short, self.full)]
                retry_parts.append(_Part(chosen, _image_frames(frames, chosen, h, w), retry_plan, False))
        found: dict[int, list[Face]] = {}
        for i, c in enumerate(self._candidates(retry_parts, threshold, batch)):
            if i in frame_set:
                found[i] = [f.with_(extra={**f.extra, "from_retry": True}) for f in self._merge(*c[:3])]
        return found

    def _refine(self, frames: torch.Tensor, results: list[list[Face]], sizes: list[tuple[int, int]]
                ) -> list[list[Face]]:
        """Second look at every face: the short-range net on an upright crop of ``REFINE_CROP_SCALE`` × the box.

        In the whole-frame views a face may be small or rolled, and the keypoints are then off by up to ~10 % of
        the eye distance and the roll by ~6°. In an upright crop where the face spans about half the input the
        short-range net looks again; box and keypoints become the score-weighted mean of both looks. Faces whose
        crop finds nothing keep their first-pass geometry.
        """
        flat = [(i, f) for i, faces in enumerate(results) for f in faces]
        if not flat:
            return results
        size = self.short.input_size
        centres = torch.tensor([f.centre for _, f in flat], dtype=torch.float32)
        sides = torch.tensor([max(float(f.box[2] - f.box[0]), float(f.box[3] - f.box[1])) for _, f in flat])
        rolls = torch.tensor([f.roll for _, f in flat], dtype=torch.float32)
        matrices = crop_matrices(centres, sides * REFINE_CROP_SCALE, rolls, size)
        crops = sample_crops(frames, torch.tensor([i for i, _ in flat]), matrices, size)
        boxes, keypoints, scores = self.short.decode(*self.short(crops * 2 - 1))
        # The best anchor of each crop, gathered on the device and copied to the host in one go.
        scores = scores.float()
        best = scores.argmax(dim=1)
        rows = torch.arange(len(flat), device=scores.device)
        packed = torch.cat([boxes[rows, best].float(), keypoints[rows, best].float().flatten(1),
                            scores[rows, best][:, None]], dim=1).cpu()
        b = packed[:, :4] * size
        k = packed[:, 4:-1].reshape(len(flat), -1, 2) * size
        second_score = packed[:, -1]
        centre_in_crop = (b[:, :2] + b[:, 2:]) / 2
        # Accept only a confident detection of *this* face (near the crop centre).
        accept = (second_score >= 0.5) & (torch.linalg.norm(centre_in_crop - size / 2, dim=1) <= size / 4)
        linear, offset = matrices[:, :, :2], matrices[:, :, 2]
        # The two looks err independently; their score-weighted mean is closer to the mesh than either alone
        # (bundled faces, eyes + nose vs mesh: 4.5 % of the eye distance either alone, 3.0 % blended; roll
        # error at ±45°: 2.3° -> 1.5°).
        second = torch.einsum("nij,npj->npi", linear, k) + offset[:, None, :] - 0.5
        first = torch.stack([f.extra["blazeface_keypoints"] for _, f in flat])
        first_score = torch.tensor([f.score for _, f in flat], dtype=torch.float32)
        total = first_score + second_score
        blaze = (first * first_score[:, None, None] + second * second_score[:, None, None]) / total[:, None, None]
        centre_second = torch.einsum("nij,nj->ni", linear, centre_in_crop) + offset - 0.5
        centre_first = torch.tensor([f.centre for _, f in flat], dtype=torch.float32)
        centres = (centre_second * second_score[:, None] + centre_first * first_score[:, None]) / total[:, None]
        wh = (b[:, 2:] - b[:, :2]) * torch.linalg.norm(linear[:, :, 0], dim=1)[:, None]
        new_boxes = torch.cat([centres - wh / 2, centres + wh / 2], dim=1)
        five = five_point_keypoints(blaze)
        new_rolls = roll_from_eyes(five[:, 0], five[:, 1]).tolist()
        out: list[list[Face]] = [[] for _ in results]
        for n, (i, face) in enumerate(flat):
            x0, y0, x1, y1 = face.box.tolist()
            height, width = sizes[i]
            inside = x0 > 0 and y0 > 0 and x1 < width - 1 and y1 < height - 1
            best_look = max(face.score, float(second_score[n]))
            if inside and best_look < CONFIRM_SCORE:
                # neither look is confident about a whole face: not a face (a torso or a cartoon in a tile scored
                # 0.57–0.69 on the group grids and Big Buck Bunny, with a second look under 0.75; whole real
                # faces score ≥ 0.85)
                continue
            centred_look = max(face.score, float(second_score[n]) if bool(accept[n]) else 0.0)
            doubtful = face.extra.get("from_retry", False) or face.score < WEAK_FIRST_SCORE
            if inside and doubtful and centred_look < RETRY_CONFIRM_SCORE:
                # a cartoon's chest or a rotated copy's pattern: the second look, upright on it, is not sure either
                # (a second look elsewhere in the crop is another thing, not this face)
                continue
            looks = {"looks": (face.score, float(second_score[n]), bool(accept[n]))}
            if not bool(accept[n]):
                out[i].append(face.with_(extra={**face.extra, **looks}))
                continue
            out[i].append(face.with_(
                box=new_boxes[n].clone(), keypoints=five[n].clone(), roll=new_rolls[n], score=best_look,
                extra={**face.extra, "blazeface_keypoints": blaze[n].clone(), **looks}))
        for faces in out:
            faces.sort(key=lambda f: f.area, reverse=True)
        return out

    def _candidates(self, parts: list[_Part], threshold: float, batch: int
                    ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        """Run each part's plan (groups of views: one net, one scale and one view size each) and collect
        candidates per frame; one forward per net and view size over the views of every part. Detections cut by
        a tile's inner border are dropped (an overlapping tile sees them whole).

        Returns per frame of the batch (``batch`` frames; those of no part get none): rects ``(N, 5)``
        ``cx, cy, w, h, roll_deg``, keypoints ``(N, 6, 2)`` (frame pixel centres), scores ``(N,)`` ≥
        ``threshold`` and ``(N,)`` bool, True for a candidate from a small-face view (a tile or a level view).
        """
        per_frame: list[list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]] = [[] for _ in range(batch)]
        batches: dict[tuple[int, tuple[int, int]], list[tuple[_Part, _Views]]] = {}
        for net in (self.short, self.full):  # the short-range net first, then the full-range views by size
            for part in parts:
                for views in part.plan:
                    if views.net is net and views.matrices.shape[0] > 0:
                        view = views.size or (net.input_size, net.input_size)
                        batches.setdefault((id(net), view), []).append((part, views))
        for (_, view), groups in batches.items():
            net = groups[0][1].net
            images, matrix_rows, frame_rows, extent_rows, small_rows, tile_rows = [], [], [], [], [], []
            max_face_rows = []
            for part, views in groups:
                count, _, height, width = part.frames.shape
                g = views.matrices
                images.append(sample_views(part.frames, g, view))
                matrix_rows.append(g.repeat(count, 1, 1))  # frame-major within each group
                frame_rows.append(torch.tensor(part.index).repeat_interleave(g.shape[0]))
                n_rows = count * g.shape[0]
                extent_rows.append(torch.tensor([[height, width]], dtype=torch.float32).expand(n_rows, 2))
                small_rows.append(torch.full((n_rows,), views.small))
                tile_rows.append(torch.full((n_rows,), views.tiles))
                max_face_rows.append(torch.full((n_rows,), views.max_face))
            # One forward per net and view size: every view of every frame of every group in one batch (on the CPU
            # in chunks: past a few dozen views a forward costs more per view, 8.8 ms against 4.7 for the full net
            # on the dev VM)
            views_in = torch.cat(images) * 2 - 1  # the nets want [-1, 1]
            if views_in.device.type == "cpu" and views_in.shape[0] > CPU_VIEW_CHUNK:
                parts_out = [net(chunk) for chunk in views_in.split(CPU_VIEW_CHUNK)]
                raw = tuple(torch.cat(outs) for outs in zip(*parts_out, strict=True))
            else:
                raw = net(views_in)
            boxes, keypoints, scores = net.decode(raw[0], raw[1], size=view)
            matrices, frame_of_row = torch.cat(matrix_rows), torch.cat(frame_rows)
            extents, small, tiled = torch.cat(extent_rows), torch.cat(small_rows), torch.cat(tile_rows)
            max_face = torch.cat(max_face_rows)
            # Only the candidates over the threshold leave the device, in one copy, in (row, anchor) order; the
            # geometry is then one vectorised pass over all of them (not a loop over rows).
            rows, anchors = torch.nonzero(scores.float() >= threshold, as_tuple=True)
            if rows.numel() == 0:
                continue
            packed = torch.cat([boxes[rows, anchors].float(), keypoints[rows, anchors].float().flatten(1),
                                scores[rows, anchors].float()[:, None], rows[:, None].float()], dim=1).cpu()
            n_kp = keypoints.shape[2]
            view_wh = torch.tensor([float(view[1]), float(view[0])])
            b = packed[:, :4] * view_wh.repeat(2)
            k = packed[:, 4 : 4 + 2 * n_kp].view(-1, n_kp, 2) * view_wh
            s, row = packed[:, 4 + 2 * n_kp], packed[:, -1].long()
            valid = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
            valid &= (b[:, 2:] - b[:, :2]).amax(dim=1) <= max_face[row]
            in_tile = tiled[row]
            if bool(in_tile.any()):  # tiles are square views of the net's own size
                valid &= ~(in_tile & cut_by_tile(b, matrices[row], view[0], extents[row, 0], extents[row, 1]))
            b, k, s, row = b[valid], k[valid], s[valid], row[valid]
            from_tile = small[row]
            linear, offset = matrices[row, :, :2], matrices[row, :, 2]
            centre = torch.einsum("nij,nj->ni", linear, (b[:, :2] + b[:, 2:]) / 2) + offset - 0.5
            frame_kps = torch.einsum("nij,npj->npi", linear, k) + offset[:, None, :] - 0.5
            wh = (b[:, 2:] - b[:, :2]) * torch.linalg.norm(linear[:, :, 0], dim=1)[:, None]
            roll = torch.rad2deg(roll_from_eyes(frame_kps[:, 0], frame_kps[:, 1]))
            rects = torch.cat([centre, wh, roll[:, None]], dim=1).numpy()
            frame_kps_np, s_np, tile_np = frame_kps.numpy(), s.numpy(), from_tile.numpy()
            frame_of_candidate = frame_of_row[row].numpy()
            for frame in np.unique(frame_of_candidate):
                sel = frame_of_candidate == frame
                per_frame[int(frame)].append((rects[sel], frame_kps_np[sel], s_np[sel], tile_np[sel]))
        out = []
        for parts_of_frame in per_frame:
            if parts_of_frame:
                out.append((np.concatenate([p[0] for p in parts_of_frame]),
                            np.concatenate([p[1] for p in parts_of_frame]),
                            np.concatenate([p[2] for p in parts_of_frame]),
                            np.concatenate([p[3] for p in parts_of_frame])))
            else:
                out.append((np.zeros((0, 5), np.float32), np.zeros((0, 6, 2), np.float32), np.zeros(0, np.float32),
                            np.zeros(0, bool)))
        return out

    @staticmethod
    def _merge(rects: np.ndarray, keypoints: np.ndarray, scores: np.ndarray) -> list[Face]:
        faces = []
        for rect, kps, score in weighted_nms(rects, keypoints, scores, MEDIAPIPE_NMS_THRESHOLD):
            blaze = torch.from_numpy(np.ascontiguousarray(kps, dtype=np.float32))
            five = five_point_keypoints(blaze)
            cx, cy, w, h = (float(v) for v in rect[:4])
            box = torch.tensor([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dtype=torch.float32)
            roll = float(roll_from_eyes(five[0], five[1]))
            faces.append(Face(box=box, score=score, keypoints=five, roll=roll,
                              extra={"blazeface_keypoints": blaze}))
        if len(faces) > 1:  # a part of a face seen in a fine tile, inside the face found at a coarser scale
            inside = contained(torch.stack([f.box for f in faces]))
            faces = [f for f, drop in zip(faces, inside.tolist(), strict=True) if not drop]
        faces.sort(key=lambda f: f.area, reverse=True)
        return faces


def _mark_tile_only(faces: list[Face], whole: list[Face]) -> list[Face]:
    """``faces`` with ``extra["tile_only"]``: True where no face of ``whole`` (the whole views' candidates alone)
    has its centre inside the face's box."""
    centres = [f.centre for f in whole]
    out = []
    for face in faces:
        x0, y0, x1, y1 = face.box.tolist()
        seen = any(x0 <= cx <= x1 and y0 <= cy <= y1 for cx, cy in centres)
        out.append(face.with_(extra={**face.extra, "tile_only": not seen}))
    return out


@dataclass
class _Views:
    """Views of one net, one scale and one size (see :meth:`FaceDetector._candidates`)."""

    net: BlazeFace
    matrices: torch.Tensor  # (V, 2, 3) view -> frame maps
    size: tuple[int, int] | None = None  # (height, width) of a level view; None: the net's own square
    small: bool = False  # small-face views (tiles or level views): their faces may be "tile only"
    tiles: bool = False  # square tiles with inner borders (cut_by_tile applies)
    max_face: float = math.inf  # larger detections (view pixels) are dropped


@dataclass
class _Part:
    """Frames of one image size and the views to look at them through (see :meth:`FaceDetector._candidates`)."""

    index: list[int]  # each frame's position in the batch
    frames: torch.Tensor  # (len(index), 3, h, w): the images, cut from their padded frames
    plan: list[_Views]
    tiles: bool


def group_by_size(sizes: Sequence[tuple[int, int]]) -> dict[tuple[int, int], list[int]]:
    """Frame positions by ``(height, width)``, in first-seen order."""
    groups: dict[tuple[int, int], list[int]] = {}
    for i, (h, w) in enumerate(sizes):
        groups.setdefault((int(h), int(w)), []).append(i)
    return groups


def _image_frames(frames: torch.Tensor, index: list[int], height: int, width: int) -> torch.Tensor:
    """The images ``index`` of a padded batch, each cut to ``height × width`` (no copy for a whole batch)."""
    if index != list(range(frames.shape[0])):
        frames = frames.index_select(0, torch.tensor(index, device=frames.device))
    return frames[:, :, :height, :width]


def image_to_frames(image: np.ndarray | torch.Tensor) -> torch.Tensor:
    """One image as a ``(1, 3, H, W)`` float32 batch in ``[0, 1]``.

    Args:
        image: numpy ``(H, W, 3)`` uint8 RGB, or a tensor ``(3, H, W)`` uint8 or float in ``[0, 1]`` RGB.
    """
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ShapeError(f"image must be an (H, W, 3) uint8 RGB array, got {image.shape} {image.dtype}",
                             hint="convert grayscale/RGBA images to 3-channel RGB first")
        return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float() / 255.0
    check_shape(image, ["3", "H", "W"], "image")
    if image.dtype == torch.uint8:
        return image[None].float() / 255.0
    if not image.is_floating_point():
        raise ShapeError(f"image tensor must be uint8 or float in [0, 1], got {image.dtype}")
    return image[None]


def detect_faces(image: np.ndarray | torch.Tensor, *, detector: FaceDetector | None = None,
                 min_score: float = 0.5) -> list[Face]:
    """Faces in one image, largest first.

    Args:
        image: numpy ``(H, W, 3)`` uint8 RGB, or tensor ``(3, H, W)`` uint8 / float ``[0, 1]`` RGB.
        detector: a :class:`FaceDetector` to reuse (one is built on the CPU if omitted).
        min_score: detection threshold in ``[0, 1]``.

    Returns:
        :class:`Face` list sorted by box area, descending; ``(x, y)`` pixels of ``image``.
    """
    detector = detector or FaceDetector()
    return detector.detect(image_to_frames(image), min_score=min_score)[0]


__all__ = ["FaceDetector", "detect_faces", "five_point_keypoints", "tile_matrices", "image_to_frames", "group_by_size"]
