"""The face work of a video, batch by batch: :class:`VideoFaceProcessor` keeps tracks across batches (and, in one
in-process run, across segments), decides once per track whether and with which source it is swapped, and swaps.
:mod:`faceweave.pipeline.video` runs it between the decoder and the encoder."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from faceweave.analysis.face import Face
from faceweave.analysis.identity import same_person_distance
from faceweave.analysis.track import FaceTracker, Track, scene_change_score
from faceweave.errors import NoMatchingFace
from faceweave.media.video.frames import FrameBatch
from faceweave.pipeline.engine import PreparedSource, SwapEngine
from faceweave.settings import SwapSettings

if TYPE_CHECKING:
    from faceweave.provenance.watermark import ChromaMarker

#: A video's detections scan the small-face tiles at least once every this many frames (1 s at 30 fps), so a face
#: too small for the whole-frame view that enters mid-shot is found within this many frames.
RECALL_EVERY = 30
SCENE_CUT_THRESHOLD = 0.12  # mean |Δ| of 64×36 grey thumbnails, in [0, 1]: above this the shot changed

@dataclass
class _PlannedBatch:
    """A batch after :meth:`VideoFaceProcessor.plan_batch`: its planes on the device, the RGB of the frames to swap
    (``rgb`` ``(len(index), 3, H, W)``, None when none), and one plan row per frame in ``index``."""

    batch: FrameBatch
    yuv: Any
    rgb: torch.Tensor | None
    index: list[int]
    plans: list[list[tuple[Face, int]]]


@dataclass(frozen=True)
class _PendingDetection:
    """A detection put off until after its frame went out (``defer_detection``): the frame, ``(1, 3, H, W)`` float
    RGB ``[0, 1]`` on the engine's device, and whether it is a recall pass (the small-face tiles)."""

    frame: torch.Tensor
    recall: bool


