"""Hairline fill (SwapSettings.hairline_fill, issue 21): the source's fringe above its eyebrows is replaced by its own
forehead skin in a second texture, which a target takes only where its own forehead is skin up to and past the top
of the face mesh (a bald or high forehead), so the fringe is no band there; elsewhere the swap is unchanged. Real
faces of faceweave/eval/cases.py (astronaut has a fringe down to her eyebrows; grace_hopper wears a hat; obama has
a high forehead)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from faceweave.eval.cases import _skin, donor_landmarks, load, make_bald, make_variant
from faceweave.eval.metrics import evaluate
from faceweave.models import topology
from faceweave.ops.colour import rgb_to_lab
from faceweave.ops.crops import square_boxes
from faceweave.ops.geometry import transform_points
from faceweave.ops.masks import polygon_mask
from faceweave.ops.warp import warp_affine
from faceweave.pipeline.engine import SwapEngine
from faceweave.pipeline.image import swap_image
from faceweave.settings import SwapSettings
from faceweave.swapper.geometry import CROP_MARGIN, crop_matrix
from faceweave.swapper.hairline import exclude_source_hair, fill_source_hair, forehead_gate, gate_textures, source_skin
from faceweave.swapper.mesh import prepare_source_texture


@pytest.fixture(scope="module")
def engine() -> SwapEngine:
    return SwapEngine(SwapSettings(device="cpu", hairline_fill=True))


def lit_bald_hopper() -> np.ndarray:
    """grace_hopper with her hat painted over by skin of her cheeks' colour, a little lighter (a bald head): her own
    bald variant paints the shadow under the hat, nearly black."""
    img, lm = load("grace_hopper.jpg"), donor_landmarks("grace_hopper.jpg")
    return make_bald(img, lm, colour=np.clip(_skin(img, lm) * 1.05, 0, 255))


def _forehead_band(points: torch.Tensor, size: int) -> torch.Tensor:
    """``(1, 1, S, S)`` bool: the face oval's forehead from its top to 5 % of the face above the eyebrows."""
    face_px = float((points.max(0).values - points.min(0).values).max())
    brows = float(points[list(topology.LEFT_EYEBROW) + list(topology.RIGHT_EYEBROW), 1].min())
    oval = polygon_mask(points[None, list(topology.FACE_OVAL)], (size, size), subrows=1) > 0.5
    rows = torch.arange(size).view(1, 1, size, 1).float()
    return oval & (rows < brows - 0.05 * face_px)


def test_fringe_becomes_skin_in_the_filled_texture(engine: SwapEngine) -> None:
    image = engine.to_tensor(load("astronaut.png"))
    face = engine.prepare_sources([load("astronaut.png")])[0].face
    plain = prepare_source_texture(image, face)
    tex = prepare_source_texture(image, face, hairline_fill=True)
    assert plain.filled is None and tex.filled is not None
    assert torch.equal(tex.image, plain.image)  # the texture itself is the source's: targets choose
    filled_rgb, filled_lab = tex.filled
    band = _forehead_band(plain.points, plain.image.shape[-1])
    assert plain.lab is not None
    before = source_skin(plain.lab, plain.points)[0][band].mean()
    after = source_skin(rgb_to_lab(filled_rgb.float()), tex.points)[0][band].mean()
    # before: about half of the forehead the mesh covers is the fringe's hair (0.52); after: 0.69
    assert before < 0.6, before
    assert after > before + 0.15, (before, after)
    assert filled_lab[0, 0][band[0, 0]].mean() > plain.lab[0, 0][band[0, 0]].mean() + 3
    # below the band (eyes, brows, cheeks) the texture is untouched
    rows = torch.arange(plain.image.shape[-1])
    brows = float(plain.points[list(topology.LEFT_EYEBROW) + list(topology.RIGHT_EYEBROW), 1].min())
    below = rows > brows
    assert torch.equal(plain.image[..., below, :], filled_rgb[..., below, :])


def test_no_fill_without_hair(engine: SwapEngine) -> None:
    image = engine.to_tensor(load("obama.jpg"))
    face = engine.prepare_sources([load("obama.jpg")])[0].face
    tex = prepare_source_texture(image, face)
    assert tex.lab is not None
    filled = fill_source_hair(tex.image.float(), tex.lab, tex.points)
    # a few pixels of the hairline at the mesh's top edge (mean |Δ| 7e-5), or nothing at all
    assert filled is None or (filled[0] - tex.image.float()).abs().mean() < 1e-3


