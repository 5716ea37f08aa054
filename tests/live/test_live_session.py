"""Live sessions in-process: the one-slot mailbox, dropping instead of queueing under a slow engine (memory flat),
frames without a face passed through untouched, the shared engine's batching, bad inputs, a network stream that
ends."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
import torch
from live_helpers import flat_clip, run_sessions_at_once, scaled_clip

from faceweave.errors import InputNotFound, InputUnreadable, NoFaceInSource
from faceweave.live.mailbox import LiveStats, Mailbox
from faceweave.live.session import LiveSession, one_frame_batch, run_live
from faceweave.live.shared import SharedEngine
from faceweave.live.sources import CaptureThread, LiveFrame, open_source
from faceweave.media.video.frames import FrameBatch
from faceweave.settings import SwapSettings


class ListSink:
    def __init__(self) -> None:
        self.frames: list[Any] = []

    def write(self, frames: Any, time_s: float) -> None:
        self.frames.append(frames)

    def close(self) -> None:
        pass


def test_mailbox_newest_wins_and_counts_drops() -> None:
    box: Mailbox[int] = Mailbox()
    for i in range(5):
        box.put(i)
    assert box.get(timeout=0) == 4 and box.dropped == 4 and box.put_count == 5
    assert box.get(timeout=0.01) is None and not box.closed
    box.put(7)
    box.close()
    box.put(8)  # after close: ignored
    assert box.get() == 7 and box.get() is None


def test_slow_engine_drops_frames_instead_of_queueing(tmp_path: Path) -> None:
    """A 60 fps input, an engine that takes 50 ms a frame: most frames are dropped, latency stays ~one frame's
    processing (no queue builds up), and RSS does not grow with the session's length."""
    clip = flat_clip(tmp_path / "flat.mp4", seconds=5, fps=60)
    source = open_source(str(clip))
    stats, box, sink = LiveStats(), Mailbox[LiveFrame](), ListSink()
    rss: list[int] = []

    def slow(batch: FrameBatch) -> FrameBatch:
        time.sleep(0.05)
        if len(sink.frames) % 10 == 0:
            rss.append(psutil.Process().memory_info().rss)
        return batch

    capture = CaptureThread(source, box, stats)
    capture.start()
    LiveSession(slow, box, sink, stats).run()
    capture.stop()
    source.close()
    s = stats.summary()
    assert s["frames_in"] == 300
    assert s["frames_out"] + s["dropped"] == s["frames_in"]
    assert s["dropped"] > s["frames_in"] / 2, s
    assert s["frames_out"] >= 50, s  # ~20 fps of processing for 5 s
    # no queue: latency = wait for the engine to finish the previous frame + 50 ms, never growing
    assert s["latency_p95_ms"] < 250, s
    lat = stats.latencies_s
    assert np.mean(lat[-10:]) < np.mean(lat[:10]) + 0.1
    assert max(rss) - rss[1] < 30 * 2**20, [r // 2**20 for r in rss]


def test_no_face_in_view_passes_frames_through_untouched(tmp_path: Path) -> None:
    from faceweave.data import media_path
    from faceweave.media.image import read_image
    from faceweave.pipeline.engine import SwapEngine
    from faceweave.pipeline.video import VideoFaceProcessor

    settings = SwapSettings(device="cpu", enhancer=None)
    engine = SwapEngine(settings)
    processor = VideoFaceProcessor(engine, engine.prepare_sources([read_image(media_path("obama.jpg")).rgb]), None,
                                   settings)
    source = open_source(str(flat_clip(tmp_path / "flat.mp4", seconds=0.5)))
    inputs = [LiveFrame(f.frame, time.perf_counter(), f.time_s, f.index) for f in source.frames()]
    source.close()
    for item in inputs:
        out = processor.process_batch(one_frame_batch(item))
        assert isinstance(out, FrameBatch) and out.yuv[0] is item.frame  # the captured frame itself
    assert processor.stats["frames_swapped"] == 0


def test_source_without_a_face_fails_before_the_session(tmp_path: Path) -> None:
    from PIL import Image

    blank = tmp_path / "blank.png"
    Image.new("RGB", (256, 256), (120, 130, 140)).save(blank)
    out = tmp_path / "out.mp4"
    with pytest.raises(NoFaceInSource):
        run_live([blank], "/does/not/exist.mp4", str(out), SwapSettings(device="cpu"))  # input never opened
    assert not out.exists()


def test_inputs_that_cannot_be_opened(tmp_path: Path) -> None:
    with pytest.raises(InputNotFound):
        open_source(str(tmp_path / "missing.mp4"))
    with pytest.raises(InputNotFound):
        open_source("/dev/video99")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 100)
    with pytest.raises(InputUnreadable):
        open_source(str(junk))


