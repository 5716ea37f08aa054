"""Reading a swap request: the multipart form (or storage URLs) spooled and probed under the upload limits, the
client's settings clamped by the operator's, and the tenant's quotas."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from fastapi import Request

from faceweave.errors import FaceweaveError, InvalidOption, MediaTooLarge, WrongMediaKind
from faceweave.serve.deps import Service
from faceweave.serve.errors import BadRequest, QuotaExceeded
from faceweave.serve.executor import URL_KEY_PREFIX, JobContext, JobFunction, JobOutcome
from faceweave.serve.limits import (
    MediaInfo,
    ParsedForm,
    UploadedFile,
    UploadLimits,
    parse_multipart_stream,
    probe_media,
)
from faceweave.serve.policy import ModerationRequest, moderate
from faceweave.serve.settings import ServiceSettings
from faceweave.serve.urls import AddressPolicy, FetchLimits, UrlRefused, allowed_import, fetch_import, log_decision
from faceweave.settings import SwapSettings

# Settings that are the operator's, never a client's: server paths, and anything that spends the operator's
# hardware (processes, devices, memory per batch, precision, CUDA graph capture). A client sending one gets 422
# ``invalid_option`` naming the field, whatever the value; the server's own values apply (``job_settings``).
# docs/api.md lists them. The provenance markings (watermark, C2PA and its key/certificate) are here too: a client
# must never turn them off.
SERVICE_ONLY_FIELDS: frozenset[str] = frozenset(
    {"model_dir", "device", "devices", "dtype", "batch_size", "workers", "cuda_graphs",
     "watermark", "c2pa", "c2pa_cert", "c2pa_key"}
)
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
    for name in sorted(SERVICE_ONLY_FIELDS & values.keys()):
        raise InvalidOption(
            f"settings.{name} is set by the server's operator, not by clients",
            hint=f"remove {name!r} from settings (see docs/api.md, 'Settings clients may set')",
        )
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
    """Uploaded files (spooled and probed) and URL imports (checked against the allowlist, fetched by the job)."""

    sources: list[tuple[Path, MediaInfo]]
    target: tuple[Path, MediaInfo] | None
    form: ParsedForm
    total_bytes: int
    source_urls: list[str] = field(default_factory=list)
    target_url: str | None = None
    # several targets ('target' parts or target_urls): one result each; None for a single-target request
    batch: list[BatchTarget] | None = None


async def read_inputs(request: Request, svc: Service, spool: Path, *, sync: bool) -> Inputs:
    """Spool the request's files (and, for jobs, allowed storage URLs) into ``spool`` and probe them.

    ``sync`` (``POST /v1/swaps:sync``) takes uploads only and one image target of at most ``sync_max_pixels``.
    """
    s = svc.settings  # the whole body's size and pace are bounded by BodyLimitMiddleware before this reads it
    max_targets = 1 if sync else s.max_batch_targets
    form = await parse_multipart_stream(
        request.headers.get("content-type", ""), request.stream(), spool, max_file_bytes=s.max_upload_bytes,
        max_files=s.max_sources + max_targets, max_parts=s.max_form_parts,
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
    source_urls: list[str] = []
    urls_raw = form.one("source_urls")
    if urls_raw and not sync:
        try:
            urls = json.loads(urls_raw)
        except ValueError:
            urls = [urls_raw]
        if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
            raise BadRequest("source_urls must be a JSON list of storage URLs", hint='["s3://bucket/a.jpg"]')
        source_urls = [_allowed_url(svc, u) for u in urls[: s.max_sources + 1]]
    target_url = form.one("target_url")
    target_urls = form.one("target_urls")
    if (target_urls or len(targets) > 1) and not sync:
        batch = await _read_batch(svc, spool, list(zip(names, targets, strict=True)), target_urls)
        return await _batch_inputs(svc, sources, batch, form)
    target_url = _allowed_url(svc, target_url) if target_url and not sync and not targets else None
    if len(targets) + (target_url is not None) != 1:
        raise BadRequest("exactly one target is required", hint="send a 'target' file (or target_url)")
    if not sources and not source_urls:
        raise BadRequest("at least one source image is required", hint="send one or more 'sources' files")
    if len(sources) + len(source_urls) > s.max_sources:
        raise BadRequest(f"at most {s.max_sources} source images", hint="send fewer sources")
    limits = svc.upload_limits
    probed_sources = []
    for path in sources:
        info = await anyio.to_thread.run_sync(probe_media, path, limits)
        if info.kind != "image":
            raise WrongMediaKind("a source must be an image", hint="send a photo of the source face")
        probed_sources.append((path, info))
    if target_url is not None:
        total = sum(p.stat().st_size for p in sources)
        return Inputs(probed_sources, None, form, total, source_urls, target_url)
    target_info = await anyio.to_thread.run_sync(probe_media, targets[0], limits)
    if sync and (target_info.kind != "image" or target_info.width * target_info.height > s.sync_max_pixels):
        raise (WrongMediaKind if target_info.kind != "image" else MediaTooLarge)(
            f":sync takes images of at most {s.sync_max_pixels} pixels", hint="submit a job with POST /v1/swaps"
        )
    total = sum(p.stat().st_size for p in [*sources, targets[0]])
    return Inputs(probed_sources, (targets[0], target_info), form, total, source_urls, None)


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
            # a batch probes each target at submit: its URLs are fetched here with the job's own fetcher (the
            # allowlist and address policy on every hop, connect/read/total timeouts, the byte cap)
            path = where if isinstance(where, Path) else await anyio.to_thread.run_sync(
                url_fetcher(svc.settings, svc.upload_limits), _allowed_url(svc, where), spool / f"url_target_{i}")
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
    return Inputs(probed_sources, (good[0].path, good[0].info), form, total, batch=batch)


def _allowed_url(svc: Service, url: str) -> str:
    """A URL import checked against the operator's prefixes (no network here: the job fetches it)."""
    if not svc.settings.url_import_prefixes:
        log_decision("import", url, "refused (URL imports are off)")
        raise UrlRefused(hint="this server takes uploads only")
    try:
        return allowed_import(url, svc.settings.url_import_prefixes)
    except UrlRefused:
        log_decision("import", url, "refused")
        raise


