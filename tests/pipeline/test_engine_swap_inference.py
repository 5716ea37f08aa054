"""``SwapEngine.swap`` runs in inference mode (no autograd dispatch over its thousands of small ops): the same
pixels as its steps run outside it, on a real face."""

from __future__ import annotations

import torch

from faceweave.pipeline.engine import SwapEngine
from faceweave.settings import SwapSettings


def test_swap_in_inference_mode_equals_the_plain_swap(media: type) -> None:
    engine = SwapEngine(SwapSettings(device="cpu"))
    prepared = engine.prepare_sources([media.rgb("grace_hopper.jpg")])
    frames = engine.to_tensor(media.rgb("astronaut.png"))
    faces = engine.analyze(frames)
    plan = [engine.select(faces[0], prepared)]
    out = engine.swap(frames, plan, prepared)
    assert out.is_inference() and not frames.is_inference()
    assert not torch.is_inference_mode_enabled()  # the mode ends with the call
    plain = engine._swap(frames, plan, prepared)  # the same steps (swapper, enhancer), autograd's dispatch on
    assert not plain.is_inference()
    assert torch.equal(out, plain) and not torch.equal(out, frames)
