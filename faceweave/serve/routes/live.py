"""Live sessions: the ``/live`` page, and WebRTC signalling over the REST API (``POST /v1/live/offer`` with the
browser's SDP offer and a source photo → the server's answer), ``GET``/``DELETE /v1/live/sessions/{id}``
(not ``/v1/live/{id}``, which would also match ``offer``).

Same gate as jobs: authentication and the per-key rate limit, the consent attestation, the moderation hook (called
with ``target_kind="live"`` and the source photo as the only file: the camera's frames do not exist yet), and the
operator's settings. On top, per-key and per-device limits on concurrent sessions (429 ``quota_exceeded`` naming
the full limit). Every session of the app shares one warm engine (:class:`~faceweave.live.shared.SharedEngine`,
frames of concurrent sessions batched) and ends when the browser leaves (the peer connection closes or fails).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, cast

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel

from faceweave.errors import InvalidOption, WrongMediaKind
from faceweave.live import LIVE_DEFAULTS
from faceweave.serve.auth import Principal
from faceweave.serve.deps import Service, ServiceDep, authenticate
from faceweave.serve.errors import BadRequest, JobNotFound, QuotaExceeded
from faceweave.serve.inputs import SERVICE_ONLY_FIELDS, parse_settings
from faceweave.serve.limits import parse_multipart_stream, probe_media
from faceweave.serve.policy import ModerationRequest, check_consent, moderate
from faceweave.serve.schemas import ERRORS
from faceweave.settings import SwapSettings

if TYPE_CHECKING:
    from faceweave.live.shared import SharedEngine
    from faceweave.live.webrtc import WebRtcSession

log = logging.getLogger("faceweave.serve")
router = APIRouter(tags=["live"])
STATIC_DIR = Path(__file__).parent.parent / "static"
# what a session may choose: the rest decides which models the shared engine holds, so the operator sets it
SESSION_FIELDS = {"selector", "face_index", "reference_threshold", "detect_every", "smoothing", "provenance_label"}


class LiveAnswer(BaseModel):
    id: str
    sdp: str
    type: str


class LiveSessionOut(BaseModel):
    id: str
    frames_in: int
    frames_out: int
    dropped: int
    fps_out: float
    latency_p50_ms: float | None
    latency_p95_ms: float | None


class LiveHub:
    """The app's live sessions, their limits and metrics, and the shared engine (made on the first session)."""

    def __init__(self, svc: Service) -> None:
        self.svc = svc
        self.sessions: dict[str, tuple[Principal, WebRtcSession | None]] = {}
        self._engine: SharedEngine | None = None
        self._engine_lock = asyncio.Lock()
        svc.metrics.live_fps.set_function(self.fps)

    def close(self) -> None:
        """Stop the shared engine's threads (the app's shutdown; sessions have ended by then)."""
        if self._engine is not None:
            self._engine.close()
            self._engine = None

    def reserve(self, principal: Principal) -> str:
        """A slot for a new session of ``principal``, or :class:`QuotaExceeded` saying which limit is full."""
        s, metrics = self.svc.settings, self.svc.metrics
        mine = sum(1 for p, _ in self.sessions.values() if p.credential_id == principal.credential_id)
        if mine >= s.live_sessions_per_key:
            metrics.live_sessions_refused.labels("key").inc()
            raise QuotaExceeded(f"this API key already has {mine} live session(s) open (limit "
                                f"{s.live_sessions_per_key})", hint="close one (leave its page) or try again later")
        if len(self.sessions) >= s.live_sessions_per_gpu:
            metrics.live_sessions_refused.labels("device").inc()
            raise QuotaExceeded(f"all {s.live_sessions_per_gpu} live session slots of this server are in use",
                                hint="try again in a minute")
        sid = uuid.uuid4().hex
        self.sessions[sid] = (principal, None)
        return sid

    def started(self, sid: str, session: WebRtcSession) -> None:
        principal, _ = self.sessions[sid]
        self.sessions[sid] = (principal, session)
        self.svc.metrics.live_sessions.inc()
        self.svc.metrics.live_sessions_started.inc()
        if self._engine is not None:
            self._engine.session_started()

    def ended(self, session: WebRtcSession) -> None:
        if self.sessions.pop(session.id, None) is None:
            return
        self.svc.metrics.live_sessions.dec()
        if self._engine is not None:
            self._engine.session_ended()
        log.info("live session ended: %s", {k: v for k, v in session.summary().items() if k != "id"})

    def release(self, sid: str) -> None:
        """Free a slot whose session never started."""
        self.sessions.pop(sid, None)

    def own(self, sid: str, principal: Principal) -> WebRtcSession:
        entry = self.sessions.get(sid)
        if entry is None or entry[0].tenant != principal.tenant or entry[1] is None:
            raise JobNotFound(f"no live session {sid[:64]!r}", hint="start one with POST /v1/live/offer")
        return entry[1]

    def fps(self) -> float:
        return float(sum(s.stats.recent()["fps_out"] for _, s in list(self.sessions.values()) if s is not None))

    async def engine(self) -> SharedEngine:
        """The shared live engine (loaded and warmed on first use, off the event loop)."""
        async with self._engine_lock:
            if self._engine is None:
                self._engine = await anyio.to_thread.run_sync(self._make_engine)
            return self._engine

    def _make_engine(self) -> SharedEngine:
        from faceweave.live.shared import SharedEngine
        from faceweave.pipeline.engine import SwapEngine
        from faceweave.serve.inputs import job_settings

        s = self.svc.settings
        engine = SwapEngine(job_settings(s, SwapSettings.build(**LIVE_DEFAULTS)))
        window = None if s.live_batch_window_ms is None else s.live_batch_window_ms / 1000
        shared = SharedEngine(engine, window_s=window)
        shared.call(lambda eng: eng.warm_up())
        return shared


