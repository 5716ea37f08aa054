"""Live-session signalling: the same gate as jobs (auth, consent, settings) and the live-session limits, in-process.
The WebRTC media path itself is tested with a browser in tests/live/test_live_page.py."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image
from serve_helpers import running_app

pytest.importorskip("aiortc", reason="live mode needs the 'live' extra (aiortc)")

pytestmark = pytest.mark.anyio
OFFER = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"  # the gate answers before the SDP is read


def _form(photo: bytes, **fields: str) -> tuple[list[tuple[str, tuple[str, bytes, str]]], dict[str, str]]:
    return [("source", ("me.jpg", photo, "application/octet-stream"))], {"sdp": OFFER, "type": "offer", **fields}


def _blank_png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (200, 200), (120, 130, 140)).save(buf, format="PNG")
    return buf.getvalue()


async def test_live_offer_gate_and_limits(tmp_path: Path, media_bytes: object) -> None:
    photo = media_bytes("obama.jpg")  # type: ignore[operator]
    async with running_app(tmp_path, live_sessions_per_key=0) as h:
        files, data = _form(photo, consent="true")
        r = await h.client.post("/v1/live/offer", files=files, data=data)
        assert r.status_code == 401
        r = await h.client.post("/v1/live/offer", files=files, data=data, headers=h.headers())
        assert r.status_code == 429 and r.json()["error"]["code"] == "quota_exceeded"
        assert "live session" in r.json()["error"]["message"]
        assert 'faceweave_live_sessions_refused_total{limit="key"} 1.0' in (await h.client.get("/metrics")).text
    async with running_app(tmp_path / "b", live_sessions_per_gpu=0) as h:
        r = await h.client.post("/v1/live/offer", files=files, data=data, headers=h.headers())
        assert r.status_code == 429 and "slots of this server are in use" in r.json()["error"]["message"]
    async with running_app(tmp_path / "c") as h:
        headers = h.headers()
        files, data = _form(photo)  # no consent
        r = await h.client.post("/v1/live/offer", files=files, data=data, headers=headers)
        assert r.status_code == 422 and r.json()["error"]["code"] == "consent_required"
        files, data = _form(photo, consent="true", settings='{"swapper": "inswapper_128"}')
        r = await h.client.post("/v1/live/offer", files=files, data=data, headers=headers)
        assert r.status_code == 422 and "cannot set swapper" in r.json()["error"]["message"]
        files, data = _form(_blank_png(), consent="true")
        r = await h.client.post("/v1/live/offer", files=files, data=data, headers=headers)
        assert r.status_code == 422 and r.json()["error"]["code"] == "no_face_in_source"
        assert h.app.state.live_hub.sessions == {}  # every refused offer gave its slot back
        r = await h.client.get("/live")
        assert r.status_code == 200 and '<script src="/static/live.js">' in r.text and "<script>" not in r.text
        shared = h.app.state.live_hub._engine  # made to read the source photo
        assert shared is not None
        threads = [b._thread for b in shared._batchers()]
        assert all(t.is_alive() for t in threads)
    # the app's shutdown stops the shared live engine's threads (they outlived the app before)
    assert not any(t.is_alive() for t in threads)
