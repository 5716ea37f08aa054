"""Trims: which frames of a video to keep (by time or by frame index), parsed from the user's positions.
Conventions: see :mod:`faceweave.media.video`."""

from __future__ import annotations

from dataclasses import dataclass

from faceweave.errors import InvalidOption
from faceweave.media.video.probe import VideoInfo, scan_frame_timestamps


@dataclass(frozen=True)
class Trim:
    """Which frames to keep: by presentation time (seconds) or by index ("45f"), start inclusive, end exclusive."""

    start_s: float | None = None
    end_s: float | None = None
    start_frame: int | None = None
    end_frame: int | None = None

    @property
    def active(self) -> bool:
        return any(v is not None for v in (self.start_s, self.end_s, self.start_frame, self.end_frame))

    def keeps(self, index: int, time_s: float) -> bool:
        """Whether frame ``index`` (0-based, decode order = presentation order) at ``time_s`` is kept."""
        if self.start_frame is not None and index < self.start_frame:
            return False
        if self.end_frame is not None and index >= self.end_frame:
            return False
        if self.start_s is not None and time_s < self.start_s - 1e-6:
            return False
        return not (self.end_s is not None and time_s >= self.end_s - 1e-6)

    def past_end(self, index: int, time_s: float) -> bool:
        return (self.end_frame is not None and index >= self.end_frame) or (
            self.end_s is not None and time_s >= self.end_s - 1e-6
        )


def parse_position(spec: str | None, name: str) -> tuple[float | None, int | None]:
    """``"1.5"``/``"1.5s"`` → (1.5, None); ``"45f"`` → (None, 45); None → (None, None)."""
    if spec is None or str(spec).strip() == "":
        return None, None
    text = str(spec).strip().lower()
    try:
        if text.endswith("f"):
            frames = int(text[:-1])
            if frames < 0:
                raise ValueError
            return None, frames
        seconds = float(text[:-1] if text.endswith("s") else text)
        if seconds < 0 or seconds != seconds:
            raise ValueError
        return seconds, None
    except ValueError:
        raise InvalidOption(
            f"{name}={spec!r} is not a position", hint="use seconds ('1.5', '1.5s') or frames ('45f')"
        ) from None


def trim_from_settings(trim_start: str | None, trim_end: str | None, info: VideoInfo) -> Trim:
    """Build a :class:`Trim`. Seconds are relative to the video's start ('0s' is the first frame); frame positions
    are also turned into times (from the demuxed timestamps) so the audio is cut at the same instants."""
    s_sec, s_frame = parse_position(trim_start, "trim_start")
    e_sec, e_frame = parse_position(trim_end, "trim_end")
    if (s_sec is not None and e_sec is not None and e_sec <= s_sec) or (
        s_frame is not None and e_frame is not None and e_frame <= s_frame
    ):
        raise InvalidOption(f"trim_end ({trim_end}) is not after trim_start ({trim_start})", hint="swap or fix them")
    offset = info.start_time_s
    start_s = None if s_sec is None else s_sec + offset
    end_s = None if e_sec is None else e_sec + offset
    if s_frame is not None or e_frame is not None:
        all_pts, _ = scan_frame_timestamps(info)
        times = [float(p * info.time_base) for p in all_pts.tolist()]
        if s_frame is not None:
            if s_frame >= len(times):
                raise InvalidOption(f"trim_start={trim_start} is past the last frame ({len(times)} frames)",
                                    hint="use a smaller start")
            start_s = max(start_s or -1e18, times[s_frame])
        if e_frame is not None and e_frame < len(times):
            end_s = min(end_s if end_s is not None else 1e18, times[e_frame])
    return Trim(start_s=start_s, end_s=end_s, start_frame=s_frame, end_frame=e_frame)


def _trim_shift(info: VideoInfo, trim: Trim, first_kept_pts: int) -> int:
    """pts shift so a trimmed output starts where the input did (0 without a trim: timestamps kept as-is)."""
    return first_kept_pts - info.start_pts if trim.active else 0
