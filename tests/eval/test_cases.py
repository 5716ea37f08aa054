"""The realism test set (faceweave/eval/cases.py): the mirrored set is the same photos mirrored, with its occluders
placed on the mirrored faces (not the originals' masks flipped)."""

from __future__ import annotations

import numpy as np

from faceweave.eval.cases import build_cases, donor_landmarks, load, make_variant
from faceweave.models import topology


def test_mirrored_photo_is_the_original_flipped() -> None:
    original, mirrored = load("obama.jpg"), load("obama.jpg", mirror=True)
    assert np.array_equal(mirrored, original[:, ::-1])
    # the mesh is found on the mirrored face itself: its mouth lies where the original's lies, mirrored
    w = original.shape[1]
    mouth = donor_landmarks("obama.jpg")[list(topology.LIPS_OUTER)].mean(0)
    mouth_m = donor_landmarks("obama.jpg", mirror=True)[list(topology.LIPS_OUTER)].mean(0)
    assert abs(mouth_m[0] - (w - 1 - mouth[0])) < 4 and abs(mouth_m[1] - mouth[1]) < 4


def test_mirrored_occluder_covers_the_mirrored_mouth() -> None:
    target, occluder = make_variant("obama.jpg", "flat", mirror=True)
    assert occluder is not None
    mouth = donor_landmarks("obama.jpg", mirror=True)[list(topology.LIPS_OUTER)].mean(0)
    assert occluder[int(mouth[1]), int(mouth[0])]
    # the patch was painted on the mirrored photo: outside the mask it is that photo
    assert np.array_equal(target[~occluder], load("obama.jpg", mirror=True)[~occluder])
    # and it is not the original's mask flipped (the hand, drawn with its thumb on the image's left, is not symmetric)
    _, hand = make_variant("obama.jpg", "hand")
    _, hand_m = make_variant("obama.jpg", "hand", mirror=True)
    assert hand is not None and hand_m is not None
    assert not np.array_equal(hand_m, hand[:, ::-1])


def test_mirrored_cases_are_named_apart() -> None:
    cases = build_cases("heldout", ("plain",), mirror=True)
    assert cases and all(c.name.startswith("heldout-mirror/") for c in cases)
    assert np.array_equal(cases[0].source, load(cases[0].source_name, mirror=True))
