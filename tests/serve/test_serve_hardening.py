"""Service hardening (issue 22): operator-only settings, atomic quotas, bounded bodies, failed-auth limits, image
decode budget, security headers, log fields and the GPU gauge. Each test reproduces an audit finding."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import struct
import threading
import time
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from serve_helpers import running_app, swap_form, wait_for_state

from faceweave.serve.executor import JobContext, JobOutcome
from faceweave.serve.inputs import SERVICE_ONLY_FIELDS
from faceweave.serve.logging import RedactingJsonFormatter

pytestmark = pytest.mark.anyio


def _copy(ctx: JobContext) -> JobOutcome:
    shutil.copy(ctx.target, ctx.output)
    return JobOutcome(ctx.output, "image", 1, {})


OPERATOR_VALUES = {"model_dir": "/tmp", "device": "cpu", "devices": "cpu,cpu", "dtype": "float32", "batch_size": 2,
                   "workers": 4, "cuda_graphs": False,
                   # provenance marks: a client must never turn them off (issue 24)
                   "watermark": False, "c2pa": False, "c2pa_cert": "/tmp/c.pem", "c2pa_key": "/tmp/k.pem"}  # fmt: skip


async def test_clients_cannot_choose_server_resources(tmp_path: Path, media_bytes: Any) -> None:
    assert set(OPERATOR_VALUES) == SERVICE_ONLY_FIELDS
    async with running_app(tmp_path, job_function=_copy) as h:
        acme = h.headers()
        for name, value in OPERATOR_VALUES.items():
            files, data = swap_form([("s.jpg", media_bytes("obama.jpg"))], ("t.png", media_bytes("astronaut.png")),
                                    settings={name: value})  # fmt: skip
            for route in ("/v1/swaps", "/v1/swaps:sync"):
                r = await h.client.post(route, files=files, data=data, headers=acme)
                assert r.status_code == 422, (name, route, r.text)
                error = r.json()["error"]
                assert error["code"] == "invalid_option" and f"settings.{name}" in error["message"], error
        files, data = swap_form([("s.jpg", media_bytes("obama.jpg"))], ("t.png", media_bytes("astronaut.png")),
                                settings={"selector": "many", "crf": 20})  # fmt: skip
        assert (await h.client.post("/v1/swaps", files=files, data=data, headers=acme)).status_code == 202


async def test_concurrent_submits_respect_the_job_quota(tmp_path: Path, media_bytes: Any) -> None:
    gate = threading.Event()

    def held(ctx: JobContext) -> JobOutcome:
        gate.wait(60)
        return _copy(ctx)

    async with running_app(tmp_path, job_function=held, max_concurrent_jobs=4) as h:
        acme = h.headers()
        files, data = swap_form([("s.jpg", media_bytes("obama.jpg"))], ("t.png", media_bytes("astronaut.png")))
        answers = await asyncio.gather(
            *[h.client.post("/v1/swaps", files=files, data=data, headers=acme) for _ in range(20)]
        )
        codes = sorted(r.status_code for r in answers)
        gate.set()
        assert codes == [202] * 4 + [429] * 16, codes
        refused = [r.json()["error"]["code"] for r in answers if r.status_code == 429]
        assert set(refused) == {"quota_exceeded"}
        media = tmp_path / "data" / "media"
        assert len([p for p in media.rglob("target.png")]) == 4  # refused submits kept no uploads


def _chunked_form(boundary: str, parts: int, size: int) -> AsyncIterator[bytes]:
    async def gen() -> AsyncIterator[bytes]:
        for _ in range(parts):
            yield (f'--{boundary}\r\nContent-Disposition: form-data; name="settings"\r\n\r\n').encode()
            yield b"x" * size + b"\r\n"
        yield f"--{boundary}--\r\n".encode()

    return gen()


async def test_bodies_are_bounded_with_or_without_content_length(tmp_path: Path) -> None:
    async with running_app(tmp_path, max_upload_bytes=100_000, max_sources=1) as h:
        headers = {**h.headers(), "content-type": "multipart/form-data; boundary=b0undary"}
        # Chunked (no Content-Length): 3 MiB of 60 kB fields, over the 1.2 MB budget → 413 while streaming.
        r = await h.client.post("/v1/swaps", content=_chunked_form("b0undary", 52, 60_000), headers=headers)
        assert r.status_code in (400, 413), r.text
        assert r.json()["error"]["code"] in ("media_too_large", "bad_request")
        # Under the byte budget, but thousands of tiny parts: refused by count.
        r = await h.client.post("/v1/swaps", content=_chunked_form("b0undary", 5_000, 10), headers=headers)
        assert r.status_code == 400 and "parts" in r.json()["error"]["message"], r.text
        # Many fields each under 64 KiB: refused by their total.
        r = await h.client.post("/v1/swaps", content=_chunked_form("b0undary", 8, 60_000), headers=headers)
        assert r.status_code == 400 and "256 KiB" in r.json()["error"]["message"], r.text
        # A declared Content-Length over the budget is refused before any byte is read.
        r = await h.client.post("/v1/swaps", content=b"x" * 10, headers={**headers, "content-length": str(10**9)})
        assert r.status_code == 413 and r.json()["error"]["code"] == "media_too_large"


async def test_a_stalled_body_times_out(tmp_path: Path) -> None:
    async def stalled() -> AsyncIterator[bytes]:
        yield b'--b0undary\r\nContent-Disposition: form-data; name="consent"\r\n\r\n'
        await asyncio.sleep(30)
        yield b"true\r\n--b0undary--\r\n"

    async with running_app(tmp_path, request_body_timeout_s=0.5) as h:
        headers = {**h.headers(), "content-type": "multipart/form-data; boundary=b0undary"}
        t0 = time.monotonic()
        r = await h.client.post("/v1/swaps", content=stalled(), headers=headers)
        assert r.status_code == 408 and r.json()["error"]["code"] == "request_timeout", r.text
        assert time.monotonic() - t0 < 10


async def test_failed_authentication_is_rate_limited(tmp_path: Path) -> None:
    async with running_app(tmp_path, auth_failure_burst=5, auth_failures_per_minute=1) as h:
        codes = [(await h.client.get("/v1/swaps", headers={"Authorization": f"Bearer fw_wrong{i}"})).status_code
                 for i in range(12)]  # fmt: skip
        assert codes[:5] == [401] * 5 and set(codes[5:]) == {429}, codes
        r = await h.client.get("/v1/swaps", headers={"Authorization": "Bearer fw_wrong"})
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1


async def test_401_messages_name_no_library_classes(tmp_path: Path) -> None:
    async with running_app(tmp_path, jwt_secret="s" * 32) as h:
        forged = jwt.encode({"tenant": "acme", "aud": "faceweave", "exp": time.time() + 60}, "x" * 32)
        for token in (forged, "not.a.jwt", "eyJhbGciOiJub25lIn0.e30."):
            r = await h.client.get("/v1/swaps", headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 401
            message = r.json()["error"]["message"]
            assert "Error" not in message and "Decode" not in message and "Signature" not in message, message


def _png_header(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    idat = zlib.compress(b"\x00" * 64)
    head = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))
    return head + struct.pack(">I", len(idat)) + b"IDAT" + idat + struct.pack(">I", zlib.crc32(b"IDAT" + idat))


async def test_huge_pixel_images_are_refused_from_the_header(tmp_path: Path, media_bytes: Any) -> None:
    """A tiny PNG declaring 39.7 MP (under MAX_PIXELS) would take ~1 GB to decode: over the per-job budget."""
    async with running_app(tmp_path, job_function=_copy) as h:
        files, data = swap_form([("s.jpg", media_bytes("obama.jpg"))], ("t.png", _png_header(6300, 6300)))
        r = await h.client.post("/v1/swaps", files=files, data=data, headers=h.headers())
        assert r.status_code == 413 and "budget" in r.json()["error"]["message"], r.text


async def test_security_headers_and_no_key_in_local_storage(tmp_path: Path) -> None:
    async with running_app(tmp_path) as h:
        for path in ("/", "/static/app.js", "/healthz", "/v1/swaps"):
            r = await h.client.get(path)
            assert r.headers["x-content-type-options"] == "nosniff", path
            assert "frame-ancestors 'none'" in r.headers["content-security-policy"], path
        assert "script-src 'self'" in (await h.client.get("/")).headers["content-security-policy"]
        script = (await h.client.get("/static/app.js")).text
        # the key is kept for the tab only; the page may only clear what an older page left in localStorage
        assert "localStorage.setItem" not in script and "localStorage.getItem" not in script
        assert "sessionStorage.setItem" in script


async def test_request_logs_carry_tenant_and_credential(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="faceweave")
    async with running_app(tmp_path) as h:
        assert (await h.client.get("/v1/swaps", headers=h.headers("acme"))).status_code == 200
    formatter = RedactingJsonFormatter()
    lines = [json.loads(formatter.format(r)) for r in caplog.records if r.getMessage() == "request"]
    listed = [line for line in lines if line.get("route") == "/v1/swaps"]
    assert listed and listed[0]["tenant"] == "acme" and listed[0]["credential_id"].startswith("key:"), listed


async def test_metrics_export_the_gpu_count(tmp_path: Path) -> None:
    from faceweave.serve.metrics import gpu_count

    async with running_app(tmp_path) as h:
        text = (await h.client.get("/metrics")).text
    assert f"faceweave_gpus {float(gpu_count())}" in text, text[:2000]


async def test_url_jobs_wait_for_the_job(tmp_path: Path, media_bytes: Any) -> None:
    """The docs example (file: prefix) still works end to end: the job fetches, probes and swaps."""
    imports = tmp_path / "imports"
    imports.mkdir()
    (imports / "t.png").write_bytes(media_bytes("astronaut.png"))
    async with running_app(tmp_path, job_function=_copy, url_import_prefixes=(f"file://{imports}/",)) as h:
        acme = h.headers()
        files, data = swap_form([("s.jpg", media_bytes("obama.jpg"))], ("t", b""), target_url=f"file://{imports}/t.png")
        r = await h.client.post("/v1/swaps", files=files[:1], data=data, headers=acme)
        assert r.status_code == 202, r.text
        job = await wait_for_state(h.client, r.json()["id"], acme)
        assert job["state"] == "succeeded", job
        assert (await h.client.get(job["result_url"], headers=acme)).content == media_bytes("astronaut.png")
