"""The faceweave job service: the FastAPI app factory and its lifespan.

``create_app(settings)`` wires the parts behind their Protocols (job store, storage, executor) into one
:class:`~faceweave.serve.deps.Service` on ``app.state`` and includes one router per resource (``serve/routes/``):

- ``GET /healthz``, ``GET /readyz`` (503 until the workers have warmed their models), ``GET /metrics``, ``GET /``
- ``POST /v1/swaps`` (multipart upload or storage URLs) → 202 + job; ``GET /v1/swaps`` (paged, by state);
  ``GET/DELETE /v1/swaps/{id}``; ``GET /v1/swaps/{id}/events`` (SSE); ``GET /v1/swaps/{id}/result`` (ranges)
- ``POST /v1/swaps:sync`` (small images, answers the image) and ``GET /v1/models``

Every :class:`~faceweave.errors.FaceweaveError` maps once to ``{"error": {"code", "message", "hint"}}`` with its
``http_status`` (``serve/middleware.py``); validation and routing errors use the same body.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
from fastapi import FastAPI

from faceweave.pipeline.batcher import WindowBatcher
from faceweave.serve.auth import Authenticator
from faceweave.serve.deps import Service
from faceweave.serve.executor import (
    EngineCache,
    Executor,
    InProcessExecutor,
    JobFunction,
    ProgressHub,
    image_batch_runner,
    run_swap,
    send_webhook,
    warm_up,
)
from faceweave.serve.inputs import check_url_inputs, job_settings, url_fetcher
from faceweave.serve.limits import RateLimiter, UploadLimits
from faceweave.serve.metrics import ServiceMetrics, gpu_count
from faceweave.serve.middleware import BodyLimitMiddleware, RequestContextMiddleware, install_error_handlers
from faceweave.serve.policy import load_moderator
from faceweave.serve.resilience import install_unavailable_handlers
from faceweave.serve.routes import health, models, page, swaps, verify
from faceweave.serve.routes import live as live_routes
from faceweave.serve.settings import ServiceSettings
from faceweave.serve.storage import FsspecStorage, tenant_dir
from faceweave.serve.store import Job, SqlJobStore
from faceweave.serve.urls import AddressPolicy
from faceweave.settings import SwapSettings

log = logging.getLogger("faceweave.serve")


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
        webhook_policy = AddressPolicy.of(settings.private_networks)
        moderator = load_moderator(settings.moderation)
        limits = UploadLimits(settings.max_upload_bytes, settings.max_pixels, settings.max_duration_s,
                              settings.max_frames, settings.max_decode_bytes)  # fmt: skip

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
                    args=(job.webhook_url, job, settings.webhook_secret, settings.webhook_timeout_s, webhook_policy),
                    daemon=True,
                ).start()

        def on_stage(stage: str, seconds: float) -> None:
            holder["svc"].metrics.stage_seconds.labels(stage).observe(seconds)

        executor: Executor
        if settings.executor == "ray":  # GPU actors of a Ray cluster; media must be shared storage (S3)
            from faceweave.serve.ray_executor import make_ray_executor

            storage, executor = make_ray_executor(settings, store, hub, on_finished)
        else:
            executor = InProcessExecutor(
                store, storage, settings.work_dir, slots=slots, hub=hub, setup=warmup,
                job_function=check_url_inputs(job_function, moderator, limits), on_finished=on_finished,
                on_stage=on_stage, device=settings.device, fetch_url=url_fetcher(settings, limits),
                segment_s=settings.segment_s,
            )  # fmt: skip
        metrics = ServiceMetrics(store.counts_by_state, executor.running_jobs, store.queue_stats)
        svc = Service(
            settings=settings, store=store, storage=storage, executor=executor, hub=hub, metrics=metrics,
            auth=Authenticator(settings, store), limiter=RateLimiter(settings.rate_limit_per_minute,
                                                                     settings.rate_limit_burst),
            auth_failures=RateLimiter(settings.auth_failures_per_minute, settings.auth_failure_burst),
            job_function=job_function, moderator=moderator,
            sync_slots=asyncio.Semaphore(settings.sync_concurrency),
        )  # fmt: skip
        # the :sync slots use the executor's warm engines (one engine per model settings in the process: one copy
        # of the models and CUDA graphs, warmed once); with Ray the jobs run elsewhere and the slots share their own
        engines = executor.engines if isinstance(executor, InProcessExecutor) else EngineCache()
        sync_states: list[dict[str, Any]] = [{"engines": engines} for _ in range(settings.sync_concurrency)]
        if settings.sync_batch > 1 and job_function is run_swap:
            # one warm engine batches the :sync requests of concurrent clients; twice a batch may wait at once, so
            # the next batch forms while one runs (an injected job function runs each request alone, below)
            batch_state = sync_states[0]
            sync_states = [batch_state]
            svc.sync_batcher = WindowBatcher(image_batch_runner(batch_state),
                                             window_s=settings.sync_batch_window_s, name="faceweave-sync-batch",
                                             max_items=settings.sync_batch)  # fmt: skip
            svc.sync_slots = asyncio.Semaphore(2 * settings.sync_batch)
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
            if svc.sync_batcher is not None:
                await anyio.to_thread.run_sync(svc.sync_batcher.close)
            live = getattr(app.state, "live_hub", None)
            if live is not None:  # the shared live engine's threads end with the app, not with the process
                await anyio.to_thread.run_sync(live.close)
            store.close()

    app = FastAPI(
        title="faceweave",
        version="1",
        description="Face swap jobs: upload a source face and a target image or video, follow progress, download.",
        lifespan=lifespan,
    )
    # Added first = innermost: the context middleware (outermost) logs and adds headers to the 413/408 answers too.
    app.add_middleware(
        BodyLimitMiddleware, max_bytes=max_body_bytes(settings), chunk_timeout_s=settings.request_body_timeout_s
    )
    app.add_middleware(RequestContextMiddleware)
    install_error_handlers(app)
    install_unavailable_handlers(app)
    for module in (health, page, models, swaps, verify):  # this order is the routes' match order and the OpenAPI order
        app.include_router(module.router)
    app.include_router(live_routes.router)  # live sessions: /live, /v1/live (aiortc is imported on first use)
    return app


def max_body_bytes(settings: ServiceSettings) -> int:
    """The largest request body: every file at its limit (the sources and a batch's targets), plus 1 MiB for the
    form's fields and part headers."""
    return settings.max_upload_bytes * (settings.max_sources + settings.max_batch_targets) + (1 << 20)


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
