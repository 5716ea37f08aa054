"""Tracks, One-Euro smoothing and scene cuts: synthetic trajectories with known truth, plus real-face landmarks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from faceweave.analysis.face import Face
from faceweave.analysis.track import (
    FaceTracker,
    OneEuroFilter,
    SmoothingParams,
    landmark_jitter,
    scene_change_score,
    thumbnail,
)
from faceweave.ops.boxes import box_iou


def _face(cx: float, cy: float, size: float = 80.0, emb: torch.Tensor | None = None, lmk_noise=None) -> Face:
    box = torch.tensor([cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2])
    kps = torch.tensor([[cx - 15, cy - 10], [cx + 15, cy - 10], [cx, cy], [cx - 12, cy + 15], [cx + 12, cy + 15]])
    lmk = None
    if lmk_noise is not None:
        ang = torch.linspace(0, 2 * math.pi, 468)
        lmk = torch.stack([cx + 30 * torch.cos(ang), cy + 35 * torch.sin(ang), torch.zeros(468)], 1) + lmk_noise
    return Face(box=box, score=0.9, keypoints=kps, landmarks=lmk, embedding=emb)


def test_one_euro_reduces_jitter_and_follows_motion(device, dtype) -> None:
    gen = torch.Generator().manual_seed(0)
    t = torch.arange(0, 3, 1 / 30)
    truth = torch.where(t < 1.5, torch.zeros_like(t), (t - 1.5) * 40)  # still, then a 40 unit/s ramp
    noisy = truth + torch.randn(t.shape, generator=gen) * 0.5
    filt = OneEuroFilter(min_cutoff=1.0, beta=0.05, d_cutoff=1.0)
    out = torch.stack([filt(noisy[i : i + 1].to(device, dtype), float(t[i])).cpu() for i in range(len(t))])[:, 0]
    assert out.device.type == "cpu"
    still = slice(10, 45)
    assert (out[still] - truth[still]).std() < 0.4 * (noisy[still] - truth[still]).std()
    # on the ramp the adaptive cutoff keeps the lag small (well under 1 s × speed)
    assert (out[-10:] - truth[-10:]).abs().mean() < 0.25 * 40


def test_one_euro_uses_timestamps_for_vfr() -> None:
    # The same signal sampled at uneven times gives the value a uniform sampler would: dt comes from t.
    filt_a, filt_b = OneEuroFilter(1.0, 0.0), OneEuroFilter(1.0, 0.0)
    a = [filt_a(torch.tensor([float(v)]), t) for t, v in [(0.0, 0.0), (0.1, 1.0), (0.2, 1.0)]]
    b = [filt_b(torch.tensor([float(v)]), t) for t, v in [(0.0, 0.0), (0.2, 1.0)]]
    assert float(b[-1]) > float(a[1])  # a longer gap lets the filter move further toward the new value
    assert float(filt_a(torch.tensor([5.0]), 0.2)) == pytest.approx(float(a[-1]))  # repeated time: unchanged


def test_box_iou() -> None:
    a = torch.tensor([[0.0, 0, 10, 10]])
    b = torch.tensor([[0.0, 0, 10, 10], [5.0, 0, 15, 10], [20.0, 20, 30, 30]])
    np.testing.assert_allclose(box_iou(a, b).numpy(), [[1.0, 1 / 3, 0.0]], atol=1e-6)


def test_tracks_keep_identity_when_people_cross() -> None:
    tracker = FaceTracker(smoothing=False)
    emb_a, emb_b = torch.zeros(128), torch.ones(128) * 0.1  # distance ~1.13 (different people)
    ids_a, ids_b = [], []
    for step in range(21):
        xa, xb = 100 + step * 10, 300 - step * 10  # they pass each other at step 10
        faces = [_face(xa, 200, emb=emb_a), _face(xb, 205, emb=emb_b)]
        pairs = tracker.update(faces, step / 30)
        by_face = {id(f): tr.track_id for tr, f in pairs}
        assert len(by_face) == 2
        ids_a.append(pairs[0][0].track_id)
        ids_b.append(pairs[1][0].track_id)
    assert len(set(ids_a)) == 1 and len(set(ids_b)) == 1 and ids_a[0] != ids_b[0]
    assert tracker.tracks_started == 2


def test_tracker_drops_lost_tracks_and_refinement_does_not_spawn() -> None:
    tracker = FaceTracker(smoothing=False, max_misses=1)
    tracker.update([_face(100, 100)], 0.0)
    assert len(tracker.seeds()) == 1
    tracker.update([_face(400, 400)], 0.1, detected=False)  # far away, from refinement: no new track
    assert tracker.tracks_started == 1
    tracker.update([], 0.2)
    assert tracker.tracks == []


def test_smoothed_landmarks_less_jittery_on_real_motion(media) -> None:
    gen = torch.Generator().manual_seed(1)
    raw, smooth = [], []
    tracker = FaceTracker(smoothing=True, params=SmoothingParams(min_cutoff=1.5, beta=2.0))
    for step in range(60):
        noise = torch.randn(468, 3, generator=gen) * 0.8
        f = _face(200 + 2 * step, 150 + math.sin(step / 8) * 10, lmk_noise=noise)
        (_, sf), = tracker.update([f], step / 30)
        raw.append(f.landmarks[:, :2].numpy())
        smooth.append(sf.landmarks[:, :2].numpy())
    assert landmark_jitter(smooth) < 0.6 * landmark_jitter(raw)
    # the (lighter) defaults still take jitter out
    tracker, light = FaceTracker(smoothing=True), []
    gen = torch.Generator().manual_seed(1)
    for step in range(60):
        f = _face(200 + 2 * step, 150 + math.sin(step / 8) * 10, lmk_noise=torch.randn(468, 3, generator=gen) * 0.8)
        (_, sf), = tracker.update([f], step / 30)
        light.append(sf.landmarks[:, :2].numpy())
    assert landmark_jitter(light) < landmark_jitter(raw)


def test_landmark_smoothing_splits_head_motion_from_shape_noise(media) -> None:
    """Real FaceMesh shape, moved by a fast similarity (translation, roll, zoom) with noise on the points: the head
    motion is followed with little lag (the swapped face is pasted into the unsmoothed head) while the shape noise is
    smoothed hard; ``landmark_jitter`` (global motion removed) sees the latter."""
    from faceweave.analysis.detect import detect_faces
    from faceweave.analysis.landmarks import face_landmarks

    rgb = media.rgb("obama.jpg")
    base = face_landmarks(rgb, detect_faces(rgb)[:1])[0].landmarks.float()
    base_xy = base[:, :2] - base[:, :2].mean(0)
    gen = torch.Generator().manual_seed(2)
    tracker = FaceTracker(smoothing=True)
    raw, smooth, truth = [], [], []
    for step in range(60):
        t = step / 30
        ang, zoom = 0.3 * math.sin(2 * t), 1 + 0.2 * math.sin(3 * t)
        rot = torch.tensor([[math.cos(ang), -math.sin(ang)], [math.sin(ang), math.cos(ang)]]) * zoom
        xy = base_xy @ rot.T + torch.tensor([300 + 200 * t, 200 + 40 * math.sin(4 * t)])
        noisy = xy + torch.randn(468, 2, generator=gen) * 0.6
        lmk = torch.cat([noisy, base[:, 2:]], 1)
        lo, hi = noisy.min(0).values, noisy.max(0).values
        f = Face(box=torch.cat([lo, hi]), score=0.9, keypoints=noisy[:5].clone(), landmarks=lmk)
        (_, sf), = tracker.update([f], t)
        assert sf.landmarks.shape == (468, 3) and sf.keypoints.shape == (5, 2)
        raw.append(noisy.numpy())
        smooth.append(sf.landmarks[:, :2].numpy())
        truth.append(xy.numpy())
    assert landmark_jitter(smooth) < 0.5 * landmark_jitter(raw)
    # lag: the smoothed points stay near the moving truth (the noise alone is 0.6 px per axis, ~0.75 px per point)
    err = np.mean([np.linalg.norm(s - x, axis=1).mean() for s, x in zip(smooth[10:], truth[10:], strict=True)])
    assert err < 1.0


def test_landmark_jitter_ignores_global_similarity_motion() -> None:
    rng = np.random.default_rng(0)
    base = rng.uniform(0, 100, size=(468, 2))
    frames = []
    for k in range(10):
        a = 0.05 * k
        rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]]) * (1 + 0.02 * k)
        frames.append(base @ rot.T + np.array([3.0 * k, -2.0 * k]))
    assert landmark_jitter(frames) < 1e-4
    noisy = [f + rng.normal(0, 1.0, f.shape) for f in frames]
    assert landmark_jitter(noisy) > 1e-2


def test_scene_change_score(media) -> None:
    a = thumbnail(media.rgb("obama.jpg"))
    b = thumbnail(media.rgb("astronaut.png"))
    assert scene_change_score(None, a) == 1.0
    assert scene_change_score(a, a) == 0.0
    assert scene_change_score(a, b) > 0.12  # the pipeline's cut threshold
    shifted = np.clip(a.astype(int) + 3, 0, 255).astype(np.uint8)  # small lighting change is not a cut
    assert scene_change_score(a, shifted) < 0.05


def test_one_euro_numpy_matches_torch() -> None:
    # the tracker filters NumPy float64 geometry; the filter must behave the same as on tensors
    gen = np.random.default_rng(3)
    samples = np.cumsum(gen.normal(0, 2.0, (40, 468, 3)), axis=0)
    on_numpy, on_torch = OneEuroFilter(1.0, 10.0), OneEuroFilter(1.0, 10.0)
    for k, x in enumerate(samples):
        a = on_numpy(x, k / 30)
        b = on_torch(torch.from_numpy(x), k / 30)
        assert isinstance(a, np.ndarray) and isinstance(b, torch.Tensor)
        np.testing.assert_allclose(a, b.numpy(), rtol=1e-12, atol=1e-9)
    assert np.abs(a - samples[-1]).mean() > 1e-3  # it did filter


def test_the_tracker_copies_geometry_once_and_gives_what_per_tensor_copies_give(device, dtype) -> None:
    """The tracker's host copies: every face's geometry in one copy equals each tensor copied on its own, and the
    smoothed faces come back on the faces' device and dtype (to a GPU without waiting, from pinned memory); the track
    keeps its box on the host exactly as the device holds it."""
    from faceweave.analysis.track import _geometry_to_host, _host64, _like

    gen = torch.Generator().manual_seed(1)
    faces = [_face(100, 120), _face(300, 140, lmk_noise=torch.randn(468, 3, generator=gen))]
    faces = [f.with_(box=f.box.to(device, dtype), keypoints=f.keypoints.to(device, dtype),
                     **({"landmarks": f.landmarks.to(device, dtype)} if f.landmarks is not None else {}))
             for f in faces]
    host = _geometry_to_host(faces)
    for f, h in zip(faces, host, strict=True):
        assert np.array_equal(h.box, _host64(f.box)) and np.array_equal(h.keypoints, _host64(f.keypoints))
        assert (h.landmarks is None) == (f.landmarks is None)
        if f.landmarks is not None:
            assert h.landmarks is not None and np.array_equal(h.landmarks, _host64(f.landmarks))
    back = _like(host[1].landmarks * 1.5, faces[1].landmarks)
    assert back.device == faces[1].landmarks.device and back.dtype == dtype
    assert torch.equal(back.cpu(), torch.from_numpy(host[1].landmarks * 1.5).to(dtype))
    tracker = FaceTracker()
    for k in range(3):
        out = tracker.update(faces, k / 30)
        for tr, smoothed in out:
            assert smoothed.box.device == faces[0].box.device and smoothed.box.dtype == dtype
            assert tr.box is not None and np.array_equal(tr.box, _host64(tr.face.box))
    assert len(tracker.tracks) == 2 and _geometry_to_host([]) == []
