"""The invisible watermark: invisible (PSNR), found after upload transformations, never found on unmarked media."""

from __future__ import annotations

import av
import cv2
import numpy as np
import pytest
import torch

from faceweave.data import media_path
from faceweave.media.image import read_image
from faceweave.provenance.watermark import (
    WatermarkPayload,
    conv_encode,
    detect_watermark,
    embed_watermark,
    embed_watermark_luma,
    embed_watermark_torch,
    psnr,
    viterbi_decode,
    watermark_delta,
)

from ._transforms import IMAGE_TRANSFORMS, h264

PAYLOAD = WatermarkPayload.for_job("job-42")


def _frames(name: str, n: int) -> list[np.ndarray]:
    with av.open(str(media_path(name))) as c:
        return [f.to_ndarray(format="rgb24") for _, f in zip(range(n), c.decode(video=0), strict=False)]


@pytest.fixture(scope="module")
def pictures() -> dict[str, np.ndarray]:
    return {"grace_hopper.jpg": read_image(media_path("grace_hopper.jpg")).rgb,
            "obama2.jpg": read_image(media_path("obama2.jpg")).rgb,
            "bigbuckbunny.mp4#0": _frames("bigbuckbunny.mp4", 1)[0]}


def test_payload_bits_round_trip() -> None:
    bits = PAYLOAD.to_bits()
    ok, back = WatermarkPayload.parse(bits)
    assert ok and back == PAYLOAD
    for k in (3, 20, 63):  # a scheme, a job-hash and a CRC bit wrong: the CRC rejects each
        wrong = bits.copy()
        wrong[k] ^= 1
        assert not WatermarkPayload.parse(wrong)[0]


def test_convolutional_code_corrects_soft_errors() -> None:
    """The soft Viterbi decoder gets the message back from a code word with a fifth of its coded bits flipped (weakly,
    as compression leaves them) — what a repetition code of the same length cannot — and the CRC then accepts it."""
    code = conv_encode(PAYLOAD.to_bits())
    soft = code.copy()
    flipped = np.arange(0, code.size, 5)
    soft[flipped] *= -0.5
    assert np.array_equal(viterbi_decode(soft), PAYLOAD.to_bits())
    assert not np.array_equal(viterbi_decode(-code), PAYLOAD.to_bits())


@pytest.mark.parametrize("name", ["grace_hopper.jpg", "obama2.jpg", "bigbuckbunny.mp4#0"])
@pytest.mark.parametrize("transform", list(IMAGE_TRANSFORMS))
def test_found_after_transformation(pictures: dict[str, np.ndarray], name: str, transform: str) -> None:
    marked = embed_watermark(pictures[name], PAYLOAD)
    assert psnr(pictures[name], marked) >= 40.0
    result = detect_watermark(IMAGE_TRANSFORMS[transform](marked))
    assert result.found and result.confidence > 0.99
    assert result.payload == PAYLOAD


@pytest.mark.parametrize("transform", list(IMAGE_TRANSFORMS))
def test_unmarked_media_is_not_flagged(pictures: dict[str, np.ndarray], transform: str) -> None:
    for rgb in pictures.values():
        result = detect_watermark(IMAGE_TRANSFORMS[transform](rgb))
        assert not result.found and result.payload is None and result.confidence == 0.0


def test_video_frames_survive_h264_crf28() -> None:
    frames = _frames("bigbuckbunny.mp4", 12)
    delta = watermark_delta(*frames[0].shape[:2], PAYLOAD)
    decoded = h264([embed_watermark(f, PAYLOAD, delta=delta) for f in frames])
    assert all(detect_watermark(f).found for f in decoded[::3])
    assert detect_watermark(decoded).payload == PAYLOAD  # several frames' evidence adds up
    assert not any(detect_watermark(f).found for f in h264(frames)[::3])


