"""``POST /v1/verify``: read faceweave's markings (metadata, C2PA, watermark) back from uploaded files.

The uploads go through the swap routes' limits (bytes per file and per request, pixels, duration, frames), are
spooled, checked and deleted; nothing is stored. Answers one report per file in upload order, like
``faceweave verify --json``.
"""

from __future__ import annotations

import logging
import shutil
import uuid

import anyio
from fastapi import APIRouter, Request

from faceweave.errors import InvalidOption, MediaTooLarge
from faceweave.serve.deps import ServiceDep, authenticate
from faceweave.serve.errors import BadRequest
from faceweave.serve.limits import parse_multipart_stream, probe_media
from faceweave.serve.schemas import ERRORS, VERIFY_FORM_SCHEMA, VerifyOut, VerifyReportOut

log = logging.getLogger("faceweave.serve")
router = APIRouter(tags=["provenance"])


@router.post("/v1/verify", response_model=VerifyOut, responses=ERRORS, openapi_extra=VERIFY_FORM_SCHEMA)
async def verify(request: Request, svc: ServiceDep) -> VerifyOut:
    """Check uploaded images/videos (multipart ``files``) for faceweave's metadata, C2PA manifest and watermark."""
    from faceweave.provenance.verify import verify_file

    authenticate(request, svc)
    s = svc.settings
    max_files = s.max_sources + 1  # as many files as one swap request may upload
    length = request.headers.get("content-length")
    budget = s.max_upload_bytes * max_files + (1 << 20)
    if length is not None and length.isdigit() and int(length) > budget:
        raise MediaTooLarge(f"the request body is over {budget} bytes", hint="upload smaller or fewer files")
    spool = s.work_dir / "verify" / uuid.uuid4().hex
    try:
        form = await parse_multipart_stream(
            request.headers.get("content-type", ""), request.stream(), spool, max_file_bytes=s.max_upload_bytes,
            max_files=max_files,
        )  # fmt: skip
        if form.fields:
            raise InvalidOption(f"unknown form field {next(iter(form.fields))!r}", hint="send only 'files'")
        if any(up.field != "files" for up in form.files):
            raise InvalidOption("unknown file field", hint="send the files to check as 'files'")
        if not form.files:
            raise BadRequest("at least one file is required", hint="send one or more 'files'")
        items = []
        for i, up in enumerate(form.files):
            info = await anyio.to_thread.run_sync(probe_media, up.path, svc.upload_limits)  # limits before decoding
            path = up.path.rename(spool / f"file_{i}.{info.extension}")  # C2PA readers go by the extension
            report = await anyio.to_thread.run_sync(verify_file, path)
            items.append(VerifyReportOut.model_validate(report.to_dict() | {"file": f"files[{i}]"}))
    finally:
        shutil.rmtree(spool, ignore_errors=True)
    log.info("verified %d file(s), %d marked", len(items), sum(r.marked for r in items))
    return VerifyOut(items=items, marked=all(r.marked for r in items))
