"""The strip-parallel PNG writer: any strip count decodes (Pillow and OpenCV) to exactly the pixels written."""

from __future__ import annotations

import io
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from faceweave.data import media_path
from faceweave.errors import ShapeError
from faceweave.media.image import read_image
from faceweave.media.png import _adler32_combine, encode_png


@pytest.fixture(scope="module")
def face() -> np.ndarray:
    return read_image(media_path("grace_hopper.jpg")).rgb


@pytest.mark.parametrize("threads", [1, 2, 3, 7])
@pytest.mark.parametrize("level", [0, 1, 6])
def test_round_trip_any_strip_count(face: np.ndarray, threads: int, level: int) -> None:
    data = encode_png(face, level, threads=threads)
    with Image.open(io.BytesIO(data)) as im:
        assert im.mode == "RGB" and np.array_equal(np.asarray(im), face)
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(bgr[:, :, ::-1], face)


def test_rgba_and_odd_sizes(face: np.ndarray) -> None:
    alpha = np.ascontiguousarray(face[:, :, 1])  # a real, non-constant alpha plane
    for crop in (face[:1, :1], face[:65, :3], face[:129, :77]):
        rgba = np.dstack([crop, alpha[: crop.shape[0], : crop.shape[1]]])
        for pixels in (crop, rgba):
            with Image.open(io.BytesIO(encode_png(pixels, 1, threads=2))) as im:
                assert np.array_equal(np.asarray(im), pixels)


def test_strips_change_bytes_not_pixels(face: np.ndarray) -> None:
    one, two = encode_png(face, 1, threads=1), encode_png(face, 1, threads=2)
    assert one != two  # two deflate streams joined: the strip count is visible in the bytes
    with Image.open(io.BytesIO(one)) as a, Image.open(io.BytesIO(two)) as b:
        assert np.array_equal(np.asarray(a), np.asarray(b))


def test_adler32_combine_matches_zlib(face: np.ndarray) -> None:
    raw = face.tobytes()
    for cut in (0, 1, 65521, 65522, len(raw) // 3):
        a, b = raw[:cut], raw[cut:]
        assert _adler32_combine(zlib.adler32(a), zlib.adler32(b), len(b)) == zlib.adler32(raw)


def test_refuses_what_it_cannot_write(face: np.ndarray) -> None:
    with pytest.raises(ShapeError):
        encode_png(face.astype(np.uint16))
    with pytest.raises(ShapeError):
        encode_png(face[:, :, 0])
    with pytest.raises(ShapeError):
        encode_png(face, 10)
