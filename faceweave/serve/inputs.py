"""Reading a swap request: the multipart form (or storage URLs) spooled and probed under the upload limits, the
client's settings clamped by the operator's, and the tenant's quotas."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from fastapi import Request

from faceweave.errors import FaceweaveError, InvalidOption, MediaTooLarge, WrongMediaKind
from faceweave.serve.deps import Service
from faceweave.serve.errors import BadRequest, QuotaExceeded
from faceweave.serve.limits import MediaInfo, ParsedForm, UploadedFile, parse_multipart_stream, probe_media
from faceweave.serve.settings import ServiceSettings
from faceweave.settings import SwapSettings

# server paths a client must not choose, and the provenance markings a client must not turn off
SERVICE_ONLY_FIELDS = ("model_dir", "watermark", "c2pa", "c2pa_cert", "c2pa_key")
FORM_FIELDS = ("settings", "consent", "webhook_url", "source_urls", "target_url", "target_urls")
FILE_FIELDS = ("sources", "target")


def parse_settings(svc: Service, raw: str | None) -> SwapSettings:
    """The ``settings`` form field (a JSON object of :class:`SwapSettings` fields) under the operator's limits."""
    values: dict[str, Any] = {}
    if raw and raw.strip():
        try:
            values = json.loads(raw)
        except ValueError:
            raise InvalidOption("settings must be a JSON object", hint='e.g. {"selector": "many"}') from None
        if not isinstance(values, dict):
            raise InvalidOption("settings must be a JSON object", hint='e.g. {"selector": "many"}')
    for name in SERVICE_ONLY_FIELDS:
        if values.get(name) is not None:
            raise InvalidOption(f"{name} cannot be set through the service", hint="the operator configures it")
    return job_settings(svc.settings, SwapSettings.build(**values))


def job_settings(service: ServiceSettings, requested: SwapSettings) -> SwapSettings:
    """The operator decides where jobs run and the most a job may decode; a client may only ask for less."""
    return requested.model_copy(update={
        "device": service.device,
        "watermark": service.watermark, "c2pa": service.c2pa,
        "c2pa_cert": service.c2pa_cert, "c2pa_key": service.c2pa_key,
        "max_pixels": min(requested.max_pixels, service.max_pixels),
        "max_duration_s": min(requested.max_duration_s, service.max_duration_s),
    })  # fmt: skip


@dataclass(frozen=True)
class BatchTarget:
    """One target of a batch request: probed, or refused with ``error`` (that item fails, the others run)."""

    name: str
    path: Path | None
    info: MediaInfo | None
    error: FaceweaveError | None = None


@dataclass
class Inputs:
    sources: list[tuple[Path, MediaInfo]]
    target: tuple[Path, MediaInfo]
    form: ParsedForm
    total_bytes: int
    # several targets ('target' parts or target_urls): one result each; None for a single-target request
    batch: list[BatchTarget] | None = None


async def read_inputs(request: Request, svc: Service, spool: Path, *, sync: bool) -> Inputs:
    """Spool the request's files (and, for jobs, allowed storage URLs) into ``spool`` and probe them.

    ``sync`` (``POST /v1/swaps:sync``) takes uploads only and one image target of at most ``sync_max_pixels``.
    """
    s = svc.settings
    length = request.headers.get("content-length")
    max_targets = 1 if sync else s.max_batch_targets
    budget = s.max_upload_bytes * (s.max_sources + max_targets) + (1 << 20)
    if length is not None and length.isdigit() and int(length) > budget:
        raise MediaTooLarge(f"the request body is over {budget} bytes", hint="upload smaller files")
    form = await parse_multipart_stream(
        request.headers.get("content-type", ""), request.stream(), spool, max_file_bytes=s.max_upload_bytes,
        max_files=s.max_sources + max_targets,
    )  # fmt: skip
    for name in form.fields:
        if name not in FORM_FIELDS:
            raise InvalidOption(f"unknown form field {name!r}", hint="see the API documentation (docs/api.md)")
    files_by_field: dict[str, list[UploadedFile]] = {}
    for up in form.files:
        if up.field not in FILE_FIELDS:
            raise InvalidOption(f"unknown file field {up.field!r}", hint="send files as 'sources' and 'target'")
        files_by_field.setdefault(up.field, []).append(up)
    sources = [u.path for u in files_by_field.get("sources", [])]
    targets = [u.path for u in files_by_field.get("target", [])]
    names = [f"target {i}" for i in range(len(targets))]  # uploads are named by position
    urls_raw = form.one("source_urls")
    if urls_raw and not sync:
        try:
            urls = json.loads(urls_raw)
        except ValueError:
            urls = [urls_raw]
        if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
            raise BadRequest("source_urls must be a JSON list of storage URLs", hint='["s3://bucket/a.jpg"]')
        for i, url in enumerate(urls[: s.max_sources]):
            sources.append(await anyio.to_thread.run_sync(_fetch_url, svc, url, spool / f"url_source_{i}"))
    target_url = form.one("target_url")
    if target_url and not sync and not targets:
        targets.append(await anyio.to_thread.run_sync(_fetch_url, svc, target_url, spool / "url_target"))
    target_urls = form.one("target_urls")
    if (target_urls or len(targets) > 1) and not sync:
        batch = await _read_batch(svc, spool, list(zip(names, targets, strict=True)), target_urls)
        return await _batch_inputs(svc, sources, batch, form)
    if len(targets) != 1:
        raise BadRequest("exactly one target is required", hint="send a 'target' file (or target_url)")
    if not sources:
        raise BadRequest("at least one source image is required", hint="send one or more 'sources' files")
    if len(sources) > s.max_sources:
        raise BadRequest(f"at most {s.max_sources} source images", hint="send fewer sources")
    limits = svc.upload_limits
    probed_sources = []
    for path in sources:
        info = await anyio.to_thread.run_sync(probe_media, path, limits)
        if info.kind != "image":
            raise WrongMediaKind("a source must be an image", hint="send a photo of the source face")
        probed_sources.append((path, info))
    target_info = await anyio.to_thread.run_sync(probe_media, targets[0], limits)
    if sync and (target_info.kind != "image" or target_info.width * target_info.height > s.sync_max_pixels):
        raise (WrongMediaKind if target_info.kind != "image" else MediaTooLarge)(
            f":sync takes images of at most {s.sync_max_pixels} pixels", hint="submit a job with POST /v1/swaps"
        )
    total = sum(p.stat().st_size for p in [*sources, targets[0]])
    return Inputs(probed_sources, (targets[0], target_info), form, total)


