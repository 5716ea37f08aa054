"""The web page in headless Debian chromium (Playwright), against the real server on 127.0.0.1, under a strict CSP.

One browser session walks a user's path: a consent error in plain words, two source photos with previews, a photo
job (no fake frame counts, a swapped download), a video job whose progress bar moves while it runs (ETA shown),
the previous result cleared under a new job, the recent-jobs list with both results, cancel, and the layout at a
phone's width. Screenshots go to ``$FACEWEAVE_PAGE_SHOTS`` when set (to look at them), else to the test's tmp dir.
"""

from __future__ import annotations

import itertools
import os
import re
import socket
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import uvicorn
from PIL import Image
from serve_helpers import carphone_clip

from faceweave.data import media_path
from faceweave.serve.app import create_app
from faceweave.serve.auth import create_api_key
from faceweave.serve.settings import ServiceSettings

CHROMIUM = Path("/usr/bin/chromium")
# What a strict deployment sends: no inline script/style/handlers; only previews of local files and results (blob:).
STRICT_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob:; media-src 'self' blob:;"
    " object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
READ_JOB = """() => {
  const bar = document.getElementById('progress');
  return [document.getElementById('job').dataset.state || '', bar.hasAttribute('value') ? bar.value : null,
          document.getElementById('job-detail').textContent];
}"""


