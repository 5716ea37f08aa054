"""The service's request/response models: the OpenAPI schema that schemathesis checks and the web page reads.

Model names are the schema names in ``/openapi.json`` (``JobOut``, ``ErrorResponse``, …); renaming one changes the
published API.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from faceweave.serve.store import Job, JobItem, JobState

JobStateName = Literal["queued", "running", "succeeded", "failed", "cancelled"]


class ErrorDetail(BaseModel):
    code: str
    message: str
    hint: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


class JobError(BaseModel):
    type: str | None = None
    code: str
    message: str


class JobProgress(BaseModel):
    stage: str
    frames_done: int
    frames_total: int | None = None
    fps: float
    eta_s: float | None = None


class JobItemOut(BaseModel):
    """One target of a batch job: its own state, and its result or the reason it failed."""

    index: int
    name: str
    state: Literal["queued", "running", "succeeded", "failed"]
    media_kind: str | None = None
    faces_swapped: int | None = None
    error: JobError | None = None
    result_url: str | None = None
    result_bytes: int | None = None

    @classmethod
    def of(cls, job: Job, item: JobItem) -> JobItemOut:
        ok = item.state == "succeeded" and item.result_key is not None and not job.expired
        return cls(
            index=item.index, name=item.name, state=item.state, media_kind=item.media_kind,  # type: ignore[arg-type]
            faces_swapped=item.faces_swapped,
            error=JobError(code=item.error_code, message=item.error_message or "") if item.error_code else None,
            result_url=f"/v1/swaps/{job.id}/items/{item.index}/result" if ok else None,
            result_bytes=item.result_bytes if ok else None,
        )  # fmt: skip


class JobOut(BaseModel):
    id: str
    state: JobStateName
    media_kind: str | None = None
    created_at: float
    updated_at: float
    started_at: float | None = None
    finished_at: float | None = None
    progress: JobProgress
    settings: dict[str, Any]
    faces_swapped: int | None = None
    error: JobError | None = None
    attempts: int
    result_url: str | None = None
    result_bytes: int | None = None
    expired: bool
    stats: dict[str, Any] = Field(default_factory=dict, description="the pipeline's counters for a succeeded job")
    items: list[JobItemOut] | None = Field(
        None, description="a batch job's targets, one result each (null for a single-target job)"
    )

    @classmethod
    def of(cls, job: Job, items: list[JobItem] | None = None) -> JobOut:
        return cls(
            id=job.id, state=job.state.value, media_kind=job.media_kind, created_at=job.created_at,
            updated_at=job.updated_at, started_at=job.started_at, finished_at=job.finished_at,
            progress=JobProgress(stage=job.stage, frames_done=job.frames_done, frames_total=job.frames_total,
                                 fps=job.fps, eta_s=job.eta_s),
            settings=job.settings, faces_swapped=job.faces_swapped,
            error=JobError(type=job.error_type, code=job.error_code, message=job.error_message or "")
            if job.error_code else None,
            attempts=job.attempts,
            # a batch job's results are its items'
            result_url=f"/v1/swaps/{job.id}/result" if job.state == JobState.succeeded and not job.expired
            and not items else None,
            result_bytes=job.result_bytes if job.state == JobState.succeeded else None, expired=job.expired,
            stats=job.stats, items=[JobItemOut.of(job, it) for it in items] if items else None,
        )  # fmt: skip


class JobList(BaseModel):
    items: list[JobOut]
    total: int
    limit: int
    offset: int


class ModelOut(BaseModel):
    name: str
    family: str
    licence: str
    embedded: bool
    available: bool


class ModelsOut(BaseModel):
    swappers: list[str]
    detectors: list[str]
    enhancers: list[str]
    models: list[ModelOut]


class StatusOut(BaseModel):
    status: str


# Every error status a route may answer, all with the one error body (see ``middleware.install_error_handlers``).
ERRORS: dict[int | str, dict[str, Any]] = {
    s: {"model": ErrorResponse} for s in (400, 401, 404, 405, 408, 409, 410, 413, 415, 416, 422, 429, 500, 503)
}
# The swap routes read their multipart body as a stream (size limits while spooling), so FastAPI cannot derive the
# request schema from parameters: it is declared here.
_FORM_PROPERTIES: dict[str, Any] = {
    "sources": {"type": "array", "items": {"type": "string", "format": "binary"}, "description": "source faces"},
    "target": {"type": "string", "format": "binary", "description": "target image or video"},
    "settings": {"type": "string", "description": "JSON object of SwapSettings fields (not the operator-only ones)"},
    "consent": {"type": "string", "enum": ["true"], "description": "attest that everyone depicted consented"},
    "webhook_url": {"type": "string", "description": "a public http(s) URL, POSTed (HMAC-signed) on completion"},
    "source_urls": {"type": "string", "description": "JSON list of URLs under the server's import prefixes"},
    "target_url": {"type": "string", "description": "a URL under the server's import prefixes"},
    "target_urls": {"type": "string", "description": "batch: JSON list of URLs under the server's import prefixes,"
                    " one result per target (several 'target' files do the same)"},
}


def _form(properties: tuple[str, ...], required: list[str], **extra: Any) -> dict[str, Any]:
    schema = {"type": "object", "properties": {k: _FORM_PROPERTIES[k] for k in properties}, "required": required,
              **extra}  # fmt: skip
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}}


# Jobs take files or URLs: ``sources`` or ``source_urls``, and ``target`` or ``target_url``; :sync takes files only.
FORM_SCHEMA = _form(tuple(_FORM_PROPERTIES), ["consent"], allOf=[
    {"anyOf": [{"required": ["sources"]}, {"required": ["source_urls"]}]},
    {"anyOf": [{"required": ["target"]}, {"required": ["target_url"]}, {"required": ["target_urls"]}]},
])  # fmt: skip
SYNC_FORM_SCHEMA = _form(("sources", "target", "settings", "consent"), ["sources", "target", "consent"])


# --- POST /v1/verify: one report per uploaded file (faceweave.provenance.verify.VerifyReport.to_dict) -----------
class VerifyMetadata(BaseModel):
    synthetic: bool = Field(description="faceweave's tag or the IPTC trainedAlgorithmicMedia source type is present")
    software: str | None = None
    iptc_digital_source_type: str | None = None


class VerifyC2pa(BaseModel):
    status: Literal["valid", "tampered", "absent", "unsupported"]
    signer: str | None = None
    trusted: bool = Field(description="the signer chains to a trusted root (a local faceweave signer does not)")
    synthetic: bool = Field(description="the manifest states trainedAlgorithmicMedia")
    failures: list[str]
    ingredients: list[dict[str, str]] = Field(description="role and SHA-256 of each input (never a file name)")


class VerifyWatermarkPayload(BaseModel):
    scheme: int
    faceweave_version: str
    job_hash: str


class VerifyWatermark(BaseModel):
    found: bool
    confidence: float = Field(description="1 − the chance that unmarked media scores this high; 0 when not found")
    score: float
    bit_agreement: float
    payload: VerifyWatermarkPayload | None = Field(description="null when found but unreadable, or not found")


class VerifyReportOut(BaseModel):
    file: str = Field(description="the upload's position, files[N]")
    kind: Literal["image", "video"]
    marked: bool = Field(description="any of the three markings says: synthetic, by faceweave")
    metadata: VerifyMetadata
    c2pa: VerifyC2pa
    watermark: VerifyWatermark


class VerifyOut(BaseModel):
    items: list[VerifyReportOut]
    marked: bool = Field(description="every file is marked")


VERIFY_FORM_SCHEMA: dict[str, Any] = {
    "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": ["files"],
        "properties": {"files": {"type": "array", "items": {"type": "string", "format": "binary"},
                                 "description": "images or videos to check"}},
    }}}}
}  # fmt: skip
