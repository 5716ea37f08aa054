"""The upload transformations the watermark must survive (shared by the tests and benchmarks/)."""

from __future__ import annotations

import io

import av
import cv2
import numpy as np
from PIL import Image


def jpeg70(rgb: np.ndarray) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=70)
    return np.asarray(Image.open(buf).convert("RGB"))


def webp(rgb: np.ndarray) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "WEBP", quality=80)  # Pillow's default quality
    return np.asarray(Image.open(buf).convert("RGB"))


def resize50(rgb: np.ndarray) -> np.ndarray:
    return cv2.resize(rgb, (rgb.shape[1] // 2, rgb.shape[0] // 2), interpolation=cv2.INTER_AREA)


def crop90(rgb: np.ndarray) -> np.ndarray:
    """Keep 90 % of each side, off-centre (the grid offset is not a multiple of anything)."""
    h, w = rgb.shape[:2]
    ch, cw = int(h * 0.9), int(w * 0.9)
    y, x = (h - ch) // 3 + 1, (w - cw) // 3 + 1
    return np.ascontiguousarray(rgb[y : y + ch, x : x + cw])


def h264(frames: list[np.ndarray], crf: int = 28, fps: int = 25) -> list[np.ndarray]:
    """Re-encode RGB frames with libx264 (yuv420p, veryfast) at ``crf`` and decode them again."""
    buf = io.BytesIO()
    h, w = frames[0].shape[:2]
    with av.open(buf, "w", format="mp4") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = w - w % 2, h - h % 2, "yuv420p"
        s.options = {"crf": str(crf), "preset": "veryfast"}
        for f in frames:
            for packet in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f[: h - h % 2, : w - w % 2]),
                                                              format="rgb24")):
                c.mux(packet)
        for packet in s.encode():
            c.mux(packet)
    buf.seek(0)
    with av.open(buf) as c:
        return [fr.to_ndarray(format="rgb24") for fr in c.decode(video=0)]


IMAGE_TRANSFORMS = {"none": lambda a: a, "jpeg_q70": jpeg70, "webp": webp, "resize_50": resize50, "crop_90": crop90}
