"""Request middleware (request ids, access logs, request metrics) and the one mapping of errors to HTTP.

Every :class:`~faceweave.errors.FaceweaveError` maps to ``{"error": {"code", "message", "hint"}}`` with its
``http_status``; validation errors, routing errors and unexpected exceptions answer the same body.
"""

from __future__ import annotations

import logging
import time
import uuid

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from faceweave.errors import FaceweaveError
from faceweave.serve.deps import Service
from faceweave.serve.errors import QuotaExceeded, RateLimited, error_body
from faceweave.serve.logging import request_id_var

log = logging.getLogger("faceweave.serve")


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
            # No service before the lifespan has started (or after a failed start): log, but count nothing.
            svc: Service | None = getattr(app.state, "service", None) if app is not None else None
            if svc is not None:
                svc.metrics.requests.labels(scope["method"], route_path, str(status["code"])).inc()
                svc.metrics.request_seconds.labels(scope["method"], route_path).observe(dt)
            log.info(
                "request", extra={"method": scope["method"], "route": route_path, "status": status["code"],
                                  "duration_ms": round(dt * 1000, 1)},
            )  # fmt: skip
            request_id_var.reset(token)


def _error_response(exc: FaceweaveError) -> JSONResponse:
    headers = {}
    if isinstance(exc, (RateLimited, QuotaExceeded)):
        headers["Retry-After"] = str(max(1, int(exc.retry_after_s + 0.999)))
    return JSONResponse(error_body(exc), status_code=exc.http_status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
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
