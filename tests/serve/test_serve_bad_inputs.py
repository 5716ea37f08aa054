"""The bad-input corpus: every case answers its documented 4xx with a JSON error body, and the server stays
healthy (a real swap still works afterwards)."""

from __future__ import annotations

import io
import struct
import time
import zlib
from pathlib import Path
from typing import Any

import jwt
import pytest
from PIL import Image
from serve_helpers import running_app, swap_form

pytestmark = pytest.mark.anyio
SECRET = "corpus-secret-0123456789abcdef0123"


def _png_header(width: int, height: int) -> bytes:
    """A valid PNG signature + IHDR declaring ``width × height`` and one tiny IDAT: a decompression-bomb header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _unsigned_token() -> str:
    claims = {"tenant": "acme", "aud": "faceweave", "exp": int(time.time()) + 600}
    return jwt.encode(claims, None, algorithm="none")  # type: ignore[arg-type]


def _mp(form: tuple[Any, Any]) -> dict[str, Any]:
    return {"files": form[0], "data": form[1]}


def _token(**claims: Any) -> str:
    base = {"tenant": "acme", "aud": "faceweave", "exp": int(time.time()) + 600}
    base.update(claims)
    return jwt.encode({k: v for k, v in base.items() if v is not None}, SECRET, algorithm="HS256")


async def test_bad_input_corpus(tmp_path: Path, media_bytes: Any, media: Any) -> None:
    import av

    with av.open(str(media.path("bigbuckbunny.mp4"))) as container:  # real footage without faces
        frame = next(container.decode(video=0)).to_ndarray(format="rgb24")
    buf = io.BytesIO()
    Image.fromarray(frame).resize((320, 180)).save(buf, "PNG")
    no_face = buf.getvalue()
    face, target = media_bytes("obama.jpg"), media_bytes("astronaut.png")
    video = media_bytes("carphone_pristine.mp4")  # 4.0 s, 120 frames

    async with running_app(tmp_path, jwt_secret=SECRET, max_duration_s=3.0, max_upload_bytes=1_500_000) as h:
        acme, other = h.headers("acme"), h.headers("globex")
        files, data = swap_form([("a.jpg", face)], ("t.png", target))
        foreign = (await h.client.post("/v1/swaps", files=files, data=data, headers=other)).json()["id"]

        def job(target_file: tuple[str, bytes], **kw: Any) -> tuple[Any, Any]:
            return swap_form([("a.jpg", face)], target_file, **kw)

        corpus: list[tuple[str, str, str, dict[str, Any], int, str]] = [
            # (name, method, path, request kwargs, status, error code)
            ("zero-byte", "POST", "/v1/swaps", _mp(job(("t.png", b""))), 400, "empty_media"),
            (
                "truncated mp4",
                "POST",
                "/v1/swaps",
                _mp(job(("t.mp4", video[: len(video) // 2]))),
                400,
                "truncated_media",
            ),
            (
                "text named .png",
                "POST",
                "/v1/swaps",
                _mp(job(("photo.png", b"just some text, not an image\n" * 10))),
                415,
                "unsupported_media",
            ),
            (
                "30000x30000 PNG header",
                "POST",
                "/v1/swaps",
                _mp(job(("big.png", _png_header(30000, 30000)))),
                413,
                "media_too_large",
            ),
            ("over-long video", "POST", "/v1/swaps", _mp(job(("t.mp4", video))), 413, "media_too_large"),
            (
                "over byte limit",
                "POST",
                "/v1/swaps",
                _mp(job(("t.png", target + b"\0" * 1_000_000))),
                413,
                "media_too_large",
            ),
            (
                "video as source",
                "POST",
                "/v1/swaps",
                _mp(swap_form([("a.mp4", video[:200_000])], ("t.png", target))),
                400,
                "truncated_media",
            ),
            (
                "no face (sync)",
                "POST",
                "/v1/swaps:sync",
                _mp(swap_form([("a.png", no_face)], ("t.png", target))),
                422,
                "no_face_in_source",
            ),
            (
                "missing consent",
                "POST",
                "/v1/swaps",
                _mp(job(("t.png", target), consent=None)),
                422,
                "consent_required",
            ),
            ("consent false", "POST", "/v1/swaps", _mp(job(("t.png", target), consent=False)), 422, "consent_required"),
            (
                "unknown option",
                "POST",
                "/v1/swaps",
                _mp(job(("t.png", target), settings={"colour_magic": 3})),
                422,
                "invalid_option",
            ),
            (
                "bad option value",
                "POST",
                "/v1/swaps",
                _mp(job(("t.png", target), settings={"selector": "everyone"})),
                422,
                "invalid_option",
            ),
            (
                "server path option",
                "POST",
                "/v1/swaps",
                _mp(job(("t.png", target), settings={"model_dir": "/etc"})),
                422,
                "invalid_option",
            ),
            ("no target", "POST", "/v1/swaps", {"files": files[:1], "data": data}, 400, "bad_request"),
            ("not multipart", "POST", "/v1/swaps", {"json": {"target": "x"}}, 400, "bad_request"),
            ("another tenant's job", "GET", f"/v1/swaps/{foreign}", {}, 404, "job_not_found"),
            ("another tenant's result", "GET", f"/v1/swaps/{foreign}/result", {}, 404, "job_not_found"),
            ("unknown job", "GET", "/v1/swaps/0123456789abcdef", {}, 404, "job_not_found"),
            ("bad state filter", "GET", "/v1/swaps?state=done", {}, 422, "invalid_request"),
            (
                "video to :sync",
                "POST",
                "/v1/swaps:sync",
                _mp(swap_form([("a.jpg", face)], ("t.mp4", video))),
                413,
                "media_too_large",
            ),
        ]
        for name, method, path, kwargs, status, code in corpus:
            r = await h.client.request(method, path, headers=acme, **kwargs)
            assert r.status_code == status, (name, r.status_code, r.text[:300])
            body = r.json()
            assert body["error"]["code"] == code, (name, body)
            assert body["error"]["message"], name
            assert (await h.client.get("/healthz")).status_code == 200, name

        auth_corpus = [
            ("no credentials", {}, "authentication required"),
            ("unknown API key", {"Authorization": "Bearer fw_" + "x" * 43}, "invalid API key"),
            ("expired JWT", {"Authorization": "Bearer " + _token(exp=int(time.time()) - 3600)}, "expired"),
            ("forged JWT", {"Authorization": "Bearer " + jwt.encode(
                {"tenant": "acme", "aud": "faceweave", "exp": int(time.time()) + 600}, "not-the-secret" * 3,
                algorithm="HS256")}, "rejected"),
            ("wrong audience", {"Authorization": "Bearer " + _token(aud="someone-else")}, "audience"),
            ("no exp", {"Authorization": "Bearer " + _token(exp=None)}, "'exp'"),
            ("alg none", {"Authorization": "Bearer " + _unsigned_token()}, "rejected"),
            ("garbage token", {"Authorization": "Bearer not.a.jwt"}, "rejected"),
            ("basic auth", {"Authorization": "Basic YTpi"}, "Bearer"),
        ]  # fmt: skip
        for name, headers, words in auth_corpus:
            r = await h.client.get("/v1/swaps", headers=headers)
            assert r.status_code == 401, (name, r.text)
            assert r.json()["error"]["code"] == "unauthorized" and words in r.json()["error"]["message"], name

        good = await h.client.get("/v1/swaps", headers={"Authorization": "Bearer " + _token()})
        assert good.status_code == 200 and good.json()["total"] == 0  # acme's JWT sees acme's jobs (none queued)

        # Still healthy: a real swap works after the whole corpus.
        files, data = swap_form([("a.jpg", face)], ("t.png", target))
        r = await h.client.post("/v1/swaps:sync", files=files, data={"consent": "true"}, headers=acme)
        assert r.status_code == 200 and r.headers["x-faceweave-faces-swapped"] == "1"


async def test_upload_limit_is_enforced_while_streaming(tmp_path: Path, media_bytes: Any) -> None:
    """A 64 MiB upload against a 1 MiB limit is refused after about the limit has streamed in, not at the end."""
    boundary = "faceweaveboundary"
    sent = {"bytes": 0}

    async def body() -> Any:
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="consent"\r\n\r\ntrue\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="target"; filename="t.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        sent["bytes"] += len(head)
        yield head
        chunk = media_bytes("astronaut.png")[:65536]
        for _ in range(1024):  # 64 MiB
            sent["bytes"] += len(chunk)
            yield chunk
        tail = f"\r\n--{boundary}--\r\n".encode()
        sent["bytes"] += len(tail)
        yield tail

    async with running_app(tmp_path, max_upload_bytes=1 << 20) as h:
        headers = {**h.headers(), "Content-Type": f"multipart/form-data; boundary={boundary}"}
        r = await h.client.post("/v1/swaps", content=body(), headers=headers)
        assert r.status_code == 413 and r.json()["error"]["code"] == "media_too_large"
        assert sent["bytes"] < 4 << 20, sent  # stopped reading shortly after the limit
        assert not list((tmp_path / "data").rglob("upload_*"))  # the partial spool file is gone
