"""Multi-device segment split (``--devices``), tested with the CPU standing in for several devices."""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from types import SimpleNamespace

import pytest

from faceweave import api
from faceweave.errors import InvalidOption
from faceweave.media.video.probe import probe_video
from faceweave.pipeline.video import parse_devices, worker_device
from faceweave.settings import SwapSettings


def test_parse_devices() -> None:
    assert parse_devices("0,1") == ["cuda:0", "cuda:1"]
    assert parse_devices("cpu, cpu") == ["cpu", "cpu"]
    with pytest.raises(InvalidOption):
        parse_devices(" , ")


@pytest.mark.parametrize(("identity", "expected"), [((1,), 0), ((2,), 1), ((3,), 0), ((), 0)])
def test_worker_k_takes_device_k_mod_n(
    monkeypatch: pytest.MonkeyPatch, identity: tuple[int, ...], expected: int
) -> None:
    seen: list[str] = []
    monkeypatch.setattr(multiprocessing, "current_process", lambda: SimpleNamespace(_identity=identity))
    monkeypatch.setattr("faceweave.device.resolve_device", lambda name: seen.append(name) or name)
    worker_device(SwapSettings(devices="cpu:a,cpu:b"))
    assert seen == [["cpu:a", "cpu:b"][expected]]
    assert worker_device(SwapSettings()) is None


def test_video_split_over_two_cpu_devices(media: type, tmp_path: Path) -> None:
    out = tmp_path / "split.mp4"
    settings = SwapSettings(device="cpu", devices="cpu,cpu", workers=2, trim_end="48f", detect_every=4)
    result = api.swap(media.path("astronaut.png"), media.path("carphone_pristine.mp4"), out, settings)
    assert result.stats["segments"] == 2
    assert result.frames == 48 == probe_video(out).frames
    assert result.faces_swapped > 0
