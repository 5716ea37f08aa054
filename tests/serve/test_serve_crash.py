"""Crash test: `faceweave serve` as a subprocess, kill -9 mid-job, restart: the job finishes, nothing is lost."""

from __future__ import annotations

import importlib.util
import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from faceweave.data import media_path
from faceweave.serve.auth import create_api_key
from faceweave.serve.store import SqlJobStore

HAVE_VIDEO = importlib.util.find_spec("faceweave.pipeline.video") is not None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve_command(port: int, data_dir: Path) -> list[str]:
    """`faceweave serve` (the installed console script); `python -m faceweave.serve serve` if it is not installed."""
    exe = shutil.which("faceweave", path=str(Path(sys.executable).parent))
    args = ["serve", "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(data_dir)]
    return [exe, *args] if exe is not None else [sys.executable, "-m", "faceweave.serve", *args]


def _video_with_short_gops(path: Path) -> Path:
    """carphone's first 60 frames with a keyframe every 30: the job splits into 2 segments that can resume."""
    import av

    with av.open(str(media_path("carphone_pristine.mp4"))) as src, av.open(str(path), "w") as dst:
        stream = dst.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 176, 144, "yuv420p"
        stream.codec_context.gop_size = 30
        stream.options = {"crf": "18", "preset": "ultrafast", "keyint_min": "30", "sc_threshold": "0"}
        for frame in itertools.islice(src.decode(video=0), 60):
            for packet in stream.encode(frame.reformat(format="yuv420p")):
                dst.mux(packet)
        for packet in stream.encode():
            dst.mux(packet)
    return path


def _start(port: int, data_dir: Path, log: Path, warmup: bool) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "FACEWEAVE_WARMUP": "true" if warmup else "false",
        "FACEWEAVE_WORKERS": "1",
        "FACEWEAVE_RATE_LIMIT_PER_MINUTE": "100000",
        "FACEWEAVE_RATE_LIMIT_BURST": "10000",
    }  # the test polls
    with log.open("ab") as fh:
        # Its own session: kill -9 then takes the whole process group (server + segment workers), like a crash.
        proc = subprocess.Popen(
            _serve_command(port, data_dir), stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"server did not start:\n{log.read_text()[-3000:]}")


@pytest.mark.slow
def test_kill_9_mid_job_then_restart_finishes_the_job(tmp_path: Path) -> None:
    data_dir, log = tmp_path / "data", tmp_path / "server.log"
    data_dir.mkdir()
    store = SqlJobStore(f"sqlite:///{(data_dir / 'faceweave.db').resolve()}")
    headers = {"Authorization": f"Bearer {create_api_key(store, 'acme')}"}
    store.close()
    target = _video_with_short_gops(tmp_path / "gop30.mp4") if HAVE_VIDEO else media_path("astronaut.png")
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    # No warm-up on the first start: the job then spends seconds loading models, and the kill lands mid-job.
    proc = _start(port, data_dir, log, warmup=False)
    try:
        files = [("sources", ("s.jpg", media_path("obama.jpg").read_bytes(), "application/octet-stream")),
                 ("target", ("t", target.read_bytes(), "application/octet-stream"))]  # fmt: skip
        # GOP-aligned segments; the job's work folder keeps finished segments. (Segment workers are the operator's
        # setting: a client's settings.workers is refused with 422, issue 22.)
        form = {"consent": "true"}
        r = httpx.post(f"{base}/v1/swaps", files=files, data=form, headers=headers, timeout=60)
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        image_files = [files[0], ("target", ("t", media_path("astronaut.png").read_bytes(), "image/png"))]
        other = httpx.post(f"{base}/v1/swaps", files=image_files, data={"consent": "true"}, headers=headers,
                           timeout=60)  # fmt: skip
        assert other.status_code == 202  # a queued job behind it must survive too
        deadline = time.monotonic() + 180
        while True:  # kill once the job runs (image) or once a first segment is done (video)
            job = httpx.get(f"{base}/v1/swaps/{job_id}", headers=headers, timeout=5).json()
            assert job["state"] in ("queued", "running"), job
            if job["state"] == "running" and (not HAVE_VIDEO or job["progress"]["frames_done"] > 0):
                break
            assert time.monotonic() < deadline, f"job made no progress: {job}"
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        state = SqlJobStore(f"sqlite:///{(data_dir / 'faceweave.db').resolve()}")
        interrupted = state.get_job(job_id)
        state.close()
        assert interrupted is not None and interrupted.state.value == "running"  # it really died mid-job

        proc = _start(port, data_dir, log, warmup=True)
        deadline = time.monotonic() + 240
        for jid in (job_id, other.json()["id"]):
            while (job := httpx.get(f"{base}/v1/swaps/{jid}", headers=headers, timeout=5).json())["state"] in (
                "queued",
                "running",
            ):
                assert time.monotonic() < deadline, f"job not finished after restart: {job}"
                time.sleep(0.1)
            assert job["state"] == "succeeded", job
        first = httpx.get(f"{base}/v1/swaps/{job_id}", headers=headers, timeout=5).json()
        assert first["attempts"] == 2  # claimed before the crash and again after it
        if HAVE_VIDEO:  # resumed: the segments finished before the crash were reused, not redone
            assert first["stats"]["segments"] > 1 and first["stats"]["segments_reused"] >= 1, first["stats"]
        result = httpx.get(f"{base}/v1/swaps/{job_id}/result", headers=headers, timeout=60)
        assert result.status_code == 200
        out = tmp_path / ("result.mp4" if HAVE_VIDEO else "result.png")
        out.write_bytes(result.content)
        _assert_decodes(out, target)
        listed = httpx.get(f"{base}/v1/swaps", headers=headers, timeout=5).json()
        assert listed["total"] == 2  # no job lost
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def _assert_decodes(out: Path, target: Path) -> None:
    if out.suffix == ".mp4":
        import av

        with av.open(str(out)) as c:
            frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        with av.open(str(target)) as c:
            expected = sum(1 for _ in c.decode(video=0))
        assert len(frames) == expected == 60 and frames[0].shape == (144, 176, 3)
    else:
        from PIL import Image

        with Image.open(out) as im:
            arr = np.asarray(im.convert("RGB"))
        with Image.open(target) as im:
            ref = np.asarray(im.convert("RGB"))
        assert arr.shape == ref.shape and np.abs(arr.astype(int) - ref.astype(int)).max() > 8
