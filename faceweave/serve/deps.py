"""What the routes share: the per-app :class:`Service` (kept on ``app.state``, no module globals) and the
FastAPI dependencies that hand it, the caller's principal and the caller's job to a route."""

from __future__ import annotations

import asyncio
import queue
import threading
from dataclasses import dataclass, field
from math import ceil
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, Request

from faceweave.serve.auth import Authenticator, Principal
from faceweave.serve.errors import JobNotFound, RateLimited, Unauthorized
from faceweave.serve.executor import Executor, JobFunction, ProgressHub
from faceweave.serve.limits import RateLimiter, UploadLimits
from faceweave.serve.metrics import ServiceMetrics
from faceweave.serve.settings import ServiceSettings
from faceweave.serve.storage import FsspecStorage
from faceweave.serve.store import Job, SqlJobStore

if TYPE_CHECKING:  # torch comes with them: imported where a batch runs
    from faceweave.pipeline.batcher import WindowBatcher
    from faceweave.pipeline.image_batch import DeviceOutcome, ImageJob


@dataclass
class Service:
    """Everything one app instance owns (no process-global state)."""

    settings: ServiceSettings
    store: SqlJobStore
    storage: FsspecStorage
    executor: Executor  # InProcessExecutor, or RayExecutor (FACEWEAVE_EXECUTOR=ray)
    hub: ProgressHub
    metrics: ServiceMetrics
    auth: Authenticator
    limiter: RateLimiter
    auth_failures: RateLimiter  # failed authentications, per client address and per credential prefix
    job_function: JobFunction
    moderator: Any
    sync_states: queue.Queue[dict[str, Any]] = field(default_factory=queue.Queue)
    sync_slots: asyncio.Semaphore | None = None
    # :sync requests of concurrent clients as one batch (the real pipeline only; None: each on its own slot)
    sync_batcher: WindowBatcher[ImageJob, DeviceOutcome] | None = None
    sync_ready: threading.Event = field(default_factory=threading.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def upload_limits(self) -> UploadLimits:
        s = self.settings
        return UploadLimits(s.max_upload_bytes, s.max_pixels, s.max_duration_s, s.max_frames, s.max_decode_bytes)


async def get_service(request: Request) -> Service:
    """The app's service object, set by the lifespan in ``app.create_app`` (async: FastAPI would run a plain
    function on a worker thread, so every route — /readyz included — would hang when the thread pool is starved)."""
    return request.app.state.service  # type: ignore[no-any-return]


ServiceDep = Annotated[Service, Depends(get_service)]


def authenticate(request: Request, svc: Service) -> Principal:
    """The caller, after the rate limit.

    Routes call this in their body rather than through ``Depends``: FastAPI resolves dependencies before it reports
    parameter errors, so a dependency would answer 401/429 where the service has always answered 422 for a bad
    query, and would count malformed requests against the caller's rate limit.
    """
    address = f"addr:{request.client.host if request.client else 'unknown'}"
    wait = svc.auth_failures.blocked(address)
    if wait > 0:  # this client failed too often: no more guesses until its bucket refills
        raise RateLimited("too many failed authentications", retry_after_s=wait, hint=f"retry after {ceil(wait)} s")
    authorization, api_key = request.headers.get("authorization"), request.headers.get("x-api-key")
    try:
        principal = svc.auth.authenticate(authorization, api_key)
    except Unauthorized:
        credential = (authorization or "").partition(" ")[2].strip() or api_key or ""
        for key in (address, f"cred:{credential[:8]}"):
            try:
                svc.auth_failures.check(key)
            except RateLimited as exc:
                raise RateLimited("too many failed authentications", retry_after_s=exc.retry_after_s,
                                  hint=exc.hint) from None  # fmt: skip
        raise
    request.state.principal = principal  # the request log line carries its tenant and credential id
    svc.limiter.check(principal.credential_id)
    return principal


def own_job(svc: Service, job_id: str, principal: Principal) -> Job:
    """The caller's job ``job_id``; :class:`JobNotFound` for a missing one and for another tenant's."""
    job = svc.store.get_job(job_id, tenant=principal.tenant) if len(job_id) <= 64 else None
    if job is None:  # another tenant's job is indistinguishable from a missing one
        raise JobNotFound(f"no job {job_id[:64]!r}", hint="list your jobs with GET /v1/swaps")
    return job
