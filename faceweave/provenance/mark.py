"""Marking an output: watermark the pixels, tag the file, sign C2PA — what the image and video writers call.

Which markings run is decided by :class:`Marking`, derived once from the job's settings; the service forces its own
operator values into those settings, so an API client cannot turn a marking off.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from faceweave.provenance.c2pa import (
    C2PA_MIME,
    Ingredient,
    claim_thumbnail,
    sign_bytes,
    sign_file,
    signing_identity,
)
from faceweave.provenance.metadata import provenance_tags, read_video_marking, tag_video_file, video_tags, xmp_packet
from faceweave.provenance.watermark import WatermarkPayload, embed_watermark
from faceweave.settings import SwapSettings

if TYPE_CHECKING:
    from faceweave.media.video.encode import OutputMark


@dataclass(frozen=True)
class Marking:
    """The markings of one job. ``job_id`` is hashed into the watermark, tags and manifest (never stored as is)."""

    watermark: bool = True
    c2pa: bool = True
    c2pa_cert: str | None = None
    c2pa_key: str | None = None
    job_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    @classmethod
    def from_settings(cls, settings: SwapSettings, job_id: str | None = None) -> Marking:
        return cls(watermark=settings.watermark, c2pa=settings.c2pa, c2pa_cert=settings.c2pa_cert,
                   c2pa_key=settings.c2pa_key, **({"job_id": job_id} if job_id else {}))

    @property
    def payload(self) -> WatermarkPayload:
        return WatermarkPayload.for_job(self.job_id)

    @property
    def job_hash(self) -> str:
        return f"{self.payload.job_hash:08x}"


def encode_marked_image(rgb: np.ndarray, path: Path, marking: Marking, *, like: object = None,
                        ingredients: Sequence[Ingredient] = (), png_compression: int | None = None) -> bytes:
    """The bytes of a marked image for ``path``'s format: watermarked ``(H, W, 3)`` uint8 RGB, provenance tags and
    IPTC XMP, and — for PNG/JPEG/WebP/TIFF — a signed C2PA manifest over exactly those bytes, with a claim
    thumbnail of the marked pixels. ``png_compression``: see :func:`faceweave.media.image.encode_image`."""
    from faceweave.media.image import IMAGE_EXTENSIONS, LoadedImage, encode_image

    if marking.watermark:
        rgb = embed_watermark(rgb, marking.payload)
    ext = path.suffix.lower()
    data = encode_image(rgb, IMAGE_EXTENSIONS[ext], like=like if isinstance(like, LoadedImage) else None,
                        metadata=provenance_tags(marking.job_hash), xmp=xmp_packet(), png_compression=png_compression)
    if marking.c2pa and ext in C2PA_MIME:
        identity = signing_identity(marking.c2pa_cert, marking.c2pa_key)
        data = sign_bytes(data, C2PA_MIME[ext], identity, list(ingredients), "c2pa.edited", marking.job_hash,
                          thumbnail=claim_thumbnail(rgb))
    return data


def write_marked_image(path: Path | str, rgb: np.ndarray, marking: Marking, *, like: object = None,
                       ingredients: Sequence[Ingredient] = (), png_compression: int | None = None) -> Path:
    """:func:`encode_marked_image`, written atomically (see :func:`faceweave.media.image.write_image`)."""
    from faceweave.errors import OutputNotWritable
    from faceweave.media.image import atomic_write_bytes, check_output_path

    path = check_output_path(path, "image")
    data = encode_marked_image(rgb, path, marking, like=like, ingredients=ingredients,
                               png_compression=png_compression)
    try:
        atomic_write_bytes(path, data)
    except OSError as exc:
        raise OutputNotWritable(f"cannot write {path}: {exc.strerror or exc}", hint="check space/permissions") from None
    return path


def video_output_mark(marking: Marking) -> OutputMark:
    """What :class:`~faceweave.media.video.encode.VideoWriter` (and the segment join) put into a video output for
    ``marking``: container tags always, the watermark pattern in every frame's luma when ``marking.watermark``."""
    from faceweave.media.video.encode import OutputMark

    return OutputMark(tags=video_tags(marking.job_hash), watermark=marking.payload if marking.watermark else None)


def mark_video_output(path: Path | str, marking: Marking, ingredients: Sequence[Ingredient] = ()) -> Path:
    """Finish marking a written video in place: container tags and ``+faststart`` where the file lacks them (a
    remux, no re-encode), then — for MP4/MOV with ``marking.c2pa`` — a signed C2PA manifest over the file.

    The pixels cannot be marked after encoding: a writer of frames marks them itself, by opening its
    :class:`~faceweave.media.video.encode.VideoWriter` with ``mark=video_output_mark(marking)`` (or, with its own
    encoder, :class:`~faceweave.provenance.watermark.ChromaMarker` on each frame's V plane). ``swap_video`` calls this
    after its writer or segment join; the live mode calls it on a recording it has closed.
    """
    path = Path(path)
    scratch = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}.mark{path.suffix}")
    try:
        if not read_video_marking(path).synthetic:
            tag_video_file(path, scratch, marking.job_hash)
            os.replace(scratch, path)
        if marking.c2pa and path.suffix.lower() in C2PA_MIME:
            identity = signing_identity(marking.c2pa_cert, marking.c2pa_key)
            sign_file(path, scratch, identity, list(ingredients), "c2pa.edited", marking.job_hash)
            os.replace(scratch, path)  # the manifest goes in before moov's neighbours: faststart is kept
    finally:
        scratch.unlink(missing_ok=True)
    return path


__all__ = ["Marking", "encode_marked_image", "mark_video_output", "video_output_mark", "write_marked_image"]
