"""Marking an output: watermark the pixels, tag the file, sign C2PA — what the image and video writers call.

Which markings run is decided by :class:`Marking`, derived once from the job's settings; the service forces its own
operator values into those settings, so an API client cannot turn a marking off.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from faceweave.provenance.c2pa import C2PA_MIME, Ingredient, sign_bytes, signing_identity
from faceweave.provenance.metadata import provenance_tags, xmp_packet
from faceweave.provenance.watermark import WatermarkPayload, embed_watermark
from faceweave.settings import SwapSettings


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
                        ingredients: Sequence[Ingredient] = ()) -> bytes:
    """The bytes of a marked image for ``path``'s format: watermarked ``(H, W, 3)`` uint8 RGB, provenance tags and
    IPTC XMP, and — for PNG/JPEG/WebP/TIFF — a signed C2PA manifest over exactly those bytes."""
    from faceweave.media.image import IMAGE_EXTENSIONS, LoadedImage, encode_image

    if marking.watermark:
        rgb = embed_watermark(rgb, marking.payload)
    ext = path.suffix.lower()
    data = encode_image(rgb, IMAGE_EXTENSIONS[ext], like=like if isinstance(like, LoadedImage) else None,
                        metadata=provenance_tags(marking.job_hash), xmp=xmp_packet())
    if marking.c2pa and ext in C2PA_MIME:
        identity = signing_identity(marking.c2pa_cert, marking.c2pa_key)
        data = sign_bytes(data, C2PA_MIME[ext], identity, list(ingredients), "c2pa.edited", marking.job_hash)
    return data


def write_marked_image(path: Path | str, rgb: np.ndarray, marking: Marking, *, like: object = None,
                       ingredients: Sequence[Ingredient] = ()) -> Path:
    """:func:`encode_marked_image`, written atomically (see :func:`faceweave.media.image.write_image`)."""
    from faceweave.errors import OutputNotWritable
    from faceweave.media.image import atomic_write_bytes, check_output_path

    path = check_output_path(path, "image")
    data = encode_marked_image(rgb, path, marking, like=like, ingredients=ingredients)
    try:
        atomic_write_bytes(path, data)
    except OSError as exc:
        raise OutputNotWritable(f"cannot write {path}: {exc.strerror or exc}", hint="check space/permissions") from None
    return path


__all__ = ["Marking", "encode_marked_image", "write_marked_image"]
