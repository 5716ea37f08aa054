"""Acceptance of the built-in swapper on real faces: identity moves, pose stays, outside untouched, no seam."""

from __future__ import annotations

import itertools
import statistics

import numpy as np
import pytest
import torch

from faceweave.eval.metrics import evaluate, face_blend_region
from faceweave.ops.masks import dilate_mask
from faceweave.pipeline.engine import SwapEngine
from faceweave.pipeline.image import swap_image
from faceweave.settings import SwapSettings

PEOPLE = ["astronaut.png", "grace_hopper.jpg", "obama.jpg"]
PAIRS = list(itertools.permutations(PEOPLE, 2))


@pytest.fixture(scope="module")
def engine() -> SwapEngine:
    return SwapEngine(SwapSettings(device="cpu"))


@pytest.fixture(scope="module")
def swaps(engine: SwapEngine, media: type) -> dict[tuple[str, str], dict]:
    out = {}
    for src_name, tgt_name in PAIRS:
        src, tgt = media.rgb(src_name), media.rgb(tgt_name)
        result, n = swap_image(engine.prepare_sources([src]), tgt, engine)
        out[(src_name, tgt_name)] = {"src": src, "tgt": tgt, "out": result, "n": n,
                                     "q": evaluate(src, tgt, result, engine)}
    return out


@pytest.mark.parametrize("pair", PAIRS, ids=[f"{a}->{b}" for a, b in PAIRS])
def test_identity_moves_to_source(swaps: dict, pair: tuple[str, str]) -> None:
    q = swaps[pair]["q"]
    assert swaps[pair]["n"] == 1
    assert q.identity_to_source < q.identity_to_target, q
    assert q.identity_to_source < 0.55, q


def test_mean_identity_distance_to_source(swaps: dict) -> None:
    mean = statistics.mean(s["q"].identity_to_source for s in swaps.values())
    assert mean <= 0.45, f"mean dlib distance to source {mean:.3f}"


@pytest.mark.parametrize("pair", PAIRS, ids=[f"{a}->{b}" for a, b in PAIRS])
def test_pose_and_expression_kept(swaps: dict, pair: tuple[str, str]) -> None:
    assert swaps[pair]["q"].landmark_nme <= 0.05, swaps[pair]["q"]


@pytest.mark.parametrize("pair", PAIRS, ids=[f"{a}->{b}" for a, b in PAIRS])
def test_seam_invisible(swaps: dict, pair: tuple[str, str]) -> None:
    assert swaps[pair]["q"].seam_ratio <= 1.5, swaps[pair]["q"]


@pytest.mark.parametrize("pair", PAIRS, ids=[f"{a}->{b}" for a, b in PAIRS])
def test_outside_dilated_mask_untouched(swaps: dict, engine: SwapEngine, pair: tuple[str, str]) -> None:
    s = swaps[pair]
    tgt = s["tgt"]
    face = max(engine.analyze(engine.to_tensor(tgt))[0], key=lambda f: f.area)
    h, w = tgt.shape[:2]
    region = face_blend_region(face, (h, w), 0.0)
    size = float((face.landmarks[:, :2].max(0).values - face.landmarks[:, :2].min(0).values).max())
    outside = dilate_mask(region, round(size * 0.1))[0, 0].numpy() == 0
    diff = np.abs(s["out"].astype(int) - tgt.astype(int)).max(2)
    assert outside.sum() > 0.3 * h * w
    assert diff[outside].max() <= 1
    # and the face itself did change
    assert diff[~outside].mean() > 3


def test_swap_is_deterministic_and_batched_equals_single(engine: SwapEngine, media: type) -> None:
    src, tgt = media.rgb("grace_hopper.jpg"), media.rgb("astronaut.png")
    prepared = engine.prepare_sources([src])
    frame = engine.to_tensor(tgt)
    plan = engine.select(engine.analyze(frame)[0], prepared)
    single = engine.swap(frame, [plan], prepared)
    batch = engine.swap(torch.cat([frame, frame]), [plan, plan], prepared)
    assert torch.allclose(batch[0], single[0], atol=1e-5)
    assert torch.allclose(batch[1], single[0], atol=1e-5)
