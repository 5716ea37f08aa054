"""Swap jobs: create (multipart upload or storage URLs), the synchronous image swap, list, read, cancel/delete,
progress events (SSE) and the result file (byte ranges)."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse

from faceweave.errors import FaceweaveError
from faceweave.serve.auth import Principal
from faceweave.serve.deps import Service, ServiceDep, authenticate, own_job
from faceweave.serve.errors import (
    BadRequest,
    JobNotFound,
    PolicyRejected,
    QuotaExceeded,
    RangeNotSatisfiable,
    ResultExpired,
    ResultNotReady,
)
from faceweave.serve.executor import URL_KEY_PREFIX, JobContext, job_event, output_extension
from faceweave.serve.inputs import Inputs, check_quotas, parse_settings, read_inputs
from faceweave.serve.policy import ModerationRequest, check_consent, moderate
from faceweave.serve.schemas import ERRORS, FORM_SCHEMA, SYNC_FORM_SCHEMA, JobList, JobOut, JobStateName
from faceweave.serve.storage import tenant_dir
from faceweave.serve.store import Job, JobItem, JobState, NewJob, Quota
from faceweave.serve.urls import AddressPolicy, check_webhook
from faceweave.settings import SwapSettings

if TYPE_CHECKING:
    from faceweave.pipeline.batcher import Announcement, WindowBatcher
    from faceweave.pipeline.image_batch import DeviceOutcome, ImageJob

log = logging.getLogger("faceweave.serve")
router = APIRouter(tags=["jobs"])
MEDIA_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp",
               ".mp4": "video/mp4", ".bmp": "image/bmp"}  # fmt: skip


@router.post("/v1/swaps", status_code=202, response_model=JobOut, responses=ERRORS, openapi_extra=FORM_SCHEMA)
async def create_swap(request: Request, response: Response, svc: ServiceDep) -> JobOut:
    """Create a job from uploaded files (multipart ``sources`` + ``target``) or storage URLs → 202 + job."""
    principal = authenticate(request, svc)
    check_quotas(svc, principal.tenant)
    job_id = uuid.uuid4().hex
    spool = svc.settings.work_dir / "uploads" / job_id
    try:
        inputs = await read_inputs(request, svc, spool, sync=False)
        settings = parse_settings(svc, inputs.form.one("settings"))
        check_consent(inputs.form.one("consent"), svc.settings.require_consent)
        webhook = inputs.form.one("webhook_url")
        if webhook:  # DNS may block: off the event loop; checked again at delivery
            await anyio.to_thread.run_sync(check_webhook, webhook, AddressPolicy.of(svc.settings.private_networks))
        check_quotas(svc, principal.tenant, inputs.total_bytes)
        folder = f"{tenant_dir(principal.tenant)}/{job_id}"
        source_keys = [f"{folder}/source_{i}.{info.extension}" for i, (_, info) in enumerate(inputs.sources)]
        source_keys += [URL_KEY_PREFIX + url for url in inputs.source_urls]  # fetched by the job, not here
        items: list[JobItem] = []
        if inputs.batch is not None:
            items = await _batch_items(svc, principal, settings, inputs, job_id, folder)
            target_key, media_kind = next(it.target_key for it in items if it.target_key), "batch"
        elif inputs.target is not None:
            target_path, target_info = inputs.target
            target_key, media_kind = f"{folder}/target.{target_info.extension}", target_info.kind
            # (URL inputs are moderated by the job once fetched: inputs.check_url_inputs)
            await anyio.to_thread.run_sync(moderate, svc.moderator, ModerationRequest(
                tenant=principal.tenant, sources=[p for p, _ in inputs.sources], target=target_path,
                target_kind=target_info.kind, settings=settings.model_dump(),
            ))  # fmt: skip
        else:
            assert inputs.target_url is not None
            target_key, media_kind = URL_KEY_PREFIX + inputs.target_url, None

        def store_inputs() -> Job:
            for (path, _), key in zip(inputs.sources, source_keys, strict=False):
                svc.storage.upload(path, key)
            if inputs.batch is None and inputs.target is not None:
                svc.storage.upload(inputs.target[0], target_key)
            for it, t in zip(items, inputs.batch or [], strict=False):
                if it.target_key and t.path is not None:
                    svc.storage.upload(t.path, it.target_key)
            try:
                return svc.store.create_job(NewJob(
                    tenant=principal.tenant, settings=settings.model_dump(mode="json"), source_keys=source_keys,
                    target_key=target_key, media_kind=media_kind, stored_bytes=inputs.total_bytes,
                    webhook_url=webhook, id=job_id, items=tuple(items),
                ), quota=Quota(svc.settings.max_concurrent_jobs, svc.settings.max_storage_bytes))  # fmt: skip
            except QuotaExceeded:
                svc.storage.delete_prefix(folder)
                raise

        job = await anyio.to_thread.run_sync(store_inputs)
    finally:
        shutil.rmtree(spool, ignore_errors=True)
    svc.executor.notify()
    log.info("job queued (%s, %d source(s), %d item(s))", job.media_kind or "from a URL", len(job.source_keys),
             len(items))
    response.headers["Location"] = f"/v1/swaps/{job.id}"
    return JobOut.of(job, items or None)


async def _batch_items(
    svc: Service, principal: Principal, settings: SwapSettings, inputs: Inputs, job_id: str, folder: str
) -> list[JobItem]:
    """One item per target of a batch request: queued, or failed with its reason (unreadable, refused by the
    content policy) without failing the others."""
    assert inputs.batch is not None
    items = []
    for i, t in enumerate(inputs.batch):
        error = t.error
        if error is None and t.path is not None and t.info is not None:
            try:
                await anyio.to_thread.run_sync(moderate, svc.moderator, ModerationRequest(
                    tenant=principal.tenant, sources=[p for p, _ in inputs.sources], target=t.path,
                    target_kind=t.info.kind, settings=settings.model_dump(),
                ))  # fmt: skip
            except FaceweaveError as exc:
                error = exc
        if error is not None or t.info is None:
            code, message = (error.code, error.one_line()) if error is not None else ("bad_request", "unreadable")
            items.append(JobItem(job_id, i, t.name, None, None, "failed", error_code=code, error_message=message))
        else:
            key = f"{folder}/target_{i}.{t.info.extension}"
            items.append(JobItem(job_id, i, t.name, key, t.info.kind, "queued"))
    if not any(it.target_key for it in items):
        raise PolicyRejected(f"every target was refused: {items[0].error_message}", hint="check the targets")
    return items


@router.post("/v1/swaps:sync", response_class=Response, openapi_extra=SYNC_FORM_SCHEMA,
             responses={**ERRORS, 200: {"content": {"image/png": {}, "image/jpeg": {}, "image/webp": {}},
                                        "description": "the swapped image"}})  # fmt: skip
async def swap_sync(request: Request, svc: ServiceDep) -> Response:
    """Swap a small image and answer the image itself (no job is stored)."""
    principal = authenticate(request, svc)
    spool = svc.settings.work_dir / "sync" / uuid.uuid4().hex
    # a batch starting while this request uploads waits a moment (sync_batch_window_s) for it, until its batch runs
    announcement = svc.sync_batcher.announce() if svc.sync_batcher is not None else None
    try:
        inputs = await read_inputs(request, svc, spool, sync=True)
        settings = parse_settings(svc, inputs.form.one("settings"))
        check_consent(inputs.form.one("consent"), svc.settings.require_consent)
        assert inputs.target is not None  # :sync takes no URLs
        target_path = inputs.target[0]
        await anyio.to_thread.run_sync(moderate, svc.moderator, ModerationRequest(
            tenant=principal.tenant, sources=[p for p, _ in inputs.sources], target=target_path,
            target_kind="image", settings=settings.model_dump(),
        ))  # fmt: skip
        assert svc.sync_slots is not None
        async with svc.sync_slots:
            if svc.sync_batcher is not None:  # with the other clients' requests, as one batch
                answer = await anyio.to_thread.run_sync(_run_sync_job, svc, principal, settings, inputs, spool, None,
                                                        announcement)  # fmt: skip
            else:
                state = svc.sync_states.get_nowait()
                try:
                    answer = await anyio.to_thread.run_sync(
                        _run_sync_job, svc, principal, settings, inputs, spool, state
                    )
                finally:
                    svc.sync_states.put(state)
    finally:
        if announcement is not None:
            announcement.withdraw()  # (a no-op once its batch started)
        shutil.rmtree(spool, ignore_errors=True)
    media = MEDIA_TYPES.get(answer.suffix, "application/octet-stream")
    return Response(answer.data, media_type=media, headers={"X-Faceweave-Faces-Swapped": str(answer.faces_swapped)})


@router.get("/v1/swaps", response_model=JobList, responses=ERRORS)
async def list_swaps(
    request: Request,
    svc: ServiceDep,
    state: JobStateName | None = None,
    limit: int = Query(20, ge=1, le=100),
    offset: int = Query(0, ge=0, le=1_000_000),
) -> JobList:
    """This tenant's jobs, newest first, optionally only those in ``state``."""
    principal = authenticate(request, svc)
    jobs, total = await anyio.to_thread.run_sync(
        svc.store.list_jobs, principal.tenant, JobState(state) if state else None, limit, offset
    )
    items = await anyio.to_thread.run_sync(svc.store.list_items, [j.id for j in jobs])
    return JobList(items=[JobOut.of(j, items.get(j.id)) for j in jobs], total=total, limit=limit, offset=offset)


