"""Tests of faceweave.ops.colourspace: YUV 4:2:0 ↔ RGB against swscale (through PyAV) on real decoded frames.

References: swscale from the PyAV wheel installed here (``av.__version__``). Its default yuv420p → rgb24 path is a
fast table converter (nearest chroma, about one level darker on average); the exact matrix is checked against
swscale's accurate-rounding 4:4:4 converter on the same chroma, where both must agree within one level.
"""

from __future__ import annotations

from typing import Any

import av
import numpy as np
import pytest
import torch
from av.video.reformatter import Interpolation

from faceweave.errors import InvalidOption, ShapeError
from faceweave.ops.colourspace import (
    Yuv420Batch,
    pack_yuv420,
    packed_size,
    rgb_to_yuv420,
    unpack_yuv420,
    update_yuv420,
    yuv420_to_rgb,
)

SWS = {"bt601": "ITU601", "bt709": "ITU709", "bt2020": "BT2020"}
ACCURATE = Interpolation.BILINEAR.value | Interpolation.ACCURATE_RND.value | Interpolation.BITEXACT.value
CASES = [(m, full) for m in SWS for full in (False, True)]


def planes_of(frame: Any) -> list[np.ndarray]:
    return [np.frombuffer(p, np.uint8)[: p.height * p.line_size].reshape(p.height, p.line_size)[:, : p.width].copy()
            for p in frame.planes]


def frame_from_planes(planes: list[np.ndarray], fmt: str) -> Any:
    h, w = planes[0].shape
    frame = av.VideoFrame(w, h, fmt)
    for plane, src in zip(frame.planes, planes, strict=True):
        rows = np.frombuffer(memoryview(plane), np.uint8)[: plane.height * plane.line_size]
        rows.reshape(plane.height, plane.line_size)[:, : plane.width] = src
    return frame


def nearest_up(c: np.ndarray, h: int, w: int) -> np.ndarray:
    return np.repeat(np.repeat(c, 2, 0), 2, 1)[:h, :w]


@pytest.fixture(scope="module")
def real_frames(media: Any) -> list[Any]:
    """Decoded yuv420p frames of real video: the carphone face clip (176×144) and Big Buck Bunny (1280×720)."""
    out = []
    for name, k in (("carphone_pristine.mp4", 40), ("bigbuckbunny.mp4", 60)):
        with av.open(str(media.path(name))) as c:
            for i, f in enumerate(c.decode(video=0)):
                if i == k:
                    assert f.format.name == "yuv420p"
                    out.append(f)
                    break
    return out


@pytest.fixture(scope="module")
def face_yuv(media: Any) -> Any:
    """A real face photo (astronaut, 512×512) as swscale turns it into BT.601 limited-range yuv420p."""
    rgb = media.rgb("astronaut.png")
    return av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p", dst_colorspace="ITU601",
                                                                     dst_color_range="MPEG")


def tensors(planes: list[np.ndarray], device: torch.device) -> tuple[torch.Tensor, ...]:
    return tuple(torch.from_numpy(p)[None].to(device) for p in planes)


@pytest.mark.parametrize(("matrix", "full"), CASES)
def test_to_rgb_matches_swscale_within_one_level(real_frames: list[Any], matrix: str, full: bool,
                                                 device: torch.device) -> None:
    for frame in real_frames:
        y, u, v = planes_of(frame)
        h, w = y.shape
        rgb = yuv420_to_rgb(*tensors([y, u, v], device), matrix=matrix, full_range=full)
        assert rgb.shape == (1, 3, h, w) and rgb.dtype == torch.float32 and rgb.device.type == device.type
        ours = (rgb[0].permute(1, 2, 0) * 255).round().cpu().numpy()
        # the same chroma at full resolution, converted by swscale with accurate rounding: the matrix alone
        f444 = frame_from_planes([y, nearest_up(u, h, w), nearest_up(v, h, w)], "yuv444p")
        rng = "JPEG" if full else "MPEG"
        ref = f444.reformat(format="rgb24", src_colorspace=SWS[matrix], src_color_range=rng,
                            interpolation=ACCURATE).to_ndarray().astype(float)
        diff = np.abs(ours - ref)
        assert diff.max() <= 1.0 and diff.mean() < 0.05
        # swscale's default (fast table) yuv420p path: within 3 levels, about 1 on average (its tables run dark)
        fast = frame.reformat(format="rgb24", src_colorspace=SWS[matrix], src_color_range=rng).to_ndarray()
        diff = np.abs(ours - fast.astype(float))
        assert diff.max() <= 3.0 and diff.mean() < 1.5


