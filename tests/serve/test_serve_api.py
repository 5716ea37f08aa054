"""In-process API tests (httpx ASGITransport) with the real pipeline and real faces."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest
from PIL import Image
from serve_helpers import running_app, swap_form, wait_for_state

from faceweave.media.image import read_image_metadata
from faceweave.progress import Progress
from faceweave.serve.app import sweep_expired
from faceweave.serve.executor import JobContext, JobOutcome, run_swap

pytestmark = pytest.mark.anyio


def _parse_sse(text: str) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]


class _WebhookSink(BaseHTTPRequestHandler):
    received: list[tuple[dict[str, str], bytes]] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers["content-length"]))
        type(self).received.append(({k.lower(): v for k, v in self.headers.items()}, body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


async def test_job_lifecycle_with_real_faces(tmp_path: Path, media_bytes: Any) -> None:
    sink = HTTPServer(("127.0.0.1", 0), _WebhookSink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    _WebhookSink.received = []
    try:
        async with running_app(tmp_path, webhook_secret="hook-secret", private_networks=("127.0.0.1/32",)) as h:
            acme, other = h.headers("acme"), h.headers("globex")
            assert (await h.client.get("/healthz")).json() == {"status": "ok"}
            assert (await h.client.get("/readyz")).status_code == 200
            models = (await h.client.get("/v1/models", headers=acme)).json()
            assert "mesh" in models["swappers"] and "blazeface" in models["detectors"]

            target = media_bytes("astronaut.png")
            files, data = swap_form([("me.jpg", media_bytes("obama.jpg"))], ("them.png", target),
                                    settings={"blend": "feather"},
                                    webhook_url=f"http://127.0.0.1:{sink.server_port}/hook")  # fmt: skip
            r = await h.client.post("/v1/swaps", files=files, data=data, headers=acme)
            assert r.status_code == 202, r.text
            job = r.json()
            assert job["state"] in ("queued", "running") and r.headers["location"] == f"/v1/swaps/{job['id']}"
            assert job["settings"]["blend"] == "feather"

            events = _parse_sse((await h.client.get(f"/v1/swaps/{job['id']}/events", headers=acme)).text)
            assert events and events[-1]["state"] == "succeeded", events
            done = (await h.client.get(f"/v1/swaps/{job['id']}", headers=acme)).json()
            assert done["state"] == "succeeded" and done["faces_swapped"] == 1 and done["error"] is None
            assert done["started_at"] <= done["finished_at"] and done["progress"]["frames_done"] == 1

            result = await h.client.get(done["result_url"], headers=acme)
            assert result.status_code == 200 and result.headers["content-type"] == "image/png"
            assert int(result.headers["content-length"]) == done["result_bytes"] == len(result.content)
            out = np.asarray(Image.open(io.BytesIO(result.content)).convert("RGB"))
            tgt = np.asarray(Image.open(io.BytesIO(target)).convert("RGB"))
            assert out.shape == tgt.shape
            changed = np.abs(out.astype(int) - tgt.astype(int)).max(axis=2) > 8
            assert 0.005 < changed.mean() < 0.5  # the face changed, the rest of the picture did not
            (tmp_path / "result.png").write_bytes(result.content)
            assert read_image_metadata(tmp_path / "result.png").get("faceweave:synthetic") == "true"

            part = await h.client.get(done["result_url"], headers={**acme, "Range": "bytes=10-19"})
            assert part.status_code == 206 and part.content == result.content[10:20]
            assert part.headers["content-range"] == f"bytes 10-19/{len(result.content)}"
            tail = await h.client.get(done["result_url"], headers={**acme, "Range": "bytes=-5"})
            assert tail.status_code == 206 and tail.content == result.content[-5:]
            bad = await h.client.get(done["result_url"], headers={**acme, "Range": f"bytes={10**9}-"})
            assert bad.status_code == 416 and bad.json()["error"]["code"] == "range_not_satisfiable"

            listed = (await h.client.get("/v1/swaps?state=succeeded&limit=1", headers=acme)).json()
            assert listed["total"] == 1 and listed["items"][0]["id"] == job["id"]
            assert (await h.client.get("/v1/swaps?state=queued", headers=acme)).json()["total"] == 0
            assert (await h.client.get("/v1/swaps", headers=other)).json()["total"] == 0
            for method, path in [("GET", ""), ("GET", "/result"), ("GET", "/events"), ("DELETE", "")]:
                r = await h.client.request(method, f"/v1/swaps/{job['id']}{path}", headers=other)
                assert r.status_code == 404 and r.json()["error"]["code"] == "job_not_found"

            sync = await h.client.post("/v1/swaps:sync", files=files[:2], data={"consent": "true"}, headers=acme)
            assert sync.status_code == 200 and sync.headers["content-type"] == "image/png", sync.text[:300]
            assert sync.headers["x-faceweave-faces-swapped"] == "1"
            assert np.asarray(Image.open(io.BytesIO(sync.content))).shape == tgt.shape

            deleted = (await h.client.delete(f"/v1/swaps/{job['id']}", headers=acme)).json()
            assert deleted["state"] == "succeeded" and deleted["expired"] and deleted["result_url"] is None
            gone = await h.client.get(done["result_url"], headers=acme)
            assert gone.status_code == 410 and gone.json()["error"]["code"] == "result_expired"

            metrics = (await h.client.get("/metrics")).text
            assert 'faceweave_jobs{state="succeeded"} 1.0' in metrics
            assert 'faceweave_http_requests_total{method="POST",route="/v1/swaps",status="202"} 1.0' in metrics
            assert "faceweave_stage_duration_seconds_count" in metrics

            with anyio.fail_after(20):  # the webhook is sent from a thread after the job finished
                while not _WebhookSink.received:
                    await anyio.sleep(0.05)
        headers, body = _WebhookSink.received[0]
        payload = json.loads(body)
        assert payload["job"]["id"] == job["id"] and payload["job"]["state"] == "succeeded"
        mac = hmac.new(b"hook-secret", headers["x-faceweave-timestamp"].encode() + b"." + body, hashlib.sha256)
        assert headers["x-faceweave-signature"] == "sha256=" + mac.hexdigest()
    finally:
        sink.shutdown()


async def test_failed_cancelled_and_queued_states(tmp_path: Path, media_bytes: Any, media: Any) -> None:
    """queued → cancelled, running → cancelled and running → failed (no face in the source), real pipeline."""
    gate = threading.Event()

    def gated(ctx: JobContext) -> JobOutcome:
        # Hold the first job in `running` until the test lets go; progress events are how cancellation lands.
        ctx.progress(Progress(stage="prepare", frames_done=0, frames_total=1))
        deadline = time.monotonic() + 30
        while not gate.is_set() and time.monotonic() < deadline:
            ctx.progress(Progress(stage="prepare", frames_done=0, frames_total=1))
            time.sleep(0.02)
        return run_swap(ctx)

    import av

    with av.open(str(media.path("bigbuckbunny.mp4"))) as container:  # real footage without faces
        frame = next(container.decode(video=0)).to_ndarray(format="rgb24")
    buf = io.BytesIO()
    Image.fromarray(frame).resize((320, 180)).save(buf, "PNG")
    no_face = buf.getvalue()

    async with running_app(tmp_path, job_function=gated, workers=1) as h:
        acme = h.headers()
        files, data = swap_form([("a.jpg", media_bytes("obama.jpg"))], ("t.png", media_bytes("astronaut.png")))
        first = (await h.client.post("/v1/swaps", files=files, data=data, headers=acme)).json()
        second = (await h.client.post("/v1/swaps", files=files, data=data, headers=acme)).json()
        await wait_for_state(h.client, first["id"], acme, ("running",))
        queued = (await h.client.get(f"/v1/swaps/{second['id']}", headers=acme)).json()
        assert queued["state"] == "queued"
        assert (await h.client.delete(f"/v1/swaps/{second['id']}", headers=acme)).json()["state"] == "cancelled"
        assert (await h.client.delete(f"/v1/swaps/{first['id']}", headers=acme)).json()["state"] == "cancelled"
        final = await wait_for_state(h.client, first["id"], acme)
        assert final["state"] == "cancelled" and final["result_url"] is None
        gate.set()

        files, data = swap_form([("a.png", no_face)], ("t.png", media_bytes("astronaut.png")))
        failing = (await h.client.post("/v1/swaps", files=files, data=data, headers=acme)).json()
        failed = await wait_for_state(h.client, failing["id"], acme)
        assert failed["state"] == "failed"
        assert failed["error"]["code"] == "no_face_in_source" and failed["error"]["type"] == "NoFaceInSource"
        assert failed["error"]["message"]
        r = await h.client.get(f"/v1/swaps/{failing['id']}/result", headers=acme)
        assert r.status_code == 409 and r.json()["error"]["code"] == "result_not_ready"
        counts = (await h.client.get("/v1/swaps?state=cancelled", headers=acme)).json()
        assert counts["total"] == 2

        # Retention: finished jobs' uploads and results are deleted once older than the retention.
        media_root = tmp_path / "data" / "media"
        assert list(media_root.rglob("target.*"))
        assert sweep_expired(h.svc, now=time.time() + 10) == 0
        assert sweep_expired(h.svc, now=time.time() + h.svc.settings.retention_s + 1) == 1
        assert not list(media_root.rglob("target.*"))
        assert (await h.client.get(f"/v1/swaps/{failing['id']}", headers=acme)).json()["expired"]


async def test_readyz_waits_for_warm_models(tmp_path: Path) -> None:
    warm = threading.Event()
    async with running_app(tmp_path, warmup=lambda state: warm.wait(30)) as h:
        r = await h.client.get("/readyz")
        assert r.status_code == 503 and r.json()["error"]["code"] == "not_ready"
        warm.set()
        with anyio.fail_after(10):
            while (await h.client.get("/readyz")).status_code != 200:
                await anyio.sleep(0.02)


async def test_rate_limit_quota_retention_and_moderation(tmp_path: Path, media_bytes: Any) -> None:
    never = threading.Event()

    def stuck(ctx: JobContext) -> JobOutcome:  # keeps jobs active to exercise the concurrency quota
        while not never.wait(0.02):
            ctx.progress(Progress(stage="swap", frames_done=0, frames_total=None))
        raise AssertionError("unreachable")

    async with running_app(tmp_path, job_function=stuck, rate_limit_per_minute=60, rate_limit_burst=5,
                           max_concurrent_jobs=1, moderation="serve_policy_hooks:reject_videos") as h:  # fmt: skip
        acme = h.headers()
        files, data = swap_form([("a.jpg", media_bytes("obama.jpg"))], ("t.png", media_bytes("astronaut.png")))
        job = (await h.client.post("/v1/swaps", files=files, data=data, headers=acme)).json()
        r = await h.client.post("/v1/swaps", files=files, data=data, headers=acme)
        assert r.status_code == 429 and r.json()["error"]["code"] == "quota_exceeded"
        assert int(r.headers["retry-after"]) >= 1
        await h.client.delete(f"/v1/swaps/{job['id']}", headers=acme)

        video_files, data = swap_form([("a.jpg", media_bytes("obama.jpg"))],
                                      ("t.mp4", media_bytes("carphone_pristine.mp4")))  # fmt: skip
        r = await h.client.post("/v1/swaps", files=video_files, data=data, headers=acme)
        assert r.status_code == 422 and r.json()["error"]["code"] == "policy_rejected"
        assert "videos are not allowed" in r.json()["error"]["message"]

        statuses = [(await h.client.get("/v1/swaps", headers=acme)).status_code for _ in range(3)]
        assert statuses[-1] == 429
        r = await h.client.get("/v1/swaps", headers=acme)
        assert r.status_code == 429 and 1 <= int(r.headers["retry-after"]) <= 2
        assert (await h.client.get("/v1/swaps", headers=h.headers("other"))).status_code == 200  # per key

        never.set()
        cancelled = h.svc.store.get_job(job["id"])  # DELETE cancelled the job and deleted its media
        assert cancelled is not None and cancelled.state.value == "cancelled" and cancelled.expired
        assert not list((tmp_path / "data" / "media").rglob("target.*"))


async def test_storage_quota(tmp_path: Path, media_bytes: Any) -> None:
    async with running_app(tmp_path, max_storage_bytes=500_000) as h:
        files, data = swap_form([("a.jpg", media_bytes("obama.jpg"))], ("t.png", media_bytes("astronaut.png")))
        r = await h.client.post("/v1/swaps", files=files, data=data, headers=h.headers())
        assert r.status_code == 429 and r.json()["error"]["code"] == "quota_exceeded"
        assert "storage" in r.json()["error"]["message"] and int(r.headers["retry-after"]) > 0
        assert not list((tmp_path / "data" / "media").rglob("*.png"))  # nothing of the refused job was kept
