"""Tests of faceweave.ops.colour: LAB against OpenCV on real faces, colour and shading transfer, gradcheck."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from faceweave.errors import ShapeError
from faceweave.ops.colour import (
    apply_lab_transfer,
    chroma_floor,
    lab_to_rgb,
    luminance,
    masked_mean_std,
    match_edge_colour,
    match_fine_detail,
    rgb_to_lab,
    transfer_colour_lab,
    transfer_colour_lab_from_lab,
    transfer_shading,
)
from faceweave.ops.filters import gaussian_blur


def to_tensor(img: np.ndarray, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].to(device=device, dtype=dtype)


@pytest.fixture(scope="module")
def astronaut(media: Any) -> np.ndarray:
    return media.rgb("astronaut.png").astype(np.float32) / 255.0


@pytest.fixture(scope="module")
def faces(media: Any) -> tuple[np.ndarray, np.ndarray]:
    """Two real face crops of 160²: astronaut (warm, bright) and obama (different skin tone and light)."""
    a = cv2.resize(media.rgb("astronaut.png")[50:210, 160:320], (160, 160), interpolation=cv2.INTER_AREA)
    ob = media.rgb("obama.jpg")
    h, w = ob.shape[:2]
    s = min(h, w) // 2
    o = cv2.resize(
        ob[h // 2 - s // 2 - s // 4 : h // 2 + s // 2 - s // 4, w // 2 - s // 2 : w // 2 + s // 2],
        (160, 160),
        interpolation=cv2.INTER_AREA,
    )
    return a.astype(np.float32) / 255.0, o.astype(np.float32) / 255.0


def ellipse_mask(size: int = 160) -> np.ndarray:
    m = np.zeros((size, size), np.float32)
    cv2.ellipse(m, (size // 2, size // 2), (size // 3, int(size * 0.42)), 0, 0, 360, 1.0, -1)
    return m


def test_rgb_to_lab_matches_opencv(astronaut: np.ndarray, device: torch.device, dtype: torch.dtype) -> None:
    ref = cv2.cvtColor(astronaut, cv2.COLOR_RGB2Lab)
    got = rgb_to_lab(to_tensor(astronaut, device, dtype))
    assert got.dtype == dtype
    diff = np.abs(got[0].permute(1, 2, 0).float().cpu().numpy() - ref)
    print(f"cv2 {cv2.__version__}: rgb_to_lab mean {diff.mean():.3f} max {diff.max():.3f}")
    # OpenCV's float path interpolates the gamma curve from a table; 0.5 LAB units is below a just-noticeable
    # difference (ΔE ≈ 1). fp16 output has ~0.06 resolution at L=100.
    assert diff.max() < (0.5 if dtype == torch.float32 else 0.8), f"vs cv2 {cv2.__version__}"
    assert diff.mean() < 0.1


def test_lab_to_rgb_matches_opencv_and_roundtrips(
    astronaut: np.ndarray, device: torch.device, dtype: torch.dtype
) -> None:
    lab = cv2.cvtColor(astronaut, cv2.COLOR_RGB2Lab)
    ref = cv2.cvtColor(lab, cv2.COLOR_Lab2RGB)
    got = lab_to_rgb(to_tensor(lab, device, dtype))[0].permute(1, 2, 0).float().cpu().numpy()
    tol = 1e-3 if dtype == torch.float32 else 1e-2
    assert np.abs(got - ref).max() < tol, f"vs cv2 {cv2.__version__}"
    x = to_tensor(astronaut, device, dtype)
    back = lab_to_rgb(rgb_to_lab(x))
    torch.testing.assert_close(back.float(), x.float(), atol=1e-4 if dtype == torch.float32 else 1e-2, rtol=0)


def test_transfer_colour_lab_moves_statistics(
    faces: tuple[np.ndarray, np.ndarray], device: torch.device, dtype: torch.dtype
) -> None:
    src_np, ref_np = faces
    src, ref = to_tensor(src_np, device, dtype), to_tensor(ref_np, device, dtype)
    m = torch.from_numpy(ellipse_mask())[None, None].to(device=device, dtype=dtype)
    out = transfer_colour_lab(src, ref, m, m)
    assert out.shape == src.shape and out.dtype == dtype
    mu_o, sd_o = masked_mean_std(rgb_to_lab(out.float()), m.float())
    mu_r, sd_r = masked_mean_std(rgb_to_lab(ref.float()), m.float())
    mu_s, _ = masked_mean_std(rgb_to_lab(src.float()), m.float())
    # the faces really differ, and the output took the reference's colour (clipping to [0,1] costs a little)
    assert float((mu_s - mu_r).abs().max()) > 5.0
    assert float((mu_o - mu_r).abs().max()) < 1.5
    assert float(((sd_o - sd_r).abs() / sd_r).max()) < 0.15
    # strength 0 is the identity (up to the LAB round trip)
    same = transfer_colour_lab(src, ref, m, m, strength=0.0)
    torch.testing.assert_close(same.float(), src.float(), atol=1e-4 if dtype == torch.float32 else 1e-2, rtol=0)


def test_transfer_shading_applies_ref_lighting(
    faces: tuple[np.ndarray, np.ndarray], device: torch.device, dtype: torch.dtype
) -> None:
    src_np, _ = faces
    src = to_tensor(src_np, device, torch.float32)
    ramp = torch.linspace(0.5, 1.1, 160, device=device).view(1, 1, 1, 160)  # light from the right
    ref = (src * ramp).clamp(0, 1)
    m = torch.from_numpy(ellipse_mask())[None, None].to(device=device)
    out = transfer_shading(src.to(dtype), ref.to(dtype), m.to(dtype), sigma=8.0).float()
    assert out.dtype == torch.float32 or out.dtype == dtype
    inner = torch.from_numpy(cv2.erode(ellipse_mask(), np.ones((9, 9), np.uint8)) > 0).to(device)
    # the output's low-frequency luminance follows the reference, including next to the mask border
    lo = gaussian_blur(luminance(out), 3.0)[0, 0][inner]
    lr = gaussian_blur(luminance(ref), 3.0)[0, 0][inner]
    ls = gaussian_blur(luminance(src), 3.0)[0, 0][inner]
    assert float((lo - lr).abs().mean()) < 0.25 * float((ls - lr).abs().mean())
    # outside the mask nothing changes
    outside = m[0, 0] == 0
    tol = 0.0 if dtype == torch.float32 else 1e-3
    assert float((out - src)[0][:, outside].abs().max()) <= tol


def test_transfer_shading_uniform_gain_no_dark_border(faces: tuple[np.ndarray, np.ndarray]) -> None:
    src = to_tensor(faces[0], torch.device("cpu"), torch.float32)
    m = torch.from_numpy(ellipse_mask())[None, None]
    out = transfer_shading(src, src * 0.7, m, sigma=10.0)
    inside = m[0, 0] > 0
    # normalised convolution: the gain is 0.7 everywhere in the mask, at its border too
    ratio = (out / src.clamp_min(1e-3))[0][:, inside & (src[0].min(0).values > 0.05)]
    assert float((ratio - 0.7).abs().max()) < 0.01


def test_batched_equals_per_item(faces: tuple[np.ndarray, np.ndarray]) -> None:
    a, b = (to_tensor(f, torch.device("cpu"), torch.float32) for f in faces)
    src = torch.cat([a, b, a * 0.8])
    ref = torch.cat([b, a, b.flip(-1)])
    m = torch.from_numpy(ellipse_mask())[None, None].expand(3, 1, -1, -1)
    for fn in (
        lambda s, r, mm: transfer_colour_lab(s, r, mm, mm),
        lambda s, r, mm: transfer_shading(s, r, mm, sigma=5.0),
    ):
        full = fn(src, ref, m)
        for i in range(3):
            torch.testing.assert_close(full[i : i + 1], fn(src[i : i + 1], ref[i : i + 1], m[i : i + 1]))


def test_gradcheck_colour_ops() -> None:
    g = torch.Generator().manual_seed(0)
    x = (0.1 + 0.8 * torch.rand(1, 3, 4, 5, generator=g, dtype=torch.float64)).requires_grad_()
    r = (0.1 + 0.8 * torch.rand(1, 3, 4, 5, generator=g, dtype=torch.float64)).requires_grad_()
    m = torch.rand(1, 1, 4, 5, generator=g, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(rgb_to_lab, (x,), fast_mode=True)
    lab = rgb_to_lab(x.detach()).requires_grad_()
    assert torch.autograd.gradcheck(lambda v: lab_to_rgb(v, clamp=False), (lab,), fast_mode=True)
    # mild strength keeps the result inside [0,1], where the final clip is differentiable
    assert torch.autograd.gradcheck(
        lambda s, rr, mm: transfer_colour_lab(s, rr, mm, mm, strength=0.3), (x, r, m), fast_mode=True
    )
    assert torch.autograd.gradcheck(
        lambda s, rr, mm: transfer_shading(s, rr, mm, sigma=1.0), (x * 0.5, r, m), fast_mode=True
    )


def test_shape_errors() -> None:
    with pytest.raises(ShapeError):
        rgb_to_lab(torch.zeros(1, 4, 8, 8))
    with pytest.raises(ShapeError):  # a mask may be smaller than its image (statistics grid), not larger
        transfer_colour_lab(
            torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8), torch.zeros(1, 1, 16, 16), torch.zeros(1, 1, 8, 8)
        )


def test_statistics_on_a_coarser_mask_grid(faces: tuple[np.ndarray, np.ndarray]) -> None:
    """Masks on a 3× coarser grid (the swapper's statistics grid) give nearly the full-resolution transfer, and the
    LAB-input variant equals the RGB one."""
    src, ref = (torch.from_numpy(np.ascontiguousarray(f)).permute(2, 0, 1)[None] for f in faces)
    size = src.shape[-1]
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    m = (((xx - size / 2) / (size / 3)) ** 2 + ((yy - size / 2) / (size / 2.5)) ** 2 <= 1).float()[None, None]
    small = F.interpolate(m, size=(size // 3, size // 3), mode="area")
    full = transfer_colour_lab(src, ref, m, m)
    coarse = transfer_colour_lab(src, ref, small, small)
    assert float((full - coarse).abs().mean()) < 2 / 255
    torch.testing.assert_close(transfer_colour_lab_from_lab(rgb_to_lab(src), ref, small, small), coarse)


def test_transfer_on_a_region_uses_whole_image_statistics(faces: tuple[np.ndarray, np.ndarray]) -> None:
    """``region=`` returns exactly that part of the whole-image transfer (statistics from the whole images)."""
    src, ref = (torch.from_numpy(np.ascontiguousarray(f)).permute(2, 0, 1)[None] for f in faces)
    m = torch.from_numpy(ellipse_mask())[None, None]
    small = F.interpolate(m, size=(53, 53), mode="area")
    lab = rgb_to_lab(src)
    whole = transfer_colour_lab_from_lab(lab, ref, small, small)
    rows, cols = slice(20, 131), slice(37, 120)
    part = transfer_colour_lab_from_lab(lab, ref, small, small, region=(rows, cols))
    assert part.shape == (1, 3, 111, 83)
    torch.testing.assert_close(part, whole[..., rows, cols])
    # and the region's own statistics would differ: the whole-image statistics are what is used
    alone = transfer_colour_lab_from_lab(lab[..., rows, cols].contiguous(), ref[..., rows, cols].contiguous(),
                                         m[..., rows, cols], m[..., rows, cols])
    assert float((alone - part).abs().max()) > 1 / 255


def test_shading_downscaled_estimate_matches_full(device: torch.device, dtype: torch.dtype, media: Any) -> None:
    """Estimating the lighting on 4× pooled images gives the same transfer when sigma is large."""
    rgb = torch.from_numpy(media.rgb("astronaut.png")).permute(2, 0, 1)[None].float().div(255)
    src = rgb[:, :, 40:296, 120:376].to(device, dtype)
    ref = rgb.flip(-1)[:, :, 40:296, 120:376].to(device, dtype)
    mask = torch.zeros(1, 1, 256, 256, device=device, dtype=dtype)
    mask[..., 40:220, 50:210] = 1
    full = transfer_shading(src, ref, mask, sigma=40.0)
    fast = transfer_shading(src, ref, mask, sigma=40.0, downscale=8)
    assert (fast.float() - full.float()).abs().mean() < 0.01
    assert not torch.equal(full, src)  # the transfer did something


def test_match_edge_colour_pulls_the_edge_to_the_reference(faces: tuple[np.ndarray, np.ndarray]) -> None:
    """A face recoloured (warmer, lighter) inside an ellipse: on a ring just inside the ellipse's edge the correction
    brings it back to the real face's colour; the middle (weight 0) keeps its recolouring, the face's detail stays."""
    a, _ = faces
    real = to_tensor(a, torch.device("cpu"), torch.float32)
    inside = torch.from_numpy(ellipse_mask())[None, None]
    recoloured = (real + inside * torch.tensor([0.08, 0.02, -0.04]).view(1, 3, 1, 1)).clamp(0, 1)
    ring = inside - torch.from_numpy(cv2.erode(ellipse_mask(), np.ones((25, 25), np.uint8)))[None, None]
    weight = ring.clone()
    out = match_edge_colour(recoloured, real, ring[..., ::2, ::2].contiguous(), weight[..., ::2, ::2].contiguous(),
                            sigma=4.0)
    on_ring = ring[0, 0] > 0.5

    def mean_step(x: torch.Tensor) -> float:
        lab_x, lab_r = rgb_to_lab(x)[0], rgb_to_lab(real)[0]
        return float((lab_x - lab_r).norm(dim=0)[on_ring].mean())

    assert mean_step(recoloured) > 5.0
    assert mean_step(out) < 0.3 * mean_step(recoloured)
    centre = slice(70, 90)
    assert torch.equal(out[..., centre, centre], recoloured[..., centre, centre])
    # only a smooth correction: the high frequencies on the ring are the face's own
    hp = lambda x: x - gaussian_blur(x, 2.0)  # noqa: E731
    assert float((hp(out) - hp(recoloured))[..., on_ring].abs().mean()) < 0.01
    # chroma only: the luma of the correction is removed
    chroma = match_edge_colour(recoloured, real, ring, weight, sigma=8.0, lightness=0.0)
    assert float((luminance(chroma) - luminance(recoloured)).abs().max()) < 1e-5
    with pytest.raises(ShapeError):
        match_edge_colour(recoloured, real, ring, weight[..., ::2, ::2], sigma=4.0)


def test_match_fine_detail_restores_the_band_a_blur_took(faces: tuple[np.ndarray, np.ndarray]) -> None:
    """A real face softened by a resampling-like blur gets its own finest band amplified back toward the sharp
    original's energy (bounded by max_gain); a source already sharper than the reference is left as it is."""
    a, _ = faces
    sharp = to_tensor(a, torch.device("cpu"), torch.float32)
    soft = gaussian_blur(sharp, 0.7)
    mask = torch.from_numpy(ellipse_mask())[None, None]

    def energy(x: torch.Tensor) -> float:
        lum = luminance(x)
        return float(((lum - gaussian_blur(lum, 1.0)).square() * mask).sum() / mask.sum())

    assert energy(soft) < 0.5 * energy(sharp)
    out = match_fine_detail(soft, sharp, mask, sigma=1.0, max_gain=3.0)
    # the gain is set on the band's energy, but the band's own lower frequencies are partly below the high-pass: the
    # result gets most of the way, never past the reference
    assert 1.5 * energy(soft) < energy(out) <= energy(sharp)
    capped = match_fine_detail(soft, sharp, mask, sigma=1.0, max_gain=1.1)
    assert energy(capped) < 1.1**2 * energy(soft) * 1.05
    assert torch.equal(match_fine_detail(sharp, soft, mask, sigma=1.0, max_gain=3.0), sharp)
    outside = mask[0, 0] == 0
    assert torch.equal(out[..., outside], soft[..., outside])


def test_lab_transfer_stops_chroma_at_neutral() -> None:
    # a pale reference pulls every chroma down: the source's greyer parts would cross neutral (cyan, blue)
    lab = torch.tensor([[60.0, 16.0, 24.0], [30.0, 4.0, 8.0], [50.0, 2.0, -12.0]]).T.reshape(1, 3, 3, 1)
    scale = torch.tensor([1.0, 1.5, 1.5]).view(1, 3, 1, 1)
    shift = torch.tensor([10.0, -20.0, -30.0]).view(1, 3, 1, 1)
    plain = torch.addcmul(shift, lab, scale)
    out = apply_lab_transfer(lab, scale, shift, torch.zeros(1, 2, 1, 1))
    assert torch.equal(out[:, 0], plain[:, 0])  # lightness as the affine map gives it
    assert torch.equal(out[..., 0, 0], plain[..., 0, 0])  # the skin pixel stays on the skin's side: unchanged
    assert out[0, 1:, 1, 0].tolist() == [0.0, 0.0]  # the brow (4, 8 → -14, -18) stops at neutral
    # a blue iris (b* -12) may keep its own chroma, not more: -48 → -12; its a* (2 → -17) stops at 0
    assert out[0, 1:, 2, 0].tolist() == [0.0, -12.0]
    # under a blue cast the reference's skin reaches b* -20 (its floor): the brow may go there
    cast = apply_lab_transfer(lab, scale, shift, torch.tensor([0.0, -20.0]).view(1, 2, 1, 1))
    assert cast[0, 1:, 1, 0].tolist() == [0.0, -18.0]


def test_chroma_floor_is_zero_for_skin_and_follows_a_cast() -> None:
    from faceweave.eval.cases import donor_landmarks, load
    from faceweave.eval.realism import face_oval_mask

    img, lm = load("obama.jpg"), donor_landmarks("obama.jpg")
    mask = torch.from_numpy(face_oval_mask(lm, img.shape, 0.1)).float()[None, None]
    skin = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
    assert chroma_floor(*masked_mean_std(rgb_to_lab(skin), mask)).tolist() == [[[[0.0]], [[0.0]]]]
    # the same face under a strong blue light: its skin's b* goes negative, and the floor with it
    blue = (skin * torch.tensor([0.55, 0.8, 1.6]).view(1, 3, 1, 1)).clamp(0, 1)
    lab = rgb_to_lab(blue)
    mu, sd = masked_mean_std(lab, mask)
    floor = chroma_floor(mu, sd)
    assert float(mu[0, 2]) < -5 and float(floor[0, 1]) == pytest.approx(float(mu[0, 2] - 2 * sd[0, 2]))
