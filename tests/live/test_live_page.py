"""The /live page in headless Debian chromium (Playwright) with a fake camera fed from a Y4M of the bundled face
clip: start a session over WebRTC, capture frames of the returned video through a canvas, and check with
faceweave's own identity model that their face is the source's, not the camera's; fps and latency are shown; the
session ends when the page leaves."""

from __future__ import annotations

import base64
import io
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("aiortc", reason="live mode needs the 'live' extra (aiortc)")
pytest.importorskip("fastapi", reason="the service needs the 'serve' extra")

import uvicorn  # noqa: E402
from live_helpers import IdentityJudge, decode_rgb, scaled_clip  # noqa: E402
from PIL import Image  # noqa: E402

from faceweave.data import media_path  # noqa: E402
from faceweave.media.image import read_image  # noqa: E402
from faceweave.serve.app import create_app  # noqa: E402
from faceweave.serve.auth import create_api_key  # noqa: E402
from faceweave.serve.settings import ServiceSettings  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
CAPTURE_JS = """async ([n, gap]) => {
  const remote = document.getElementById('remote');
  const canvas = document.createElement('canvas');
  const shots = [];
  for (let i = 0; i < n; i++) {
    await new Promise((r) => setTimeout(r, gap));
    canvas.width = remote.videoWidth; canvas.height = remote.videoHeight;
    canvas.getContext('2d').drawImage(remote, 0, 0);
    shots.push(canvas.toDataURL('image/png'));
  }
  return shots;
}"""


def _png_rgb(data_url: str) -> np.ndarray:
    raw = base64.b64decode(data_url.split(",", 1)[1])
    with Image.open(io.BytesIO(raw)) as im:
        return np.asarray(im.convert("RGB"))


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian chromium at /usr/bin/chromium (apt install chromium)")
def test_live_page_swaps_the_camera(tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    clip = scaled_clip(tmp_path / "clip.y4m", 352, 288, fmt="y4m")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    app = create_app(ServiceSettings(data_dir=tmp_path / "data", warmup=False))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    shots: list[np.ndarray] = []
    try:
        deadline = time.monotonic() + 60
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
            time.sleep(0.05)
        key = create_api_key(app.state.service.store, "web")
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=[
                "--no-sandbox", "--disable-background-networking", "--disable-gpu",
                "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-video-capture={clip}",
                "--disable-features=WebRtcHideLocalIpsWithMdns",  # plain host candidates for the loopback peer
            ])  # fmt: skip
            try:
                page = browser.new_page()
                page.set_default_timeout(90_000)
                page.goto(f"http://127.0.0.1:{port}/live")
                assert page.title() == "faceweave live"
                page.fill("#api-key", key)
                page.set_input_files("#source", str(media_path("obama.jpg")))
                page.check("#consent")
                page.click("#start")
                page.wait_for_selector("#session:not([hidden])")
                # predicates as functions: the page's CSP forbids eval of a bare expression
                page.wait_for_function("() => document.getElementById('remote').videoWidth > 0")
                page.wait_for_function("() => document.getElementById('fps').textContent !== '–'")
                shots = [_png_rgb(u) for u in page.evaluate(CAPTURE_JS, [8, 250])]
                page.screenshot(path=str(tmp_path / "live.png"), full_page=True)
                fps = float(page.text_content("#fps") or "nan")
                latency = float(page.text_content("#latency") or "nan")
                assert page.is_visible("#fps") and page.is_visible("#latency")
                hub = app.state.live_hub
                assert len(hub.sessions) == 1
                metrics = page.request.get(f"http://127.0.0.1:{port}/metrics").text()
                page.close()  # leaving the page closes the peer connection: the session must end
                deadline = time.monotonic() + 20
                while hub.sessions and time.monotonic() < deadline:
                    time.sleep(0.1)
                assert not hub.sessions, "the live session did not end when the page left"
            finally:
                browser.close()
    finally:
        server.should_exit = True
        thread.join(30)
    assert fps > 0 and latency > 0
    assert (tmp_path / "live.png").stat().st_size > 10_000
    assert "faceweave_live_sessions 1.0" in metrics and "faceweave_live_latency_seconds_count" in metrics
    judge = IdentityJudge()
    source = judge.embed(read_image(media_path("obama.jpg")).rgb)
    camera_frames = decode_rgb(clip)
    camera = judge.embed(camera_frames[len(camera_frames) // 2])
    assert source is not None and camera is not None
    closer, with_face = judge.closer_to_source(shots, source, camera)
    assert with_face >= len(shots) // 2, f"faces in only {with_face} of {len(shots)} captured frames"
    assert closer > with_face / 2, f"only {closer} of {with_face} returned frames look like the source"