def test_network_stream_ending_stops_cleanly(tmp_path: Path) -> None:
    """An MPEG-TS stream over TCP that the sender closes: the session ends with its stats, the file is valid."""
    import av

    from faceweave.data import media_path

    clip = scaled_clip(tmp_path / "face.mp4", 176, 144, frames=45)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])

    # The sender is another process (PyAV holds the GIL while a socket blocks in accept/connect); it listens and
    # its first packet waits for the live input to connect.
    sender = subprocess.Popen([sys.executable, "-c", SENDER, str(clip), str(port)])
    out_path = tmp_path / "out.mp4"
    stats_path = tmp_path / "stats.json"
    summary = run_live([media_path("obama.jpg")], f"tcp://127.0.0.1:{port}", str(out_path),
                       SwapSettings(device="cpu", enhancer=None), stats_json=stats_path)
    assert sender.wait(30) == 0
    assert summary["ended"] == "input ended" and stats_path.exists()
    assert summary["frames_in"] >= 40 and summary["frames_out"] + summary["dropped"] == summary["frames_in"]
    with av.open(str(out_path)) as c:
        assert sum(1 for _ in c.decode(video=0)) == summary["frames_out"]


SENDER = """
import sys, time, av
from fractions import Fraction
clip, port = sys.argv[1], sys.argv[2]
with av.open(clip) as inp, av.open(f"tcp://127.0.0.1:{port}?listen=1", "w", format="mpegts") as out:
    stream = out.add_stream("libx264", rate=30)
    stream.width, stream.height, stream.pix_fmt = 176, 144, "yuv420p"
    stream.options = {"preset": "ultrafast", "tune": "zerolatency"}
    for i, frame in enumerate(inp.decode(video=0)):
        frame.pts, frame.time_base = i, Fraction(1, 30)
        for packet in stream.encode(frame.reformat(format="yuv420p")):
            out.mux(packet)
        time.sleep(1 / 30)
    for packet in stream.encode(None):
        out.mux(packet)
"""


class _FakeEngine:
    """Records the batch sizes of its calls; 'detects' one face per frame (the frame index as a marker)."""

    device = torch.device("cpu")
    dtype = torch.float32
    settings = SwapSettings(device="cpu")

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def analyze(self, frames: torch.Tensor, *, recall: bool = True) -> list[list[Any]]:
        time.sleep(0.05)
        self.calls.append(("analyze", frames.shape[0]))
        return [[float(f.mean())] for f in frames]

    def swap(self, frames: torch.Tensor, plan: Any, sources: Any) -> torch.Tensor:
        self.calls.append(("swap", frames.shape[0]))
        out = frames.clone()
        for b, row in enumerate(plan):
            for _, s in row:
                out[b] += sources[s]
        return out


def test_shared_engine_batches_concurrent_sessions() -> None:
    fake = _FakeEngine()
    shared = SharedEngine(fake, window_s=0.2)  # type: ignore[arg-type]
    results: dict[int, Any] = {}

    def session(k: int) -> None:
        frames = torch.full((1, 3, 4, 4), float(k))
        results[k] = (shared.analyze(frames), shared.swap(frames, [[(None, 0)]], [10.0 * (k + 1)]))

    run_sessions_at_once(shared, session, 3, timeout_s=10)
    shared.close()
    assert ("analyze", 3) in fake.calls and ("swap", 3) in fake.calls  # one batch for the three sessions
    for k in range(3):
        faces, out = results[k]
        assert faces == [[float(k)]]  # each session got its own frame's answer back
        assert torch.allclose(out, torch.full((1, 3, 4, 4), k + 10.0 * (k + 1)))  # and its own source