def url_fetcher(settings: ServiceSettings, limits: UploadLimits) -> Callable[[str, Path], Path]:
    """The executor's fetch of a URL input (inside the job): allowlist and address policy again, timeouts and the
    byte cap, then the same header checks as an upload; the file is named with its sniffed extension."""
    policy = AddressPolicy.of(settings.private_networks)
    fetch_limits = FetchLimits(
        max_bytes=settings.max_upload_bytes, connect_timeout_s=settings.url_connect_timeout_s,
        read_timeout_s=settings.url_read_timeout_s, total_timeout_s=settings.url_total_timeout_s,
    )  # fmt: skip

    def fetch(url: str, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        dest = folder / f"url_{hashlib.sha256(url.encode()).hexdigest()[:16]}"
        fetch_import(url, dest, settings.url_import_prefixes, policy, fetch_limits)
        info = probe_media(dest, limits)
        return dest.rename(dest.with_suffix(f".{info.extension}"))

    return fetch


def check_url_inputs(inner: JobFunction, moderator: Any, limits: UploadLimits) -> JobFunction:
    """Wrap the job function: a job with URL inputs gets, after its fetch, the checks an upload got at submit
    (sources must be images; the moderation hook)."""

    def run(ctx: JobContext) -> JobOutcome:
        if any(k.startswith(URL_KEY_PREFIX) for k in [*ctx.job.source_keys, ctx.job.target_key]):
            for path in ctx.sources:
                if probe_media(path, limits).kind != "image":
                    raise WrongMediaKind("a source must be an image", hint="send a photo of the source face")
            kind = probe_media(ctx.target, limits).kind
            moderate(moderator, ModerationRequest(
                tenant=ctx.job.tenant, sources=list(ctx.sources), target=ctx.target, target_kind=kind,
                settings=ctx.settings.model_dump(),
            ))  # fmt: skip
        return inner(ctx)

    return run


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
