"""Typed exceptions of faceweave.

Every error a user can cause is a subclass of :class:`FaceweaveError`. Each class carries the CLI exit code
and the HTTP status it maps to, so the mapping lives in exactly one place: the CLI (``cli.py``) turns an error
into ``exit_code`` and a one-line message, the service (``serve/``) into ``http_status`` and a JSON body.
Messages say what went wrong and what to do about it.
"""

from __future__ import annotations


class FaceweaveError(Exception):
    """Base class. ``exit_code`` for the CLI, ``http_status`` for the service, ``code`` as a stable name."""

    exit_code: int = 1
    http_status: int = 500
    code: str = "internal_error"

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(self.one_line())

    def one_line(self) -> str:
        """The message and the hint, on one line, as the CLI prints them."""
        return f"{self.message} — {self.hint}" if self.hint else self.message


# --- input files -------------------------------------------------------------------------------------------
class InputNotFound(FaceweaveError):
    exit_code, http_status, code = 10, 404, "input_not_found"


class InputUnreadable(FaceweaveError):
    exit_code, http_status, code = 11, 400, "input_unreadable"


class UnsupportedMedia(FaceweaveError):
    exit_code, http_status, code = 12, 415, "unsupported_media"


class EmptyMedia(FaceweaveError):
    exit_code, http_status, code = 13, 400, "empty_media"


class TruncatedMedia(FaceweaveError):
    exit_code, http_status, code = 14, 400, "truncated_media"


class MediaTooLarge(FaceweaveError):
    """Pixels, bytes, duration or frame count above the configured limit (decompression bombs included)."""

    exit_code, http_status, code = 15, 413, "media_too_large"


class WrongMediaKind(FaceweaveError):
    """An image where a video is expected, a video where an image is expected, or an audio-only file."""

    exit_code, http_status, code = 16, 415, "wrong_media_kind"


class CorruptStream(FaceweaveError):
    """A video stream that cannot be decoded past some point."""

    exit_code, http_status, code = 17, 422, "corrupt_stream"


# --- faces -------------------------------------------------------------------------------------------------
class NoFaceInSource(FaceweaveError):
    exit_code, http_status, code = 20, 422, "no_face_in_source"


class NoFaceInTarget(FaceweaveError):
    exit_code, http_status, code = 21, 422, "no_face_in_target"


class NoMatchingFace(FaceweaveError):
    """No target face matches the reference identity (``--selector reference``)."""

    exit_code, http_status, code = 22, 422, "no_matching_face"


class NoFaceInReference(FaceweaveError):
    exit_code, http_status, code = 23, 422, "no_face_in_reference"


# --- output ------------------------------------------------------------------------------------------------
class OutputNotWritable(FaceweaveError):
    exit_code, http_status, code = 30, 500, "output_not_writable"


class UnknownOutputFormat(FaceweaveError):
    exit_code, http_status, code = 31, 400, "unknown_output_format"


# --- options and models ------------------------------------------------------------------------------------
class InvalidOption(FaceweaveError):
    exit_code, http_status, code = 40, 422, "invalid_option"


class DeviceUnavailable(FaceweaveError):
    exit_code, http_status, code = 41, 503, "device_unavailable"


class ModelMissing(FaceweaveError):
    exit_code, http_status, code = 50, 503, "model_missing"


class ModelIntegrityError(FaceweaveError):
    exit_code, http_status, code = 51, 503, "model_integrity"


class ModelDownloadError(FaceweaveError):
    exit_code, http_status, code = 52, 502, "model_download"


class DependencyMissing(FaceweaveError):
    """An optional Python package that a feature needs is not installed."""

    exit_code, http_status, code = 53, 501, "dependency_missing"


class ShapeError(FaceweaveError):
    """A tensor argument of the wrong shape/dtype: a programming error at an API boundary."""

    exit_code, http_status, code = 60, 500, "shape_error"


def check_shape(x: object, expected: list[str], name: str = "input") -> None:
    """Raise :class:`ShapeError` unless tensor ``x`` matches ``expected`` (e.g. ``["B", "3", "H", "W"]``).

    Letters are free dimensions, digits are fixed sizes. The message is built only on failure.
    """
    shape = tuple(getattr(x, "shape", ()))
    ok = len(shape) == len(expected) and all(
        (not e.isdigit()) or int(e) == s for e, s in zip(expected, shape, strict=False)
    )
    if not ok:
        raise ShapeError(f"{name} must have shape ({', '.join(expected)}), got {tuple(shape)}")


# --- provenance ----------------------------------------------------------------------------------------------
class NotMarked(FaceweaveError):
    """``faceweave verify``: at least one file carries none of faceweave's markings (metadata, C2PA, watermark)."""

    exit_code, http_status, code = 70, 422, "not_marked"
