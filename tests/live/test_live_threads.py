"""Live mode's torch threads on the CPU: the engine's thread leaves a core to the capture thread
(faceweave/live/threads.py), set on that thread only, the process default put back."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from live_helpers import flat_clip

from faceweave.data import media_path
from faceweave.live import threads
from faceweave.live.session import FrameProcess, run_live
from faceweave.live.shared import SharedEngine
from faceweave.media.video.frames import FrameBatch
from faceweave.settings import SwapSettings


@pytest.fixture
def two_default_threads() -> Iterator[None]:
    """The process default at 2 torch threads for the test (the dev VM's), restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def _in_new_thread(fn: Any) -> Any:
    out: list[Any] = []
    t = threading.Thread(target=lambda: out.append(fn()))
    t.start()
    t.join(10)
    return out[0]


class _CpuEngine:
    device = torch.device("cpu")
    dtype = torch.float32
    settings = SwapSettings(device="cpu")


def test_live_threads_leave_one_core(monkeypatch: pytest.MonkeyPatch) -> None:
    for cores, expected in ((1, 1), (2, 1), (16, 15)):
        monkeypatch.setattr(threads, "available_cores", lambda c=cores: c)
        assert threads.live_torch_threads(torch.device("cpu")) == expected
    assert threads.live_torch_threads(torch.device("cuda", 0)) is None  # the GPU path has its own host threads


def test_shared_engine_pins_its_thread_only(monkeypatch: pytest.MonkeyPatch, two_default_threads: None) -> None:
    monkeypatch.setattr(threads, "available_cores", lambda: 2)
    shared = SharedEngine(_CpuEngine())  # type: ignore[arg-type]
    try:
        assert shared.torch_threads == 1
        # the engine's thread keeps 1 after a parallel op (its count is its own, not re-read from the default)
        assert shared.call(lambda _e: (torch.rand(256, 256) @ torch.rand(256, 256), torch.get_num_threads())[1]) == 1
        assert torch.get_num_threads() == 2  # the caller's thread
        assert _in_new_thread(torch.get_num_threads) == 2  # the process default
    finally:
        shared.close()
    explicit = SharedEngine(_CpuEngine(), torch_threads=2)  # type: ignore[arg-type]
    try:
        assert explicit.torch_threads == 2
    finally:
        explicit.close()


def test_run_live_engine_thread_count_on_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             two_default_threads: None) -> None:
    """run_live's engine (on the calling thread) runs with one thread on a 2-core CPU; the count is restored."""
    monkeypatch.setattr(threads, "available_cores", lambda: 2)
    seen: list[int] = []

    def record(process: FrameProcess) -> FrameProcess:
        def wrapped(batch: FrameBatch) -> FrameBatch | Any:
            seen.append(torch.get_num_threads())
            return process(batch)
        return wrapped

    clip = flat_clip(tmp_path / "flat.mp4", seconds=0.3)
    summary = run_live([media_path("obama.jpg")], str(clip), str(tmp_path / "out.mp4"),
                       SwapSettings(device="cpu", enhancer=None), process_wrapper=record)
    assert summary["frames_out"] > 0 and seen and set(seen) == {1}, (summary, seen)
    assert torch.get_num_threads() == 2
