"""Helpers for the live tests: small clips made with PyAV, and the identity check by faceweave's own models."""

from __future__ import annotations

import threading
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from faceweave.data import media_path

CARPHONE = media_path("carphone_pristine.mp4")  # 176×144, 30000/1001 fps, 120 frames, one face


def scaled_clip(dst: Path, width: int, height: int, frames: int | None = None, fmt: str | None = None,
                repeat: int = 1) -> Path:
    """The bundled carphone clip rescaled to ``width``×``height`` (H.264 MP4, or raw Y4M with ``fmt="y4m"``),
    played ``repeat`` times in a row (a longer input for tests that must stop it before it ends)."""
    inp = av.open(str(CARPHONE))
    rate = inp.streams.video[0].average_rate
    decoded = list(inp.decode(video=0))
    out = av.open(str(dst), "w", format="yuv4mpegpipe" if fmt == "y4m" else None)
    stream = out.add_stream("rawvideo" if fmt == "y4m" else "libx264", rate=rate)
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    if fmt != "y4m":
        stream.options = {"crf": "18", "preset": "veryfast"}
    for i, frame in enumerate(decoded * repeat):
        if frames is not None and i >= frames:
            break
        g = frame.reformat(width=width, height=height, format="yuv420p")
        g.pts, g.time_base = i, 1 / rate
        for packet in stream.encode(g):
            out.mux(packet)
    for packet in stream.encode(None):
        out.mux(packet)
    out.close()
    inp.close()
    return dst


def flat_clip(dst: Path, seconds: float, fps: int = 30, size: tuple[int, int] = (160, 120)) -> Path:
    """A clip with no face: a slowly moving grey gradient, ``seconds`` long at ``fps``."""
    out = av.open(str(dst), "w")
    stream = out.add_stream("libx264", rate=Fraction(fps))
    stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
    stream.options = {"crf": "18", "preset": "ultrafast"}
    x = np.linspace(0, 255, size[0], dtype=np.float32)[None, :, None]
    for i in range(int(seconds * fps)):
        rgb = np.broadcast_to(((x + 3 * i) % 256).astype(np.uint8), (size[1], size[0], 3)).copy()
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        frame.pts, frame.time_base = i, Fraction(1, fps)
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode(None):
        out.mux(packet)
    out.close()
    return dst


def decode_rgb(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


class IdentityJudge:
    """Identity distances by faceweave's own models (detector + FaceMesh + dlib 128-d, same person < 0.6)."""

    def __init__(self) -> None:
        from faceweave.pipeline.engine import SwapEngine
        from faceweave.settings import SwapSettings

        self.engine = SwapEngine(SwapSettings(device="cpu"))

    def embed(self, rgb: np.ndarray) -> np.ndarray | None:
        """The largest face's embedding, or None when there is no face."""
        t = self.engine.to_tensor(rgb)
        faces = self.engine.analyze(t)[0]
        if not faces:
            return None
        face = max(faces, key=lambda f: f.area)
        emb = self.engine.identify(t, [[face]])[0][0].embedding
        assert emb is not None
        return emb.float().cpu().numpy()

    def closer_to_source(self, frames: list[np.ndarray], source: np.ndarray, camera: np.ndarray) -> tuple[int, int]:
        """``(frames whose face is closer to source than to camera, frames with a face)``."""
        closer = with_face = 0
        for rgb in frames:
            emb = self.embed(rgb)
            if emb is None:
                continue
            with_face += 1
            closer += int(np.linalg.norm(emb - source) < np.linalg.norm(emb - camera))
        return closer, with_face


def run_sessions_at_once(shared: Any, session: Callable[[int], None], count: int, timeout_s: float) -> None:
    """Announce ``count`` sessions to the shared engine ``shared``, run ``session(k)`` for each on a thread of its
    own, all at once, and re-raise the first error a session raised (a thread's exception is otherwise lost)."""
    errors: list[BaseException] = []

    def guarded(k: int) -> None:
        try:
            session(k)
        except BaseException as exc:  # noqa: BLE001 — handed to the test's thread below
            errors.append(exc)

    for _ in range(count):
        shared.session_started()
    threads = [threading.Thread(target=guarded, args=(k,)) for k in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout_s)
    if errors:
        raise errors[0]
