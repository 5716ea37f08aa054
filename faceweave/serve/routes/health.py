"""Operations: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import anyio
from fastapi import APIRouter, Response

from faceweave.serve.deps import ServiceDep
from faceweave.serve.errors import NotReady
from faceweave.serve.metrics import CONTENT_TYPE
from faceweave.serve.schemas import ErrorResponse, StatusOut

router = APIRouter(tags=["ops"])


@router.get("/healthz", response_model=StatusOut)
async def healthz() -> StatusOut:
    """Liveness: the process answers."""
    return StatusOut(status="ok")


@router.get("/readyz", response_model=StatusOut, responses={503: {"model": ErrorResponse}})
async def readyz(svc: ServiceDep) -> StatusOut:
    """Readiness: 503 until every worker has loaded and warmed its models, and while every request worker thread
    is busy (blocking calls would queue behind them: take this replica out of rotation)."""
    if not (svc.executor.ready and svc.sync_ready.is_set()):
        raise NotReady("models are still loading", hint="retry in a few seconds")
    threads = anyio.to_thread.current_default_thread_limiter()
    if threads.borrowed_tokens >= threads.total_tokens:
        raise NotReady(f"all {int(threads.total_tokens)} request worker threads are busy", hint="retry shortly")
    return StatusOut(status="ready")


@router.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE: {}}}})
async def metrics(svc: ServiceDep) -> Response:
    """Prometheus metrics."""
    body = await anyio.to_thread.run_sync(svc.metrics.render)
    return Response(body, media_type=CONTENT_TYPE)
