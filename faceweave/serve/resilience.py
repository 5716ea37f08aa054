"""Transient failures of the service's backends, retried with backoff; lasting ones turned into clear errors.

- Storage (S3 through fsspec): :class:`RetryingStorage` retries every call with exponential backoff while the
  server is unreachable or answers 5xx; a credentials or permission error is not transient and becomes
  :class:`StorageAccessDenied` at once, naming the storage URL and what to check (never the secret).
- Database: :func:`retry_db` retries a store call while the database is unreachable (a PostgreSQL restart or
  fail-over); the API answers 503 ``database_unavailable`` meanwhile (:func:`install_unavailable_handlers`).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, OperationalError

from faceweave.errors import FaceweaveError
from faceweave.serve.storage import FsspecStorage

log = logging.getLogger("faceweave.serve.resilience")
T = TypeVar("T")


class StorageAccessDenied(FaceweaveError):
    """The object store refused the configured credentials (wrong key/secret, or no access to the bucket)."""

    http_status, code = 503, "storage_access_denied"


class StorageUnavailable(FaceweaveError):
    http_status, code = 503, "storage_unavailable"


class DatabaseUnavailable(FaceweaveError):
    http_status, code = 503, "database_unavailable"


def backoff_delays(first_s: float = 0.2, cap_s: float = 4.0) -> Iterator[float]:
    """0.2, 0.4, 0.8 … capped, with ±25 % jitter (many workers retrying together do not hit the server in step)."""
    delay = first_s
    while True:
        yield delay * random.uniform(0.75, 1.25)
        delay = min(cap_s, delay * 2)


def is_db_transient(exc: BaseException) -> bool:
    """Connection-level database errors (server down, restarting, network): worth retrying."""
    return isinstance(exc, OperationalError) or (isinstance(exc, DBAPIError) and exc.connection_invalidated)


def retry_db(call: Callable[[], T], *, what: str, deadline_s: float = 120.0) -> T:
    """Run ``call``; while it fails with a transient database error, retry with backoff for up to ``deadline_s``."""
    end = time.monotonic() + deadline_s
    for delay in backoff_delays():
        try:
            return call()
        except Exception as exc:
            if not is_db_transient(exc):
                raise
            if time.monotonic() + delay > end:
                raise DatabaseUnavailable(f"the job database stayed unreachable for {deadline_s:.0f} s ({what})",
                                          hint="check the database server and FACEWEAVE_DATABASE_URL") from exc
            log.warning("database unreachable (%s): retrying in %.1f s", what, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")  # backoff_delays never ends


def _is_access_denied(exc: BaseException) -> bool:
    # s3fs maps AccessDenied / InvalidAccessKeyId / SignatureDoesNotMatch to PermissionError
    return isinstance(exc, PermissionError)


def _is_storage_permanent(exc: BaseException) -> bool:
    return isinstance(exc, (FileNotFoundError, IsADirectoryError, NotADirectoryError, ValueError, FaceweaveError))


class RetryingStorage(FsspecStorage):
    """:class:`FsspecStorage` whose every call retries transient errors and names credential errors clearly."""

    def __init__(self, url: str, *, deadline_s: float = 60.0, **options: Any) -> None:
        super().__init__(url, **options)
        self.deadline_s = deadline_s

    def _call(self, what: str, call: Callable[[], T]) -> T:
        end = time.monotonic() + self.deadline_s
        for delay in backoff_delays():
            try:
                return call()
            except Exception as exc:
                if _is_access_denied(exc):
                    raise StorageAccessDenied(
                        f"the storage at {self.url} refused access ({what}): {type(exc).__name__}: {exc}"[:500],
                        hint="check the S3 key and secret in FACEWEAVE_STORAGE_OPTIONS and the bucket's permissions",
                    ) from exc
                if _is_storage_permanent(exc):
                    raise
                if time.monotonic() + delay > end:
                    raise StorageUnavailable(f"the storage at {self.url} failed for {self.deadline_s:.0f} s ({what}): "
                                             f"{type(exc).__name__}", hint="check the object store") from exc
                log.warning("storage error (%s: %s): retrying in %.1f s", what, type(exc).__name__, delay)
                self.fs.invalidate_cache()
                time.sleep(delay)
        raise AssertionError("unreachable")

    def check(self) -> None:
        """Write, read and delete a probe object: wrong credentials or a missing bucket fail here, at startup."""
        key = ".faceweave-probe/probe"

        def write() -> None:
            with FsspecStorage.open_write(self, key) as f:
                f.write(b"ok")

        def read() -> bytes:
            with FsspecStorage.open_read(self, key) as f:
                return f.read()

        self._call("write a probe object", write)
        self._call("read a probe object", read)
        self.delete_prefix(".faceweave-probe")

    def open_write(self, key: str) -> IO[bytes]:
        return self._call("open for writing", lambda: FsspecStorage.open_write(self, key))

    def open_read(self, key: str) -> IO[bytes]:
        return self._call("open for reading", lambda: FsspecStorage.open_read(self, key))

    def size(self, key: str) -> int:
        return self._call("size", lambda: FsspecStorage.size(self, key))

    def exists(self, key: str) -> bool:
        return self._call("exists", lambda: FsspecStorage.exists(self, key))

    def delete_prefix(self, prefix: str) -> None:
        self._call("delete", lambda: FsspecStorage.delete_prefix(self, prefix))

    def download(self, key: str, dest: Path) -> Path:
        return self._call("download", lambda: FsspecStorage.download(self, key, dest))

    def upload(self, src: Path, key: str) -> int:
        # FsspecStorage.upload writes through self.open_write: the whole copy is one retried call
        return self._call("upload", lambda: FsspecStorage.upload(self, src, key))


def install_unavailable_handlers(app: FastAPI) -> None:
    """A database that is unreachable for a moment answers 503 + Retry-After, not 500 (clients retry)."""

    async def _db_down(_: Request, exc: Exception) -> JSONResponse:
        log.warning("database unreachable: %s", type(exc).__name__)
        body = {"error": {"code": DatabaseUnavailable.code, "message": "the job database is unreachable; retry",
                          "hint": None}}  # fmt: skip
        return JSONResponse(body, status_code=503, headers={"Retry-After": "2"})

    app.add_exception_handler(OperationalError, _db_down)  # connection-level only: not integrity errors
