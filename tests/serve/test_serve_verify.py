"""POST /v1/verify in-process: the per-file provenance report, with the swap routes' auth and upload limits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from serve_helpers import running_app

from faceweave.media.image import read_image
from faceweave.provenance.mark import Marking, write_marked_image

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    # the local C2PA identity is made under the user cache: keep it out of the real one
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "cache"))


def _files(*items: tuple[str, bytes]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (name, data, "application/octet-stream")) for name, data in items]


async def test_verify_reports_each_file(tmp_path: Path, media_bytes: Any) -> None:
    from faceweave.data import media_path

    marked = write_marked_image(tmp_path / "marked.png", read_image(media_path("grace_hopper.jpg")).rgb,
                                Marking(job_id="job-1"))
    async with running_app(tmp_path) as h:
        r = await h.client.post("/v1/verify", files=_files(("a.png", marked.read_bytes()),
                                                           ("b.jpg", media_bytes("obama.jpg"))),
                                headers=h.headers())  # fmt: skip
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["marked"] is False  # one of the two is not
        first, second = body["items"]
        assert (first["file"], first["kind"], first["marked"]) == ("files[0]", "image", True)
        assert first["metadata"]["synthetic"] and first["c2pa"]["status"] == "valid"
        assert first["watermark"]["found"]
        assert first["watermark"]["payload"]["job_hash"] == Marking(job_id="job-1").job_hash
        assert not second["marked"] and second["c2pa"]["status"] == "absent"
        assert not second["watermark"]["found"] and second["watermark"]["payload"] is None
        assert "a.png" not in r.text and "marked.png" not in r.text  # client file names are never echoed

        only_marked = await h.client.post("/v1/verify", files=_files(("a.png", marked.read_bytes())),
                                          headers=h.headers())  # fmt: skip
        assert only_marked.json()["marked"] is True

        # documented in the OpenAPI schema with its response model
        spec = (await h.client.get("/openapi.json")).json()
        ok = spec["paths"]["/v1/verify"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
        assert ok["$ref"].endswith("/VerifyOut")
        assert "multipart/form-data" in spec["paths"]["/v1/verify"]["post"]["requestBody"]["content"]


async def test_verify_auth_and_limits(tmp_path: Path, media_bytes: Any) -> None:
    jpeg = media_bytes("obama.jpg")
    async with running_app(tmp_path, max_upload_bytes=len(jpeg) - 1, max_sources=1) as h:
        r = await h.client.post("/v1/verify", files=_files(("b.jpg", jpeg)))
        assert r.status_code == 401
        r = await h.client.post("/v1/verify", files=_files(("b.jpg", jpeg)), headers=h.headers())
        assert r.status_code == 413 and r.json()["error"]["code"] == "media_too_large"
    async with running_app(tmp_path, max_sources=1) as h:
        acme = h.headers()
        r = await h.client.post("/v1/verify", files=_files(*[("b.jpg", jpeg)] * 3), headers=acme)
        assert r.status_code == 400 and "too many files" in r.json()["error"]["message"]  # more than a swap takes
        r = await h.client.post("/v1/verify", files=[("target", ("b.jpg", jpeg, "image/jpeg"))], headers=acme)
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_option"
        r = await h.client.post("/v1/verify", files=_files(("x.txt", b"not a picture at all")), headers=acme)
        assert r.status_code == 415
        assert not list((tmp_path / "data").rglob("verify/*/*"))  # spooled uploads are deleted