async def _read_batch(
    svc: Service, spool: Path, uploaded: list[tuple[str, Path]], urls_raw: str | None
) -> list[BatchTarget]:
    """The targets of a batch request, each probed; one that cannot be fetched or read becomes a failed item."""
    urls: list[Any] = []
    if urls_raw:
        try:
            urls = json.loads(urls_raw)
        except ValueError:
            urls = None  # type: ignore[assignment]
        if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
            raise BadRequest("target_urls must be a JSON list of storage URLs", hint='["s3://bucket/a.mp4"]')
    limit = svc.settings.max_batch_targets
    if not uploaded and not urls:
        raise BadRequest("no target in the batch", hint="send 'target' files or target_urls")
    if len(uploaded) + len(urls) > limit:
        raise BadRequest(f"at most {limit} targets in one job", hint="split the batch into several jobs")
    out: list[BatchTarget] = []
    candidates: list[tuple[str, Path | str]] = [*uploaded, *((u.rsplit("/", 1)[-1] or u, u) for u in urls)]
    for i, (name, where) in enumerate(candidates):
        try:
            path = where if isinstance(where, Path) else await anyio.to_thread.run_sync(
                _fetch_url, svc, where, spool / f"url_target_{i}")
            info = await anyio.to_thread.run_sync(probe_media, path, svc.upload_limits)
            out.append(BatchTarget(name, path, info))
        except FaceweaveError as exc:
            out.append(BatchTarget(name, None, None, exc))
    return out


async def _batch_inputs(svc: Service, sources: list[Path], batch: list[BatchTarget], form: ParsedForm) -> Inputs:
    s = svc.settings
    if not sources:
        raise BadRequest("at least one source image is required", hint="send one or more 'sources' files")
    if len(sources) > s.max_sources:
        raise BadRequest(f"at most {s.max_sources} source images", hint="send fewer sources")
    good = [t for t in batch if t.error is None]
    if not good:  # nothing would run: refuse the request with the first item's reason
        first = batch[0].error
        assert first is not None
        raise first
    probed_sources = []
    for path in sources:
        info = await anyio.to_thread.run_sync(probe_media, path, svc.upload_limits)
        if info.kind != "image":
            raise WrongMediaKind("a source must be an image", hint="send a photo of the source face")
        probed_sources.append((path, info))
    total = sum(p.stat().st_size for p in sources) + sum(t.path.stat().st_size for t in good if t.path)
    assert good[0].path is not None and good[0].info is not None
    return Inputs(probed_sources, (good[0].path, good[0].info), form, total, batch)


def _fetch_url(svc: Service, url: str, dest: Path) -> Path:
    """Copy a storage URL the operator allowed into ``dest``, stopping at the upload byte limit."""
    import fsspec

    if not any(url.startswith(prefix) for prefix in svc.settings.url_import_prefixes):
        raise BadRequest("this URL is not in an allowed storage location", hint="upload the file instead")
    limit, size = svc.settings.max_upload_bytes, 0
    try:
        with fsspec.open(url, "rb") as fin, dest.open("wb") as fout:
            while chunk := fin.read(1 << 20):
                size += len(chunk)
                if size > limit:
                    raise MediaTooLarge(f"the file at the URL exceeds {limit} bytes", hint="use a smaller file")
                fout.write(chunk)
    except FileNotFoundError:
        raise BadRequest("no file at this storage URL", hint="check the URL") from None
    return dest


def check_quotas(svc: Service, tenant: str, extra_bytes: int = 0) -> None:
    """:class:`QuotaExceeded` when the tenant has too many live jobs, or ``extra_bytes`` would overrun its storage."""
    s = svc.settings
    if svc.store.count_active(tenant) >= s.max_concurrent_jobs:
        raise QuotaExceeded(
            f"this tenant already has {s.max_concurrent_jobs} queued or running jobs",
            hint="wait for one to finish or cancel one",
        )
    if extra_bytes and svc.store.stored_bytes(tenant) + extra_bytes > s.max_storage_bytes:
        raise QuotaExceeded(
            "this tenant's storage quota is used up", hint="delete finished jobs (DELETE /v1/swaps/{id})",
            retry_after_s=3600,
        )  # fmt: skip
