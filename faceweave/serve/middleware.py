"""Request middleware (request ids, access logs, request metrics, security headers, body limits) and the one
mapping of errors to HTTP.

Every :class:`~faceweave.errors.FaceweaveError` maps to ``{"error": {"code", "message", "hint"}}`` with its
``http_status``; validation errors, routing errors and unexpected exceptions answer the same body.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from faceweave.errors import FaceweaveError, MediaTooLarge
from faceweave.serve.deps import Service
from faceweave.serve.errors import QuotaExceeded, RateLimited, RequestTimeout, error_body
from faceweave.serve.logging import request_id_var

log = logging.getLogger("faceweave.serve")
# The page loads only its own script and stylesheet; previews are blob: URLs. No framing anywhere (clickjacking).
PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:;"
    " connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
# Swagger UI (/docs, /redoc) loads its script from a CDN and runs inline code: only forbid framing there.
DOCS_CSP = "frame-ancestors 'none'"
SECURITY_HEADERS = [(b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
                    (b"referrer-policy", b"no-referrer")]  # fmt: skip


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
                csp = DOCS_CSP if scope["path"].startswith(("/docs", "/redoc")) else PAGE_CSP
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode()),
                                      (b"content-security-policy", csp.encode()), *SECURITY_HEADERS]  # fmt: skip
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
            principal = (scope.get("state") or {}).get("principal")  # set by deps.authenticate
            log.info(
                "request", extra={"method": scope["method"], "route": route_path, "status": status["code"],
                                  "duration_ms": round(dt * 1000, 1),
                                  "tenant": principal.tenant if principal else None,
                                  "credential_id": principal.credential_id if principal else None},
            )  # fmt: skip
            request_id_var.reset(token)


class BodyLimitMiddleware:
    """Bounds every request body by bytes and by pace, whether or not it declares a Content-Length.

    A declared length over ``max_bytes`` answers 413 before a byte is read; a chunked (or lying) body is counted as
    it arrives and the read that crosses ``max_bytes`` raises :class:`MediaTooLarge` (413) in the route, so nothing
    past the limit is ever buffered. A client that stops sending for ``chunk_timeout_s`` mid-body gets 408.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int, chunk_timeout_s: float) -> None:
        self.app, self.max_bytes, self.chunk_timeout_s = app, max_bytes, chunk_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_bytes:
            exc = MediaTooLarge(f"the request body is over {self.max_bytes} bytes", hint="upload smaller files")
            await _error_response(exc)(scope, receive, send)
            return
        state = {"bytes": 0, "done": False}

        async def limited_receive() -> Message:
            if state["done"]:  # the body is complete: later receives wait for a disconnect, unbounded
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.chunk_timeout_s)
            except asyncio.TimeoutError:
                raise RequestTimeout(
                    f"the request body stalled for {self.chunk_timeout_s:.0f} s", hint="send the body without pauses"
                ) from None
            if message["type"] == "http.request":
                state["bytes"] += len(message.get("body", b""))
                if state["bytes"] > self.max_bytes:
                    raise MediaTooLarge(f"the request body is over {self.max_bytes} bytes", hint="upload smaller files")
                state["done"] = not message.get("more_body", False)
            else:
                state["done"] = True
            return message

        await self.app(scope, limited_receive, send)


def _error_response(exc: FaceweaveError) -> JSONResponse:
    headers = {}
    if isinstance(exc, (RateLimited, QuotaExceeded)):
        headers["Retry-After"] = str(max(1, int(exc.retry_after_s + 0.999)))
    return JSONResponse(error_body(exc), status_code=exc.http_status, headers=headers)


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this request's path: each candidate method is matched against the whole
    routing table (included routers nest routes, so asking the table beats walking it)."""
    allowed = []
    for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"):
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] == Match.FULL for route in request.app.router.routes):
            allowed.append(method)
    return allowed


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
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        body = {"error": {"code": f"http_{exc.status_code}", "message": str(exc.detail), "hint": None}}
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # Starlette's Allow names the first matching route's methods, not the path's
            headers["Allow"] = ", ".join(_allowed_methods(request))
        return JSONResponse(body, status_code=exc.status_code, headers=headers or None)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error")
        body = {"error": {"code": "internal_error", "message": "internal server error", "hint": None}}
        return JSONResponse(body, status_code=500)