class VideoFaceProcessor:
    """Turns :class:`FrameBatch` es into swapped ``(B, H, W, 3)`` uint8 RGB frames, keeping tracks across calls.

    Args:
        engine: a :class:`~faceweave.pipeline.engine.SwapEngine` (or anything with the same methods).
        sources: prepared once per job with ``engine.prepare_sources``.
        reference: identity embeddings for ``selector="reference"``.
        defer_detection: live mode. A one-frame batch whose periodic detection is due while its faces are tracked
            is swapped as a tracked frame, and the detection of that frame waits for :meth:`detect_pending`, which
            the live session calls once the frame went to the output (so a detection frame costs no more latency
            than a tracked one: at 720p on a GPU, detection and its recall tiles were most of the slowest frames).
            Its faces then seed the next frame's landmarks, and tracks start and end there as on a detection frame.
            Frames with no tracked face and scene cuts still detect at once (the face is swapped on that frame).
            A callable is asked at each due detection (the shared live engine defers only while few sessions share
            it: see :meth:`~faceweave.live.shared.SharedEngine.defer_detection`).
    """

    def __init__(
        self,
        engine: SwapEngine,
        sources: Sequence[PreparedSource],
        reference: Sequence[torch.Tensor] | None = None,
        settings: SwapSettings | None = None,
        *,
        marker: ChromaMarker | None = None,
        defer_detection: bool | Callable[[], bool] = False,
    ) -> None:
        self.engine = engine
        self.defer_detection = defer_detection
        self._pending: _PendingDetection | None = None  # a detection put off past its frame's output
        self._detected_seeds: list[Face] | None = None  # its faces: the next frame's seeds
        # the job's settings (detect_every, smoothing, selector…); an engine reused across jobs may carry others
        self.settings: SwapSettings = settings or engine.settings
        # the writer's watermark, put into the frames this processor swaps on the device (off the encoder's thread);
        # not with the visible label, whose frames go back through RGB and are marked by the writer
        self.marker = marker if not self.settings.provenance_label else None
        self.sources = list(sources)
        self.reference = list(reference) if reference is not None else None
        self.tracker = FaceTracker(identity_threshold=same_person_distance(self.settings.recogniser),
                                   smoothing=self.settings.smoothing)
        self._prev_thumb: np.ndarray | None = None
        self._frames_since_detect = 10**9
        self._frames_since_recall = 10**9
        self._crowded = False  # the last recall pass found faces that only the small-face tiles see
        self._tracks_before = 0  # tracks started before the last reset_counters (they belong to earlier segments)
        self.stats: dict[str, Any] = {
            "frames": 0,
            "frames_with_faces": 0,
            "frames_swapped": 0,
            "faces_swapped": 0,
            "detections": 0,
            "recall_passes": 0,
            "scene_cuts": 0,
            "tracks": 0,
        }

    def reset_counters(self) -> VideoFaceProcessor:
        """Zero :attr:`stats` but keep the tracks: the next segment of one in-process run continues the shot (the
        same faces keep their selection and source, smoothing carries on) while its counters start anew."""
        self.stats = dict.fromkeys(self.stats, 0)
        self._tracks_before = self.tracker.tracks_started
        return self

    # --- per-track decisions -----------------------------------------------------------------------------
    def _decide(self, frame: torch.Tensor, pairs: list[tuple[Track, Face]], born: list[int]) -> None:
        """Decide selection + source for the tracks born in this frame, once (the same person keeps their source
        when people cross). ``pairs``: every ``(track, face)`` of the frame; ``born``: positions of new tracks."""
        settings = self.settings
        faces = [f for _, f in pairs]
        if settings.selector == "reference":
            faces = self.engine.identify(frame, [faces])[0]
            for i in born:
                pairs[i][0].embedding = faces[i].embedding
        try:
            plan = self.engine.select(faces, self.sources, self.reference)
        except NoMatchingFace:
            plan = []
        chosen = {id(f): src for f, src in plan}  # select returns the very objects it was given
        already_selected = any(tr.selected for tr in self.tracker.tracks if tr.decided)
        for i in born:
            track = pairs[i][0]
            src = chosen.get(id(faces[i]))
            if settings.selector in ("one", "index") and already_selected:
                src = None  # one face per video: an existing selected track keeps the role
            track.selected = src is not None
            track.source_index = int(src or 0)
            track.decided = True
            already_selected = already_selected or (track.selected and settings.selector in ("one", "index"))

    # --- one batch ---------------------------------------------------------------------------------------
    def __call__(self, batch: FrameBatch) -> np.ndarray:
        """Process a batch and return ``(B, H, W, 3)`` uint8 RGB (for callers that want arrays; the video pipeline
        uses :meth:`process_batch`, which keeps the frames YUV)."""
        out = self.process_batch(batch)
        return out if isinstance(out, np.ndarray) else out.frames

    def process_batch(self, batch: FrameBatch) -> FrameBatch | np.ndarray:
        """Process a decoded batch; returns what to encode: a :class:`FrameBatch` whose frames without a swapped
        face are the decoded frames themselves (bit-exact, never converted), or — with ``provenance_label`` —
        ``(B, H, W, 3)`` uint8 RGB. The planes go to the engine's device once per batch (1.5 bytes per pixel) and
        become RGB there; swapped frames come back once, as planes.

        The same as ``finish_batch(plan_batch(batch))``: the streaming pipeline runs the two halves of consecutive
        batches at the same time (see :func:`_swap_stream`)."""
        return self.finish_batch(self.plan_batch(batch))

    def plan_batch(self, batch: FrameBatch) -> _PlannedBatch:
        """First half, in frame order (it updates the tracks): scene cuts, detection or tracking, selection."""
        engine, settings = self.engine, self.settings
        b_count = len(batch)
        if self._pending is not None:  # the caller did not run it after the last frame: it comes before this one
            self.detect_pending()
        # One host→device copy per batch: packed Y/U/V uint8 (pinned for CUDA); every stage then indexes the copy.
        frames_yuv = batch.to_device(engine.device)
        thumbs = frames_yuv.luma_thumbnails().cpu().numpy()  # (B, 36, 64) grey, from the luma plane on the device
        detect_flags, cut_flags, recall_flags = [], [], []
        for k in range(b_count):
            thumb = thumbs[k]
            cut = self._prev_thumb is not None and scene_change_score(self._prev_thumb, thumb) > SCENE_CUT_THRESHOLD
            self._prev_thumb = thumb
            self.stats["scene_cuts"] += int(cut)
            due = self._frames_since_detect + 1 >= settings.detect_every
            cut_flags.append(cut)
            detect_flags.append(bool(cut or due))
            self._frames_since_detect = 0 if detect_flags[-1] else self._frames_since_detect + 1
            # The small-face tiles (crowds) cost 2.3× a detection at 640×480 and 9× at 1080p: a detection frame
            # scans them on a new shot, once every RECALL_EVERY frames, and on every detection while faces only
            # the tiles find are in view; between recall passes the tracks hold the faces already found.
            recall_flags.append(detect_flags[-1] and (
                cut or self._crowded or self._frames_since_recall + 1 >= RECALL_EVERY))
            self._frames_since_recall = 0 if recall_flags[-1] else self._frames_since_recall + 1

        # live: the frame's due detection waits until it went out (see defer_detection); tracks carry this frame
        defer = (b_count == 1 and detect_flags[0] and not cut_flags[0] and bool(self.tracker.seeds())
                 and (self.defer_detection() if callable(self.defer_detection) else self.defer_detection))
        if defer:
            detect_flags[0] = False

        rgb_cache: list[torch.Tensor] = []

        def as_float(sel: list[int] | slice) -> torch.Tensor:
            # The batch becomes float (B, 3, H, W) RGB [0, 1] on the engine's device once, on first use, and every
            # stage (detection, refinement, swap, and the encoder's "what changed" test) reads that one conversion:
            # converting per stage cost 3 conversions per frame (1.2 s of 10 s at 480p on 2 cores).
            if not rgb_cache:
                rgb_cache.append(frames_yuv.rgb(slice(None), engine.dtype))
            full = rgb_cache[0]
            if isinstance(sel, slice):
                return full[sel]
            return full if sel == list(range(b_count)) else full[sel]

        det_idx = [k for k in range(b_count) if detect_flags[k]]
        detected: dict[int, list[Face]] = {}
        recall_idx = [k for k in det_idx if recall_flags[k]]
        if recall_idx:
            detected.update(zip(recall_idx, engine.analyze(as_float(recall_idx), recall=True), strict=True))
            crowded = [k for k in recall_idx if _tile_only(detected[k])]
            # a crowd found in this batch: its later detection frames scan the tiles too (they were planned plain)
            late = [k for k in det_idx if crowded and k > crowded[0] and k not in detected]
            if late:
                detected.update(zip(late, engine.analyze(as_float(late), recall=True), strict=True))
            # the batch's last recall pass says whether the next batch's detections scan the tiles
            self._crowded = _tile_only(detected[max(recall_idx + late)])
            self.stats["recall_passes"] += len(recall_idx) + len(late)
        plain_idx = [k for k in det_idx if k not in detected]
        if plain_idx:
            detected.update(zip(plain_idx, engine.analyze(as_float(plain_idx), recall=False), strict=True))
        self.stats["detections"] += len(det_idx)

        # Every tracked frame of the batch is refined in ONE batched call (per-call overhead, not the net, is what
        # costs on a GPU: one call per run of frames between detections was 7 calls per batch of 32). Its seeds are
        # known before any refinement: a frame after the batch's first detection is seeded by the faces detected at
        # the last detection before it (after a detection every live track is one of that frame's faces), earlier
        # frames by the tracks as they stood before the batch. A seed is up to detect_every - 1 frames old, well
        # inside FaceMesh's crop margin. The track update and smoothing then go frame by frame, in time order.
        seeds_at: dict[int, list[Face]] = {}
        last_seeds = list(self.tracker.seeds())
        # after a deferred detection, this batch's first frame is seeded by its faces and treated as a detection
        seeded_by_detection = self._detected_seeds is not None and 0 not in detected
        if self._detected_seeds is not None:
            last_seeds, self._detected_seeds = self._detected_seeds, None
        for m in range(b_count):
            if m in detected:
                last_seeds = detected[m]
            elif last_seeds:
                seeds_at[m] = list(last_seeds)
        refined_at: dict[int, list[Face]] = {}
        if seeds_at:
            tracked = sorted(seeds_at)
            refined_at = dict(zip(tracked, engine.refine(as_float(tracked), [seeds_at[m] for m in tracked]),
                                  strict=True))

        plans: list[list[tuple[Face, int]]] = []
        for m in range(b_count):
            t = float(batch.times[m])
            if m in detected:
                if cut_flags[m]:
                    self.tracker.reset()  # a new shot: old tracks (and their decisions) do not carry over
                pairs = self.tracker.update(detected[m], t, detected=True)
            elif m in seeds_at:
                refined = [f for f in refined_at[m] if f.landmark_score is None or f.landmark_score >= 0.5]
                pairs = self.tracker.update(refined, t, detected=seeded_by_detection and m == 0)
                if len(refined) < len(seeds_at[m]):
                    self._frames_since_detect = 10**9  # lost a face: detect again at the next batch
            else:
                pairs = self.tracker.update([], t, detected=False)
            born = [i for i, (tr, _) in enumerate(pairs) if not tr.decided]
            if born:
                self._decide(as_float(slice(m, m + 1)), pairs, born)
            if pairs:
                self.stats["frames_with_faces"] += 1
            plans.append([(f, tr.source_index) for tr, f in pairs if tr.selected])
        self.stats["tracks"] = self.tracker.tracks_started - self._tracks_before
        if defer:
            self._pending = _PendingDetection(as_float(slice(0, 1)), recall_flags[0])
        idx = [k for k in range(b_count) if plans[k]]
        return _PlannedBatch(batch, frames_yuv, as_float(idx) if idx else None, idx, [plans[k] for k in idx])

    def detect_pending(self) -> None:
        """Run the detection that :meth:`plan_batch` put off (``defer_detection``), if any; its faces seed the next
        frame. The live session calls it after handing the frame to the output."""
        pending, self._pending = self._pending, None
        if pending is None:
            return
        faces = self.engine.analyze(pending.frame, recall=pending.recall)[0]
        if pending.recall:
            self._crowded = _tile_only(faces)
            self.stats["recall_passes"] += 1
        self.stats["detections"] += 1
        self._detected_seeds = faces

    def finish_batch(self, planned: _PlannedBatch) -> FrameBatch | np.ndarray:
        """Second half, independent of other batches: swap the planned faces, back to planes, label."""
        batch, settings = planned.batch, self.settings
        out = batch
        if planned.index:
            assert planned.rgb is not None
            swapped = self.engine.swap(planned.rgb, planned.plans, self.sources)
            # back to planes on the device (untouched pixels keep theirs exactly), one device→host copy
            packed = planned.yuv.encode(swapped, planned.index, before=planned.rgb)
            if self.marker is not None:  # the V plane is the last quarter-size part of each packed row
                self.marker.apply_torch(packed[:, packed.shape[1] - self.marker.shape[0] * self.marker.shape[1]:])
            out = batch.replaced(planned.index, packed.cpu().numpy(), marked=self.marker is not None)
            self.stats["frames_swapped"] += len(planned.index)
            self.stats["faces_swapped"] += sum(len(row) for row in planned.plans)
        self.stats["frames"] += len(batch)
        if settings.provenance_label:
            from faceweave.media.label import draw_label

            return np.stack([draw_label(f) for f in out.frames])
        return out


def _tile_only(faces: list[Face]) -> bool:
    """Whether some face was found only by the detector's small-face tiles (``Face.extra["tile_only"]``, set by
    the built-in detector on a recall pass; detectors without tiles never set it)."""
    return any(bool(f.extra.get("tile_only", False)) for f in faces)


__all__ = ["RECALL_EVERY", "SCENE_CUT_THRESHOLD", "VideoFaceProcessor"]