def test_rgb_path_is_the_saturating_sum_bit_for_bit(pictures: dict[str, np.ndarray]) -> None:
    # the OpenCV pass must equal clip(rgb + rint(delta), 0, 255) exactly, saturated pixels included
    rgb = pictures["obama2.jpg"].copy()
    rgb[:40] = 255  # saturates upwards where the offset is positive
    rgb[40:80] = 0  # and downwards where it is negative
    delta = watermark_delta(*rgb.shape[:2], PAYLOAD)
    ref = np.clip(rgb.astype(np.int16) + np.rint(delta).astype(np.int16)[:, :, None], 0, 255).astype(np.uint8)
    out = embed_watermark(rgb, PAYLOAD, delta=delta)
    assert out.dtype == np.uint8 and np.array_equal(out, ref)
    assert np.array_equal(embed_watermark(rgb[:, ::-1], PAYLOAD, delta=delta),  # a non-contiguous view
                          np.clip(rgb[:, ::-1].astype(np.int16) + np.rint(delta).astype(np.int16)[:, :, None], 0,
                                  255).astype(np.uint8))


def test_luma_and_torch_paths_match_the_rgb_path(pictures: dict[str, np.ndarray]) -> None:
    rgb = pictures["grace_hopper.jpg"]
    delta = watermark_delta(*rgb.shape[:2], PAYLOAD)
    ref = embed_watermark(rgb, PAYLOAD, delta=delta).astype(int)
    y = rgb[..., 1]
    assert np.array_equal(embed_watermark_luma(y, delta).astype(int), ref[..., 1])
    t = torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None].float() / 255
    out = embed_watermark_torch(t, torch.from_numpy(delta))
    back = (out[0].permute(1, 2, 0) * 255).round().numpy().astype(int)
    assert out.shape == t.shape and out.dtype == t.dtype
    assert np.abs(back - ref).max() <= 1  # rounding of the offset: float path keeps the fraction


@pytest.mark.parametrize("size", [(480, 854), (720, 1280)])
def test_payload_decodes_from_single_frames_after_h264_crf28(size: tuple[int, int]) -> None:
    """A face clip (carphone, scaled up as a 480p/720p output would be) marked, re-encoded at crf 28: the payload
    must come back from single frames, not only from many frames together (scheme 1 read 40 % of the 480p frames),
    and never as a wrong payload."""
    h, w = size
    frames = [cv2.resize(f, (w, h), interpolation=cv2.INTER_CUBIC) for f in _frames("carphone_pristine.mp4", 12)]
    delta = watermark_delta(h, w, PAYLOAD)
    decoded = h264([embed_watermark(f, PAYLOAD, delta=delta) for f in frames])
    results = [detect_watermark(f) for f in decoded]
    assert sum(r.payload == PAYLOAD for r in results) >= 11
    assert all(r.payload in (None, PAYLOAD) for r in results)


@pytest.mark.parametrize("size", [(480, 854), (720, 1280), (1080, 1920)])
def test_video_writers_chroma_mark_after_h264_crf28(size: tuple[int, int]) -> None:
    """The video writer's mark (the pattern in the V plane of yuv420p frames): the face clip scaled as a swap written
    at that size would be, marked, re-encoded at crf 28: found in every single frame, never a wrong payload, the
    payload read from most frames at 720p and above; PSNR ≥ 40 dB; nothing found in the unmarked re-encode."""
    from faceweave.media.video.encode import frame_plane
    from faceweave.provenance.watermark import ChromaMarker

    h, w = size
    yuv = [av.VideoFrame.from_ndarray(cv2.resize(f, (w, h), interpolation=cv2.INTER_CUBIC), format="rgb24")
           .reformat(format="yuv420p") for f in _frames("carphone_pristine.mp4", 12)]
    plain = [f.to_ndarray(format="rgb24") for f in yuv]
    marker = ChromaMarker(h, w, PAYLOAD, (h // 2, w // 2))
    for f in yuv:
        marker.apply(frame_plane(f, 2))
    marked = [f.to_ndarray(format="rgb24") for f in yuv]
    assert min(psnr(a, b) for a, b in zip(plain, marked, strict=True)) >= 40.0
    results = [detect_watermark(f) for f in h264(marked)]
    assert all(r.found and r.plane == "chroma" for r in results), [round(r.score, 1) for r in results]
    assert all(r.payload in (None, PAYLOAD) for r in results)
    if h >= 720:
        assert sum(r.payload == PAYLOAD for r in results) >= 11
    assert not any(detect_watermark(f).found for f in h264(plain)[::3])
