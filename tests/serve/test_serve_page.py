"""The web page in headless Debian chromium (Playwright): upload, watch progress, download, screenshot."""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import uvicorn
from PIL import Image

from faceweave.data import media_path
from faceweave.serve.app import create_app
from faceweave.serve.auth import create_api_key
from faceweave.serve.settings import ServiceSettings

CHROMIUM = Path("/usr/bin/chromium")


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian chromium at /usr/bin/chromium (apt install chromium)")
def test_page_upload_progress_download(tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    app = create_app(ServiceSettings(data_dir=tmp_path / "data", warmup=False))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
            time.sleep(0.05)
        key = create_api_key(app.state.service.store, "web")
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox", "--disable-background-networking"]
            )
            try:
                page = browser.new_page(accept_downloads=True)
                page.set_default_timeout(120_000)
                page.goto(f"http://127.0.0.1:{port}/")
                assert page.title() == "faceweave"
                page.fill("#api-key", key)
                page.set_input_files("#source", str(media_path("obama.jpg")))
                page.set_input_files("#target", str(media_path("astronaut.png")))
                page.check("#consent")
                page.click("#submit")
                page.wait_for_selector("#job:not([hidden])")
                page.wait_for_function("document.getElementById('job-state').textContent === 'succeeded'")
                assert page.eval_on_selector("#progress", "el => el.value") == 1
                page.wait_for_selector("#preview")
                page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
                with page.expect_download() as info:
                    page.click("#download")
                saved = tmp_path / info.value.suggested_filename
                info.value.save_as(saved)
            finally:
                browser.close()
    finally:
        server.should_exit = True
        thread.join(30)
    assert saved.suffix == ".png" and (tmp_path / "page.png").stat().st_size > 10_000
    with Image.open(saved) as im:
        out = np.asarray(im.convert("RGB"))
    with Image.open(media_path("astronaut.png")) as im:
        ref = np.asarray(im.convert("RGB"))
    assert out.shape == ref.shape and np.abs(out.astype(int) - ref.astype(int)).max() > 8  # a swapped face
    assert os.path.getsize(saved) > 1000
