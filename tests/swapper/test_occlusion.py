"""Built-in occlusion: hair strands in front of a face keep the target's pixels, and identity still moves."""

from __future__ import annotations

import numpy as np

from faceweave.eval.cases import load, make_variant
from faceweave.eval.metrics import evaluate
from faceweave.eval.realism import occluder_preservation
from faceweave.pipeline.engine import SwapEngine
from faceweave.pipeline.image import swap_image
from faceweave.settings import SwapSettings


def test_occluder_kept_and_identity_moves() -> None:
    source = load("grace_hopper.jpg")
    target, occluder = make_variant("astronaut.png", "flat")
    assert occluder is not None
    mads = {}
    for occlusion in (False, True):
        engine = SwapEngine(SwapSettings(device="cpu", occlusion=occlusion))
        out, n = swap_image(engine.prepare_sources([source]), target, engine)
        assert n == 1
        mads[occlusion] = occluder_preservation(out, target, occluder)
    assert mads[True] < 0.6 * mads[False], mads
    q = evaluate(source, target, out, engine, occluder)
    assert q.identity_moved, q
    # outside the face the image is untouched
    assert np.array_equal(out[:40], target[:40])
