"""``faceweave live`` as a user runs it (subprocess): a file played in real time, Ctrl-C, a source without a face."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
from live_helpers import IdentityJudge, decode_rgb, scaled_clip

from faceweave.data import media_path
from faceweave.media.image import read_image

CLI = [sys.executable, "-c", "from faceweave.cli import main; main()"]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "2"}


def test_file_played_in_real_time(tmp_path: Path) -> None:
    """Every input frame is either in the output or reported dropped; the input took its own duration (paced, not
    read as fast as possible); the face in the output is the source's."""
    clip = scaled_clip(tmp_path / "in.mp4", 352, 288)
    out, stats_path = tmp_path / "out.mp4", tmp_path / "stats.json"
    run = subprocess.run([*CLI, "live", "-s", str(media_path("obama.jpg")), "--input", str(clip), "-o", str(out),
                          "--stats-json", str(stats_path), "--device", "cpu"], capture_output=True, text=True,
                         timeout=300, env=_env())
    assert run.returncode == 0, run.stderr
    stats = json.loads(stats_path.read_text())
    assert stats["frames_in"] == 120 and stats["ended"] == "input ended"
    assert stats["frames_out"] + stats["dropped"] == stats["frames_in"], stats
    assert stats["wall_s"] >= 3.9  # 120 frames at 29.97 fps take 4 s on the clock
    assert stats["latency_p50_ms"] is not None and stats["fps_out"] > 0
    frames = decode_rgb(out)
    assert len(frames) == stats["frames_out"]
    with av.open(str(out)) as c:
        assert c.metadata.get("comment") == "faceweave:synthetic=true"
    judge = IdentityJudge()
    source = judge.embed(read_image(media_path("obama.jpg")).rgb)
    camera = judge.embed(decode_rgb(clip)[60])
    assert source is not None and camera is not None
    picks = [frames[i] for i in np.linspace(0, len(frames) - 1, min(6, len(frames))).astype(int)]
    closer, with_face = judge.closer_to_source(picks, source, camera)
    assert with_face >= len(picks) // 2 and closer > with_face / 2, (closer, with_face)


def test_ctrl_c_leaves_a_valid_file(tmp_path: Path) -> None:
    # 16 s of input played in real time: Ctrl-C comes long before its end even on a slow, loaded machine
    clip = scaled_clip(tmp_path / "in.mp4", 176, 144, repeat=4)
    out, stats_path = tmp_path / "out.mp4", tmp_path / "stats.json"
    proc = subprocess.Popen([*CLI, "live", "-s", str(media_path("obama.jpg")), "--input", str(clip), "-o", str(out),
                             "--stats-json", str(stats_path), "--device", "cpu"], stderr=subprocess.PIPE, text=True,
                            env=_env())
    assert proc.stderr is not None
    deadline = time.monotonic() + 120
    for line in proc.stderr:  # wait until frames flow
        if "live session running" in line or time.monotonic() > deadline:
            break
    time.sleep(1.5)
    proc.send_signal(signal.SIGINT)
    rest = proc.stderr.read()
    assert proc.wait(60) == 0, rest
    stats = json.loads(stats_path.read_text())
    assert stats["ended"] == "stopped" and 0 < stats["frames_in"] < 4 * 120, stats
    assert len(decode_rgb(out)) == stats["frames_out"] > 0


def test_source_without_a_face_is_a_clear_error(tmp_path: Path) -> None:
    from PIL import Image

    blank = tmp_path / "blank.png"
    Image.new("RGB", (256, 256), (120, 130, 140)).save(blank)
    clip = scaled_clip(tmp_path / "in.mp4", 176, 144, frames=10)
    run = subprocess.run([*CLI, "live", "-s", str(blank), "--input", str(clip), "-o", str(tmp_path / "o.mp4"),
                          "--device", "cpu"], capture_output=True, text=True, timeout=120, env=_env())
    assert run.returncode == 20, run.stderr
    assert "no face found in source image" in run.stderr and "live session running" not in run.stderr
    assert not (tmp_path / "o.mp4").exists()
