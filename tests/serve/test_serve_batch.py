"""Batch jobs through the API (issue 23 #3): several targets, one result and one status per target; one bad
target never fails the others; the single-target API is unchanged."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from serve_helpers import running_app, wait_for_state

from faceweave.errors import NoFaceInTarget
from faceweave.serve.executor import JobContext, JobOutcome
from faceweave.serve.store import JobItem, NewJob, SqlJobStore

pytestmark = pytest.mark.anyio


def _copy_or_no_face(ctx: JobContext) -> JobOutcome:
    """A fast stand-in for the pipeline: 'swaps' by copying the target; a target ending in NOFACE has no face."""
    if ctx.target.read_bytes().endswith(b"NOFACE"):
        raise NoFaceInTarget("no face in this target", hint="pick another")
    shutil.copyfile(ctx.target, ctx.output)
    return JobOutcome(ctx.output, "image", 1, {"copied": True})


def _png(media_bytes: Any, tail: bytes = b"") -> bytes:
    """A valid PNG (astronaut re-encoded small), with ``tail`` after its IEND chunk (decoders ignore it)."""
    import io

    from PIL import Image

    with Image.open(io.BytesIO(media_bytes("astronaut.png"))) as im:
        buf = io.BytesIO()
        im.convert("RGB").resize((64, 64)).save(buf, "PNG")
    data = buf.getvalue()
    return data + tail


async def test_batch_job_one_result_per_target_and_bad_items_fail_alone(tmp_path: Path, media_bytes: Any) -> None:
    async with running_app(tmp_path, job_function=_copy_or_no_face) as h:
        headers = h.headers()
        good_a, good_b = media_bytes("obama2.jpg"), _png(media_bytes)
        no_face = _png(media_bytes, b"NOFACE")
        files = [("sources", ("s.jpg", media_bytes("obama.jpg"), "application/octet-stream")),
                 ("target", ("a.jpg", good_a, "application/octet-stream")),
                 ("target", ("broken.png", b"\x89PNG\r\n\x1a\n not really", "application/octet-stream")),
                 ("target", ("noface.png", no_face, "application/octet-stream")),
                 ("target", ("b.png", good_b, "application/octet-stream"))]  # fmt: skip
        r = await h.client.post("/v1/swaps", files=files, data={"consent": "true"}, headers=headers)
        assert r.status_code == 202, r.text
        created = r.json()
        assert created["media_kind"] == "batch" and len(created["items"]) == 4
        assert [it["state"] for it in created["items"]] == ["queued", "failed", "queued", "queued"]
        job = await wait_for_state(h.client, created["id"], headers)
        assert job["state"] == "succeeded", job
        items = job["items"]
        assert [it["state"] for it in items] == ["succeeded", "failed", "failed", "succeeded"], items
        assert items[1]["error"]["code"] in ("unsupported_media", "corrupt_media", "truncated_media"), items[1]
        assert items[2]["error"]["code"] == "no_face_in_target" and "no face" in items[2]["error"]["message"]
        assert job["result_url"] is None and job["faces_swapped"] == 2
        assert job["stats"] == {"items": 4, "items_succeeded": 2, "items_failed": 2}
        assert job["progress"]["frames_done"] == job["progress"]["frames_total"] == 4
        base = f"/v1/swaps/{job['id']}"
        first = await h.client.get(items[0]["result_url"], headers=headers)
        assert first.status_code == 200 and first.content == good_a
        last = await h.client.get(f"{base}/result", params={"item": 3}, headers=headers)
        assert last.status_code == 200 and last.content == good_b
        ranged = await h.client.get(f"{base}/items/3/result", headers={**headers, "Range": "bytes=0-9"})
        assert ranged.status_code == 206 and ranged.content == good_b[:10]
        assert (await h.client.get(f"{base}/items/2/result", headers=headers)).status_code == 409
        assert (await h.client.get(f"{base}/items/9/result", headers=headers)).status_code == 404
        whole = await h.client.get(f"{base}/result", headers=headers)
        assert whole.status_code == 400 and "/items/" in whole.json()["error"]["hint"]
        other = await h.client.get(items[0]["result_url"], headers=h.headers("other-tenant"))
        assert other.status_code == 404  # another tenant sees no item either
        listed = (await h.client.get("/v1/swaps", headers=headers)).json()
        assert listed["items"][0]["items"] == items


async def test_batch_of_only_bad_targets_is_refused_and_single_jobs_have_no_items(
    tmp_path: Path, media_bytes: Any
) -> None:
    async with running_app(tmp_path, job_function=_copy_or_no_face, max_batch_targets=3) as h:
        headers = h.headers()
        src = ("sources", ("s.jpg", media_bytes("obama.jpg"), "application/octet-stream"))
        bad = [("target", (f"{i}.png", b"not an image", "application/octet-stream")) for i in range(2)]
        r = await h.client.post("/v1/swaps", files=[src, *bad], data={"consent": "true"}, headers=headers)
        assert 400 <= r.status_code < 500, r.text
        many = [("target", (f"{i}.jpg", media_bytes("obama2.jpg"), "application/octet-stream")) for i in range(4)]
        r = await h.client.post("/v1/swaps", files=[src, *many], data={"consent": "true"}, headers=headers)
        assert r.status_code in (400, 413), r.text
        one = [("target", ("t.jpg", media_bytes("obama2.jpg"), "application/octet-stream"))]
        r = await h.client.post("/v1/swaps", files=[src, *one], data={"consent": "true"}, headers=headers)
        assert r.status_code == 202 and r.json()["items"] is None
        job = await wait_for_state(h.client, r.json()["id"], headers)
        assert job["state"] == "succeeded" and job["items"] is None and job["result_url"].endswith("/result")
        assert job["media_kind"] == "image"


async def test_batch_from_target_urls(tmp_path: Path, media_bytes: Any) -> None:
    folder = tmp_path / "imports"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(media_bytes("obama2.jpg"))
    urls = f'["file://{folder}/a.jpg", "file://{folder}/missing.jpg"]'
    async with running_app(tmp_path, job_function=_copy_or_no_face,
                           url_import_prefixes=(f"file://{folder}/",)) as h:  # fmt: skip
        headers = h.headers()
        files = [("sources", ("s.jpg", media_bytes("obama.jpg"), "application/octet-stream"))]
        r = await h.client.post("/v1/swaps", files=files, data={"consent": "true", "target_urls": urls},
                                headers=headers)  # fmt: skip
        assert r.status_code == 202, r.text
        job = await wait_for_state(h.client, r.json()["id"], headers)
        assert [it["state"] for it in job["items"]] == ["succeeded", "failed"], job["items"]
        assert [it["name"] for it in job["items"]] == ["a.jpg", "missing.jpg"]


def check_batch_items(store: SqlJobStore) -> None:
    """Items round-trip through a store (SQLite here, PostgreSQL in test_serve_backends)."""
    job_id = "b" * 32
    items = (JobItem(job_id, 0, "a", "k/a.png", "image", "queued"),
             JobItem(job_id, 1, "b", None, None, "failed", error_code="corrupt_media", error_message="bad"))
    store.create_job(NewJob(tenant="t", settings={}, source_keys=["k/s.png"], target_key="k/a.png",
                            media_kind="batch", stored_bytes=10, id=job_id, items=items))  # fmt: skip
    assert store.claim_next() is not None
    store.update_item(job_id, 0, state="succeeded", result_key="k/r.png", result_bytes=5, faces_swapped=1,
                      stats={"frames": 1})  # fmt: skip
    got = store.list_items([job_id, "x" * 32])[job_id]
    assert [(i.index, i.state, i.result_key, i.error_code) for i in got] == [
        (0, "succeeded", "k/r.png", None), (1, "failed", None, "corrupt_media")]  # fmt: skip
    assert got[0].stats == {"frames": 1}
    assert store.finish_batch(job_id, faces_swapped=1, result_bytes=5, stats={"items": 2}, error=None)
    job = store.get_job(job_id)
    assert job is not None and job.state.value == "succeeded" and job.stored_bytes == 15


def test_store_items_on_sqlite(tmp_path: Path) -> None:
    store = SqlJobStore(f"sqlite:///{tmp_path / 'db.sqlite'}")
    try:
        check_batch_items(store)
    finally:
        store.close()
