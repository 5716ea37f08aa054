"""What a swap returns. It lives below both :mod:`faceweave.api` and :mod:`faceweave.pipeline` (which build it),
so neither has to import the other."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: per-segment counters that add up over the segments of one video (the local and the Ray executor's joins)
SEGMENT_COUNTERS = ("frames_with_faces", "frames_swapped", "faces_swapped", "detections", "recall_passes",
                    "scene_cuts", "tracks")


@dataclass(frozen=True)
class SwapResult:
    """What a swap produced: the output path, how many faces were swapped, timings and counters."""

    output: Path
    kind: str  # "image" | "video"
    faces_swapped: int
    frames: int = 1
    seconds: float = 0.0
    stats: dict[str, Any] = field(default_factory=dict)


__all__ = ["SwapResult"]
