"""POST /v1/swaps:sync from concurrent clients: their requests run as one batch on one warm engine (the model
forwards together, faceweave/pipeline/image_batch.py), each answered with its own image or its own error."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest
from PIL import Image
from serve_helpers import count_engines_built, running_app, swap_form

pytestmark = pytest.mark.anyio


def _png(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "PNG")
    return buf.getvalue()


async def test_sync_requests_of_concurrent_clients_run_as_one_batch(tmp_path: Path, media_bytes: Any) -> None:
    blank = _png(np.full((240, 320, 3), 90, np.uint8))
    # a long window: every request below is in flight before the batch starts, so the batch holds all of them
    async with running_app(tmp_path, device="cpu", sync_batch_window_s=1.0) as h:
        acme, globex = h.headers("acme"), h.headers("globex")
        requests = [
            (acme, "grace_hopper.jpg", ("t.png", media_bytes("astronaut.png")), None),
            (globex, "obama.jpg", ("t.jpg", media_bytes("obama2.jpg")), {"selector": "many"}),
            (acme, "obama.jpg", ("t.png", blank), None),  # no face: this one alone fails
            (globex, "grace_hopper.jpg", ("t.jpg", media_bytes("obama.jpg")), None),
        ]
        batcher = h.svc.sync_batcher
        assert batcher is not None
        answers: list[Any] = [None] * len(requests)

        async def send(k: int) -> None:
            headers, source, target, settings = requests[k]
            files, data = swap_form([("s.jpg", media_bytes(source))], target, settings=settings)
            answers[k] = await h.client.post("/v1/swaps:sync", files=files, data=data, headers=headers)

        with anyio.fail_after(300):
            async with anyio.create_task_group() as tg:
                for k in range(len(requests)):
                    tg.start_soon(send, k)
        assert answers[2].status_code == 422 and answers[2].json()["error"]["code"] == "no_face_in_target"
        for k in (0, 1, 3):
            assert answers[k].status_code == 200, answers[k].text[:300]
            assert int(answers[k].headers["x-faceweave-faces-swapped"]) >= 1
            out = np.asarray(Image.open(io.BytesIO(answers[k].content)))
            target = np.asarray(Image.open(io.BytesIO(requests[k][2][1])).convert("RGB"))
            assert out.shape == target.shape and (out != target).any(-1).mean() > 0.01
        # the four requests ran as one batch (whose forwards run together: tests/pipeline/test_image_batch.py)
        assert (batcher.batches, batcher.items) == (1, 4)
        # and the service still answers one request alone
        files, data = swap_form([("s.jpg", media_bytes("obama.jpg"))], ("t.png", media_bytes("astronaut.png")))
        alone = await h.client.post("/v1/swaps:sync", files=files, data=data, headers=acme)
        assert alone.status_code == 200 and (batcher.batches, batcher.items) == (2, 5)


async def test_unbatched_sync_slots_share_the_executors_engine(tmp_path: Path, media_bytes: Any,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Two :sync slots (sync_batch 1) answering at once use the executor's warm engine: one copy of the models (and,
    on a GPU, of the CUDA graphs) in the process, not one per slot (issue 18)."""
    built = count_engines_built(monkeypatch)
    async with running_app(tmp_path, device="cpu", sync_batch=1, sync_concurrency=2) as h:
        assert h.svc.sync_batcher is None
        acme = h.headers("acme")
        answers: list[Any] = [None, None]

        async def send(k: int) -> None:
            files, data = swap_form([("s.jpg", media_bytes("grace_hopper.jpg"))],
                                    ("t.png", media_bytes("astronaut.png")))
            answers[k] = await h.client.post("/v1/swaps:sync", files=files, data=data, headers=acme)

        with anyio.fail_after(300):
            async with anyio.create_task_group() as tg:
                for k in range(2):
                    tg.start_soon(send, k)
        assert [a.status_code for a in answers] == [200, 200], [a.text[:200] for a in answers]
        assert len(built) == 1
        assert h.svc.executor.engines.find(lambda engine: engine is built[0]) is built[0]


async def test_sync_batch_thread_runs_only_the_forwards(tmp_path: Path, media_bytes: Any,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # the batch's thread must not wait on host work: the result's device→host conversion, watermark, encode and
    # C2PA run on the request's thread (overlapping the next batch's forwards); the answer is encoded in memory
    # (nothing written to disk and read back) and still carries all three markings
    import threading

    import faceweave.media.image as media_image
    import faceweave.pipeline.image as pipeline_image
    import faceweave.pipeline.image_batch as image_batch
    import faceweave.provenance.mark as mark
    from faceweave.provenance.verify import verify_file

    threads: dict[str, set[str]] = {}

    def record(owner: Any, name: str) -> None:
        original = getattr(owner, name)

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            threads.setdefault(name, set()).add(threading.current_thread().name)
            return original(*args, **kwargs)

        monkeypatch.setattr(owner, name, wrapped)

    record(image_batch, "swap_image_batch_on_device")  # bound when the app builds its batch runner: patch first
    record(image_batch.DeviceOutcome, "to_host")
    record(pipeline_image, "finished_image_bytes")
    record(mark, "embed_watermark")
    record(media_image, "encode_image")
    record(mark, "sign_bytes")
    record(media_image, "atomic_write_bytes")
    async with running_app(tmp_path, device="cpu") as h:
        files, data = swap_form([("s.jpg", media_bytes("obama.jpg"))], ("t.png", media_bytes("astronaut.png")))
        answer = await h.client.post("/v1/swaps:sync", files=files, data=data, headers=h.headers())
    assert answer.status_code == 200, answer.text[:300]
    batch_thread = "faceweave-sync-batch"
    assert threads.pop("swap_image_batch_on_device") == {batch_thread}
    assert "atomic_write_bytes" not in threads  # in memory: no file written for the answer
    assert set(threads) == {"to_host", "finished_image_bytes", "embed_watermark", "encode_image", "sign_bytes"}
    for name, where in threads.items():
        assert batch_thread not in where, f"{name} ran on the batch's thread"
    (tmp_path / "answer.png").write_bytes(answer.content)
    report = verify_file(tmp_path / "answer.png")
    assert report.marked and report.metadata.synthetic and report.c2pa.status == "valid" and report.watermark.found
