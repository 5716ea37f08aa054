"""The image pipeline on a multi-face composite of two different real people: many, reference, index, one."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from faceweave import api
from faceweave.errors import InvalidOption, NoFaceInTarget, NoMatchingFace
from faceweave.media.image import read_image, write_image
from faceweave.settings import SwapSettings


@pytest.fixture(scope="module")
def composite(media: type, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """astronaut (left) | obama (right) on one 1024x512 canvas, saved as PNG. Returns (path, split column)."""
    left = media.rgb("astronaut.png")
    right = media.rgb("obama.jpg")
    right = cv2.resize(right, (round(right.shape[1] * 512 / right.shape[0]), 512), interpolation=cv2.INTER_AREA)
    canvas = np.concatenate([left, right], axis=1)
    path = tmp_path_factory.mktemp("composite") / "two_people.png"
    write_image(path, canvas)
    return path, left.shape[1]


# Tests that check untouched pixels stay byte-identical turn the invisible watermark off: it changes every pixel
# by design (tests/provenance covers it).
def _changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(int) - b.astype(int)).max(2) > 0


def test_many_swaps_both(composite: tuple[Path, int], media: type, tmp_path: Path) -> None:
    path, split = composite
    out = tmp_path / "many.png"
    result = api.swap(media.path("grace_hopper.jpg"), path, out, SwapSettings(selector="many", device="cpu"))
    assert result.faces_swapped == 2
    changed = _changed(read_image(out).rgb, read_image(path).rgb)
    assert changed[:, :split].sum() > 2000 and changed[:, split:].sum() > 2000


def test_reference_swaps_only_the_matching_person(composite: tuple[Path, int], media: type, tmp_path: Path) -> None:
    path, split = composite
    out = tmp_path / "ref.png"
    # obama2.jpg is another photo of the person on the right: only that face may change.
    result = api.swap(media.path("grace_hopper.jpg"), path, out,
                      SwapSettings(selector="reference", device="cpu", watermark=False),
                      reference=media.path("obama2.jpg"))
    assert result.faces_swapped == 1
    before, after = read_image(path).rgb, read_image(out).rgb
    assert np.array_equal(after[:, :split], before[:, :split]), "the non-matching person must stay byte-identical"
    assert _changed(after, before)[:, split:].sum() > 2000


def test_reference_without_match_is_a_typed_error(composite: tuple[Path, int], media: type, tmp_path: Path) -> None:
    path, _ = composite
    with pytest.raises(NoMatchingFace):
        api.swap(media.path("obama.jpg"), path, tmp_path / "x.png", SwapSettings(selector="reference", device="cpu"),
                 reference=media.path("grace_hopper.jpg"))
    assert not (tmp_path / "x.png").exists()


def test_index_picks_by_position(composite: tuple[Path, int], media: type, tmp_path: Path) -> None:
    path, split = composite
    out = tmp_path / "idx.png"
    api.swap(media.path("grace_hopper.jpg"), path, out,
             SwapSettings(selector="index", face_index=1, device="cpu", watermark=False))
    before, after = read_image(path).rgb, read_image(out).rgb
    assert np.array_equal(after[:, :split], before[:, :split])
    with pytest.raises(InvalidOption, match="index 5"):
        api.swap(media.path("grace_hopper.jpg"), path, tmp_path / "y.png",
                 SwapSettings(selector="index", face_index=5, device="cpu"))


def test_one_picks_the_largest(composite: tuple[Path, int], media: type, tmp_path: Path) -> None:
    path, split = composite
    out = tmp_path / "one.png"
    api.swap(media.path("grace_hopper.jpg"), path, out, SwapSettings(device="cpu", watermark=False))
    before, after = read_image(path).rgb, read_image(out).rgb
    # obama's face (right) is larger than the astronaut's at this scale
    assert np.array_equal(after[:, :split], before[:, :split])


def test_no_face_in_target(media: type, tmp_path: Path) -> None:
    blank = np.full((256, 256, 3), 127, np.uint8)
    write_image(tmp_path / "blank.png", blank)
    with pytest.raises(NoFaceInTarget):
        api.swap(media.path("astronaut.png"), tmp_path / "blank.png", tmp_path / "o.png", SwapSettings(device="cpu"))
    assert not (tmp_path / "o.png").exists()


def test_several_sources_pick_by_pose(media: type, tmp_path: Path) -> None:
    out = tmp_path / "multi.png"
    result = api.swap([media.path("obama.jpg"), media.path("obama2.jpg")], media.path("astronaut.png"), out,
                      SwapSettings(device="cpu"))
    assert result.faces_swapped == 1 and out.is_file()


def test_top_level_api_mirrors_cli(media: type, tmp_path: Path) -> None:
    import faceweave

    out = tmp_path / "top.png"
    result = faceweave.swap_image(media.path("obama.jpg"), media.path("astronaut.png"), out,
                                  faceweave.SwapSettings(device="cpu", blend="feather"))
    assert result.faces_swapped == 1 and read_image(out).rgb.shape == (512, 512, 3)
