"""Download a plug-in model file: HTTP Range resume, sha256 while streaming, atomic move into the model folder.

This is the only module of faceweave that opens a network connection, and only when a user runs
``faceweave models fetch NAME`` (or calls :func:`fetch_model`). Everything else reads the model folder.

Protocol:
1. Bytes go to ``<model_dir>/<file>.part``. If a ``.part`` exists from an interrupted run, it is hashed and the
   request asks for ``Range: bytes=<size>-``; a ``206`` whose ``Content-Range`` starts there is appended,
   a ``200`` (server ignores ranges) restarts from zero.
2. A connection that drops mid-file is retried (``retries`` times) with a Range request from where it stopped.
3. At the end the sha256 of all bytes is compared with the pinned (or user-given) hash: equal → ``os.replace``
   onto the final name (atomic on one file system); different → the ``.part`` is deleted and
   :class:`ModelIntegrityError` is raised, so nothing is left behind.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from faceweave.errors import InvalidOption, ModelDownloadError, ModelIntegrityError
from faceweave.models import store
from faceweave.models.onnx_zoo import is_pinned
from faceweave.models.registry import ModelSpec, sha256_file

ProgressFn = Callable[[int, int | None], None]  # (bytes so far, total or None)

_CHUNK = 1 << 16
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


def fetch_model(
    spec: ModelSpec,
    model_dir: str | os.PathLike[str] | None = None,
    *,
    sha256: str | None = None,
    url: str | None = None,
    timeout: float = 30.0,
    retries: int = 3,
    progress: ProgressFn | None = None,
) -> Path:
    """Download ``spec``'s file into the model folder and return its path (no-op if a verified copy is there).

    Args:
        spec: the registry entry.
        model_dir: target folder (default :func:`faceweave.models.store.model_dir`).
        sha256: expected hash; required when ``spec`` has none pinned, must agree with it when it has.
        url: override the spec's URL (a mirror you trust); the hash check is the same.
        timeout: socket timeout in seconds per connect/read.
        retries: how many times a dropped connection is resumed before giving up.
        progress: called with ``(bytes_done, total_or_None)`` after each chunk.

    Raises:
        InvalidOption: no URL or no hash to check against.
        ModelDownloadError: the server cannot be reached or keeps failing; the ``.part`` file is kept for a resume.
        ModelIntegrityError: the bytes do not hash to the expected sha256; nothing is left in the folder.
    """
    expected = _expected_hash(spec, sha256)
    source = url or spec.url
    if not source:
        raise InvalidOption(
            f"model {spec.name!r} has no public download URL", hint=f"put {spec.file} into the model folder yourself"
        )
    folder = store.ensure_model_dir(model_dir)
    final = folder / spec.file
    if final.is_file():
        if sha256_file(final) == expected:
            return final
        final.unlink()  # a wrong or stale file: replace it with the verified one
    part = folder / (spec.file + ".part")

    digest = hashlib.sha256()
    done = 0
    if part.is_file():
        with open(part, "rb") as f:
            while block := f.read(1 << 20):
                digest.update(block)
        done = part.stat().st_size

    attempts = 0
    total: int | None = None
    while True:
        try:
            done, total, digest = _download_into(part, source, done, digest, timeout, progress)
            break
        except _Dropped as exc:
            attempts += 1
            done, digest = exc.done, exc.digest
            if attempts > retries:
                raise ModelDownloadError(
                    f"download of {spec.name!r} from {source} kept failing ({exc.reason}); {done} bytes kept in {part}",
                    hint="run the same `faceweave models fetch` again to resume",
                ) from None

    got = digest.hexdigest()
    if got != expected:
        part.unlink(missing_ok=True)
        raise ModelIntegrityError(
            f"downloaded {spec.file} from {source} has sha256 {got}, expected {expected}; the file was deleted",
            hint="the server sent different bytes (corrupt mirror, proxy, or a wrong hash): check the URL and hash",
        )
    if total is not None and done != total:
        part.unlink(missing_ok=True)
        raise ModelDownloadError(f"download of {spec.name!r} ended at {done} of {total} bytes")
    os.replace(part, final)
    return final


def _expected_hash(spec: ModelSpec, given: str | None) -> str:
    given = given.strip().lower() if given else None
    if given is not None and not re.fullmatch(r"[0-9a-f]{64}", given):
        raise InvalidOption(f"sha256 {given!r} is not 64 hex digits")
    if is_pinned(spec):
        if given is not None and given != spec.sha256:
            raise InvalidOption(f"sha256 {given} differs from the one pinned for {spec.name!r} ({spec.sha256})")
        return spec.sha256
    if given is None:
        raise InvalidOption(
            f"model {spec.name!r} has no sha256 pinned in faceweave, so a download could not be verified",
            hint=f"pass the publisher's hash: `faceweave models fetch {spec.name} --sha256 <64 hex digits>`",
        )
    return given


class _Dropped(Exception):
    """The connection broke mid-file; carries how far we got so the caller can resume."""

    def __init__(self, reason: str, done: int, digest: hashlib._Hash) -> None:
        super().__init__(reason)
        self.reason, self.done, self.digest = reason, done, digest


def _download_into(
    part: Path,
    url: str,
    done: int,
    digest: hashlib._Hash,
    timeout: float,
    progress: ProgressFn | None,
) -> tuple[int, int | None, hashlib._Hash]:
    headers = {"User-Agent": "faceweave-models-fetch", "Accept-Encoding": "identity"}
    if done:
        headers["Range"] = f"bytes={done}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 (https/http URL from the registry)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and done:
            # Range not satisfiable: the .part already holds every byte (or more); let the hash decide.
            return done, done, digest
        raise ModelDownloadError(
            f"server answered HTTP {exc.code} {exc.reason} for {url}", hint="check the URL or try again later"
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ModelDownloadError(
            f"cannot reach {url}: {reason}", hint="check the network/proxy, or copy the file into the model folder"
        ) from None

    with response:
        status = response.status
        total: int | None = None
        mode = "ab"
        if done and status == 206:
            match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
            if not match or int(match.group(1)) != done:
                # A range we did not ask for: start over rather than splice wrong bytes.
                response.close()
                part.unlink(missing_ok=True)
                raise _Dropped("server sent an unexpected range", 0, hashlib.sha256())
            total = None if match.group(3) == "*" else int(match.group(3))
        else:
            # 200: full body (fresh download, or a server that ignores Range) — restart the file.
            done, digest, mode = 0, hashlib.sha256(), "wb"
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        with open(part, mode) as out:
            while True:
                try:
                    block = response.read(_CHUNK)
                except (http.client.IncompleteRead, ConnectionError, TimeoutError, OSError) as exc:
                    out.flush()
                    raise _Dropped(type(exc).__name__, done, digest) from None
                if not block:
                    break
                out.write(block)
                digest.update(block)
                done += len(block)
                if progress is not None:
                    progress(done, total)
        if total is not None and done < total:
            raise _Dropped(f"connection closed at {done} of {total} bytes", done, digest)
    return done, total, digest