@router.get("/v1/swaps/{job_id}", response_model=JobOut, responses=ERRORS)
async def get_swap(request: Request, svc: ServiceDep, job_id: str) -> JobOut:
    """One job: state, progress, error (type, code, message) and the result URL once it succeeded."""
    principal = authenticate(request, svc)
    job = own_job(svc, job_id, principal)
    items = await anyio.to_thread.run_sync(svc.store.list_items, [job.id])
    return JobOut.of(job, items.get(job.id))


@router.delete("/v1/swaps/{job_id}", response_model=JobOut, responses=ERRORS)
async def delete_swap(request: Request, svc: ServiceDep, job_id: str) -> JobOut:
    """Cancel the job if it has not finished, and delete its uploads and result."""
    principal = authenticate(request, svc)
    job = own_job(svc, job_id, principal)
    if not job.state.finished:
        svc.store.cancel(job.id)
        svc.executor.cancel(job.id)

    def purge() -> Job | None:
        svc.storage.delete_prefix(f"{tenant_dir(job.tenant)}/{job.id}")
        svc.store.mark_expired(job.id)
        return svc.store.get_job(job.id)

    final = await anyio.to_thread.run_sync(purge)
    assert final is not None
    svc.hub.publish(job.id, job_event(final))
    log.info("job deleted")
    return JobOut.of(final, svc.store.list_items([final.id]).get(final.id))