@pytest.mark.parametrize(("matrix", "full"), CASES)
def test_to_yuv_matches_swscale(face_yuv: Any, matrix: str, full: bool, device: torch.device) -> None:
    rgb8 = face_yuv.to_ndarray(format="rgb24")
    rgb = torch.from_numpy(rgb8).permute(2, 0, 1)[None].to(device).float() / 255
    y, u, v = (t[0].cpu().numpy().astype(int) for t in rgb_to_yuv420(rgb, matrix=matrix, full_range=full))
    rng = "JPEG" if full else "MPEG"
    src = av.VideoFrame.from_ndarray(rgb8, format="rgb24")
    ref444 = [p.astype(float) for p in planes_of(src.reformat(format="yuv444p", dst_colorspace=SWS[matrix],
                                                                dst_color_range=rng, interpolation=ACCURATE))]
    assert np.abs(y - ref444[0]).max() <= 1
    for ours, ref in ((u, ref444[1]), (v, ref444[2])):  # the 2×2 mean of swscale's full-resolution chroma
        h, w = ref.shape
        diff = np.abs(ours - ref.reshape(h // 2, 2, w // 2, 2).mean((1, 3)))
        # limited range: within a level; full range: swscale's chroma sits about half a level lower
        assert diff.max() <= (1.5 if full else 1.0) and diff.mean() < (0.6 if full else 0.05)
    # swscale's own yuv420p (its chroma filter is not a plain box): luma within 1, chroma within 1 on average
    ref420 = planes_of(src.reformat(format="yuv420p", dst_colorspace=SWS[matrix], dst_color_range=rng))
    assert np.abs(y - ref420[0]).max() <= 1
    assert np.abs(u - ref420[1]).mean() < 1.0 and np.abs(v - ref420[2]).mean() < 1.0


def test_round_trip_keeps_in_gamut_pixels(real_frames: list[Any], device: torch.device) -> None:
    y, u, v = tensors(planes_of(real_frames[1]), device)
    y2, u2, v2 = rgb_to_yuv420(yuv420_to_rgb(y, u, v, matrix="bt709"), matrix="bt709")
    # exact except where the YUV triplet lies outside the RGB cube (clamped): a small share of real pixels
    assert (y2 != y).float().mean() < 0.02 and (u2 != u).float().mean() < 0.02 and (v2 != v).float().mean() < 0.02
    assert (y2.int() - y.int()).abs().float().mean() < 0.05


def test_update_keeps_unchanged_pixels_bit_exact(real_frames: list[Any], device: torch.device,
                                                 dtype: torch.dtype) -> None:
    frame = real_frames[1]
    h, w = frame.height, frame.width
    packed = pack_yuv420(*tensors(planes_of(frame), device))
    batch = Yuv420Batch(packed.repeat(2, 1), h, w, matrix="bt709")
    rgb = batch.rgb([0, 1], dtype)
    assert rgb.dtype == dtype and rgb.shape == (2, 3, h, w)
    edited = rgb.clone()
    edited[1, :, 100:201, 300:451] = 1 - edited[1, :, 100:201, 300:451]  # "swap" a box in frame 1 only
    out = batch.encode(edited, [0, 1])
    assert out.shape == (2, packed_size(h, w)) and out.dtype == torch.uint8
    assert torch.equal(out[0], packed[0])  # nothing changed: every byte is the input's
    y0, u0, v0 = unpack_yuv420(packed, h, w)
    y1, u1, v1 = unpack_yuv420(out[1:], h, w)
    inside = torch.zeros(h, w, dtype=torch.bool, device=device)
    inside[100:201, 300:451] = True
    assert torch.equal(y1[0][~inside], y0[0][~inside])
    chroma_inside = torch.zeros(u0.shape[1:], dtype=torch.bool, device=device)
    chroma_inside[50:101, 150:226] = True
    assert torch.equal(u1[0][~chroma_inside], u0[0][~chroma_inside])
    assert torch.equal(v1[0][~chroma_inside], v0[0][~chroma_inside])
    # inside the box: the inverted colours, converted back (within a level of the exact value, fp16 within 2)
    back = yuv420_to_rgb(y1, u1, v1, matrix="bt709")[0, :, 110:190, 310:440].float()
    want = edited[1, :, 110:190, 310:440].float()
    tol = 2.5 if dtype == torch.float16 else 1.5
    assert (back - want).abs().mul(255).quantile(0.99) <= tol


def test_update_with_nothing_changed_is_identity(face_yuv: Any, device: torch.device) -> None:
    y, u, v = tensors(planes_of(face_yuv), device)
    rgb = yuv420_to_rgb(y, u, v)
    out = update_yuv420(y, u, v, rgb, torch.zeros_like(y, dtype=torch.bool))
    assert all(torch.equal(a, b) for a, b in zip(out, (y, u, v), strict=True))


@pytest.mark.parametrize("size", [(7, 5), (8, 6), (33, 17)])
def test_odd_sizes_and_packing(size: tuple[int, int], device: torch.device) -> None:
    w, h = size
    g = torch.Generator().manual_seed(w * h)
    y = torch.randint(16, 236, (3, h, w), generator=g, dtype=torch.uint8).to(device)
    u = torch.randint(16, 241, (3, (h + 1) // 2, (w + 1) // 2), generator=g, dtype=torch.uint8).to(device)
    v = torch.randint(16, 241, (3, (h + 1) // 2, (w + 1) // 2), generator=g, dtype=torch.uint8).to(device)
    packed = pack_yuv420(y, u, v)
    assert packed.shape == (3, packed_size(h, w))
    assert all(torch.equal(a, b) for a, b in zip(unpack_yuv420(packed, h, w), (y, u, v), strict=True))
    rgb = yuv420_to_rgb(y, u, v, matrix="bt601")
    assert rgb.shape == (3, 3, h, w) and float(rgb.min()) >= 0 and float(rgb.max()) <= 1
    y2, u2, v2 = rgb_to_yuv420(rgb)
    assert y2.shape == y.shape and u2.shape == u.shape and v2.shape == v.shape


def test_flat_colours_exact() -> None:
    """Known values: limited-range black/white/60 % grey, and BT.709 pure red (Y 63, Cb 102, Cr 240)."""
    rgb = torch.zeros(1, 3, 2, 8)
    rgb[0, :, :, 2:4] = 1.0
    rgb[0, :, :, 4:6] = 0.6
    rgb[0, 0, :, 6:8] = 1.0
    y, u, v = rgb_to_yuv420(rgb, matrix="bt709")
    assert y[0, 0].tolist() == [16, 16, 235, 235, 147, 147, 63, 63]
    assert u[0, 0].tolist() == [128, 128, 128, 102] and v[0, 0].tolist() == [128, 128, 128, 240]
    back = yuv420_to_rgb(y, u, v, matrix="bt709")
    assert (back - rgb).abs().max() < 1.5 / 255


def test_errors() -> None:
    y = torch.zeros(1, 4, 4, dtype=torch.uint8)
    with pytest.raises(ShapeError):
        yuv420_to_rgb(y, torch.zeros(1, 4, 4, dtype=torch.uint8), torch.zeros(1, 2, 2, dtype=torch.uint8))
    with pytest.raises(InvalidOption):
        yuv420_to_rgb(y, torch.zeros(1, 2, 2, dtype=torch.uint8), torch.zeros(1, 2, 2, dtype=torch.uint8),
                      matrix="bt999")
    with pytest.raises(ShapeError):
        rgb_to_yuv420(torch.zeros(1, 4, 4, 3))
    with pytest.raises(ShapeError):
        rgb_to_yuv420(torch.zeros(1, 3, 4, 4, dtype=torch.uint8))
    with pytest.raises(ShapeError):
        unpack_yuv420(torch.zeros(1, 10, dtype=torch.uint8), 4, 4)
    with pytest.raises(ShapeError):
        Yuv420Batch(torch.zeros(2, 24, dtype=torch.uint8), 4, 4).encode(torch.zeros(1, 3, 4, 4), [0, 1])


def test_encode_takes_a_run_of_frames_or_any_list_and_never_writes_the_batch(media: Any, device: torch.device
                                                                              ) -> None:
    """A run of consecutive frames is taken as a slice (no index list sent to the device), any other list by
    indexing; both give the selected frames' rows, edited, and leave the decoded batch as it was."""
    from faceweave.ops.colourspace import _consecutive

    assert _consecutive([0]) == slice(0, 1) and _consecutive([2, 3]) == slice(2, 4)
    assert _consecutive([0, 2]) is None and _consecutive([1, 0]) is None and _consecutive([]) is None
    with av.open(str(media.path("carphone_pristine.mp4"))) as c:  # three different frames of a real face
        decoded = [f for i, f in zip(range(60), c.decode(video=0), strict=False) if i % 20 == 0]
    frames = [pack_yuv420(*tensors(planes_of(f), device)) for f in decoded]
    h, w = decoded[0].height, decoded[0].width
    packed = torch.cat(frames)
    kept = packed.clone()
    batch = Yuv420Batch(packed, h, w, matrix="bt709")
    for index in ([1, 2], [0, 2], [1]):
        rgb = batch.rgb(index)
        assert torch.equal(rgb, batch.rgb(list(index)) if len(index) > 1 else rgb)
        edited = rgb.clone()
        edited[:, :, 10:20, 10:20] = 0.5
        out = batch.encode(edited, index, before=rgb)
        assert out.shape == (len(index), packed.shape[1])
        for row, k in enumerate(index):  # far from the edited box, the frame's own bytes
            y_out = unpack_yuv420(out[row : row + 1], h, w)[0][0]
            y_in = unpack_yuv420(packed[k : k + 1], h, w)[0][0]
            assert torch.equal(y_out[40:], y_in[40:])
            assert not torch.equal(y_out[10:20, 10:20], y_in[10:20, 10:20])
        assert torch.equal(batch.packed, kept)  # the decoded rows were copied, not written


@pytest.mark.parametrize("corner", [(0, 0), (-1, -1), (0, -1)])
def test_encode_finds_a_change_in_a_corner(real_frames: list[Any], device: torch.device, corner: tuple[int, int]
                                           ) -> None:
    """One changed pixel at the frame's edge is converted back (the changed rectangle's bounds reach the border)."""
    frame = real_frames[0]
    h, w = frame.height, frame.width
    packed = pack_yuv420(*tensors(planes_of(frame), device))
    batch = Yuv420Batch(packed, h, w, matrix="bt709")
    rgb = batch.rgb([0])
    edited = rgb.clone()
    edited[0, :, corner[0], corner[1]] = 1 - edited[0, :, corner[0], corner[1]]
    out = batch.encode(edited, [0], before=rgb)
    y_out, y_in = unpack_yuv420(out, h, w)[0][0], unpack_yuv420(packed, h, w)[0][0]
    changed = y_out != y_in
    assert bool(changed[corner[0], corner[1]]) and int(changed.sum()) == 1
