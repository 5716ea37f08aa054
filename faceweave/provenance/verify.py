"""Read every marking of a file back: plain metadata, the C2PA manifest and the invisible watermark."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from faceweave.errors import FaceweaveError
from faceweave.provenance.c2pa import C2paReport, read_c2pa
from faceweave.provenance.metadata import MetadataMarking, read_image_marking, read_video_marking
from faceweave.provenance.watermark import WatermarkResult, detect_watermark

NOT_FOUND = WatermarkResult(found=False, confidence=0.0, score=0.0, payload=None, bit_agreement=0.0, cell=0.0)
VIDEO_FRAMES = 16  # frames a video's watermark evidence is gathered from (every 2nd of the first 32)


@dataclass(frozen=True)
class VerifyReport:
    """One file's markings. ``marked``: any of the three says "synthetic by faceweave"."""

    file: str
    kind: str
    metadata: MetadataMarking
    c2pa: C2paReport
    watermark: WatermarkResult

    @property
    def marked(self) -> bool:
        return self.metadata.synthetic or (self.c2pa.status == "valid" and self.c2pa.synthetic) or self.watermark.found

    def to_dict(self) -> dict[str, object]:
        return {"file": self.file, "kind": self.kind, "marked": self.marked, "metadata": self.metadata.to_dict(),
                "c2pa": self.c2pa.to_dict(), "watermark": self.watermark.to_dict()}


def _video_frames(path: Path, count: int) -> list[np.ndarray]:
    import av

    frames: list[np.ndarray] = []
    with av.open(str(path)) as c:
        for i, frame in enumerate(c.decode(video=0)):
            if i % 2 == 0:  # colour: the writer's mark is in Cr (older videos': in the luma)
                frames.append(frame.to_ndarray(format="rgb24"))
            if len(frames) >= count:
                break
    return frames


def verify_file(path: str | Path, *, video_frames: int = VIDEO_FRAMES) -> VerifyReport:
    """Verify one image or video file (the kind is sniffed from its bytes).

    Raises the media errors of :func:`faceweave.media.image.sniff_media_kind` for missing or unreadable files.
    """
    from faceweave.media.image import read_image, sniff_media_kind

    path = Path(path)
    kind = sniff_media_kind(path)
    # a damaged file still gets a report: each marking that cannot be read counts as absent
    metadata, watermark = MetadataMarking(False, None, None, {}), NOT_FOUND
    with contextlib.suppress(OSError, ValueError, FaceweaveError):
        metadata = read_video_marking(path) if kind == "video" else read_image_marking(path)
    with contextlib.suppress(OSError, ValueError, FaceweaveError):
        watermark = detect_watermark(_video_frames(path, video_frames) if kind == "video" else read_image(path).rgb)
    return VerifyReport(path.name, kind, metadata, read_c2pa(path), watermark)


__all__ = ["VerifyReport", "verify_file"]
