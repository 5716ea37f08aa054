"""The one-slot mailbox between a live source and the engine, and the live session's statistics.

A camera does not wait for the engine: when the engine falls behind, the frame waiting in the mailbox is replaced
by the newer one and counted as dropped, so memory stays one frame per session whatever the load, and the frame
the engine takes next is always the newest (the lowest latency it can still achieve).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np

T = TypeVar("T")


class Mailbox(Generic[T]):
    """A one-slot, newest-wins hand-over between one producer thread and one consumer thread.

    :meth:`put` never blocks: an item still waiting is replaced (and counted in :attr:`dropped`). :meth:`get`
    waits for an item, and returns None once the mailbox is closed and empty (the producer's end of stream).
    """

    def __init__(self) -> None:
        self._item: T | None = None
        self._closed = False
        self._cond = threading.Condition()
        self.put_count = 0
        self.dropped = 0

    def put(self, item: T) -> None:
        with self._cond:
            if self._closed:
                return
            if self._item is not None:
                self.dropped += 1  # the engine never saw it: the newer frame wins
            self._item = item
            self.put_count += 1
            self._cond.notify()

    def get(self, timeout: float | None = None) -> T | None:
        """The newest item, waiting up to ``timeout`` s (None: until one comes or the mailbox closes)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._item is None and not self._closed:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return None
                self._cond.wait(left)
            item, self._item = self._item, None
            return item

    def close(self) -> None:
        """No more items: a waiting :meth:`get` returns what is left, then None."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed


@dataclass
class LiveStats:
    """Counts and per-frame latencies of one live session (capture → swapped frame handed to the output).

    ``frames_in``: frames the source delivered; ``frames_out``: frames handed to the output; ``dropped``: frames
    replaced in the mailbox before the engine took them (``frames_in = frames_out + dropped`` once a session has
    drained, up to one frame still in flight when it was stopped).
    """

    started_at: float = field(default_factory=time.perf_counter)
    ended_at: float | None = None
    frames_in: int = 0
    frames_out: int = 0
    dropped: int = 0
    frames_swapped: int = 0
    latencies_s: list[float] = field(default_factory=list)
    window: list[tuple[float, float]] = field(default_factory=list)  # (handed-out time, latency) of the last ~2 s
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, captured_at: float, now: float | None = None) -> float:
        """One frame handed to the output: its latency in seconds."""
        now = time.perf_counter() if now is None else now
        latency = now - captured_at
        with self._lock:
            self.frames_out += 1
            self.latencies_s.append(latency)
            self.window.append((now, latency))
            while self.window and self.window[0][0] < now - 2.0:
                self.window.pop(0)
        return latency

    def recent(self, now: float | None = None) -> dict[str, float]:
        """Output fps and latency percentiles over the last ~2 s (what a live page shows)."""
        now = time.perf_counter() if now is None else now
        with self._lock:
            window = [(t, lat) for t, lat in self.window if t >= now - 2.0]
        if not window:
            return {"fps_out": 0.0, "latency_p50_ms": 0.0, "latency_p95_ms": 0.0}
        span = max(now - window[0][0], 1e-3) if len(window) > 1 else 2.0
        lat = np.array([lat for _, lat in window]) * 1000
        return {"fps_out": round(len(window) / span if len(window) > 1 else 0.5, 2),
                "latency_p50_ms": round(float(np.percentile(lat, 50)), 1),
                "latency_p95_ms": round(float(np.percentile(lat, 95)), 1)}

    def summary(self) -> dict[str, Any]:
        """The ``--stats-json`` document: fps in/out, dropped frames and latency p50/p95/p99/max in ms."""
        end = self.ended_at if self.ended_at is not None else time.perf_counter()
        wall = max(end - self.started_at, 1e-9)
        with self._lock:
            lat = np.array(self.latencies_s) * 1000
        pct = {f"latency_{name}_ms": (round(float(np.percentile(lat, q)), 2) if lat.size else None)
               for name, q in (("p50", 50), ("p95", 95), ("p99", 99))}
        return {
            "wall_s": round(wall, 3),
            "frames_in": self.frames_in,
            "frames_out": self.frames_out,
            "dropped": self.dropped,
            "frames_swapped": self.frames_swapped,
            "fps_in": round(self.frames_in / wall, 2),
            "fps_out": round(self.frames_out / wall, 2),
            **pct,
            "latency_max_ms": round(float(lat.max()), 2) if lat.size else None,
        }


__all__ = ["LiveStats", "Mailbox"]
