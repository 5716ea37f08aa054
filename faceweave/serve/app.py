"""The faceweave job service: FastAPI app factory.

``create_app(settings)`` wires the parts behind their Protocols (job store, storage, executor) and serves:

- ``GET /healthz``, ``GET /readyz`` (503 until the workers have warmed their models), ``GET /metrics``, ``GET /``
- ``POST /v1/swaps`` (multipart upload or storage URLs) → 202 + job; ``GET /v1/swaps`` (paged, by state);
  ``GET/DELETE /v1/swaps/{id}``; ``GET /v1/swaps/{id}/events`` (SSE); ``GET /v1/swaps/{id}/result`` (ranges)
- ``POST /v1/swaps:sync`` (small images, answers the image) and ``GET /v1/models``

Every :class:`~faceweave.errors.FaceweaveError` maps once to ``{"error": {"code", "message", "hint"}}`` with its
``http_status``; validation and routing errors use the same body.
"""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import shutil
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import anyio
from fastapi import FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from faceweave.errors import FaceweaveError, InvalidOption, MediaTooLarge, WrongMediaKind
from faceweave.serve.auth import Authenticator, Principal
from faceweave.serve.errors import (
    BadRequest,
    JobNotFound,
    NotReady,
    QuotaExceeded,
    RangeNotSatisfiable,
    RateLimited,
    ResultExpired,
    ResultNotReady,
    error_body,
)
from faceweave.serve.executor import (
    InProcessExecutor,
    JobContext,
    JobFunction,
    ProgressHub,
    job_event,
    output_extension,
    run_swap,
    send_webhook,
    warm_up,
)
from faceweave.serve.limits import (
    MediaInfo,
    ParsedForm,
    RateLimiter,
    UploadedFile,
    UploadLimits,
    parse_multipart_stream,
    probe_media,
)
from faceweave.serve.logging import request_id_var
from faceweave.serve.metrics import CONTENT_TYPE, ServiceMetrics, gpu_count
from faceweave.serve.policy import ModerationRequest, check_consent, load_moderator, moderate
from faceweave.serve.settings import ServiceSettings
from faceweave.serve.storage import FsspecStorage, tenant_dir
from faceweave.serve.store import Job, JobState, NewJob, SqlJobStore
from faceweave.settings import SwapSettings

log = logging.getLogger("faceweave.serve")
STATIC_DIR = Path(__file__).parent / "static"
SERVICE_ONLY_FIELDS = ("model_dir",)  # server paths a client must not choose
MEDIA_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp",
               ".mp4": "video/mp4", ".bmp": "image/bmp"}  # fmt: skip


# --- response models (the OpenAPI schema schemathesis checks) --------------------------------------------------
class ErrorDetail(BaseModel):
    code: str
    message: str
    hint: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


class JobError(BaseModel):
    type: str | None = None
    code: str
    message: str


class JobProgress(BaseModel):
    stage: str
    frames_done: int
    frames_total: int | None = None
    fps: float
    eta_s: float | None = None


class JobOut(BaseModel):
    id: str
    state: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    media_kind: str | None = None
    created_at: float
    updated_at: float
    started_at: float | None = None
    finished_at: float | None = None
    progress: JobProgress
    settings: dict[str, Any]
    faces_swapped: int | None = None
    error: JobError | None = None
    attempts: int
    result_url: str | None = None
    result_bytes: int | None = None
    expired: bool
    stats: dict[str, Any] = Field(default_factory=dict, description="the pipeline's counters for a succeeded job")

    @classmethod
    def of(cls, job: Job) -> JobOut:
        return cls(
            id=job.id, state=job.state.value, media_kind=job.media_kind, created_at=job.created_at,
            updated_at=job.updated_at, started_at=job.started_at, finished_at=job.finished_at,
            progress=JobProgress(stage=job.stage, frames_done=job.frames_done, frames_total=job.frames_total,
                                 fps=job.fps, eta_s=job.eta_s),
            settings=job.settings, faces_swapped=job.faces_swapped,
            error=JobError(type=job.error_type, code=job.error_code, message=job.error_message or "")
            if job.error_code else None,
            attempts=job.attempts,
            result_url=f"/v1/swaps/{job.id}/result" if job.state == JobState.succeeded and not job.expired else None,
            result_bytes=job.result_bytes if job.state == JobState.succeeded else None, expired=job.expired,
            stats=job.stats,
        )  # fmt: skip


class JobList(BaseModel):
    items: list[JobOut]
    total: int
    limit: int
    offset: int


