"""Image I/O: real bundled photos plus edge cases synthesised here (EXIF rotation, 16-bit, alpha, bombs, damage)."""

from __future__ import annotations

import io
import struct
import tracemalloc
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from faceweave.errors import (
    EmptyMedia,
    InputNotFound,
    InputUnreadable,
    MediaTooLarge,
    OutputNotWritable,
    ShapeError,
    TruncatedMedia,
    UnknownOutputFormat,
    UnsupportedMedia,
    WrongMediaKind,
)
from faceweave.media.image import (
    check_output_path,
    read_image,
    read_image_metadata,
    sniff_media_kind,
    write_image,
)


def _gradient(h: int = 48, w: int = 64) -> np.ndarray:
    """An asymmetric RGB test pattern (so any flip/rotation is detectable)."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // (w - 1), y * 255 // (h - 1), (x + 2 * y) % 256], axis=2).astype(np.uint8)


def test_sniff_real_media(media) -> None:
    assert sniff_media_kind(media.path("astronaut.png")) == "image"
    assert sniff_media_kind(media.path("obama.jpg")) == "image"
    assert sniff_media_kind(media.path("carphone_pristine.mp4")) == "video"
    assert sniff_media_kind(media.path("bigbuckbunny.mp4")) == "video"


def test_sniff_audio_only(tmp_path: Path) -> None:
    import av

    path = tmp_path / "tone.m4a"
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("aac", rate=16000)
        t = np.arange(1024 * 4) / 16000
        samples = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        frame.sample_rate = 16000
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    assert sniff_media_kind(path) == "audio"
    with pytest.raises(WrongMediaKind, match="audio"):
        read_image(path)


def test_sniff_errors(tmp_path: Path) -> None:
    with pytest.raises(InputNotFound):
        sniff_media_kind(tmp_path / "nope.png")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(EmptyMedia):
        sniff_media_kind(empty)
    fake = tmp_path / "notes.png"
    fake.write_text("these are my notes, not a picture\n" * 5)
    with pytest.raises(UnsupportedMedia, match="text") as info:
        sniff_media_kind(fake)
    assert "PNG" in info.value.one_line()  # names the supported formats
    with pytest.raises(UnsupportedMedia, match="text"):
        read_image(fake)
    with pytest.raises(InputUnreadable):
        read_image(tmp_path)  # a directory (running as root, chmod 000 would not stop us reading)


def test_read_real_photo_matches_opencv(media) -> None:
    loaded = read_image(media.path("obama.jpg"))
    assert loaded.rgb.dtype == np.uint8 and loaded.rgb.shape[2] == 3
    assert loaded.alpha is None and loaded.rgb16 is None and loaded.format == "jpeg"
    reference = media.rgb("obama.jpg")
    # Both decode with libjpeg; allow for IDCT differences between the two builds.
    assert np.abs(loaded.rgb.astype(int) - reference.astype(int)).mean() < 1.5


def test_read_from_bytes(media) -> None:
    data = media.path("astronaut.png").read_bytes()
    loaded = read_image(data)
    assert loaded.path is None
    np.testing.assert_array_equal(loaded.rgb, media.rgb("astronaut.png"))


@pytest.mark.parametrize(
    ("orientation", "expected"),
    [
        (1, lambda a: a),
        (3, lambda a: a[::-1, ::-1]),
        (6, lambda a: np.rot90(a, k=-1)),  # stored rotated 90° CCW: viewer turns it clockwise
        (8, lambda a: np.rot90(a, k=1)),
        (2, lambda a: a[:, ::-1]),
    ],
)
def test_exif_orientation_applied(tmp_path: Path, orientation: int, expected) -> None:
    stored = _gradient()
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "rot.png"  # PNG (lossless) with an eXIf chunk, so the pixel comparison can be exact
    Image.fromarray(stored).save(path, exif=exif.tobytes())
    loaded = read_image(path)
    np.testing.assert_array_equal(loaded.rgb, expected(stored))


def test_exif_rotated_jpeg(tmp_path: Path) -> None:
    stored = _gradient(40, 80)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "phone.jpg"
    Image.fromarray(stored).save(path, exif=exif.tobytes(), quality=98)
    loaded = read_image(path)
    assert loaded.rgb.shape == (80, 40, 3)
    assert np.abs(loaded.rgb.astype(int) - np.rot90(stored, k=-1).astype(int)).mean() < 3


def test_grayscale_palette_rgba_cmyk(tmp_path: Path, media) -> None:
    rgb = media.rgb("grace_hopper.jpg")[:64, :80].copy()
    gray = tmp_path / "g.png"
    Image.fromarray(rgb).convert("L").save(gray)
    loaded = read_image(gray)
    assert loaded.rgb.shape == (64, 80, 3)
    assert (loaded.rgb[:, :, 0] == loaded.rgb[:, :, 2]).all()

    pal = tmp_path / "p.png"
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=32).save(pal)
    loaded = read_image(pal)
    assert loaded.rgb.shape == (64, 80, 3) and loaded.alpha is None
    assert np.abs(loaded.rgb.astype(int) - rgb.astype(int)).mean() < 12

    alpha = np.tile(np.linspace(0, 255, 80, dtype=np.uint8), (64, 1))
    rgba = tmp_path / "a.png"
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(rgba)
    loaded = read_image(rgba)
    np.testing.assert_array_equal(loaded.rgb, rgb)
    np.testing.assert_array_equal(loaded.alpha, alpha)

    cmyk = tmp_path / "c.jpg"
    Image.fromarray(rgb).convert("CMYK").save(cmyk, quality=98)
    loaded = read_image(cmyk)
    assert np.abs(loaded.rgb.astype(int) - rgb.astype(int)).mean() < 8


def test_16bit_png_roundtrip_keeps_unchanged_pixels(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rgb16 = rng.integers(0, 65536, size=(32, 40, 3), dtype=np.uint16)
    path = tmp_path / "deep.png"
    assert cv2.imwrite(str(path), rgb16[:, :, ::-1])
    loaded = read_image(path)
    np.testing.assert_array_equal(loaded.rgb16, rgb16)
    np.testing.assert_array_equal(loaded.rgb, ((rgb16.astype(np.uint32) + 128) // 257).astype(np.uint8))

    edited = loaded.rgb.copy()
    edited[10:20, 5:15] = 200
    out = tmp_path / "out.png"
    write_image(out, edited, like=loaded, metadata={"faceweave:synthetic": "true"})
    back = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)[:, :, ::-1]
    assert back.dtype == np.uint16
    changed = np.zeros((32, 40), bool)
    changed[10:20, 5:15] = True
    np.testing.assert_array_equal(back[~changed], rgb16[~changed])
    assert (back[changed] == 200 * 257).all()
    assert read_image_metadata(out)["faceweave:synthetic"] == "true"


def test_16bit_grayscale_png(tmp_path: Path) -> None:
    gray16 = (np.arange(24 * 30, dtype=np.uint32).reshape(24, 30) * 90).astype(np.uint16)
    path = tmp_path / "g16.png"
    assert cv2.imwrite(str(path), gray16)
    loaded = read_image(path)
    assert loaded.rgb16 is not None
    np.testing.assert_array_equal(loaded.rgb16[:, :, 1], gray16)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG signature + hand-made IHDR (with a correct CRC) + a tiny IDAT + IEND: a decompression bomb header."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    idat = zlib.compress(b"\x00" * 16)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_huge_png_header_rejected_without_allocating(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header_only(30000, 30000))
    tracemalloc.start()
    try:
        with pytest.raises(MediaTooLarge):
            read_image(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20 * 1024 * 1024  # the pixels would be 2.7 GB
    # Under Pillow's own bomb threshold, our max_pixels still applies before decoding.
    small = tmp_path / "medium.png"
    small.write_bytes(_png_header_only(5000, 5000))
    with pytest.raises(MediaTooLarge, match="25,000,000"):
        read_image(small, max_pixels=10_000_000)


def test_truncated_and_damaged(tmp_path: Path, media) -> None:
    for name in ("astronaut.png", "obama.jpg"):
        data = media.path(name).read_bytes()
        cut = tmp_path / f"cut_{name}"
        cut.write_bytes(data[: len(data) // 2])
        with pytest.raises(TruncatedMedia):
            read_image(cut)


def test_video_as_image(media) -> None:
    with pytest.raises(WrongMediaKind, match="this is a video"):
        read_image(media.path("carphone_pristine.mp4"))


@pytest.mark.parametrize("ext", [".png", ".jpg", ".webp", ".bmp", ".tiff"])
def test_write_formats_with_metadata(tmp_path: Path, media, ext: str) -> None:
    rgb = media.rgb("astronaut.png")[:96, :128].copy()
    out = tmp_path / f"o{ext}"
    meta = {"faceweave:synthetic": "true", "Software": "faceweave 0.1.0"}
    write_image(out, rgb, metadata=meta)
    back = read_image(out)
    lossy = ext in (".jpg", ".webp")
    assert np.abs(back.rgb.astype(int) - rgb.astype(int)).mean() < (3 if lossy else 1e-9)
    if ext != ".bmp":
        assert read_image_metadata(out)["faceweave:synthetic"] == "true"
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no temporary left behind


def test_write_keeps_alpha(tmp_path: Path) -> None:
    rgb = _gradient()
    alpha = np.full(rgb.shape[:2], 255, np.uint8)
    alpha[:, :10] = 0
    src = tmp_path / "a.png"
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(src)
    loaded = read_image(src)
    out = tmp_path / "b.webp"
    write_image(out, 255 - loaded.rgb, like=loaded)
    webp_alpha = read_image(out).alpha
    assert webp_alpha is not None and np.abs(webp_alpha.astype(int) - alpha.astype(int)).max() <= 2
    out_png = tmp_path / "b.png"
    write_image(out_png, 255 - loaded.rgb, like=loaded)
    np.testing.assert_array_equal(read_image(out_png).alpha, alpha)


def test_output_checks(tmp_path: Path) -> None:
    rgb = _gradient()
    with pytest.raises(UnknownOutputFormat):
        check_output_path(tmp_path / "o.gifx")
    with pytest.raises(UnknownOutputFormat):
        write_image(tmp_path / "o.mp4", rgb)
    with pytest.raises(OutputNotWritable):
        write_image(tmp_path / "missing" / "o.png", rgb)
    with pytest.raises(ShapeError):
        write_image(tmp_path / "o.png", rgb.astype(np.float32))
    assert check_output_path(tmp_path / "o.mkv", "video").suffix == ".mkv"
    with pytest.raises(UnknownOutputFormat):
        check_output_path(tmp_path / "o.png", "video")
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_leaves_old_file_on_failure(tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "o.png"
    write_image(out, _gradient())
    before = out.read_bytes()

    def boom(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("faceweave.media.image.os.replace", boom)
    with pytest.raises(OutputNotWritable):
        write_image(out, 255 - _gradient())
    assert out.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["o.png"]


def test_pil_bytes_io_roundtrip() -> None:
    buf = io.BytesIO()
    Image.fromarray(_gradient()).save(buf, "BMP")
    np.testing.assert_array_equal(read_image(buf.getvalue()).rgb, _gradient())