@router.get("/v1/swaps/{job_id}/events", response_class=StreamingResponse,
            responses={**ERRORS, 200: {"content": {"text/event-stream": {}},
                                       "description": "server-sent events, one JSON job event each"}})  # fmt: skip
async def swap_events(request: Request, svc: ServiceDep, job_id: str) -> StreamingResponse:
    """Server-sent events: ``event: job`` with state, stage, frames done/total, fps and ETA, until it ends."""
    principal = authenticate(request, svc)
    job = own_job(svc, job_id, principal)
    return StreamingResponse(
        _event_stream(svc, job.id, request.is_disconnected),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get("/v1/swaps/{job_id}/result", response_class=Response,
            responses={**ERRORS, 200: {"content": {"image/png": {}, "image/jpeg": {}, "video/mp4": {}},
                                       "description": "the result file"},
                       206: {"description": "a byte range of the result"}})  # fmt: skip
async def swap_result(
    request: Request, svc: ServiceDep, job_id: str,
    item: int | None = Query(None, ge=0, le=100_000, description="a batch job's item (its index)"),
) -> Response:
    """The result file; supports ``Range: bytes=…`` (206, 416). A batch job's results are per item (``?item=N``,
    or ``/items/{n}/result``)."""
    if item is not None:
        return await swap_item_result(request, svc, job_id, item)
    principal = authenticate(request, svc)
    job = own_job(svc, job_id, principal)
    if job.expired:
        raise ResultExpired("the result was deleted (retention or DELETE)", hint="submit the job again")
    if job.media_kind == "batch":
        raise BadRequest("a batch job has one result per item", hint=f"GET /v1/swaps/{job.id}/items/{{n}}/result")
    if job.state != JobState.succeeded or not job.result_key:
        raise ResultNotReady(f"the job is {job.state.value}, not succeeded", hint="follow /events or poll the job")
    return await _send(request, svc, job.result_key, f"faceweave-{job.id}", job.id)


@router.get("/v1/swaps/{job_id}/items/{index}/result", response_class=Response,
            responses={**ERRORS, 200: {"content": {"image/png": {}, "image/jpeg": {}, "video/mp4": {}},
                                       "description": "the item's result file"},
                       206: {"description": "a byte range of the result"}})  # fmt: skip
async def swap_item_result(request: Request, svc: ServiceDep, job_id: str, index: int) -> Response:
    """One item's result of a batch job (as soon as that item succeeded); ``Range`` as for ``/result``."""
    principal = authenticate(request, svc)
    job = own_job(svc, job_id, principal)
    items = (await anyio.to_thread.run_sync(svc.store.list_items, [job.id])).get(job.id, [])
    found = next((it for it in items if it.index == index), None)
    if found is None:
        raise JobNotFound(f"job {job.id} has no item {index}", hint=f"items are numbered 0 to {len(items) - 1}"
                          if items else "this is not a batch job: GET its /result")  # fmt: skip
    if job.expired:
        raise ResultExpired("the result was deleted (retention or DELETE)", hint="submit the job again")
    if found.state != "succeeded" or not found.result_key:
        reason = f": {found.error_message}" if found.error_message else ""
        raise ResultNotReady(f"item {index} is {found.state}{reason}", hint="poll the job for its items' states")
    return await _send(request, svc, found.result_key, f"faceweave-{job.id}-{index}", f"{job.id}-{index}")


async def _send(request: Request, svc: Service, key: str, filename: str, etag: str) -> Response:
    size = await anyio.to_thread.run_sync(svc.storage.size, key)
    suffix = Path(key).suffix.lower()
    headers = {
        "Accept-Ranges": "bytes",
        "Content-Disposition": f'attachment; filename="{filename}{suffix}"',
        "ETag": f'"{etag}-{size}"',
    }
    media = MEDIA_TYPES.get(suffix, "application/octet-stream")
    byte_range = _parse_range(request.headers.get("range"), size)
    if byte_range is None:
        headers["Content-Length"] = str(size)
        return StreamingResponse(_iterate(svc, key, 0, size - 1), media_type=media, headers=headers)
    start, end = byte_range
    headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    headers["Content-Length"] = str(end - start + 1)
    return StreamingResponse(_iterate(svc, key, start, end), status_code=206, media_type=media, headers=headers)


@dataclass(frozen=True)
class _SyncAnswer:
    """What a :sync request answers: the image's bytes, its extension (``.png``…) and the faces swapped."""

    data: bytes
    suffix: str
    faces_swapped: int


def _run_sync_job(
    svc: Service, principal: Principal, settings: SwapSettings, inputs: Inputs, spool: Path,
    state: dict[str, Any] | None, announcement: Announcement | None = None,
) -> _SyncAnswer:
    """Run a :sync request: in the next batch of :attr:`Service.sync_batcher` (``state`` None), else alone with the
    slot's ``state``. A job error (no face…) is raised here, for the route's error answer."""
    assert inputs.target is not None
    target_path, info = inputs.target
    target = spool / f"target.{info.extension}"
    target_path.rename(target)
    output = spool / f"result{output_extension('image', target)}"
    t0 = time.perf_counter()
    sources = [p for p, _ in inputs.sources]
    if state is None:
        assert svc.sync_batcher is not None
        answer = _batched_sync_job(svc.sync_batcher, sources, target, output, settings,
                                   svc.settings.sync_png_compression, announcement)  # fmt: skip
    else:
        now = time.time()
        job = Job(
            id="sync", tenant=principal.tenant, state=JobState.running, media_kind="image", created_at=now,
            updated_at=now, started_at=now, finished_at=None, settings=settings.model_dump(mode="json"),
            source_keys=[], target_key="", result_key=None, result_bytes=0, stored_bytes=0, frames_done=0,
            frames_total=1, fps=0.0, eta_s=None, stage="", faces_swapped=None, error_type=None, error_code=None,
            error_message=None, attempts=1, webhook_url=None, expired=False,
        )  # fmt: skip
        outcome = svc.job_function(JobContext(job, settings, sources, target, output, spool, lambda _: None, state))
        answer = _SyncAnswer(outcome.output.read_bytes(), outcome.output.suffix.lower(), outcome.faces_swapped)
    svc.metrics.stage_seconds.labels("sync").observe(time.perf_counter() - t0)
    return answer


def _batched_sync_job(batcher: WindowBatcher[ImageJob, DeviceOutcome], sources: list[Path], target: Path,
                      output: Path, settings: SwapSettings, png_compression: int,
                      announcement: Announcement | None = None) -> _SyncAnswer:
    """Read the images here, run the forwards in the next batch, convert and mark the result here: the batch's
    thread does only the forwards, so one batch's host work (the result's copy to the host, watermark, encode, C2PA)
    overlaps the next batch's forwards. The answer is encoded in memory (``output`` names its format; nothing is
    written), at PNG level ``png_compression``. ``announcement`` (the request's, from
    :meth:`WindowBatcher.announce`) is withdrawn when the job's batch starts: while this thread marks and encodes,
    the next batch does not wait for it."""
    from faceweave.device import resolve_device
    from faceweave.pipeline.image import finished_image_bytes
    from faceweave.pipeline.image_batch import ImageFileJob, read_image_job, stage_image_job

    batch_job, loaded = read_image_job(ImageFileJob(sources, target, output, settings))
    device = resolve_device(settings.device)
    if device.type == "cuda":  # the copies to the GPU queued here, not by the batch's thread, which all wait for
        batch_job = stage_image_job(batch_job, device)
    got = batcher.submit(batch_job, announcement).to_host()  # submit raises the job's own error (no face…)
    data = finished_image_bytes(got.image, sources, target, output, settings, like=loaded,
                                png_compression=png_compression)  # fmt: skip
    return _SyncAnswer(data, output.suffix.lower(), got.swapped)


def _parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``(start, end)`` inclusive for a single ``bytes=`` range; None to send the whole file."""
    if not header:
        return None
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None  # other units and multi-range: answering the whole file is allowed (RFC 9110 §14.2)
    first, _, last = spec.strip().partition("-")
    try:
        if first == "":
            n = int(last)
            if n <= 0:
                raise ValueError
            start, end = max(0, size - n), size - 1
        else:
            start = int(first)
            end = int(last) if last else size - 1
            end = min(end, size - 1)
    except ValueError:
        raise RangeNotSatisfiable(f"invalid range {header[:40]!r}", hint="use 'bytes=START-END'") from None
    if start < 0 or start > end or start >= size:
        raise RangeNotSatisfiable(f"range {header[:40]!r} outside the {size}-byte result", hint=f"size is {size}")
    return start, end


async def _iterate(svc: Service, key: str, start: int, end: int) -> AsyncIterator[bytes]:
    iterator = svc.storage.iter_range(key, start, end)
    while True:
        chunk = await anyio.to_thread.run_sync(next, iterator, None)
        if chunk is None:
            return
        yield chunk


async def _event_stream(
    svc: Service, job_id: str, is_disconnected: Callable[[], Awaitable[bool]]
) -> AsyncIterator[bytes]:
    q = svc.hub.subscribe(job_id)
    last: dict[str, Any] | None = None
    idle = 0.0
    first = True
    try:
        while True:
            event: dict[str, Any] | None
            try:
                if first:  # the current state straight away, then every change
                    first = False
                    raise asyncio.TimeoutError
                event = await asyncio.wait_for(q.get(), timeout=1.0)
            except asyncio.TimeoutError:
                # Re-read the store: covers events published by another process and a first frame.
                job = await anyio.to_thread.run_sync(svc.store.get_job, job_id)
                event = job_event(job) if job is not None else None
            if event is None:
                return
            if event != last:
                idle = 0.0
                yield f"event: job\ndata: {json.dumps(event)}\n\n".encode()
                last = event
            else:
                idle += 1.0
                if idle >= 15.0:
                    idle = 0.0
                    yield b": keep-alive\n\n"
            if event["state"] in ("succeeded", "failed", "cancelled"):
                return
            if await is_disconnected():
                return
    finally:
        svc.hub.unsubscribe(job_id, q)
