"""The mesh swap's CPU shortcuts (issue 19 goal 5) against the whole-crop computations they replace, on real faces.

Each shortcut works on a window (of the crop, the mask grid or the frame) outside which the result is known to be
the reference's; these tests compare the two on the bundled photos. Tolerances: bit for bit where the window
samples exactly what the whole computation samples, else float rounding (1e-5 on ``[0, 1]`` values, a thousandth of
a uint8 level), and at most 1 uint8 level for the whole swap.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F

from faceweave.enhance.detail import sharpen_faces
from faceweave.models import topology
from faceweave.ops.blend import laplacian_pyramid_blend, paste_back_region
from faceweave.ops.colour import edge_colour_correction, match_edge_colour
from faceweave.ops.crops import square_boxes
from faceweave.ops.filters import area_window
from faceweave.ops.geometry import transform_points
from faceweave.ops.masks import feather_mask, polygon_mask
from faceweave.pipeline.engine import SwapEngine
from faceweave.settings import SwapSettings
from faceweave.swapper import geometry, mesh


@pytest.fixture(scope="module")
def scene(media: type) -> dict[str, Any]:
    engine = SwapEngine(SwapSettings(device="cpu", enhancer=None))
    # the faces as the small-face tiles find them: the scene the float-rounding bounds below were set on (with the
    # CPU's level views the faces land 1–2 px elsewhere, and one of the paste's 921,600 values then differs from the
    # whole crop's by 1.02e-5, past the 1e-5 bound: rounding, not the window)
    engine.detector.level_views = False
    source = engine.prepare_sources([media.rgb("astronaut.png")])[0].texture
    rows = []
    for name in ("obama.jpg", "grace_hopper.jpg"):
        frame = engine.to_tensor(media.rgb(name))
        faces = engine.analyze(frame)[0]
        assert faces, name
        rows.append((frame, [(0, faces[0], source)]))
    return {"engine": engine, "rows": rows, "options": mesh.MeshSwapOptions.from_settings(engine.settings)}


def _crop(frame: torch.Tensor, size: int) -> torch.Tensor:
    """A real ``size × size`` crop of a photo (its top-left square, resized)."""
    side = min(frame.shape[-2:])
    return F.interpolate(frame[..., :side, :side], size=(size, size), mode="bilinear", align_corners=False)


@pytest.mark.parametrize("size", [128, 224, 288, 352, 512])
def test_area_window_resamples_like_the_whole_crop(scene: dict[str, Any], size: int) -> None:
    crop = _crop(scene["rows"][0][0], size)
    res = min(size, mesh.MASK_SIZE)
    whole = F.interpolate(crop, size=(res, res), mode="area")
    for lo, hi in ((size // 7, size - size // 5), (size // 3, size // 3 + 5), (0, size)):
        a, b, c, d = area_window(size, res, lo, hi)
        assert a <= lo and b >= hi and d - c <= res
        part = F.interpolate(crop[..., a:b, a:b], size=(d - c, d - c), mode="area")
        torch.testing.assert_close(part, whole[..., c:d, c:d], atol=1e-6, rtol=0)


def test_polygon_window_matches_the_whole_grid(scene: dict[str, Any]) -> None:
    """The face outline and the grown features of real faces, as the swap rasterises them on its mask grid."""
    for _, items in scene["rows"]:
        face = items[0][1]
        pts = face.landmarks[None, :, :2].float()
        box = square_boxes(pts, geometry.CROP_MARGIN)
        size = 288
        grid = mesh.MASK_SIZE / size
        crop_pts = transform_points(geometry.crop_matrix(box, size), pts)
        y0, y1, x0, x1 = geometry.texture_box(crop_pts, size)
        g = (crop_pts + 0.5) * grid - 0.5
        window = (int(y0 * grid), int(y1 * grid) + 2, int(x0 * grid), int(x1 * grid) + 2)
        for idx, dilate, subrows in ((topology.FACE_OVAL, 0.0, 4), (topology.LIPS_OUTER, 4 * grid, 2),
                                     (topology.LEFT_EYEBROW, 4 * grid, 2)):
            poly = g[:, list(idx)]
            whole = polygon_mask(poly, (mesh.MASK_SIZE,) * 2, dilate=dilate, subrows=subrows)
            part = polygon_mask(poly, (mesh.MASK_SIZE,) * 2, dilate=dilate, subrows=subrows, window=window)
            assert whole.sum() > 10
            torch.testing.assert_close(part, whole, atol=1e-5, rtol=0)


def test_edge_correction_from_one_resampled_difference(scene: dict[str, Any]) -> None:
    """What the swap computes (the difference resampled once) is :func:`match_edge_colour` up to rounding."""
    src, ref = _crop(scene["rows"][0][0], 288), _crop(scene["rows"][1][0], 288)
    yy, xx = torch.meshgrid(torch.arange(160.0), torch.arange(160.0), indexing="ij")
    disc = ((yy - 80) ** 2 + (xx - 80) ** 2 < 60**2).float()[None, None]
    inner = ((yy - 80) ** 2 + (xx - 80) ** 2 < 45**2).float()[None, None]
    ring, weight = disc * (1 - inner), 1 - feather_mask(inner, 3.0)
    expected = match_edge_colour(src, ref, ring, weight, sigma=3.0, lightness=0.0)
    diff = F.interpolate(ref - src, size=(160, 160), mode="area")
    corr = edge_colour_correction(diff, ring, weight, sigma=3.0, lightness=0.0)
    got = (src + F.interpolate(corr, size=(288, 288), mode="bilinear", align_corners=False)).clamp(0, 1)
    assert (expected - src).abs().max() > 0.01  # the correction does something
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def _captured(monkeypatch: pytest.MonkeyPatch, scene: dict[str, Any], name: str) -> list[tuple[Any, ...]]:
    """Runs the swap of every scene row with ``mesh.<name>`` spied on; returns each call's arguments."""
    calls: list[tuple[Any, ...]] = []
    real = getattr(mesh, name)

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append((args, kwargs))
        return real(*args, **kwargs)

    monkeypatch.setattr(mesh, name, spy)
    for frame, items in scene["rows"]:
        mesh.swap_faces(frame, items, scene["options"])
    monkeypatch.undo()
    assert len(calls) == len(scene["rows"])
    return calls


