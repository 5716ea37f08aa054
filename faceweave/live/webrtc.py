"""A browser's camera over WebRTC (aiortc): the incoming track's frames go through a one-slot mailbox to a
:class:`~faceweave.live.session.LiveSession` on its own thread, and the swapped frames go back on an outgoing
track of the same peer connection. A data channel (opened by the page, label ``stats``) carries the session's fps
and latency twice a second. The session ends when the connection closes or fails (the browser left) or on
:meth:`WebRtcSession.close`.

aiortc is optional (the ``live`` extra); importing this module without it raises ``DependencyMissing``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import numpy as np

from faceweave.errors import DependencyMissing
from faceweave.live.mailbox import LiveStats, Mailbox
from faceweave.live.session import FrameProcess, LiveSession
from faceweave.live.sinks import LiveFrameMarker
from faceweave.live.sources import LiveFrame, _yuv420
from faceweave.media.video.frames import FrameBatch
from faceweave.provenance.mark import Marking

try:
    from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
    from aiortc.mediastreams import MediaStreamError
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise DependencyMissing("live mode in the browser needs aiortc", hint="pip install 'faceweave[live]'") from exc

log = logging.getLogger("faceweave.live")
RTP_TIME_BASE = Fraction(1, 90000)  # the video RTP clock


class SwappedTrack(MediaStreamTrack):  # type: ignore[misc]
    """The outgoing video: the newest swapped frame (a frame the browser's encoder has not taken yet is replaced,
    like the input side: latency over completeness)."""

    kind = "video"

    def __init__(self) -> None:
        super().__init__()
        self._slot: asyncio.Queue[Any] = asyncio.Queue(maxsize=1)

    def offer(self, frame: Any) -> None:
        """Hand a frame over (on the event loop's thread)."""
        if self._slot.full():
            self._slot.get_nowait()
        self._slot.put_nowait(frame)

    async def recv(self) -> Any:
        if self.readyState != "live":
            raise MediaStreamError
        frame = await self._slot.get()
        if frame is None:
            self.stop()
            raise MediaStreamError
        return frame


class _TrackSink:
    """A :class:`~faceweave.live.sinks.LiveSink` that hands frames to :class:`SwappedTrack` on the event loop."""

    def __init__(self, track: SwappedTrack, loop: asyncio.AbstractEventLoop, marking: Marking | None = None) -> None:
        self.track, self.loop = track, loop
        self.marker = LiveFrameMarker(marking)  # the browser gets the invisible watermark too

    def write(self, frames: FrameBatch | np.ndarray, time_s: float) -> None:
        frame = self.marker.frame(frames)
        frame.pts, frame.time_base = int(round(time_s / RTP_TIME_BASE)), RTP_TIME_BASE
        with contextlib.suppress(RuntimeError):  # the loop closed under a finishing session
            self.loop.call_soon_threadsafe(self.track.offer, frame)

    def close(self) -> None:
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self.track.offer, None)


class WebRtcSession:
    """One browser peer. Build it, then ``await answer(sdp, type)``; ``on_frame(latency_s)`` and
    ``on_input(dropped_now)`` feed the service's metrics; ``on_end(session)`` runs once when it ends;
    ``after_output()`` runs after each frame went back (the processor's deferred detection)."""

    def __init__(self, session_id: str, process: FrameProcess, *, on_frame: Callable[[float], None] | None = None,
                 after_output: Callable[[], None] | None = None,
                 on_input: Callable[[bool], None] | None = None,
                 on_end: Callable[[WebRtcSession], None] | None = None, marking: Marking | None = None) -> None:
        self.id = session_id
        self.marking = marking
        self.process, self.on_frame, self.on_input, self.on_end = process, on_frame, on_input, on_end
        self.after_output = after_output
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))  # host candidates only: no STUN lookups
        self.mailbox: Mailbox[LiveFrame] = Mailbox()
        self.stats = LiveStats()
        self.stop = threading.Event()
        self.track = SwappedTrack()
        self._tasks: list[asyncio.Task[None]] = []
        self._worker: threading.Thread | None = None
        self._channel: Any = None
        self._ended = False
        self._loop: asyncio.AbstractEventLoop | None = None

        @self.pc.on("track")
        def on_track(track: Any) -> None:
            if track.kind == "video":
                self.pc.addTrack(self.track)
                self._tasks.append(asyncio.ensure_future(self._pump(track)))

        @self.pc.on("datachannel")
        def on_datachannel(channel: Any) -> None:
            if channel.label == "stats":
                self._channel = channel

        @self.pc.on("connectionstatechange")
        async def on_state() -> None:
            if self.pc.connectionState in ("failed", "closed"):
                await self.close()

    async def answer(self, sdp: str, sdp_type: str) -> tuple[str, str]:
        """Take the browser's offer; start the engine thread; return the answer ``(sdp, type)``."""
        self._loop = asyncio.get_running_loop()
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type=sdp_type))
        answer = await self.pc.createAnswer()
        await self.pc.setLocalDescription(answer)
        sink = _TrackSink(self.track, self._loop, self.marking)
        session = LiveSession(self.process, self.mailbox, sink, self.stats, self.stop, on_frame=self.on_frame,
                              after_output=self.after_output)
        self._worker = threading.Thread(target=self._work, args=(session,), name=f"faceweave-live-{self.id[:8]}",
                                        daemon=True)
        self._worker.start()
        self._tasks.append(asyncio.ensure_future(self._report()))
        desc = self.pc.localDescription
        return desc.sdp, desc.type

    def _work(self, session: LiveSession) -> None:
        try:
            session.run()
        except Exception:
            log.exception("live session %s failed", self.id)
        finally:
            loop = self._loop
            if loop is not None and not self._ended:  # the engine stopped on its own: close the peer too
                with contextlib.suppress(RuntimeError):
                    asyncio.run_coroutine_threadsafe(self.close(), loop)

    async def _pump(self, track: Any) -> None:
        """Incoming camera frames → the mailbox (the newest wins), stamped on arrival."""
        t0: float | None = None
        index = 0
        while not self.stop.is_set():
            try:
                frame = await track.recv()
            except MediaStreamError:
                break
            now = time.perf_counter()
            t0 = now if t0 is None else t0
            before = self.mailbox.dropped
            self.stats.frames_in += 1
            self.mailbox.put(LiveFrame(_yuv420(frame), now, now - t0, index))
            index += 1
            if self.on_input is not None:
                self.on_input(self.mailbox.dropped > before)
        self.mailbox.close()

    async def _report(self) -> None:
        """Fps and latency to the page, twice a second, over the ``stats`` data channel."""
        while not self.stop.is_set():
            await asyncio.sleep(0.5)
            channel = self._channel
            if channel is not None and channel.readyState == "open":
                recent = self.stats.recent()
                channel.send(json.dumps({**recent, "frames_in": self.stats.frames_in,
                                         "frames_out": self.stats.frames_out, "dropped": self.mailbox.dropped}))

    def summary(self) -> dict[str, Any]:
        self.stats.dropped = self.mailbox.dropped
        return {"id": self.id, **self.stats.summary(), **self.stats.recent()}

    async def close(self) -> None:
        """End the session (idempotent): stop the engine loop, close the peer, release the caller's slot."""
        if self._ended:
            return
        self._ended = True
        self.stop.set()
        self.mailbox.close()
        for task in self._tasks:
            task.cancel()
        with contextlib.suppress(Exception):
            await self.pc.close()
        if self.on_end is not None:
            self.on_end(self)


__all__ = ["SwappedTrack", "WebRtcSession"]
