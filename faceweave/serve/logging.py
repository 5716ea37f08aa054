"""JSON logs with request and job ids, and without file names, client IPs or credentials.

Ids travel in :mod:`contextvars` (set by the request middleware and by the executor per job), so every record
emitted while serving a request or running a job carries them. :class:`RedactingJsonFormatter` scrubs the
rendered message and exception text as a last line of defence: code should not log such values in the first
place, and uvicorn's access log (which prints client addresses) is switched off in favour of our own.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import re
import sys
import time
from collections.abc import Iterator

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("faceweave_request_id", default=None)
job_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("faceweave_job_id", default=None)

_MEDIA_EXT = r"png|jpe?g|webp|bmp|tiff?|gif|mp4|mov|m4v|mkv|webm|avi|heic"
_REDACTIONS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+"), r"\1 [token]"),
    (re.compile(r"\beyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), "[jwt]"),
    (re.compile(r"\bfw_[A-Za-z0-9_-]{16,}"), "[api-key]"),
    (
        re.compile(r"(?i)(api[_-]?key|token|secret|password|authorization)([\"']?\s*[:=]\s*[\"']?)[^\s\"',}]+"),
        r"\1\2[redacted]",
    ),
    (re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}(?::\d+)?\b"), "[ip]"),
    (re.compile(r"\b(?:[0-9a-fA-F]{1,4}:){2,7}[0-9a-fA-F]{0,4}\b"), "[ip]"),
    (re.compile(rf"(?i)(?:[\w.~-]*/)*[^\s/\"'<>]*\.(?:{_MEDIA_EXT})\b"), "[file]"),
    (re.compile(r"(?:/[\w.~+-]+){2,}/?"), "[path]"),
]


def redact(text: str) -> str:
    """``text`` with tokens, API keys, IP addresses, media file names and file system paths replaced."""
    for pattern, repl in _REDACTIONS:
        text = pattern.sub(repl, text)
    return text


class RedactingJsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id, job_id (+ redacted exception)."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
            "request_id": getattr(record, "request_id", None) or request_id_var.get(),
            "job_id": getattr(record, "job_id", None) or job_id_var.get(),
        }
        for key in ("method", "route", "status", "duration_ms", "tenant", "credential_id"):
            if hasattr(record, key):
                out[key] = getattr(record, key)
        if record.exc_info:
            out["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(out, ensure_ascii=False)


@contextlib.contextmanager
def job_context(job_id: str) -> Iterator[None]:
    """Tag every log record emitted inside with ``job_id``."""
    token = job_id_var.set(job_id)
    try:
        yield
    finally:
        job_id_var.reset(token)


def configure_logging(level: str = "INFO", json_logs: bool = True) -> None:
    """Install the JSON formatter on the ``faceweave`` and ``uvicorn`` loggers (called by ``faceweave serve``)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingJsonFormatter() if json_logs else logging.Formatter("%(levelname)s %(message)s"))
    for name in ("faceweave", "uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level)
        logger.propagate = False
    logging.getLogger("uvicorn.access").disabled = True  # it logs client addresses; we log requests ourselves
