"""Progress reporting shared by the CLI (rich bar), the service (SSE events) and the Python API (a callback)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Progress:
    """A snapshot of a running job. ``frames_total`` is None when unknown (e.g. a stream without a duration)."""

    stage: str  # "prepare" | "swap" | "encode" | "done"
    frames_done: int
    frames_total: int | None
    fps: float = 0.0
    eta_s: float | None = None
    message: str = ""

    @property
    def fraction(self) -> float | None:
        if not self.frames_total:
            return None
        return min(1.0, self.frames_done / self.frames_total)


ProgressCallback = Callable[[Progress], None]


def no_progress(_: Progress) -> None:
    """The default callback: ignore progress."""
