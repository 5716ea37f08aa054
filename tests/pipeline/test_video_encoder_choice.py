"""swap_video's encoder choice: a codec the user named is checked before anything is read (a usage error at once);
the automatic choice probes NVENC in a thread of its own, beside the reading and model loading (it took 1.0 s of a
GPU cold start), and the output is written with the encoder it picked."""

from __future__ import annotations

import threading
from pathlib import Path

import av
import pytest

from faceweave.data import media_path
from faceweave.errors import InvalidOption
from faceweave.media.video import encode
from faceweave.pipeline import video
from faceweave.settings import SwapSettings


def test_named_codec_is_checked_before_the_inputs(tmp_path: Path) -> None:
    settings = SwapSettings(device="cpu", video_codec="no_such_encoder")
    with pytest.raises(InvalidOption, match="no_such_encoder"):  # not InputNotFound: the codec comes first
        video.swap_video([tmp_path / "missing.png"], tmp_path / "missing.mp4", tmp_path / "out.mp4", settings)


def test_automatic_codec_probes_nvenc_in_its_own_thread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []
    real = encode.encoder_available

    def recording(name: str) -> bool:
        seen.append(threading.current_thread().name)
        return real(name)

    monkeypatch.setattr(video, "encoder_available", recording)
    out = tmp_path / "out.mp4"
    settings = SwapSettings(device="cpu", trim_end="0.3")
    video.swap_video([media_path("obama.jpg")], media_path("carphone_pristine.mp4"), out, settings)
    assert seen and seen[0] == "faceweave-nvenc-probe"
    with av.open(str(out)) as c:
        assert c.streams.video[0].codec_context.name in ("h264", "libx264")