def live_hub(request: Request, svc: Service) -> LiveHub:
    """The app's hub, made on first use (kept on ``app.state`` like the service: no module globals)."""
    state = request.app.state
    try:
        return cast(LiveHub, state.live_hub)
    except AttributeError:
        state.live_hub = LiveHub(svc)
        return cast(LiveHub, state.live_hub)


@router.get("/live", include_in_schema=False)
async def live_page() -> FileResponse:
    return FileResponse(STATIC_DIR / "live.html", media_type="text/html")


@router.post("/v1/live/offer", response_model=LiveAnswer, responses=ERRORS)
async def live_offer(request: Request, svc: ServiceDep) -> LiveAnswer:
    """Start a live session: multipart ``source`` (a photo), ``sdp`` + ``type`` (the browser's offer, ICE gathered),
    ``consent``, optional ``settings`` (JSON: selector, face_index, reference_threshold, detect_every, smoothing,
    provenance_label) → the server's answer. 429 when the key's or the server's live-session limit is full."""
    principal = authenticate(request, svc)
    hub = live_hub(request, svc)
    sid = hub.reserve(principal)
    spool = svc.settings.work_dir / "live" / sid
    try:
        form = await parse_multipart_stream(request.headers.get("content-type", ""), request.stream(), spool,
                                            max_file_bytes=svc.settings.max_upload_bytes, max_files=1)
        check_consent(form.one("consent"), svc.settings.require_consent)
        settings = _session_settings(svc, form.one("settings"))
        sdp, sdp_type = form.one("sdp"), form.one("type") or "offer"
        if not sdp or sdp_type != "offer":
            raise BadRequest("an SDP offer is required", hint="send the fields sdp and type=offer")
        sources = [f.path for f in form.files if f.field == "source"]
        if len(sources) != 1:
            raise BadRequest("exactly one source photo is required", hint="send a 'source' file")
        info = await anyio.to_thread.run_sync(probe_media, sources[0], svc.upload_limits)
        if info.kind != "image":
            raise WrongMediaKind("the source must be an image", hint="send a photo of the source face")
        await anyio.to_thread.run_sync(moderate, svc.moderator, ModerationRequest(
            tenant=principal.tenant, sources=sources, target=sources[0], target_kind="live",
            settings=settings.model_dump(),
        ))  # fmt: skip
        session = await _start_session(svc, hub, sid, sources[0], settings)
        try:
            answer_sdp, answer_type = await session.answer(sdp, sdp_type)
        except Exception as exc:
            await session.close()
            raise BadRequest(f"cannot answer this SDP offer: {exc}", hint="send the browser's offer as it is") from exc
        hub.started(sid, session)
    except BaseException:
        hub.release(sid)
        raise
    finally:
        shutil.rmtree(spool, ignore_errors=True)
    log.info("live session started")
    return LiveAnswer(id=sid, sdp=answer_sdp, type=answer_type)