class ModelOut(BaseModel):
    name: str
    family: str
    licence: str
    embedded: bool
    available: bool


class ModelsOut(BaseModel):
    swappers: list[str]
    detectors: list[str]
    enhancers: list[str]
    models: list[ModelOut]


class StatusOut(BaseModel):
    status: str


ERRORS: dict[int | str, dict[str, Any]] = {
    s: {"model": ErrorResponse} for s in (400, 401, 404, 409, 410, 413, 415, 416, 422, 429, 500, 503)
}
FORM_SCHEMA: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "sources": {"type": "array", "items": {"type": "string", "format": "binary"},
                                    "description": "source face image(s)"},
                        "target": {"type": "string", "format": "binary", "description": "target image or video"},
                        "settings": {"type": "string", "description": "JSON object of SwapSettings fields"},
                        "consent": {"type": "string", "enum": ["true", "false"],
                                    "description": "attest that everyone depicted consented"},
                        "webhook_url": {"type": "string", "description": "POSTed (HMAC-signed) on completion"},
                        "source_urls": {"type": "string", "description": "JSON list of storage URLs"},
                        "target_url": {"type": "string", "description": "a storage URL"},
                    },
                }
            }
        },
    }
}  # fmt: skip


# --- the service object ----------------------------------------------------------------------------------------
@dataclass
class Service:
    """Everything one app instance owns (no process-global state)."""

    settings: ServiceSettings
    store: SqlJobStore
    storage: FsspecStorage
    executor: InProcessExecutor
    hub: ProgressHub
    metrics: ServiceMetrics
    auth: Authenticator
    limiter: RateLimiter
    job_function: JobFunction
    moderator: Any
    sync_states: queue.Queue[dict[str, Any]] = field(default_factory=queue.Queue)
    sync_slots: asyncio.Semaphore | None = None
    sync_ready: threading.Event = field(default_factory=threading.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def upload_limits(self) -> UploadLimits:
        s = self.settings
        return UploadLimits(s.max_upload_bytes, s.max_pixels, s.max_duration_s, s.max_frames)


def _service(request: Request) -> Service:
    return request.app.state.service  # type: ignore[no-any-return]


def _principal(request: Request) -> Principal:
    svc = _service(request)
    principal = svc.auth.authenticate(request.headers.get("authorization"), request.headers.get("x-api-key"))
    svc.limiter.check(principal.credential_id)
    return principal


def _own_job(svc: Service, job_id: str, principal: Principal) -> Job:
    job = svc.store.get_job(job_id, tenant=principal.tenant) if len(job_id) <= 64 else None
    if job is None:  # another tenant's job is indistinguishable from a missing one
        raise JobNotFound(f"no job {job_id[:64]!r}", hint="list your jobs with GET /v1/swaps")
    return job


# --- middleware ------------------------------------------------------------------------------------------------
class RequestContextMiddleware:
    """Request ids, access logs without client addresses, and request metrics (pure ASGI: SSE-safe)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if incoming.isalnum() and len(incoming) <= 64 else uuid.uuid4().hex
        token = request_id_var.set(request_id)
        status = {"code": 500}
        t0 = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            route_path = getattr(route, "path", None) or "unmatched"
            dt = time.perf_counter() - t0
            app = scope.get("app")
            svc: Service | None = getattr(app.state, "service", None) if app is not None else None
            if svc is not None:
                svc.metrics.requests.labels(scope["method"], route_path, str(status["code"])).inc()
                svc.metrics.request_seconds.labels(scope["method"], route_path).observe(dt)
            log.info(
                "request", extra={"method": scope["method"], "route": route_path, "status": status["code"],
                                  "duration_ms": round(dt * 1000, 1)},
            )  # fmt: skip
            request_id_var.reset(token)


# --- the app ---------------------------------------------------------------------------------------------------
def create_app(
    settings: ServiceSettings | None = None,
    *,
    job_function: JobFunction = run_swap,
    warmup: Callable[[dict[str, Any]], None] | None = None,
) -> FastAPI:
    """Build the app. ``job_function`` runs one job (default: the real pipeline); ``warmup`` runs once per worker
    before ``/readyz`` turns 200 (default: load and run the models when ``settings.warmup``)."""
    settings = settings or ServiceSettings()
    if warmup is None and settings.warmup:
        defaults = job_settings(settings, SwapSettings())

        def warmup(state: dict[str, Any]) -> None:
            warm_up(state, defaults)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        store = await anyio.to_thread.run_sync(SqlJobStore, settings.resolved_database_url)
        storage = FsspecStorage(settings.resolved_storage_url, **settings.storage_options)
        hub = ProgressHub()
        slots = settings.workers or gpu_count() or 1
        holder: dict[str, Service] = {}

        def on_finished(job: Job) -> None:
            svc = holder["svc"]
            svc.metrics.jobs_finished.labels(job.state.value).inc()
            if job.started_at and job.finished_at:
                svc.metrics.job_seconds.labels(job.media_kind or "unknown", job.state.value).observe(
                    job.finished_at - job.started_at
                )
            if job.webhook_url:
                threading.Thread(
                    target=send_webhook,
                    args=(job.webhook_url, job, settings.webhook_secret, settings.webhook_timeout_s),
                    daemon=True,
                ).start()

        def on_stage(stage: str, seconds: float) -> None:
            holder["svc"].metrics.stage_seconds.labels(stage).observe(seconds)

        executor = InProcessExecutor(
            store, storage, settings.work_dir, slots=slots, hub=hub, job_function=job_function, setup=warmup,
            on_finished=on_finished, on_stage=on_stage, device=settings.device,
        )  # fmt: skip
        metrics = ServiceMetrics(store.counts_by_state, executor.running_jobs)
        svc = Service(
            settings=settings, store=store, storage=storage, executor=executor, hub=hub, metrics=metrics,
            auth=Authenticator(settings, store), limiter=RateLimiter(settings.rate_limit_per_minute,
                                                                     settings.rate_limit_burst),
            job_function=job_function, moderator=load_moderator(settings.moderation),
            sync_slots=asyncio.Semaphore(settings.sync_concurrency),
        )  # fmt: skip
        sync_states: list[dict[str, Any]] = [{} for _ in range(settings.sync_concurrency)]
        for state in sync_states:
            svc.sync_states.put(state)
        if warmup is not None:  # the :sync slots keep their own warm engines; /readyz waits for them too

            def warm_sync_slots() -> None:
                for state in sync_states:
                    try:
                        warmup(state)
                    except Exception:
                        log.exception("warm-up of a :sync slot failed; it loads models on first use")
                svc.sync_ready.set()

            threading.Thread(target=warm_sync_slots, name="faceweave-sync-warmup", daemon=True).start()
        else:
            svc.sync_ready.set()
        holder["svc"] = svc
        app.state.service = svc
        executor.start()
        svc.tasks.append(asyncio.create_task(_sweeper(svc)))
        log.info("faceweave service started with %d worker slot(s)", slots)
        try:
            yield
        finally:
            for task in svc.tasks:
                task.cancel()
            await anyio.to_thread.run_sync(executor.stop)
            store.close()

    app = FastAPI(
        title="faceweave",
        version="1",
        description="Face swap jobs: upload a source face and a target image or video, follow progress, download.",
        lifespan=lifespan,
    )
    app.add_middleware(RequestContextMiddleware)
    _install_error_handlers(app)
    _install_routes(app)
    return app


async def _sweeper(svc: Service) -> None:
    """Delete uploads and results of jobs finished longer than the retention ago."""
    while True:
        try:
            await anyio.to_thread.run_sync(sweep_expired, svc)
        except Exception:
            log.exception("retention sweep failed")
        await asyncio.sleep(svc.settings.sweep_interval_s)


def sweep_expired(svc: Service, now: float | None = None) -> int:
    now = time.time() if now is None else now
    expired = svc.store.finished_before(now - svc.settings.retention_s)
    for job in expired:
        svc.storage.delete_prefix(f"{tenant_dir(job.tenant)}/{job.id}")
        svc.store.mark_expired(job.id)
    return len(expired)


def _error_response(exc: FaceweaveError) -> JSONResponse:
    headers = {}
    if isinstance(exc, (RateLimited, QuotaExceeded)):
        headers["Retry-After"] = str(max(1, int(exc.retry_after_s + 0.999)))
    return JSONResponse(error_body(exc), status_code=exc.http_status, headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(FaceweaveError)
    async def _faceweave_error(_: Request, exc: FaceweaveError) -> JSONResponse:
        if exc.http_status == 500:
            log.error("request failed: %s", exc.code)
        return _error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", ()))
        body = {"error": {"code": "invalid_request", "message": f"{where}: {first.get('msg')}", "hint": None}}
        return JSONResponse(body, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        body = {"error": {"code": f"http_{exc.status_code}", "message": str(exc.detail), "hint": None}}
        return JSONResponse(body, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error")
        body = {"error": {"code": "internal_error", "message": "internal server error", "hint": None}}
        return JSONResponse(body, status_code=500)


# --- request parsing -------------------------------------------------------------------------------------------
def _parse_settings(svc: Service, raw: str | None) -> SwapSettings:
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
        "max_pixels": min(requested.max_pixels, service.max_pixels),
        "max_duration_s": min(requested.max_duration_s, service.max_duration_s),
    })  # fmt: skip


@dataclass
class Inputs:
    sources: list[tuple[Path, MediaInfo]]
    target: tuple[Path, MediaInfo]
    form: ParsedForm
    total_bytes: int


async def _read_inputs(request: Request, svc: Service, spool: Path, *, sync: bool) -> Inputs:
    s = svc.settings
    length = request.headers.get("content-length")
    budget = s.max_upload_bytes * (s.max_sources + 1) + (1 << 20)
    if length is not None and length.isdigit() and int(length) > budget:
        raise MediaTooLarge(f"the request body is over {budget} bytes", hint="upload smaller files")
    form = await parse_multipart_stream(
        request.headers.get("content-type", ""), request.stream(), spool, max_file_bytes=s.max_upload_bytes,
        max_files=s.max_sources + 1,
    )  # fmt: skip
    for name in form.fields:
        if name not in ("settings", "consent", "webhook_url", "source_urls", "target_url"):
            raise InvalidOption(f"unknown form field {name!r}", hint="see the API documentation (docs/api.md)")
    files_by_field: dict[str, list[UploadedFile]] = {}
    for up in form.files:
        if up.field not in ("sources", "target"):
            raise InvalidOption(f"unknown file field {up.field!r}", hint="send files as 'sources' and 'target'")
        files_by_field.setdefault(up.field, []).append(up)
    sources = [u.path for u in files_by_field.get("sources", [])]
    targets = [u.path for u in files_by_field.get("target", [])]
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


def _check_quotas(svc: Service, tenant: str, extra_bytes: int = 0) -> None:
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


# --- routes ----------------------------------------------------------------------------------------------------
def _install_routes(app: FastAPI) -> None:  # noqa: C901 - one place that lists every route
    @app.get("/healthz", response_model=StatusOut, tags=["ops"])
    async def healthz() -> StatusOut:
        """Liveness: the process answers."""
        return StatusOut(status="ok")

    @app.get("/readyz", response_model=StatusOut, responses={503: {"model": ErrorResponse}}, tags=["ops"])
    async def readyz(request: Request) -> StatusOut:
        """Readiness: 503 until every worker has loaded and warmed its models."""
        svc = _service(request)
        if not (svc.executor.ready and svc.sync_ready.is_set()):
            raise NotReady("models are still loading", hint="retry in a few seconds")
        return StatusOut(status="ready")

    @app.get("/metrics", tags=["ops"], response_class=Response, responses={200: {"content": {CONTENT_TYPE: {}}}})
    async def metrics(request: Request) -> Response:
        """Prometheus metrics."""
        body = await anyio.to_thread.run_sync(_service(request).metrics.render)
        return Response(body, media_type=CONTENT_TYPE)

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str) -> FileResponse:
        path = STATIC_DIR / name
        if "/" in name or name.startswith(".") or not path.is_file():
            raise StarletteHTTPException(404, "no such file")
        media = {".js": "text/javascript", ".css": "text/css"}.get(path.suffix, "application/octet-stream")
        return FileResponse(path, media_type=media)

    @app.get("/v1/models", response_model=ModelsOut, responses=ERRORS, tags=["models"])
    async def models(request: Request) -> ModelsOut:
        """Swappers, detectors and enhancers this server can run, and the registered weight files."""
        _principal(request)
        from faceweave.models.registry import all_specs

        specs = await anyio.to_thread.run_sync(all_specs)
        out = []
        for spec in specs:
            available = bool(spec.embedded or spec.package)
            out.append(ModelOut(name=spec.name, family=str(spec.family), licence=spec.licence,
                                embedded=spec.embedded, available=available))  # fmt: skip
        swappers = ["mesh"] + [m.name for m in out if m.family == "swapper"]
        detectors = ["blazeface"] + [m.name for m in out if m.family == "detector" and m.name != "blazeface"]
        enhancers = ["detail"] + [m.name for m in out if m.family == "enhancer"]
        return ModelsOut(swappers=swappers, detectors=detectors, enhancers=enhancers, models=out)

    @app.post("/v1/swaps", status_code=202, response_model=JobOut, responses=ERRORS, openapi_extra=FORM_SCHEMA,
              tags=["jobs"])  # fmt: skip
    async def create_swap(request: Request, response: Response) -> JobOut:
        """Create a job from uploaded files (multipart ``sources`` + ``target``) or storage URLs → 202 + job."""
        svc = _service(request)
        principal = _principal(request)
        _check_quotas(svc, principal.tenant)
        job_id = uuid.uuid4().hex
        spool = svc.settings.work_dir / "uploads" / job_id
        try:
            inputs = await _read_inputs(request, svc, spool, sync=False)
            settings = _parse_settings(svc, inputs.form.one("settings"))
            check_consent(inputs.form.one("consent"), svc.settings.require_consent)
            webhook = inputs.form.one("webhook_url")
            if webhook and (not webhook.startswith(("http://", "https://")) or len(webhook) > 2048):
                raise BadRequest("webhook_url must be an http(s) URL", hint="e.g. https://example.com/hook")
            _check_quotas(svc, principal.tenant, inputs.total_bytes)
            target_path, target_info = inputs.target
            await anyio.to_thread.run_sync(moderate, svc.moderator, ModerationRequest(
                tenant=principal.tenant, sources=[p for p, _ in inputs.sources], target=target_path,
                target_kind=target_info.kind, settings=settings.model_dump(),
            ))  # fmt: skip
            folder = f"{tenant_dir(principal.tenant)}/{job_id}"
            source_keys = [f"{folder}/source_{i}.{info.extension}" for i, (_, info) in enumerate(inputs.sources)]
            target_key = f"{folder}/target.{target_info.extension}"

            def store_inputs() -> Job:
                for (path, _), key in zip(inputs.sources, source_keys, strict=True):
                    svc.storage.upload(path, key)
                svc.storage.upload(target_path, target_key)
                return svc.store.create_job(NewJob(
                    tenant=principal.tenant, settings=settings.model_dump(mode="json"), source_keys=source_keys,
                    target_key=target_key, media_kind=target_info.kind, stored_bytes=inputs.total_bytes,
                    webhook_url=webhook, id=job_id,
                ))  # fmt: skip

            job = await anyio.to_thread.run_sync(store_inputs)
        finally:
            shutil.rmtree(spool, ignore_errors=True)
        svc.executor.notify()
        log.info("job queued (%s, %d source(s))", job.media_kind, len(job.source_keys))
        response.headers["Location"] = f"/v1/swaps/{job.id}"
        return JobOut.of(job)

    @app.post("/v1/swaps:sync", response_class=Response, openapi_extra=FORM_SCHEMA, tags=["jobs"],
              responses={**ERRORS, 200: {"content": {"image/png": {}, "image/jpeg": {}, "image/webp": {}},
                                         "description": "the swapped image"}})  # fmt: skip
    async def swap_sync(request: Request) -> Response:
        """Swap a small image and answer the image itself (no job is stored)."""
        svc = _service(request)
        principal = _principal(request)
        spool = svc.settings.work_dir / "sync" / uuid.uuid4().hex
        try:
            inputs = await _read_inputs(request, svc, spool, sync=True)
            settings = _parse_settings(svc, inputs.form.one("settings"))
            check_consent(inputs.form.one("consent"), svc.settings.require_consent)
            target_path, target_info = inputs.target
            await anyio.to_thread.run_sync(moderate, svc.moderator, ModerationRequest(
                tenant=principal.tenant, sources=[p for p, _ in inputs.sources], target=target_path,
                target_kind="image", settings=settings.model_dump(),
            ))  # fmt: skip
            assert svc.sync_slots is not None
            async with svc.sync_slots:
                state = svc.sync_states.get_nowait()
                try:
                    outcome, data = await anyio.to_thread.run_sync(
                        _run_sync_job, svc, principal, settings, inputs, spool, state
                    )
                finally:
                    svc.sync_states.put(state)
        finally:
            shutil.rmtree(spool, ignore_errors=True)
        media = MEDIA_TYPES.get(outcome.output.suffix.lower(), "application/octet-stream")
        return Response(data, media_type=media, headers={"X-Faceweave-Faces-Swapped": str(outcome.faces_swapped)})

    @app.get("/v1/swaps", response_model=JobList, responses=ERRORS, tags=["jobs"])
    async def list_swaps(
        request: Request,
        state: Literal["queued", "running", "succeeded", "failed", "cancelled"] | None = None,
        limit: int = Query(20, ge=1, le=100),
        offset: int = Query(0, ge=0, le=1_000_000),
    ) -> JobList:
        """This tenant's jobs, newest first, optionally only those in ``state``."""
        principal = _principal(request)
        svc = _service(request)
        jobs, total = await anyio.to_thread.run_sync(
            svc.store.list_jobs, principal.tenant, JobState(state) if state else None, limit, offset
        )
        return JobList(items=[JobOut.of(j) for j in jobs], total=total, limit=limit, offset=offset)

    @app.get("/v1/swaps/{job_id}", response_model=JobOut, responses=ERRORS, tags=["jobs"])
    async def get_swap(request: Request, job_id: str) -> JobOut:
        """One job: state, progress, error (type, code, message) and the result URL once it succeeded."""
        principal = _principal(request)
        return JobOut.of(_own_job(_service(request), job_id, principal))

    @app.delete("/v1/swaps/{job_id}", response_model=JobOut, responses=ERRORS, tags=["jobs"])
    async def delete_swap(request: Request, job_id: str) -> JobOut:
        """Cancel the job if it has not finished, and delete its uploads and result."""
        principal = _principal(request)
        svc = _service(request)
        job = _own_job(svc, job_id, principal)
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
        return JobOut.of(final)

    @app.get("/v1/swaps/{job_id}/events", tags=["jobs"], response_class=StreamingResponse,
             responses={**ERRORS, 200: {"content": {"text/event-stream": {}},
                                        "description": "server-sent events, one JSON job event each"}})  # fmt: skip
    async def swap_events(request: Request, job_id: str) -> StreamingResponse:
        """Server-sent events: ``event: job`` with state, stage, frames done/total, fps and ETA, until it ends."""
        principal = _principal(request)
        svc = _service(request)
        job = _own_job(svc, job_id, principal)
        return StreamingResponse(
            _event_stream(svc, job.id, request.is_disconnected),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @app.get("/v1/swaps/{job_id}/result", tags=["jobs"], response_class=Response,
             responses={**ERRORS, 200: {"content": {"image/png": {}, "image/jpeg": {}, "video/mp4": {}},
                                        "description": "the result file"},
                        206: {"description": "a byte range of the result"}})  # fmt: skip
    async def swap_result(request: Request, job_id: str) -> Response:
        """The result file; supports ``Range: bytes=…`` (206, 416)."""
        principal = _principal(request)
        svc = _service(request)
        job = _own_job(svc, job_id, principal)
        if job.expired:
            raise ResultExpired("the result was deleted (retention or DELETE)", hint="submit the job again")
        if job.state != JobState.succeeded or not job.result_key:
            raise ResultNotReady(f"the job is {job.state.value}, not succeeded", hint="follow /events or poll the job")
        key = job.result_key
        size = await anyio.to_thread.run_sync(svc.storage.size, key)
        suffix = Path(key).suffix.lower()
        headers = {
            "Accept-Ranges": "bytes",
            "Content-Disposition": f'attachment; filename="faceweave-{job.id}{suffix}"',
            "ETag": f'"{job.id}-{size}"',
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


def _run_sync_job(
    svc: Service, principal: Principal, settings: SwapSettings, inputs: Inputs, spool: Path, state: dict[str, Any]
) -> tuple[Any, bytes]:
    target_path, info = inputs.target
    now = time.time()
    job = Job(
        id="sync", tenant=principal.tenant, state=JobState.running, media_kind="image", created_at=now,
        updated_at=now, started_at=now, finished_at=None, settings=settings.model_dump(mode="json"),
        source_keys=[], target_key="", result_key=None, result_bytes=0, stored_bytes=0, frames_done=0,
        frames_total=1, fps=0.0, eta_s=None, stage="", faces_swapped=None, error_type=None, error_code=None,
        error_message=None, attempts=1, webhook_url=None, expired=False,
    )  # fmt: skip
    target = spool / f"target.{info.extension}"
    target_path.rename(target)
    output = spool / f"result{output_extension('image', target)}"
    t0 = time.perf_counter()
    outcome = svc.job_function(JobContext(
        job, settings, [p for p, _ in inputs.sources], target, output, spool, lambda _: None, state
    ))  # fmt: skip
    svc.metrics.stage_seconds.labels("sync").observe(time.perf_counter() - t0)
    return outcome, outcome.output.read_bytes()


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
