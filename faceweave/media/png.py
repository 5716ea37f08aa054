"""A fast 8-bit PNG writer: one fixed row filter done in numpy, and the image's strips deflated on several threads.

libpng (OpenCV, Pillow) tries every row filter on every row to pick one, and deflates the whole image on one thread.
Here every row takes the Average filter (type 3: close to the adaptive choice on photos, measured ~5–15 % larger
than OpenCV's level-1 file) and the rows are cut into strips, each filtered and raw-deflated on its own thread
(:mod:`zlib` releases the GIL) with a sync flush at its end, so the strips joined are one valid zlib stream (what
pigz does). A strip's deflate starts with an empty window, which costs a few bytes per strip.
"""

from __future__ import annotations

import os
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from faceweave.errors import ShapeError

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_MIN_STRIP_ROWS = 64  # below this a strip's thread costs more than it saves
_AVERAGE = 3  # PNG filter type


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(body, zlib.crc32(kind)))


def _filter_rows(pixels: np.ndarray, start: int, stop: int) -> bytes:
    """Rows ``start:stop`` of ``(H, W, C)`` uint8 ``pixels`` as PNG scanlines, each its filter byte (Average) and
    ``x - floor((left + up) / 2)`` per byte (mod 256; left/up are 0 outside the image)."""
    h, w, c = pixels.shape
    rows = pixels[start:stop].reshape(stop - start, w * c)
    mean = np.zeros(rows.shape, np.uint16)  # up + left, then halved
    mean[1:] = rows[:-1]
    if start > 0:
        mean[0] = pixels[start - 1].reshape(w * c)
    mean[:, c:] += rows[:, :-c]
    mean >>= 1
    out = np.empty((stop - start, w * c + 1), np.uint8)
    out[:, 0] = _AVERAGE
    np.subtract(rows, mean.astype(np.uint8), out=out[:, 1:])  # wraps mod 256, as PNG wants
    return out.tobytes()


def encode_png(pixels: np.ndarray, level: int = 1, *, threads: int | None = None) -> bytes:
    """PNG bytes of ``(H, W, 3)`` RGB or ``(H, W, 4)`` RGBA uint8 ``pixels`` (no ancillary chunks).

    ``level``: zlib 0–9 (1 with the RLE strategy: the fastest). ``threads``: strips deflated at once (default: one
    per CPU core this process may use; a strip has at least 64 rows). The bytes depend on the strip count, the
    pixels do not.
    """
    if pixels.ndim != 3 or pixels.shape[2] not in (3, 4) or pixels.dtype != np.uint8:
        raise ShapeError(f"a PNG is written from (H, W, 3|4) uint8, got {pixels.shape} {pixels.dtype}")
    if not 0 <= level <= 9:
        raise ShapeError(f"zlib level must be 0-9, got {level}")
    pixels = np.ascontiguousarray(pixels)
    h, w, c = pixels.shape
    n = max(1, min(threads or _usable_cpus(), h // _MIN_STRIP_ROWS))
    cuts = [h * k // n for k in range(n + 1)]
    strategy = zlib.Z_RLE if level == 1 else zlib.Z_DEFAULT_STRATEGY

    def strip(k: int) -> tuple[bytes, int, int]:
        raw = _filter_rows(pixels, cuts[k], cuts[k + 1])
        deflate = zlib.compressobj(level, zlib.DEFLATED, -15, 8, strategy)
        body = deflate.compress(raw) + deflate.flush(zlib.Z_FINISH if k == n - 1 else zlib.Z_SYNC_FLUSH)
        return body, zlib.adler32(raw), len(raw)

    if n == 1:
        parts = [strip(0)]
    else:
        with ThreadPoolExecutor(n, thread_name_prefix="faceweave-png") as pool:
            parts = list(pool.map(strip, range(n)))
    adler = parts[0][1]
    for _, part_adler, length in parts[1:]:
        adler = _adler32_combine(adler, part_adler, length)
    stream = b"\x78\x01" + b"".join(body for body, _, _ in parts) + struct.pack(">I", adler)
    colour = 2 if c == 3 else 6
    header = struct.pack(">IIBBBBB", w, h, 8, colour, 0, 0, 0)
    return _SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", stream) + _chunk(b"IEND", b"")


def _usable_cpus() -> int:
    # the cores this process may run on (a container's or taskset's limit), not the host's count
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _adler32_combine(first: int, second: int, second_length: int) -> int:
    """zlib's ``adler32_combine``: the Adler-32 of A + B from those of A and of B (B ``second_length`` bytes)."""
    base = 65521
    rem = second_length % base
    sum1 = first & 0xFFFF
    sum2 = (rem * sum1) % base
    sum1 += (second & 0xFFFF) + base - 1
    sum2 += ((first >> 16) & 0xFFFF) + ((second >> 16) & 0xFFFF) + base - rem
    sum1 = sum1 - base if sum1 >= base else sum1
    sum1 = sum1 - base if sum1 >= base else sum1
    sum2 = sum2 - (base << 1) if sum2 >= (base << 1) else sum2
    sum2 = sum2 - base if sum2 >= base else sum2
    return (sum2 << 16) | sum1


__all__ = ["encode_png"]
