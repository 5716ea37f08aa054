"""Small-face levels scanned as one larger view each (the CPU default) instead of overlapping 192² tiles: the same
scales, fewer net pixels, one full-range forward per level, the same faces on real images."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from faceweave.analysis.detect import FaceDetector, image_to_frames
from faceweave.analysis.tiling import level_views, tile_pyramid, tile_sides
from faceweave.errors import ShapeError
from faceweave.models.blazeface import ANCHOR_OPTIONS, VIEW_MULTIPLE, generate_anchors, load_blazeface
from faceweave.ops.crops import sample_views


@pytest.mark.parametrize("height,width", [(512, 512), (480, 640), (1080, 1920), (1200, 1280), (2160, 3840)])
def test_level_views_are_the_tile_levels_as_one_view(height: int, width: int) -> None:
    tiles = tile_pyramid(height, width, 192, 40.0)
    views = level_views(height, width, 192, 40.0, VIEW_MULTIPLE)
    assert {round(float(m[0, 0]), 6) for m in tiles} == {round(float(m[0, 0, 0]), 6) for m, _ in views}
    assert len(views) <= len(tile_sides(height, width, 192, 40.0))
    tile_pixels = tiles.shape[0] * 192 * 192
    view_pixels = sum(h * w for _, (h, w) in views)
    assert view_pixels < 0.6 * tile_pixels  # the tiles' overlaps are not computed again
    for m, (h, w) in views:
        scale = float(m[0, 0, 0])
        assert h % VIEW_MULTIPLE == 0 and w % VIEW_MULTIPLE == 0 and min(h, w) >= 192
        assert scale * w >= width - 1e-3 and scale * h >= height - 1e-3  # the whole frame is in the view
        assert scale * (w - VIEW_MULTIPLE) < width or w == 192  # no more than one multiple of black
        assert float(m[0, 0, 2]) == float(m[0, 1, 2]) == 0.0


def test_anchors_of_a_larger_view() -> None:
    options = load_blazeface("full").anchors  # the net's own 48 × 48 grid
    wide = generate_anchors(ANCHOR_OPTIONS["full"], 288, 352)
    assert wide.shape == (72 * 88, 2)
    assert torch.allclose(wide[0], torch.tensor([0.5 / 88, 0.5 / 72]))
    assert torch.allclose(wide[88], torch.tensor([0.5 / 88, 1.5 / 72]))  # row-major, x fastest
    assert torch.equal(generate_anchors(ANCHOR_OPTIONS["full"], 192, 192), options)


def test_full_range_net_over_a_larger_view_finds_the_face_where_the_square_view_does(media: Any) -> None:
    """A face seen at the same scale in a 192² view and in a 288×352 view of the whole frame: the same box (the
    larger view's anchors, decoding and upsampling sizes follow its shape)."""
    net = load_blazeface("full")
    frames = image_to_frames(media.rgb("astronaut.png"))[:, :, :420]  # 420 × 512, the face near (180..290, 60..180)
    scale = 1.5
    whole = torch.tensor([[[scale, 0.0, 0.0], [0.0, scale, 0.0]]])
    # a 288 px window around the face, on the whole view's pixel grid (offsets of 64 and 32 view pixels)
    window = torch.tensor([[[scale, 0.0, 96.0], [0.0, scale, 48.0]]])
    boxes = []
    with torch.inference_mode():
        for m, size in ((whole, (288, 352)), (window, (192, 192))):
            view = sample_views(frames, m, size) * 2 - 1
            b, _, s = net.decode(*net(view), size=size)
            best = int(s[0].argmax())
            assert float(s[0, best]) > 0.8, size
            box = b[0, best] * torch.tensor([size[1], size[0], size[1], size[0]]) * scale
            boxes.append(box + torch.tensor([m[0, 0, 2], m[0, 1, 2], m[0, 0, 2], m[0, 1, 2]]))
    assert (boxes[0] - boxes[1]).abs().max() < 2.0, boxes
    with pytest.raises(ShapeError):
        net(torch.zeros(1, 3, 200, 288))  # not a multiple of the deepest stride


def test_a_512_image_runs_one_whole_view_and_one_level_view(media: Any) -> None:
    """At 512² the tiles are 4 views of 192² in one forward (batch 5 with the whole view); level views are one
    288² view: the same face, found at the same place to within 2 px, with the same flags."""
    shapes: dict[bool, list[tuple[int, ...]]] = {}
    faces = {}
    frames = image_to_frames(media.rgb("astronaut.png"))
    for level in (False, True):
        detector = FaceDetector(level_views=level)
        seen: list[tuple[int, ...]] = []
        detector.full.register_forward_hook(lambda _m, args, _o, seen=seen: seen.append(tuple(args[0].shape)))
        faces[level] = detector.detect(frames)[0]
        shapes[level] = seen
    assert shapes[False] == [(5, 3, 192, 192)]
    assert shapes[True] == [(1, 3, 192, 192), (1, 3, 288, 288)]
    (tiled,), (levelled,) = faces[False], faces[True]
    assert (tiled.box - levelled.box).abs().max() < 2.0
    assert (tiled.keypoints - levelled.keypoints).abs().max() < 2.0
    assert tiled.extra["tile_only"] is levelled.extra["tile_only"] is False
    assert math.isclose(tiled.score, levelled.score, abs_tol=0.02)


def test_level_views_on_by_default_on_the_cpu() -> None:
    assert FaceDetector().level_views is True  # on CUDA the tiles (fixed shapes for the CUDA graphs)
    assert FaceDetector(level_views=False).level_views is False