def test_laplacian_blend_window_is_bit_identical(monkeypatch: pytest.MonkeyPatch, scene: dict[str, Any]) -> None:
    for (fg, bg, mask, levels), _ in _captured(monkeypatch, scene, "_laplacian_blend_in_window"):
        whole = laplacian_pyramid_blend(fg, bg, mask, levels=levels).clamp(0, 1)
        assert torch.equal(mesh._laplacian_blend_in_window(fg, bg, mask, levels), whole)
        y0, y1, x0, x1 = mesh._mask_window(mask)
        assert (y1 - y0) * (x1 - x0) < 0.7 * mask.shape[-1] ** 2  # the window is a real saving


def test_paste_support_matches_whole_crop(monkeypatch: pytest.MonkeyPatch, scene: dict[str, Any]) -> None:
    for (frames, f_idx, crops, masks, m), kwargs in _captured(monkeypatch, scene, "paste_back_region"):
        assert kwargs["support"] is not None
        outs = []
        for support in (kwargs["support"], None):
            region, (x0, y0, x1, y1) = paste_back_region(frames, f_idx, crops, masks, m,
                                                         **{**kwargs, "support": support})
            out = frames.clone()
            out[f_idx, :, y0:y1, x0:x1] = region.clamp(0, 1)
            outs.append((out, (x1 - x0) * (y1 - y0)))
        (fast, fast_area), (whole, whole_area) = outs
        assert fast_area < 0.7 * whole_area
        torch.testing.assert_close(fast, whole, atol=1e-5, rtol=0)


def test_swap_with_cpu_windows_matches_whole_crops(monkeypatch: pytest.MonkeyPatch, scene: dict[str, Any]) -> None:
    """The whole swap, with the masks' windows (blend and paste) vs the whole crops: at most 1 uint8 level."""
    fast = [mesh.swap_faces(frame, items, scene["options"]) for frame, items in scene["rows"]]
    monkeypatch.setattr(mesh, "_mask_window", lambda mask: (0, mask.shape[-2], 0, mask.shape[-1]))
    whole = [mesh.swap_faces(frame, items, scene["options"]) for frame, items in scene["rows"]]
    for (frame, _), a, b in zip(scene["rows"], fast, whole, strict=True):
        assert (a != frame).any(1).sum() > 1000  # a face was swapped
        assert ((a * 255).round() - (b * 255).round()).abs().max() <= 1
        torch.testing.assert_close(a, b, atol=1e-4, rtol=0)


def test_sharpen_in_place_equals_the_copy(scene: dict[str, Any]) -> None:
    frame, items = scene["rows"][0]
    swapped = mesh.swap_faces(frame, items, scene["options"])
    faces = [[items[0][1]]]
    copy = sharpen_faces(swapped, faces, before=frame)
    kept = swapped.clone()
    assert torch.equal(swapped, kept)  # the copy left its input alone
    inplace = sharpen_faces(swapped, faces, before=frame, inplace=True)
    assert inplace is swapped and torch.equal(inplace, copy) and not torch.equal(copy, kept)