def _crop(rgb: np.ndarray, name: str, device: torch.device, size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """The face crop the swap works on (its square box with CROP_MARGIN) and its mesh in crop pixels."""
    pts = torch.as_tensor(donor_landmarks(name), dtype=torch.float32)[None]
    m = crop_matrix(square_boxes(pts, CROP_MARGIN), size)
    img = torch.from_numpy(rgb).permute(2, 0, 1)[None].float().div(255)
    return warp_affine(img, m, (size, size), padding="border").to(device), transform_points(m, pts).to(device)


def test_gate_opens_on_skin_foreheads_only(device: torch.device) -> None:
    cases = {"hat": (load("grace_hopper.jpg"), "grace_hopper.jpg"),
             "hat_bald_variant": (make_variant("grace_hopper.jpg", "bald")[0], "grace_hopper.jpg"),
             "fringe": (load("astronaut.png"), "astronaut.png"),
             "lit_bald": (lit_bald_hopper(), "grace_hopper.jpg"),
             "high_forehead": (load("obama.jpg"), "obama.jpg")}
    crops, points = zip(*(_crop(rgb, name, device) for rgb, name in cases.values()), strict=True)
    gate = forehead_gate(torch.cat(crops), torch.cat(points))
    assert gate.device.type == device.type and gate.shape == (len(cases),)
    got = dict(zip(cases, gate.tolist(), strict=True))
    # a hat (even the bald variant's near-black paint, which is what the hat's shadow gives it) and a fringe: shut
    assert got["hat"] == 0 and got["hat_bald_variant"] == 0 and got["fringe"] == 0, got
    assert got["lit_bald"] == 1 and got["high_forehead"] == 1, got
    # the textures follow the gate per face; a face without a filled texture keeps its own
    tex = torch.rand(3, 3, 32, 32, device=device)
    alt = torch.rand(1, 3, 32, 32)
    out, out_gate = gate_textures(tex, [alt, None, alt], torch.cat([crops[0], crops[3], crops[4]]),
                                  torch.cat([points[0], points[3], points[4]]))
    assert torch.equal(out[:2], tex[:2])
    torch.testing.assert_close(out[2], alt[0].to(device))
    assert out_gate.tolist() == [0.0, 0.0, 1.0]  # the face without a filled texture: 0, whatever its forehead


@pytest.mark.parametrize("turned", [False, True], ids=["upright", "turned"])
def test_exclusion_leaves_out_the_fringe_only(device: torch.device, turned: bool) -> None:
    # astronaut's own crop as the swapped face: her fringe reaches down to her eyebrows; turned a quarter (her
    # forehead to the crop's left), "above the brows" follows her face, not the crop's rows
    crop, points = _crop(load("astronaut.png"), "astronaut.png", device)
    if turned:
        crop = torch.rot90(crop, 1, (-2, -1))  # out[y, x] = in[x, S-1-y]: a point (x, y) goes to (y, S-1-x)
        points = torch.stack([points[..., 1], crop.shape[-1] - 1 - points[..., 0]], -1)
    mask = torch.ones(2, 1, *crop.shape[-2:], device=device)
    out = exclude_source_hair(crop.expand(2, -1, -1, -1), mask, torch.tensor([0.0, 1.0], device=device),
                              points.expand(2, -1, -1))
    assert out.device.type == device.type and out.shape == mask.shape
    assert torch.equal(out[0], mask[0])  # a shut gate changes nothing
    assert bool((out <= mask).all())
    pts = points[0].cpu()
    size = crop.shape[-1]
    up = torch.nn.functional.normalize(pts[10] - pts[152], dim=0)  # chin → forehead top
    ys, xs = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    height = xs * up[0] + ys * up[1]
    brows = (pts[list(topology.LEFT_EYEBROW) + list(topology.RIGHT_EYEBROW)] @ up).max()
    eyes = (pts[list(topology.LEFT_EYE) + list(topology.RIGHT_EYE)] @ up).max()
    face_px = float((pts.amax(0) - pts.amin(0)).max())
    oval = polygon_mask(pts[None, list(topology.FACE_OVAL)], (size, size), subrows=1)[0, 0] > 0.5
    forehead = (oval & (height > brows + 0.05 * face_px)).to(device)
    # the fringe over the forehead is left out (most of it is hair), the face from the eyes' top down is not
    assert float(out[1, 0][forehead].mean()) < 0.5
    assert eyes < brows - 0.05 * face_px  # the softened edge (1 % grown, 1 % sigma) ends before the eyes
    assert float(out[1, 0][(height <= eyes).to(device)].min()) == 1.0


def test_closed_gate_leaves_the_swap_unchanged(engine: SwapEngine) -> None:
    src, tgt = load("astronaut.png"), load("grace_hopper.jpg")
    off = SwapEngine(SwapSettings(device="cpu", hairline_fill=False))
    with_fill, _ = swap_image(engine.prepare_sources([src]), tgt, engine)
    without, _ = swap_image(off.prepare_sources([src]), tgt, off)
    assert np.array_equal(with_fill, without)


def test_bald_target_gets_no_fringe_band_and_identity_moves(engine: SwapEngine) -> None:
    src, tgt = load("astronaut.png"), lit_bald_hopper()
    off = SwapEngine(SwapSettings(device="cpu", hairline_fill=False))
    before: Any = evaluate(src, tgt, swap_image(off.prepare_sources([src]), tgt, off)[0], engine)
    result, n = swap_image(engine.prepare_sources([src]), tgt, engine)
    assert n == 1
    q: Any = evaluate(src, tgt, result, engine)
    assert q.identity_to_source < q.identity_to_target, q
    # the band at the mask's top (target's own forehead: 0.24): 0.50 without the fill, 0.40 with the fill alone (the
    # lower fringe stays), 0.34 with the rest of the fringe left out (exclude_source_hair)
    assert q.seam_top < before.seam_top - 0.12, (before.seam_top, q.seam_top)
