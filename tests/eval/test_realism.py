"""The realism metrics on known inputs: identical images score 0, a known colour shift scores its ΔE."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from faceweave.eval import realism
from faceweave.eval.cases import donor_landmarks, load


def test_ciede2000_reference_pairs() -> None:
    # Sharma, Wu & Dalal (2005), table 1: pairs 1, 3, 17 and 34
    pairs = [((50, 2.6772, -79.7751), (50, 0, -82.7485), 2.0425), ((50, -1.3802, -84.2814), (50, 0, -82.7485), 1.0),
             ((50, 2.5, 0), (73, 25, -18), 27.1492), ((2.0776, 0.0795, -1.135), (0.9033, -0.0636, -0.5514), 0.9082)]
    for a, b, expected in pairs:
        assert realism.ciede2000(np.array(a), np.array(b)) == pytest.approx(expected, abs=1e-4)
        assert realism.ciede2000(np.array(b), np.array(a)) == pytest.approx(expected, abs=1e-4)


def test_identical_images_score_zero() -> None:
    img, lm = load("obama.jpg"), donor_landmarks("obama.jpg")
    c = realism.colour_consistency(img, img, lm)
    assert c["colour_de"] == 0.0 and c["colour_probes"] > 20
    assert c["colour_de_step"] == c["colour_de_step_target"]
    s = realism.sharpness(img, img, lm)
    assert s["sharpness_vs_target"] == pytest.approx(1.0)
    assert s["sharpness_vs_128"] > 1.0  # a 285-px face through a 128-px crop loses detail
    assert realism.occluder_preservation(img, img, np.ones(img.shape[:2], bool)) == 0.0


def test_sharpness_leaves_out_the_occluders_edge() -> None:
    """A face painted over under dark strands (the output is the clean face, the target has the strands) is as
    sharp as the target's face outside them: the strands' borders are the occluder's edge, not the face's."""
    img, lm = load("obama.jpg"), donor_landmarks("obama.jpg")
    strands = np.zeros(img.shape[:2], np.uint8)
    (x0, y0), (x1, y1) = lm.min(0).astype(int), lm.max(0).astype(int)
    for k in range(1, 7):  # six 3-px strands across the face, the hair case's kind of occluder
        y = y0 + k * (y1 - y0) // 7
        cv2.line(strands, (x0, y - 10), (x1, y + 10), 1, 3)
    occluded = img.copy()
    occluded[strands.astype(bool)] = 30
    s = realism.sharpness(img, occluded, lm, exclude=strands.astype(bool))
    assert s["sharpness_vs_target"] == pytest.approx(1.0, abs=1e-6)


def test_shifted_face_colour_gives_its_delta_e() -> None:
    img, lm = load("obama.jpg"), donor_landmarks("obama.jpg")
    inside = realism.face_oval_mask(lm, img.shape, 0.03)
    shifted = img.copy()
    shifted[inside] = np.clip(shifted[inside].astype(int) + np.array([12, 0, 0]), 0, 255).astype(np.uint8)
    c = realism.colour_consistency(shifted, img, lm)
    # the expected ΔE of +12 red levels on this skin, computed directly on the target's probed colour
    skin = realism.skin_reference(img, lm)
    skin_rgb = np.median(img[realism.face_oval_mask(lm, img.shape, 0.06)
                             & ~realism.face_oval_mask(lm, img.shape, 0.18)], 0)
    moved = realism.to_lab(np.clip(skin_rgb + [12, 0, 0], 0, 255).astype(np.uint8)[None, None])[0, 0]
    expected = float(realism.ciede2000(moved, realism.to_lab(skin_rgb.astype(np.uint8)[None, None])[0, 0]))
    assert expected > 2
    assert c["colour_de"] == pytest.approx(expected, rel=0.25)
    assert skin.shape == (3,)
    # the occluder mean abs difference is the shift averaged over channels
    assert realism.occluder_preservation(shifted, img, inside) == pytest.approx(4.0, abs=0.3)


def test_flicker_ratio() -> None:
    img, lm = load("obama.jpg"), donor_landmarks("obama.jpg")
    frames = [img, np.clip(img.astype(int) + 3, 0, 255).astype(np.uint8), img]
    same = realism.colour_flicker(frames, frames, [lm] * 3)
    assert same["flicker_ratio"] == pytest.approx(1.0) and same["flicker_de_input"] > 0.5
    steady = realism.colour_flicker(frames, [img] * 3, [lm] * 3)
    assert steady["flicker_de"] == 0.0 and steady["flicker_ratio"] == 0.0


def test_novel_colour_share_counts_a_patch_neither_input_has() -> None:
    img, lm = load("obama.jpg"), donor_landmarks("obama.jpg")
    src, src_lm = load("astronaut.png"), donor_landmarks("astronaut.png")
    assert realism.novel_colour_share(img, img, lm, src, src_lm) == 0.0
    # a cyan patch (skin has a* > 0; this has a* ≈ -25) over a known part of the measured face region
    region = realism.face_oval_mask(lm, img.shape, 0.08)
    patch = np.zeros_like(region)
    ys, xs = np.nonzero(region)
    patch[ys.min():(ys.min() + ys.max()) // 2, :] = True
    patch &= region
    painted = img.copy()
    painted[patch] = (60, 140, 140)
    share = realism.novel_colour_share(painted, img, lm, src, src_lm)
    assert share == pytest.approx(patch.sum() / region.sum(), abs=0.01)
    # a colour the source's face has is not new
    assert realism.novel_colour_share(img, img, lm, painted, lm) == 0.0
