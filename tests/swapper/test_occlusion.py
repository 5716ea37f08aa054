"""Built-in occlusion (``occlusion=True``): occluders in front of a face keep the target's pixels, identity still
moves, and a face without one keeps little. The swap's mask is the larger of the hand-built estimate's and the
occluder net's (faceweave/swapper/occlusion.py); the estimate alone is judged in tests/ops/test_occlusion_estimate.py.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from faceweave.eval.cases import load, make_variant
from faceweave.eval.metrics import evaluate
from faceweave.eval.realism import occluder_preservation
from faceweave.pipeline.engine import SwapEngine
from faceweave.pipeline.image import swap_image
from faceweave.settings import SwapSettings


@functools.lru_cache(maxsize=4)
def _engine(occlusion: bool, device: str = "cpu") -> SwapEngine:
    return SwapEngine(SwapSettings(device=device, occlusion=occlusion))


def test_occluder_kept_and_identity_moves() -> None:
    source = load("grace_hopper.jpg")
    target, occluder = make_variant("astronaut.png", "flat")
    assert occluder is not None
    mads = {}
    for occlusion in (False, True):
        engine = _engine(occlusion)
        out, n = swap_image(engine.prepare_sources([source]), target, engine)
        assert n == 1
        mads[occlusion] = occluder_preservation(out, target, occluder)
    assert mads[True] < 0.6 * mads[False], mads
    q = evaluate(source, target, out, engine, occluder)
    assert q.identity_moved, q
    # outside the face the image is untouched
    assert np.array_equal(out[:40], target[:40])


@pytest.mark.parametrize("source_name", ["astronaut.png", "grace_hopper.jpg"])
def test_unseen_persons_hand_kept_where_the_estimate_alone_misses(source_name: str, device: torch.device) -> None:
    """obama, mirrored (the mirrored set: no rule of the hand-built estimate was fitted to it, and the occluder net
    never saw obama): the hand in front of his face keeps the target, and identity moves.

    Fails with the hand-built estimate alone (docs/quality.md, "A learned occluder net"): 4.4 and 6.0 levels of
    error on the hand on the CPU. With the net's mask too, ≤ 1.03 on every mirrored held-out hand."""
    source = load(source_name)
    target, occluder = make_variant("obama.jpg", "hand", mirror=True)
    assert occluder is not None
    engine = _engine(True, str(device))
    out, n = swap_image(engine.prepare_sources([source]), target, engine)
    assert n == 1
    mad = occluder_preservation(out, target, occluder)
    assert mad <= 3.0, mad
    q = evaluate(source, target, out, _engine(True), occluder)
    assert q.identity_moved, q


@pytest.mark.parametrize(("source_name", "target_name"), [("astronaut.png", "obama2.jpg"),
                                                         ("grace_hopper.jpg", "obama.jpg")])
def test_unseen_face_without_occluder_keeps_little(source_name: str, target_name: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A held-out face without an occluder (a person the net never saw): the net, read strictly, keeps a few
    hundredths of the face mask (his shiny forehead, a cheek), and identity moves about as far as without occlusion.

    Fails with the net read from probability 0.35 instead of 0.93 (``KEEP_LOW``): 0.32–0.38 of these faces kept,
    and obama2 no longer moves (0.668 to the source against 0.664 to the target)."""
    import faceweave.swapper.mesh as mesh

    kept: list[float] = []
    mask_of = mesh.occlusion_mask

    def recording(target: torch.Tensor, skin: torch.Tensor, region: torch.Tensor, features: torch.Tensor, *,
                  face_px: float, lips: torch.Tensor) -> torch.Tensor:
        occ = mask_of(target, skin, region, features, face_px=face_px, lips=lips)
        kept.append(float(((occ > 0.5).float() * region).sum() / region.sum()))
        return occ

    monkeypatch.setattr(mesh, "occlusion_mask", recording)
    source = load(source_name)
    target, _ = make_variant(target_name, "plain")
    dist = {}
    for occlusion in (False, True):
        engine = _engine(occlusion)
        out, _ = swap_image(engine.prepare_sources([source]), target, engine)
        q = evaluate(source, target, out, engine, None)
        assert q.identity_moved, (occlusion, q)
        dist[occlusion] = q.identity_to_source
    assert len(kept) == 1 and kept[0] < 0.12, kept
    assert dist[True] < dist[False] + 0.03, dist
