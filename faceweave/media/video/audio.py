"""Audio remux: the input's audio moved into an output video (packet copy, or decode → cut → re-encode),
interleaved with the video. Conventions: see :mod:`faceweave.media.video`."""

from __future__ import annotations

from fractions import Fraction
from typing import Any, Literal

import av
import numpy as np

from faceweave.media.video.probe import VideoInfo, _open_input
from faceweave.media.video.trim import Trim

# Which audio codecs each output container takes as-is (packet copy); anything else is re-encoded.
AUDIO_COPY_OK: dict[str, frozenset[str]] = {
    "mp4": frozenset({"aac", "mp3", "alac", "ac3", "eac3", "opus"}),
    "mov": frozenset({"aac", "mp3", "alac", "ac3", "eac3", "pcm_s16le", "pcm_s24le"}),
    "matroska": frozenset({"aac", "mp3", "opus", "vorbis", "flac", "ac3", "eac3", "alac", "pcm_s16le", "pcm_s24le"}),
    "webm": frozenset({"opus", "vorbis"}),
}


class _AudioPump:
    """Moves the input's audio into the output, interleaved with video: packet copy where the container takes
    the codec and nothing is trimmed, else decode → cut → re-encode (AAC, or Opus for WebM)."""

    def __init__(self, out: Any, info: VideoInfo, trim: Trim, shift_s: float, container_name: str) -> None:
        self.info = info
        self.trim = trim
        self.shift_s = shift_s
        self.src = _open_input(info.path)
        self.in_stream = self.src.streams.audio[0]
        copy_ok = info.audio_codec in AUDIO_COPY_OK.get(container_name, frozenset())
        self.mode: Literal["copy", "encode"] = "copy" if copy_ok and not trim.active and shift_s == 0 else "encode"
        if self.mode == "copy":
            self.stream = out.add_stream_from_template(self.in_stream)
        else:
            codec = "libopus" if container_name == "webm" else "aac"
            rate = 48000 if codec == "libopus" else int(self.in_stream.codec_context.sample_rate)
            self.stream = out.add_stream(codec, rate=rate)
            layout = self.in_stream.codec_context.layout
            if layout is not None and layout.nb_channels <= 2 or codec == "aac":
                self.stream.layout = layout
            else:
                self.stream.layout = "stereo"
            self.stream.time_base = Fraction(1, rate)
            self.resampler = av.AudioResampler(
                format=self.stream.codec_context.codec.audio_formats[0].name, layout=self.stream.layout, rate=rate
            )
            self.samples_out: int | None = None
        self.out = out
        self._packets = self.src.demux(self.in_stream)
        self.done = False
        self.pending: list[Any] = []

    def _encode_frame(self, frame: Any) -> list[Any]:
        t0 = float(frame.pts * frame.time_base) if frame.pts is not None else None
        arr = None
        if t0 is not None and self.trim.active:
            sr = frame.sample_rate
            n = frame.samples
            lo = 0 if self.trim.start_s is None else int(round((self.trim.start_s - t0) * sr))
            hi = n if self.trim.end_s is None else int(round((self.trim.end_s - t0) * sr))
            lo, hi = max(0, lo), min(n, hi)
            if hi <= lo:
                return []
            if lo > 0 or hi < n:
                arr = frame.to_ndarray()[:, lo:hi] if frame.format.is_planar else frame.to_ndarray()[:, lo * len(
                    frame.layout.channels):hi * len(frame.layout.channels)]
                new = av.AudioFrame.from_ndarray(np.ascontiguousarray(arr), format=frame.format.name,
                                                 layout=frame.layout.name)
                new.sample_rate = sr
                frame = new
        if self.samples_out is None:
            # the first audio sample kept lands at its input time minus the video's shift (A/V stay in sync)
            first_t = t0 if t0 is not None else 0.0
            if self.trim.start_s is not None:
                first_t = max(first_t, self.trim.start_s)
            self.samples_out = max(0, int(round((first_t - self.shift_s) * self.stream.codec_context.sample_rate)))
        frame.pts = None
        packets = []
        for rs in self.resampler.resample(frame):
            rs.pts = self.samples_out
            rs.time_base = self.stream.time_base
            self.samples_out += rs.samples
            packets.extend(self.stream.encode(rs))
        return packets

    def mux_until(self, t_s: float | None) -> None:
        """Mux audio up to output time ``t_s`` (seconds; None: everything left)."""
        while not self.done:
            if self.pending:
                packet = self.pending[0]
                pt = float(packet.pts * packet.time_base) if packet.pts is not None else 0.0
                if t_s is not None and pt > t_s:
                    return
                self.pending.pop(0)
                self.out.mux(packet)
                continue
            try:
                packet = next(self._packets)
            except StopIteration:
                self._flush()
                continue
            if packet.size == 0:
                continue
            if self.mode == "copy":
                packet.stream = self.stream
                self.pending.append(packet)
            else:
                try:
                    for frame in packet.decode():
                        self.pending.extend(self._encode_frame(frame))
                except av.error.FFmpegError:
                    continue  # a damaged audio packet: drop it, the video decides success
        for packet in self.pending:
            self.out.mux(packet)
        self.pending.clear()

    def _flush(self) -> None:
        if self.mode == "encode":
            for rs in self.resampler.resample(None):
                self.samples_out = self.samples_out or 0
                rs.pts = self.samples_out
                self.samples_out += rs.samples
                self.pending.extend(self.stream.encode(rs))
            self.pending.extend(self.stream.encode(None))
        for packet in self.pending:
            self.out.mux(packet)
        self.pending.clear()
        self.done = True

    def close(self) -> None:
        self.src.close()
