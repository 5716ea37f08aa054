"""URL imports and webhooks under the address policy (issue 22, items 1, 2 and 6).

A local HTTP server on 127.0.0.1 plays the storage host, an internal service and a host that never answers; the
operator allows loopback explicitly (``private_networks``) where a test needs to reach it at all.
"""

from __future__ import annotations

import json
import logging
import shutil
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import pytest
from serve_helpers import running_app, swap_form, wait_for_state

from faceweave.serve.executor import JobContext, JobOutcome, send_webhook
from faceweave.serve.logging import RedactingJsonFormatter
from faceweave.serve.store import Job, JobState
from faceweave.serve.urls import AddressPolicy, UrlRefused, allowed_import

pytestmark = pytest.mark.anyio
LOOPBACK = ("127.0.0.1/32",)


def _copy(ctx: JobContext) -> JobOutcome:
    # The address policy is not about faces: a copy of the fetched target keeps these tests fast.
    shutil.copy(ctx.target, ctx.output)
    return JobOutcome(ctx.output, "image", 1, {})


class _Files(BaseHTTPRequestHandler):
    """/public/t.png (an image), /public/hop → 302 to /private/t.png, /public/out → 302 to /public/t.png."""

    image = b""
    hits: list[str] = []

    def do_GET(self) -> None:  # noqa: N802
        type(self).hits.append(self.path)
        if self.path in ("/public/t.png", "/private/t.png"):
            self.send_response(200)
            self.send_header("Content-Length", str(len(self.image)))
            self.end_headers()
            self.wfile.write(self.image)
        elif self.path in ("/public/hop", "/public/ok"):
            self.send_response(302)
            self.send_header("Location", "/private/t.png" if self.path == "/public/hop" else "/public/t.png")
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self.send_error(404)

    def do_POST(self) -> None:  # noqa: N802
        type(self).hits.append(self.path)
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def files_server(media_bytes: Any) -> Iterator[str]:
    _Files.image, _Files.hits = media_bytes("astronaut.png"), []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.fixture
