"""Realism bounds of the built-in swap on real faces of the issue-21 tune split (faceweave/eval/cases.py): the
face's edge matches the target's skin in colour, the seam stays below the interior's gradient, the face keeps
texture next to a textured target, and identity still moves. Each bound failed before the colour and detail work
(figures of the old swap in the comments, docs/quality.md)."""

from __future__ import annotations

from typing import Any

import pytest

from faceweave.eval.cases import load, make_variant
from faceweave.eval.metrics import SwapQuality, evaluate
from faceweave.pipeline.engine import SwapEngine
from faceweave.pipeline.image import swap_image
from faceweave.settings import SwapSettings

CASES = {
    "hopper->astronaut:bright": ("grace_hopper.jpg", "astronaut.png", "bright"),
    "astronaut->grace_hopper:plain": ("astronaut.png", "grace_hopper.jpg", "plain"),
    "astronaut->grace_hopper:bright": ("astronaut.png", "grace_hopper.jpg", "bright"),
    "obama->grace_hopper:bright": ("obama.jpg", "grace_hopper.jpg", "bright"),
    "obama->astronaut:bright": ("obama.jpg", "astronaut.png", "bright"),
    "hopper->astronaut:bald": ("grace_hopper.jpg", "astronaut.png", "bald"),
}


@pytest.fixture(scope="module")
def judged() -> dict[str, Any]:
    engine = SwapEngine(SwapSettings(device="cpu"))
    out: dict[str, Any] = {}
    for name, (src_name, tgt_name, variant) in CASES.items():
        src = load(src_name)
        tgt, occluder = make_variant(tgt_name, variant)
        result, n = swap_image(engine.prepare_sources([src]), tgt, engine)
        assert n == 1
        out[name] = evaluate(src, tgt, result, engine, occluder)
    return out


def test_edge_colour_matches_the_target_skin(judged: dict[str, SwapQuality]) -> None:
    # before: 4.08 (the swapped face lighter and pinker than the target's brightened skin around it)
    q = judged["hopper->astronaut:bright"]
    assert q.colour_de <= 3.0, q


@pytest.mark.parametrize("name", ["obama->grace_hopper:bright", "obama->astronaut:bright"])
def test_no_colour_patch_that_neither_input_has(judged: dict[str, SwapQuality], name: str) -> None:
    # before: 0.044 and 0.062 (obama's beard shadow, brows and eye sockets turned cyan or blue on the overexposed
    # targets: grace_hopper's clipped red channel widened her skin's a* spread and the transfer's gain with it;
    # the astronaut's washed-out skin pulled the chroma of obama's darker parts past neutral)
    q = judged[name]
    assert q.novel_colour <= 0.03, q


@pytest.mark.parametrize("name", ["astronaut->grace_hopper:plain", "astronaut->grace_hopper:bright"])
def test_seam_below_bound_on_a_textured_target(judged: dict[str, SwapQuality], name: str) -> None:
    # before: 1.45 and 1.51 (a smooth source face inside the grainy target made the mask border stand out)
    q = judged[name]
    assert q.seam_ratio <= 1.3, q


@pytest.mark.parametrize("name", ["astronaut->grace_hopper:plain", "astronaut->grace_hopper:bright"])
def test_face_keeps_texture_on_a_textured_target(judged: dict[str, SwapQuality], name: str) -> None:
    # before: 0.19 and 0.15 of the target's variance of the Laplacian (the goal, 0.9, is not met yet on these)
    q = judged[name]
    assert q.sharpness_vs_target >= 0.3, q


def test_identity_still_moves(judged: dict[str, SwapQuality]) -> None:
    for name, q in judged.items():
        assert q.identity_to_source < q.identity_to_target, (name, q)
        assert q.identity_to_source < 0.55, (name, q)


def test_no_band_on_the_forehead_of_a_bald_target(judged: dict[str, SwapQuality]) -> None:
    # the mask's top arc is no steeper than the target's own forehead there
    q = judged["hopper->astronaut:bald"]
    assert q.seam_top <= q.seam_top_target, q


def test_a_widened_face_takes_no_colour_from_past_the_target_outline() -> None:
    # Full shape transfer widens obama2's face to grace_hopper's, past his temple onto the blue background. The
    # colour statistics, shading and edge colour were measured on the target there (the output's outline), and
    # the background's blue became a patch on the swapped temple: novel colour 0.0129 before, 0.0 since they are
    # measured only where the target's own face is (a held-out face: nothing was tuned on it).
    engine = SwapEngine(SwapSettings(device="cpu", shape_transfer=1.0))
    src = load("grace_hopper.jpg")
    tgt, occluder = make_variant("obama2.jpg", "plain")
    result, n = swap_image(engine.prepare_sources([src]), tgt, engine)
    q = evaluate(src, tgt, result, engine, occluder)
    assert n == 1 and q.novel_colour <= 0.004, q
    assert q.identity_to_source < q.identity_to_target, q
