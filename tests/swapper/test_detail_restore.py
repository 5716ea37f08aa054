"""The built-in swap's detail restoration (faceweave/swapper/detail.py): the stages' contracts on synthetic tensors
(CPU and CUDA), and on a real tune-split case (astronaut → grace_hopper, faceweave/eval/cases.py) the face's
sharpness against the target's with and without it, and the identity distance to the source."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from faceweave.eval.cases import load, make_variant
from faceweave.eval.metrics import evaluate
from faceweave.ops.filters import gaussian_blur
from faceweave.pipeline.engine import SwapEngine
from faceweave.pipeline.image import swap_image
from faceweave.settings import SwapSettings
from faceweave.swapper.detail import (
    MAX_BAND_GAIN,
    MIN_BAND_SIGMA,
    band_sigma,
    band_sigmas,
    band_strength,
    feature_weight,
    luminance_band,
    restore_in_frame,
    restore_source_detail,
)


def _textures(device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """A soft (blurred) and a sharp version of one grey noise texture, ``(2, 3, 64, 64)`` each, around 0.5."""
    g = torch.Generator().manual_seed(0)
    sharp = (0.5 + 0.08 * torch.randn(2, 1, 64, 64, generator=g)).expand(2, 3, 64, 64).contiguous()
    soft = gaussian_blur(sharp, 1.5)
    return soft.to(device, dtype), sharp.to(device, dtype)


def test_band_sigmas_follow_the_magnification() -> None:
    assert band_sigma(0.5) == MIN_BAND_SIGMA and band_sigmas(0.5) == ()  # not magnified: left alone
    assert band_sigmas(1.3) == (MIN_BAND_SIGMA,)
    assert band_sigma(3.0) == pytest.approx(2.1)
    assert band_sigmas(3.0) == (pytest.approx(2.1), MIN_BAND_SIGMA)
    assert band_sigma(100.0) == 4.0


def test_band_strength_ramps_with_the_magnification() -> None:
    # none for a face not magnified, all from 1.25x, linear between: no cliff for a face near 1.25x
    assert [band_strength(m) for m in (0.7, 1.0, 1.125, 1.25, 3.0)] == pytest.approx([0.0, 0.0, 0.5, 1.0, 1.0])
    assert band_sigmas(1.0) == () and band_sigmas(1.1) == (MIN_BAND_SIGMA,)


def test_a_face_on_the_ramp_gets_its_share_of_the_step(device: torch.device, dtype: torch.dtype) -> None:
    soft, sharp = _textures(device, dtype)
    soft, sharp = soft[:1].expand(2, -1, -1, -1).contiguous(), sharp[:1].expand(2, -1, -1, -1).contiguous()
    ones = torch.ones(2, 1, 64, 64, device=device, dtype=dtype)
    identity = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]).expand(2, 2, 3)
    # the same face magnified 1.125x (half way up the ramp) and 1.3x (all of it), one band each (sigma 1 px)
    out = restore_in_frame(soft, sharp, ones, torch.zeros_like(ones), identity, (0, 0), [1.125, 1.3])
    step = (out - soft).float()
    assert step[1].abs().mean() > 0.003  # measured 0.0045
    torch.testing.assert_close(step[0], 0.5 * step[1], atol=2e-3 if dtype == torch.float32 else 8e-3, rtol=0)


def test_feature_weight_is_the_swapped_area_off_the_skin() -> None:
    mask = torch.tensor([0.0, 0.5, 1.0, 1.0]).view(1, 1, 1, 4)
    keep = torch.tensor([0.0, 0.0, 1.0, 0.25]).view(1, 1, 1, 4)
    assert feature_weight(mask, keep).flatten().tolist() == [0.0, 0.5, 0.0, 0.75]


def test_restores_toward_the_target_energy(device: torch.device, dtype: torch.dtype) -> None:
    soft, sharp = _textures(device, dtype)
    weight = torch.ones(2, 1, 64, 64, device=device, dtype=dtype)
    out = restore_source_detail(soft, sharp, weight, sigma=1.0)
    assert out.shape == soft.shape and out.dtype == dtype and out.device.type == device.type

    def energy(x: torch.Tensor) -> float:
        return float(luminance_band(x.float(), 1.0).square().mean())

    # more detail than before, at most the gain cap's worth, and nothing outside [0, 1]
    assert energy(out) > 2.0 * energy(soft)
    assert energy(out) <= (MAX_BAND_GAIN**2) * energy(soft) * 1.05
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_a_face_as_sharp_as_the_target_is_unchanged(device: torch.device, dtype: torch.dtype) -> None:
    soft, sharp = _textures(device, dtype)
    weight = torch.ones(2, 1, 64, 64, device=device, dtype=dtype)
    # the gain is clamped at 1 from below: a face sharper than its target is not blurred, nor sharpened
    out = restore_source_detail(sharp, soft, weight, sigma=1.0)
    torch.testing.assert_close(out, sharp, atol=1e-3 if dtype == torch.float16 else 1e-6, rtol=0)


def test_zero_weight_keeps_every_pixel_bit_for_bit(device: torch.device, dtype: torch.dtype) -> None:
    soft, sharp = _textures(device, dtype)
    weight = torch.zeros(2, 1, 64, 64, device=device, dtype=dtype)
    weight[..., 16:48, 16:48] = 1.0
    out = restore_source_detail(soft, sharp, weight, sigma=2.0)
    outside = weight.expand_as(soft) == 0
    assert torch.equal(out[outside], soft[outside])
    assert not torch.equal(out[~outside], soft[~outside])


# astronaut → grace_hopper: a source face magnified 1.9× onto a grainy, wrinkled target (the tune split's softest
# faces, docs/quality.md)
SOURCE, TARGET, VARIANT = "astronaut.png", "grace_hopper.jpg", "plain"


@pytest.fixture(scope="module")
def judged() -> dict[str, Any]:
    src = load(SOURCE)
    tgt, occluder = make_variant(TARGET, VARIANT)
    out: dict[str, Any] = {}
    for restore in (False, True):
        engine = SwapEngine(SwapSettings(device="cpu", detail_restore=restore))
        result, n = swap_image(engine.prepare_sources([src]), tgt, engine)
        assert n == 1
        out["on" if restore else "off"] = evaluate(src, tgt, result, engine, occluder)
    return out


def test_restoration_sharpens_a_magnified_face(judged: dict[str, Any]) -> None:
    # measured: 0.51 without, 0.85 with (the variance of the Laplacian inside the face, output / target)
    off, on = judged["off"], judged["on"]
    assert off.sharpness_vs_target < 0.6, off
    assert on.sharpness_vs_target >= 0.75, on
    # the seam: 1.17 → 1.03 (the interior's gradient rises, the border is the target's)
    assert on.seam_ratio < off.seam_ratio, (off, on)


def test_restoration_does_not_move_identity_toward_the_target(judged: dict[str, Any]) -> None:
    # measured: dlib distance to the source 0.399 without, 0.378 with (the sharpened eyes, brows and lips are the
    # source's); it must not get worse, and identity still moves
    off, on = judged["off"], judged["on"]
    assert on.identity_to_source <= off.identity_to_source, (off, on)
    assert on.identity_to_source < on.identity_to_target, on