class _StrictCSP:
    """ASGI wrapper adding :data:`STRICT_CSP` to every response, so a CSP violation shows in the browser's console."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_csp(message: Any) -> None:
            if message["type"] == "http.response.start":
                csp = (b"content-security-policy", STRICT_CSP.encode())
                message = {**message, "headers": [*message["headers"], csp]}
            await send(message)

        await self.app(scope, receive, send_with_csp)


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian chromium at /usr/bin/chromium (apt install chromium)")
def test_page_user_path(tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    shots = Path(os.environ.get("FACEWEAVE_PAGE_SHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    clip = carphone_clip(tmp_path / "clip.mp4", 48)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    app = create_app(ServiceSettings(data_dir=tmp_path / "data", warmup=False, workers=1))
    server = uvicorn.Server(
        uvicorn.Config(_StrictCSP(app), host="127.0.0.1", port=port, log_config=None, access_log=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    console: list[str] = []
    samples: list[tuple[str, float | None, str]] = []  # (state, bar value, detail) read while the video job runs
    try:
        deadline = time.monotonic() + 60
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
            time.sleep(0.05)
        key = create_api_key(app.state.service.store, "web")
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=str(CHROMIUM),
                headless=True,
                args=["--no-sandbox", "--disable-background-networking", "--disable-gpu"],
            )
            try:
                page = browser.new_page(accept_downloads=True, viewport={"width": 1280, "height": 900})
                page.set_default_timeout(120_000)
                page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
                page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
                response = page.goto(f"http://127.0.0.1:{port}/")
                assert response is not None and "default-src 'self'" in response.headers["content-security-policy"]
                assert page.title() == "faceweave"

                # An older page left the key in localStorage: the new one removes it and keeps keys per tab.
                page.evaluate("localStorage.setItem('faceweave-key', 'fw_left_on_disk')")
                page.reload()
                assert page.evaluate("localStorage.getItem('faceweave-key')") is None
                assert page.input_value("#api-key") == ""
                page.wait_for_selector("#recent-empty:has-text('API key')")  # the list asks for a key, in words
                page.fill("#api-key", key)
                page.dispatch_event("#api-key", "change")

                # Inputs are previewed: two face photos (thumbnails), the target.
                page.set_input_files("#source", str(media_path("obama.jpg")))
                page.set_input_files("#source", str(media_path("obama2.jpg")))
                assert page.locator("#source-list img").count() == 2
                assert page.text_content("#source-count") == "2 of 4 photos"
                page.set_input_files("#target", str(media_path("astronaut.png")))
                page.wait_for_selector("#target-preview img")
                page.wait_for_selector("#target-info:has-text('512×512')")

                # Consent not ticked: the server refuses; the page says so in plain words, without the API's hint.
                page.click("#submit")
                page.wait_for_selector("#error:not([hidden])")
                error = page.text_content("#error") or ""
                assert page.get_attribute("#error", "data-code") == "consent_required"
                assert "agreed" in error and "consent=true" not in error and "form field" not in error, error
                assert "attention" in (page.get_attribute("#consent-box", "class") or "")
                page.screenshot(path=str(shots / "1-consent-error.png"), full_page=True)

                # A photo job: done, result shown and downloadable, no "1/1 frames · fps" text.
                page.check("#consent")
                page.click("#submit")
                page.wait_for_selector("#error", state="hidden")
                page.wait_for_selector("#job[data-state=succeeded]")
                photo_id = page.get_attribute("#job", "data-job-id")
                assert page.eval_on_selector("#progress", "el => el.value") == 1
                page.wait_for_selector("#preview")
                detail = page.text_content("#job-detail") or ""
                assert not re.search(r"frame|fps|/s\b|\b1/1\b", detail), detail
                assert "swapped" in detail, detail
                assert page.evaluate("sessionStorage.getItem('faceweave-key')") == key
                assert page.evaluate("localStorage.getItem('faceweave-key')") is None
                page.screenshot(path=str(shots / "2-photo-done.png"), full_page=True)
                with page.expect_download() as info:
                    page.click("#download")
                saved = tmp_path / info.value.suggested_filename
                info.value.save_as(saved)

                # A video job: the photo's result is gone from the card; the bar moves while frames are swapped.
                page.set_input_files("#target", str(clip))
                page.wait_for_selector("#target-preview video")
                page.click("#submit")
                page.wait_for_function(f"(() => {{ const id = document.getElementById('job').dataset.jobId;"
                                       f" return id && id !== '{photo_id}'; }})")  # fmt: skip
                video_id = page.get_attribute("#job", "data-job-id")
                assert page.locator("#preview").count() == 0 and page.is_hidden("#download")
                shot_mid = False
                deadline = time.monotonic() + 300
                while time.monotonic() < deadline:
                    state, value, detail = page.evaluate(READ_JOB)
                    if state in ("succeeded", "failed", "cancelled"):
                        break
                    samples.append((state, value, detail))
                    if not shot_mid and state == "running" and value is not None and 0 < value < 1:
                        page.screenshot(path=str(shots / "3-video-running.png"), full_page=True)
                        shot_mid = True
                    time.sleep(0.1)
                assert state == "succeeded", (state, page.text_content("#job"))
                page.wait_for_selector("#preview-box video#preview")
                assert "frames" in (page.text_content("#job-detail") or "")

                # Recent jobs: both finished jobs, each with its result.
                page.wait_for_selector(f"#job-list li[data-job-id='{video_id}'][data-state=succeeded] .thumb video")
                page.wait_for_selector(f"#job-list li[data-job-id='{photo_id}'][data-state=succeeded] .thumb img")
                page.screenshot(path=str(shots / "4-video-done.png"), full_page=True)

                # Cancel a running video job.
                page.click("#submit")
                page.wait_for_function(f"(() => {{ const id = document.getElementById('job').dataset.jobId;"
                                       f" return id && id !== '{video_id}'; }})")  # fmt: skip
                cancelled_id = page.get_attribute("#job", "data-job-id")
                page.wait_for_selector("#cancel:not([hidden])")
                page.click("#cancel")
                page.wait_for_selector("#job[data-state=cancelled]")
                assert page.is_hidden("#cancel")
                page.wait_for_selector(f"#job-list li[data-job-id='{cancelled_id}'][data-state=cancelled]")
                job = app.state.service.store.get_job(cancelled_id)
                assert job is not None and job.state.value == "cancelled"
                page.screenshot(path=str(shots / "5-cancelled.png"), full_page=True)

                # A phone's width: one column, nothing wider than the screen.
                page.set_viewport_size({"width": 390, "height": 844})
                page.wait_for_timeout(200)
                assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
                page.screenshot(path=str(shots / "6-phone.png"), full_page=True)
                page.emulate_media(color_scheme="dark")
                page.wait_for_timeout(300)  # the colour transitions settle
                page.screenshot(path=str(shots / "7-phone-dark.png"), full_page=True)
            finally:
                browser.close()
    finally:
        server.should_exit = True
        thread.join(30)
    problems = [m for m in console if "Content Security Policy" in m or m.startswith("pageerror")]
    assert not problems, problems
    with Image.open(saved) as im:
        out = np.asarray(im.convert("RGB"))
    with Image.open(media_path("astronaut.png")) as im:
        ref = np.asarray(im.convert("RGB"))
    assert saved.suffix == ".png" and out.shape == ref.shape
    assert np.abs(out.astype(int) - ref.astype(int)).max() > 8  # a swapped face

    # Live progress: the bar's value rose between two reads while the video job was still running (not only at its
    # end), and an ETA was shown. Needs service video jobs to publish progress per frame batch (issue 22 §8).
    running = [v for s, v, _ in samples if s == "running" and v is not None]
    seen = sorted(set(running))
    assert any(a < b < 1 for a, b in itertools.pairwise(running)), f"the bar did not move while running: {seen}"
    assert any("left" in d for _, _, d in samples), sorted({d for _, _, d in samples})