@router.get("/v1/live/sessions/{session_id}", response_model=LiveSessionOut, responses=ERRORS)
async def live_get(request: Request, svc: ServiceDep, session_id: str) -> LiveSessionOut:
    """A live session's frames in/out, dropped frames, and its fps and latency over the last ~2 s."""
    principal = authenticate(request, svc)
    return _session_out(live_hub(request, svc).own(session_id, principal))


@router.delete("/v1/live/sessions/{session_id}", response_model=LiveSessionOut, responses=ERRORS)
async def live_delete(request: Request, svc: ServiceDep, session_id: str) -> LiveSessionOut:
    """End a live session (closing the page does the same)."""
    principal = authenticate(request, svc)
    session = live_hub(request, svc).own(session_id, principal)
    await session.close()
    return _session_out(session)


def _session_out(session: WebRtcSession) -> LiveSessionOut:
    s = session.summary()
    return LiveSessionOut(id=session.id, frames_in=s["frames_in"], frames_out=s["frames_out"], dropped=s["dropped"],
                          fps_out=s["fps_out"], latency_p50_ms=s["latency_p50_ms"],
                          latency_p95_ms=s["latency_p95_ms"])


def _session_settings(svc: Service, raw: str | None) -> SwapSettings:
    """The session's settings: the operator's live engine settings plus the few fields a session may choose."""
    requested = parse_settings(svc, raw)
    chosen = requested.model_dump(exclude_unset=True)
    # the operator's own values (job_settings forces them, which marks them set) are not the client's choice
    others = sorted(set(chosen) - SESSION_FIELDS - {"device", "max_pixels", "max_duration_s", *SERVICE_ONLY_FIELDS})
    if others:
        raise InvalidOption(f"a live session cannot set {', '.join(others)}",
                            hint=f"live sessions may set {', '.join(sorted(SESSION_FIELDS))}")
    return requested.model_copy(update=LIVE_DEFAULTS)


async def _start_session(svc: Service, hub: LiveHub, sid: str, source: Path, settings: SwapSettings
                         ) -> WebRtcSession:
    """The session's processor on the shared engine, its source analysed (``NoFaceInSource`` before any media
    flows)."""
    from faceweave.live.webrtc import WebRtcSession
    from faceweave.media.image import read_image
    from faceweave.pipeline.engine import SwapEngine
    from faceweave.pipeline.video import VideoFaceProcessor
    from faceweave.provenance.mark import Marking

    shared = await hub.engine()
    rgb = await anyio.to_thread.run_sync(lambda: read_image(source, max_pixels=settings.max_pixels).rgb)
    prepared = await anyio.to_thread.run_sync(shared.prepare_sources, [rgb])
    refs = None
    if settings.selector == "reference":
        refs = await anyio.to_thread.run_sync(shared.reference_embeddings, [rgb])
    # the processor calls only the engine methods SharedEngine has (it is a SwapEngine to the processor's types)
    processor = VideoFaceProcessor(cast(SwapEngine, shared), prepared, refs, settings,
                                   defer_detection=shared.defer_detection)
    metrics = svc.metrics

    def on_frame(latency_s: float) -> None:
        metrics.live_frames.labels("out").inc()
        metrics.live_latency_seconds.observe(latency_s)

    def on_input(dropped: bool) -> None:
        metrics.live_frames.labels("in").inc()
        if dropped:
            metrics.live_frames.labels("dropped").inc()

    return WebRtcSession(sid, processor.process_batch, after_output=processor.detect_pending,
                         on_frame=on_frame, on_input=on_input, on_end=hub.ended,
                         marking=Marking.from_settings(settings, job_id=sid))


