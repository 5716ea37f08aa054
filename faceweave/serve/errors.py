"""Service-only errors. Like the library's, each carries its HTTP status and stable code; the app maps every
:class:`~faceweave.errors.FaceweaveError` once to ``{"error": {"code", "message", "hint"}}``."""

from __future__ import annotations

from typing import Any

from faceweave.errors import FaceweaveError


class Unauthorized(FaceweaveError):
    http_status, code = 401, "unauthorized"


class JobNotFound(FaceweaveError):
    http_status, code = 404, "job_not_found"


class ResultNotReady(FaceweaveError):
    http_status, code = 409, "result_not_ready"


class ResultExpired(FaceweaveError):
    http_status, code = 410, "result_expired"


class RangeNotSatisfiable(FaceweaveError):
    http_status, code = 416, "range_not_satisfiable"


class ConsentRequired(FaceweaveError):
    http_status, code = 422, "consent_required"


class PolicyRejected(FaceweaveError):
    http_status, code = 422, "policy_rejected"


class BadRequest(FaceweaveError):
    http_status, code = 400, "bad_request"


class UrlFetchFailed(FaceweaveError):
    """A URL import did not arrive in time (connect/read/total timeouts)."""

    http_status, code = 400, "url_fetch_failed"


class RequestTimeout(FaceweaveError):
    http_status, code = 408, "request_timeout"


class RateLimited(FaceweaveError):
    http_status, code = 429, "rate_limited"

    def __init__(self, message: str, *, retry_after_s: float, hint: str | None = None) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(message, hint=hint)


class QuotaExceeded(FaceweaveError):
    http_status, code = 429, "quota_exceeded"

    def __init__(self, message: str, *, retry_after_s: float = 30.0, hint: str | None = None) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(message, hint=hint)


class NotReady(FaceweaveError):
    http_status, code = 503, "not_ready"


class JobCancelled(FaceweaveError):
    """Raised inside a running job (from its progress callback) when the job was cancelled."""

    http_status, code = 409, "cancelled"


def error_body(exc: FaceweaveError) -> dict[str, Any]:
    """The JSON body of every error response."""
    return {"error": {"code": exc.code, "message": exc.message, "hint": exc.hint}}
