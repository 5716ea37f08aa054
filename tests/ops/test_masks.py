"""Tests of faceweave.ops.masks against OpenCV (fillPoly, fillConvexPoly, erode/dilate, GaussianBlur)."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import pytest
import torch

from faceweave.errors import ShapeError
from faceweave.ops.masks import (
    convex_hull_indices,
    convex_hull_mask,
    dilate_mask,
    erode_mask,
    feather_mask,
    polygon_mask,
    triangles_mask,
)


def face_outline(media: Any) -> np.ndarray:
    """A face-shaped polygon on the astronaut photo: the outline of her skin, traced from the image itself
    (skin-coloured pixels in the face box, largest contour), so its shape is a real, concave face outline."""
    img = media.rgb("astronaut.png")
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
    skin = cv2.inRange(hsv, (0, 40, 90), (25, 200, 255))
    box = np.zeros_like(skin)
    box[60:200, 170:300] = 255
    skin = cv2.morphologyEx(skin & box, cv2.MORPH_OPEN, np.ones((5, 5), np.uint8))
    contours, _ = cv2.findContours(skin, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    c = max(contours, key=cv2.contourArea).reshape(-1, 2)
    assert len(c) >= 8 and cv2.contourArea(c) > 3000
    return cv2.approxPolyDP(c, 1.5, True).reshape(-1, 2).astype(np.float64)


def boundary_band(poly: np.ndarray, size: tuple[int, int], width: int = 3) -> np.ndarray:
    band = np.zeros(size, np.uint8)
    cv2.polylines(band, [np.round(poly * 16).astype(np.int32)], True, 1, thickness=width, shift=4)
    return band > 0


def test_polygon_mask_matches_fillpoly(media: Any, device: torch.device, dtype: torch.dtype) -> None:
    poly = face_outline(media)
    ref = np.zeros((512, 512), np.uint8)
    cv2.fillPoly(ref, [poly.astype(np.int32)], 1)
    got = polygon_mask(torch.tensor(poly, device=device, dtype=dtype)[None], (512, 512))
    assert got.shape == (1, 1, 512, 512) and got.dtype == dtype
    g = got[0, 0].float().cpu().numpy()
    assert g.min() >= 0 and g.max() <= 1
    # disagreements with OpenCV's hard fill only on the outline itself (fillPoly includes boundary pixels)
    wrong = (g >= 0.5) != (ref > 0)
    assert not (wrong & ~boundary_band(poly, (512, 512))).any()
    assert wrong.sum() < 0.05 * ref.sum()
    # anti-aliased area equals the exact polygon area (shoelace)
    x, y = poly[:, 0], poly[:, 1]
    area = 0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))
    assert abs(g.sum() - area) < 0.002 * area + (1.0 if dtype == torch.float32 else 50.0)


def test_polygon_mask_subpixel_and_orientation() -> None:
    sq = torch.tensor([[[2.25, 3.0], [7.75, 3.0], [7.75, 6.5], [2.25, 6.5]]], dtype=torch.float64)
    m = polygon_mask(sq, (10, 10), subrows=8)[0, 0]
    assert abs(float(m.sum()) - 5.5 * 3.5) < 1e-9
    assert float(m[4, 2]) == pytest.approx(0.25)  # pixel 2 covers [1.5, 2.5]: a quarter inside
    torch.testing.assert_close(polygon_mask(sq.flip(1), (10, 10), subrows=8)[0, 0], m)  # either orientation


def test_convex_hull_mask(media: Any) -> None:
    rng = np.random.default_rng(0)
    pts = face_outline(media)
    cloud = np.concatenate([pts, pts.mean(0) + rng.normal(0, 15, (60, 2))])  # hull = outline's hull
    t = torch.tensor(cloud, dtype=torch.float32)[None]
    got = convex_hull_mask(t, (512, 512))[0, 0].numpy()
    ref = np.zeros((512, 512), np.uint8)
    hull = cv2.convexHull(cloud.astype(np.float32)).reshape(-1, 2)
    cv2.fillConvexPoly(ref, np.round(hull * 16).astype(np.int32), 1, shift=4)
    wrong = (got >= 0.5) != (ref > 0)
    assert not (wrong & ~boundary_band(hull, (512, 512))).any()
    # the stable index-list path gives the same mask without the host hull
    idx = torch.tensor(convex_hull_indices(t)[0])
    torch.testing.assert_close(convex_hull_mask(t, (512, 512), hull=idx)[0, 0], torch.from_numpy(got))


def test_erode_dilate_match_opencv(media: Any) -> None:
    img = media.rgb("astronaut.png")[..., 0].astype(np.float32) / 255.0  # grey-level too, not just binary
    t = torch.from_numpy(img)[None, None]
    k = np.ones((7, 7), np.uint8)
    np.testing.assert_array_equal(dilate_mask(t, 3)[0, 0].numpy(), cv2.dilate(img, k))
    np.testing.assert_array_equal(erode_mask(t, 3)[0, 0].numpy(), cv2.erode(img, k))
    assert torch.equal(dilate_mask(t, 0), t)


def test_feather_matches_gaussian_blur(media: Any) -> None:
    m = np.zeros((200, 200), np.float32)
    cv2.fillPoly(m, [face_outline(media).astype(np.int32) - [150, 40]], 1.0)
    got = feather_mask(torch.from_numpy(m)[None, None], 4.0)[0, 0].numpy()
    ref = cv2.GaussianBlur(m, (25, 25), 4.0, borderType=cv2.BORDER_REPLICATE)
    assert np.abs(got - ref).max() < 1e-5


def test_triangles_mask_matches_fill_convex_poly() -> None:
    pts = np.array([[20, 20], [80, 25], [50, 90], [110, 70], [100, 10]], np.float64)
    tri = np.array([[0, 1, 2], [1, 3, 4]])
    got = triangles_mask(torch.tensor(pts)[None], torch.tensor(tri), (100, 120))[0, 0].numpy()
    ref = np.zeros((100, 120), np.uint8)
    for t in tri:
        cv2.fillConvexPoly(ref, pts[t].astype(np.int32), 1)
    wrong = (got > 0) != (ref > 0)
    band = np.zeros_like(ref)
    for t in tri:
        cv2.polylines(band, [pts[t].astype(np.int32)], True, 1, thickness=3)
    assert not (wrong & (band == 0)).any()


def test_batched_equals_per_item(media: Any) -> None:
    poly = torch.tensor(face_outline(media), dtype=torch.float32)
    polys = torch.stack([poly, poly * 0.8 + 30, poly.flip(0) + 5.5])
    full = polygon_mask(polys, (300, 400))
    for i in range(3):
        torch.testing.assert_close(full[i : i + 1], polygon_mask(polys[i : i + 1], (300, 400)))
    hm = convex_hull_mask(polys, (300, 400))
    for i in range(3):
        torch.testing.assert_close(hm[i : i + 1], convex_hull_mask(polys[i : i + 1], (300, 400)))


def test_shape_errors() -> None:
    with pytest.raises(ShapeError):
        polygon_mask(torch.zeros(1, 2, 2), (8, 8))
    with pytest.raises(ShapeError):
        polygon_mask(torch.zeros(4, 2), (8, 8))


def test_polygon_dilate_grows_geometry_even_below_a_pixel() -> None:
    """``dilate=r`` equals the mask of the polygon grown by a 2r × 2r square, also for a sliver thinner than a
    pixel (where a grey-level max filter of the anti-aliased mask cannot add coverage)."""
    rect = torch.tensor([[[10.2, 20.3], [40.7, 20.3], [40.7, 20.6], [10.2, 20.6]]], dtype=torch.float64)  # 0.3 px tall
    grown = polygon_mask(rect, (48, 64), subrows=8, dilate=2.0)[0, 0]
    bigger = torch.tensor([[[8.2, 18.3], [42.7, 18.3], [42.7, 22.6], [8.2, 22.6]]], dtype=torch.float64)
    torch.testing.assert_close(grown, polygon_mask(bigger, (48, 64), subrows=8)[0, 0], atol=0.07, rtol=0)
    assert abs(float(grown.sum()) - 34.5 * 4.3) <= 34.5 / 8 + 1e-6  # vertical extent exact to 1/subrows px
    assert float(dilate_mask(polygon_mask(rect, (48, 64), subrows=8), 2).sum()) < 0.5 * float(grown.sum())


def test_fractional_radius_interpolates() -> None:
    m = torch.zeros(1, 1, 21, 21)
    m[..., 10, 10] = 1.0
    half = dilate_mask(m, 1.5)
    torch.testing.assert_close(half, 0.5 * (dilate_mask(m, 1) + dilate_mask(m, 2)))
    assert float(erode_mask(1 - m, 0.25).min()) == pytest.approx(0.0)