def silent_server() -> Iterator[str]:
    """Accepts connections and never answers (the 'slow URL' of the audit)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()


def test_file_prefix_is_checked_after_canonicalisation(tmp_path: Path) -> None:
    imports, private = tmp_path / "imports", tmp_path / "private"
    imports.mkdir()
    private.mkdir()
    (private / "x.png").write_bytes(b"secret")
    (imports / "ok.png").write_bytes(b"ok")
    (imports / "link.png").symlink_to(private / "x.png")
    prefixes = (f"file://{imports}/",)
    assert allowed_import(f"file://{imports}/ok.png", prefixes) == (imports / "ok.png").as_uri()
    for escape in (f"file://{imports}/../private/x.png", f"file://{imports}/%2e%2e/private/x.png",
                   f"file://{imports}/link.png", f"file://{imports}/..%2fprivate%2fx.png",
                   f"file://{tmp_path}/imports-evil/x.png"):  # fmt: skip
        with pytest.raises(UrlRefused):
            allowed_import(escape, prefixes)
    http = ("http://files.example/public/",)
    assert allowed_import("http://files.example/public/a.png", http)
    for escape in ("http://files.example/public/../latest/a.png", "http://files.example/public/%2E%2E/latest/a",
                   "http://files.example/public/%252e%252e/latest/a", "http://files.example:8080/public/a.png",
                   "http://user@files.example/public/a.png", "https://files.example/public/a.png"):  # fmt: skip
        with pytest.raises(UrlRefused):
            allowed_import(escape, http)


async def test_url_escapes_answer_one_error_whether_or_not_the_path_exists(tmp_path: Path, media_bytes: Any) -> None:
    imports = tmp_path / "imports"
    imports.mkdir()
    (tmp_path / "private").mkdir()
    (tmp_path / "private" / "x.png").write_bytes(media_bytes("astronaut.png"))
    (tmp_path / "private" / "notes.txt").write_text("not an image")
    async with running_app(tmp_path, job_function=_copy, url_import_prefixes=(f"file://{imports}/",)) as h:
        acme = h.headers()
        answers = []
        for name in ("x.png", "notes.txt", "does-not-exist"):
            files, data = swap_form([("s.jpg", media_bytes("obama.jpg"))], ("t", b""),
                                    target_url=f"file://{imports}/../private/{name}")  # fmt: skip
            r = await h.client.post("/v1/swaps", files=files[:1], data=data, headers=acme)
            answers.append((r.status_code, r.json()["error"]))
        assert answers[0][0] == 400 and answers[0][1]["code"] == "url_not_allowed", answers
        assert answers[0] == answers[1] == answers[2]  # nothing tells which of them exists


async def test_http_import_checks_every_redirect_hop(tmp_path: Path, media_bytes: Any, files_server: str) -> None:
    prefixes = (f"{files_server}/public/",)
    async with running_app(tmp_path, job_function=_copy, url_import_prefixes=prefixes,
                           private_networks=LOOPBACK) as h:  # fmt: skip
        acme = h.headers()
        states = {}
        for path in ("t.png", "ok", "hop"):
            files, data = swap_form([("s.jpg", media_bytes("obama.jpg"))], ("t", b""),
                                    target_url=f"{files_server}/public/{path}")  # fmt: skip
            r = await h.client.post("/v1/swaps", files=files[:1], data=data, headers=acme)
            assert r.status_code == 202, r.text
            states[path] = await wait_for_state(h.client, r.json()["id"], acme)
        assert states["t.png"]["state"] == states["ok"]["state"] == "succeeded"
        result = await h.client.get(states["ok"]["result_url"], headers=acme)
        assert result.content == media_bytes("astronaut.png")
        assert states["hop"]["state"] == "failed" and states["hop"]["error"]["code"] == "url_not_allowed"
        assert "/private/t.png" not in _Files.hits  # the redirect outside the allowlist was never followed
        files, data = swap_form([("s.jpg", media_bytes("obama.jpg"))], ("t", b""),
                                target_url=f"{files_server}/public/../private/t.png")  # fmt: skip
        r = await h.client.post("/v1/swaps", files=files[:1], data=data, headers=acme)
        assert r.status_code == 400 and r.json()["error"]["code"] == "url_not_allowed"


async def test_loopback_needs_the_operator(tmp_path: Path, media_bytes: Any, files_server: str) -> None:
    """The same allowed prefix on a loopback host fails unless the operator lists the network."""
    async with running_app(tmp_path, job_function=_copy, url_import_prefixes=(f"{files_server}/public/",)) as h:
        acme = h.headers()
        files, data = swap_form([("s.jpg", media_bytes("obama.jpg"))], ("t", b""),
                                target_url=f"{files_server}/public/t.png")  # fmt: skip
        r = await h.client.post("/v1/swaps", files=files[:1], data=data, headers=acme)
        job = await wait_for_state(h.client, r.json()["id"], acme)
        assert job["state"] == "failed" and job["error"]["code"] == "url_not_allowed"
        assert _Files.hits == []


def test_address_policy() -> None:
    import ipaddress

    policy = AddressPolicy.of([])
    for ip in ("127.0.0.1", "10.1.2.3", "169.254.169.254", "192.168.0.1", "::1", "fe80::1", "::ffff:127.0.0.1",
               "100.64.0.1", "0.0.0.0", "224.0.0.1"):  # fmt: skip
        assert not policy.allows(ipaddress.ip_address(ip)), ip
    assert policy.allows(ipaddress.ip_address("93.184.215.14"))
    assert AddressPolicy.of(["10.0.0.0/8"]).allows(ipaddress.ip_address("10.1.2.3"))


async def test_webhook_to_internal_addresses_is_refused(tmp_path: Path, media_bytes: Any, files_server: str) -> None:
    async with running_app(tmp_path, job_function=_copy) as h:
        acme = h.headers()
        for hook in (f"{files_server}/internal", "http://169.254.169.254/latest/meta-data", "http://[::1]:9/x",
                     "http://localhost:9/x", "ftp://example.com/x"):  # fmt: skip
            files, data = swap_form([("s.jpg", media_bytes("obama.jpg"))], ("t.png", media_bytes("astronaut.png")),
                                    webhook_url=hook)  # fmt: skip
            r = await h.client.post("/v1/swaps", files=files, data=data, headers=acme)
            assert r.status_code == 400 and r.json()["error"]["code"] == "url_not_allowed", (hook, r.text)
    assert _Files.hits == []


def test_webhook_address_is_checked_again_at_delivery(files_server: str) -> None:
    """DNS can change after submit: delivery re-checks, and its log lines carry the job id."""
    job = Job(
        id="job123", tenant="t", state=JobState.succeeded,
        media_kind="image", created_at=0, updated_at=0, started_at=0, finished_at=1, settings={}, source_keys=[],
        target_key="", result_key=None, result_bytes=0, stored_bytes=0, frames_done=1, frames_total=1, fps=0.0,
        eta_s=0.0, stage="done", faces_swapped=1, error_type=None, error_code=None, error_message=None, attempts=1,
        webhook_url=None, expired=False,
    )  # fmt: skip
    formatter, formatted = RedactingJsonFormatter(), []
    handler = logging.Handler()
    handler.emit = lambda record: formatted.append(json.loads(formatter.format(record)))  # type: ignore[method-assign]
    logger = logging.getLogger("faceweave")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        assert not send_webhook(f"{files_server}/hook", job, None, 2.0, AddressPolicy.of([]))
        assert _Files.hits == []
        assert send_webhook(f"{files_server}/hook", job, None, 2.0, AddressPolicy.of(LOOPBACK))
        assert _Files.hits == ["/hook"]
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    lines = [line for line in formatted if "webhook" in line["message"]]
    assert lines and all(line["job_id"] == "job123" for line in lines), lines
    assert any("refused" in line["message"] for line in lines) and any("delivered" in r["message"] for r in lines)
    assert all("127.0.0.1" not in line["message"] for line in lines)  # the host is redacted


async def test_slow_urls_do_not_starve_the_server(tmp_path: Path, media_bytes: Any, silent_server: str) -> None:
    async with running_app(tmp_path, job_function=_copy, url_import_prefixes=(f"{silent_server}/",),
                           private_networks=LOOPBACK, url_read_timeout_s=1.0, url_total_timeout_s=2.0,
                           max_concurrent_jobs=100, workers=2) as h:  # fmt: skip
        acme = h.headers()
        ids = []
        with anyio.fail_after(15):  # no fetch on the request: each submit answers at once
            for i in range(50):
                files, data = swap_form([("s.jpg", media_bytes("obama.jpg"))], ("t", b""),
                                        target_url=f"{silent_server}/slow{i}.png")  # fmt: skip
                r = await h.client.post("/v1/swaps", files=files[:1], data=data, headers=acme)
                assert r.status_code == 202, r.text
                ids.append(r.json()["id"])
        with anyio.fail_after(5):
            assert (await h.client.get("/v1/swaps", headers=acme)).status_code == 200
            assert (await h.client.get("/metrics")).status_code == 200
            assert (await h.client.get("/readyz")).status_code == 200
        job = await wait_for_state(h.client, ids[0], acme, timeout_s=30)
        assert job["state"] == "failed" and job["error"]["code"] == "url_fetch_failed", job


async def test_readyz_reports_a_starved_thread_pool(tmp_path: Path) -> None:
    async with running_app(tmp_path) as h:
        assert (await h.client.get("/readyz")).status_code == 200
        limiter = anyio.to_thread.current_default_thread_limiter()
        holders = [object() for _ in range(int(limiter.total_tokens) - limiter.borrowed_tokens)]
        for holder in holders:
            limiter.acquire_on_behalf_of_nowait(holder)
        try:
            r = await h.client.get("/readyz")
            assert r.status_code == 503 and "thread" in r.json()["error"]["message"], r.text
        finally:
            for holder in holders:
                limiter.release_on_behalf_of(holder)
        assert (await h.client.get("/readyz")).status_code == 200
