"""Video I/O with PyAV: probe, streaming batched decode in a thread, encode with audio kept, segments.

One module per concern, each importing only those before it: :mod:`~faceweave.media.video.probe` (header,
timestamps) ← :mod:`~faceweave.media.video.trim` ← :mod:`~faceweave.media.video.frames` (decode) ←
:mod:`~faceweave.media.video.audio` (remux) ← :mod:`~faceweave.media.video.encode` (writer, encode thread,
single-process transcode) ← :mod:`~faceweave.media.video.segments` (segment-parallel encode and join). Code
inside faceweave imports from those modules; this package re-exports their public names.

Conventions:
    * Frames stay the way the decoder gives them: 8-bit ``yuv420p`` (:class:`FrameBatch` holds the decoded
      ``av.VideoFrame`` objects, upright). Frames nobody changes go to the encoder untouched — no RGB conversion,
      no copy — and frames that change travel as packed Y/U/V planes (1.5 bytes per pixel) to the device, where
      :mod:`faceweave.ops.colourspace` converts them with the stream's colour matrix and range. ``FrameBatch.frames``
      still gives ``(B, H, W, 3)`` ``uint8`` **RGB** (converted on demand on the CPU) for code that wants it.
      Other pixel formats (10-bit, 4:2:2, 4:4:4, RGB codecs) are converted to ``yuv420p`` once, at decode.
    * Rotation: a display matrix on the input is applied at decode time and the output is written upright
      *without* a display matrix, so every player shows the output the way it showed the input (chosen over
      re-tagging because the face stages need upright faces).
    * Colour: the output keeps the input's colour tags and range; the matrix used for YUV ↔ RGB is the stream's
      (BT.601 when the stream does not say, as FFmpeg assumes).
    * Timestamps are the input video stream's ``pts`` in its ``time_base`` (an exact :class:`fractions.Fraction`).
      The encoder uses the same time base and each frame keeps its ``pts``: variable frame rate stays variable,
      and the start offset is kept. With a trim the output is shifted so the first kept frame lands where the
      input's first frame was.
    * Memory is bounded: decode runs ``queue_size`` batches ahead at most; audio is muxed progressively.
    * Output goes to a temporary name in the destination directory and is renamed at the end; a failure
      removes the temporary file, so nothing partial ever exists under the final name.
"""

from __future__ import annotations

from faceweave.media.video.audio import AUDIO_COPY_OK
from faceweave.media.video.encode import (
    CONTAINER_OF_EXTENSION,
    WEBM_VIDEO_CODECS,
    EncoderSettings,
    EncodeThread,
    FrameProcessor,
    OutputMark,
    VideoWriter,
    apply_processor,
    encoder_available,
    resolve_encoder,
    transcode,
)
from faceweave.media.video.frames import DecodeStats, FrameBatch, FrameReader, plane_array, yuv420_frame
from faceweave.media.video.probe import VideoInfo, colour_matrix_of, probe_video, scan_frame_timestamps
from faceweave.media.video.segments import (
    Segment,
    SegmentJob,
    SegmentResult,
    concat_segments,
    encode_segment,
    job_fingerprint,
    plan_segments,
    run_segments,
    segment_timing,
    threads_per_worker,
)
from faceweave.media.video.trim import Trim, parse_position, trim_from_settings

__all__ = [
    "AUDIO_COPY_OK",
    "CONTAINER_OF_EXTENSION",
    "WEBM_VIDEO_CODECS",
    "DecodeStats",
    "EncodeThread",
    "EncoderSettings",
    "FrameBatch",
    "FrameProcessor",
    "FrameReader",
    "OutputMark",
    "Segment",
    "SegmentJob",
    "SegmentResult",
    "Trim",
    "VideoInfo",
    "VideoWriter",
    "apply_processor",
    "colour_matrix_of",
    "concat_segments",
    "encode_segment",
    "encoder_available",
    "job_fingerprint",
    "parse_position",
    "plan_segments",
    "plane_array",
    "probe_video",
    "resolve_encoder",
    "run_segments",
    "scan_frame_timestamps",
    "segment_timing",
    "threads_per_worker",
    "transcode",
    "trim_from_settings",
    "yuv420_frame",
]
