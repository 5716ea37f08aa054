"""faceweave's invisible watermark: a tiled spread-spectrum pattern in the luma, found again after crops and resizes.

Scheme (version 2). A tile of ``32 × 32`` cells carries 1024 chips of ±1: 512 *sync* chips (a fixed pseudo-random
pattern) and 512 *payload* chips: the 48-bit payload and its CRC-16, coded by a rate-1/3 convolutional code (K = 7)
into 210 coded bits, each sent on 2–3 chips XOR-ed with a fixed whitening sequence and spread over the tile so that
local damage does not take out one bit. The tile repeats over the whole image; one cell is
``c = max(2, short_side / 160)`` pixels, so the pattern scales with the picture (a resize keeps the cell count) and is
smooth (bilinear between cell centres), i.e. low-frequency enough to live through JPEG/WebP/H.264 quantisation. The
pattern is added to the luma only (the same value to R, G and B changes Y and leaves Cb/Cr alone) with an amplitude
chosen for PSNR ≥ 40 dB.

Detection does not need the original: the luma is resampled to two samples per cell for a few candidate cell sizes
(the size the writer would have chosen for this picture, and for the picture before a 50 % resize or a 90 % crop),
whitened (local mean removed, local contrast normalised, clipped), folded modulo the tile (every tile adds up: a crop
only moves the grid), and circularly cross-correlated with the sync pattern by FFT; the peak gives the grid offset
and its z-score the confidence. The payload chips are read at that offset, their soft values added per coded bit and
decoded by a soft-decision Viterbi decoder into 64 bits: the scheme version, faceweave's version, a 32-bit hash of the
job id and the CRC-16 of those 48 bits. Scheme 1 (64 bits × 8 repetitions, majority vote, a 16-bit magic as the only
check) read the payload from 40 % of 480p frames after H.264 crf 28 and sometimes read a wrong one; the code's
coding gain and the CRC are what make single frames readable and a wrong read a 2⁻¹⁶ event.

The 512-chip sync pattern is faceweave's signature: a mark counts as found when its correlation peak stands far above
the noise (z ≥ 6; unmarked pictures peak at 3–5 over all offsets and sizes tried, and the chance of noise reaching 6
is about ``n_tests · Q(6) ≈ 5·10⁻⁵``). The payload is reported only when its CRC and scheme also check: the sync
(512 chips in one correlation) still survives where the 64-bit payload starts to fail (176×144 after crf 28).

Video frames carry the same static pattern in every frame, so a detector can add the folds of many frames. The video
writer puts it in Cr (the V plane: :class:`ChromaMarker`, cells of ``max(4, short_side / 64)`` pixels) rather than in
the luma: x264 chooses frame types from the luma alone, and a static luma pattern turned its all-P encodes of smooth
moving content into P+B (+10-13 % encode time). The detector looks in the luma and, for colour input, in Cr.

Conventions: images are ``(H, W, 3)`` uint8 RGB, torch frames ``(B, 3, H, W)`` float RGB in ``[0, 1]``, luma planes
``(H, W)`` uint8 (limited or full range: the pattern is small and additive, either works).
"""

from __future__ import annotations

import binascii
import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from faceweave.errors import ShapeError

if TYPE_CHECKING:
    import torch

SCHEME_VERSION = 2  # 1: 64 bits (16-bit magic) × 8 repetitions; 2: 48 bits + CRC-16, convolutional code
TILE = 32  # cells per tile side
SAMPLES = 2  # detector samples per cell (half-cell alignment precision)
CELLS_PER_SHORT_SIDE = 160  # measured: 224 lost half the 720p frames to H.264 crf 28, 128 lost more
MIN_CELL = 2.0
N_INFO = 48  # scheme 4 | major 4 | minor 8 | job hash 32
N_CRC = 16
N_BITS = N_INFO + N_CRC  # message bits fed to the convolutional code
CONV_K = 7  # constraint length of the rate-1/3 code (generators 133, 165, 171 octal: free distance 15)
CONV_POLYS = (0o133, 0o165, 0o171)  # rate 1/3 read 100 % of 120 480p crf-28 frames, 1/2 95 %
N_CODED = len(CONV_POLYS) * (N_BITS + CONV_K - 1)  # 210 coded bits (6 zero tail bits end the trellis in state 0)
N_PAYLOAD_CHIPS = TILE * TILE // 2  # 512 chips: each coded bit gets 2 or 3, spread over the tile
AMPLITUDE = 3.2  # peak chip amplitude in 8-bit levels; bilinear smoothing makes the RMS ≈ 2.2 → PSNR ≈ 41 dB
# Video frames carry the pattern in Cr (the V plane) instead: x264's frame-type decision (lookahead) looks at the luma
# only, so a chroma mark leaves its I/P/B choices as they would be unmarked (a luma one of any detectable strength
# turns an all-P encode of smooth moving content into P+B, +10-13 % x264 CPU: docs/provenance.md).
# 4:2:0 chroma planes have half the resolution and codecs quantise them coarser: bigger cells than the luma's.
# Measured (carphone / bigbuckbunny at 480p, crf 28, single frames): 160 cells lost the mark (z ≈ 4); 80 found it
# everywhere but read the payload from 70 % / 78 %; 64: 100 % / 85 %, +13 % x264 bits at crf 20 on the face clip at
# 1080p (80: +17 %; 48: 100 % / 98 %, +9 %, but coarser colour blotches, 23 px at 1080p: visibility not measured).
CHROMA_CELLS_PER_SHORT_SIDE = 64
CHROMA_MIN_CELL = 4.0  # 2 V samples per cell in 4:2:0
CHROMA_AMPLITUDE = 3.0  # peak chip amplitude in 8-bit V levels: PSNR ≈ 41 dB in RGB, like the luma mark
NEIGHBOUR_TRIES = 8  # offsets next to the sync peak read when the payload fails there
Z_FOUND = 6.0  # sync z-score that calls a mark found (unmarked media peaks at 3–5 over every offset and size)

_RNG_SEED = 0x5EED_FACE
_CR_WEIGHTS = np.array([[0.5, -0.4187, -0.0813]], np.float32)


def _layout() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The fixed tile layout: sync cell indices, their chips, payload cell indices (bit-major), whitening chips."""
    rng = np.random.default_rng(_RNG_SEED)
    cells = rng.permutation(TILE * TILE)
    sync_idx = cells[: TILE * TILE // 2]
    payload_idx = cells[TILE * TILE // 2 :]  # chip k carries coded bit k mod N_CODED: copies land far apart
    sync_chips = rng.choice(np.array([-1.0, 1.0], np.float32), size=sync_idx.size)
    whitening = rng.choice(np.array([-1.0, 1.0], np.float32), size=payload_idx.shape)
    return sync_idx, sync_chips, payload_idx, whitening


_SYNC_IDX, _SYNC_CHIPS, _PAYLOAD_IDX, _WHITENING = _layout()
_CHIP_BIT = np.arange(N_PAYLOAD_CHIPS) % N_CODED  # coded bit of each payload chip


# --------------------------------------------------------------------------------------------- channel code
def _parity(x: np.ndarray) -> np.ndarray:
    """Parity (0/1) of each int's low 8 bits: a K ≤ 8 register masked by a generator."""
    x = x.copy()
    for shift in (4, 2, 1):
        x ^= x >> shift
    return x & 1


def _trellis() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each next state ``ns`` (the last K-1 input bits, newest lowest): its two predecessors, and the ±1 outputs
    of each of the two branches. Returns ``pred (64, 2)``, ``out (64, 2, 3)``, input bit of ``ns`` ``(64,)``."""
    ns = np.arange(1 << (CONV_K - 1))
    pred = np.stack([ns >> 1, (ns >> 1) | (1 << (CONV_K - 2))], axis=1)
    reg = (pred << 1) | (ns & 1)[:, None]  # the K register bits of each branch
    out = np.stack([_parity(reg & g) for g in CONV_POLYS], axis=-1).astype(np.float32) * 2.0 - 1.0
    return pred, out, ns & 1


_PRED, _BRANCH_OUT, _NS_BIT = _trellis()


def conv_encode(bits: np.ndarray) -> np.ndarray:
    """``(N_BITS,)`` 0/1 message → ``(N_CODED,)`` ±1 float32 code word (zero-tailed rate-1/3 code)."""
    steps = bits.size + CONV_K - 1
    lead = np.zeros(CONV_K - 1, np.int64)
    x = np.concatenate([lead, bits.astype(np.int64), lead])  # zero state before, zero tail after
    # the K register bits at each step, newest lowest (as in _trellis)
    reg = np.stack([x[CONV_K - 1 - j:CONV_K - 1 - j + steps] << j for j in range(CONV_K)]).sum(0)
    return np.stack([_parity(reg & g) for g in CONV_POLYS], axis=-1).reshape(-1).astype(np.float32) * 2.0 - 1.0


def viterbi_decode(soft: np.ndarray) -> np.ndarray:
    """Soft-decision maximum-likelihood decode. ``soft``: ``(N_CODED,)`` float, positive for a coded 1 (its size is
    its reliability). Returns the ``(N_BITS,)`` 0/1 int64 message whose code word correlates best with ``soft``."""
    steps = soft.size // len(CONV_POLYS)
    metric = np.full(1 << (CONV_K - 1), -np.inf)
    metric[0] = 0.0
    choice = np.zeros((steps, metric.size), np.int64)
    pairs = soft.reshape(steps, len(CONV_POLYS))
    for t in range(steps):
        cand = metric[_PRED] + _BRANCH_OUT @ pairs[t]  # (64, 2): both ways into each next state
        choice[t] = np.argmax(cand, axis=1)
        metric = cand[np.arange(metric.size), choice[t]]
    state = 0  # the tail returns the encoder to state 0
    bits = np.zeros(steps, np.int64)
    for t in range(steps - 1, -1, -1):
        bits[t] = _NS_BIT[state]
        state = int(_PRED[state, choice[t, state]])
    return bits[:N_BITS]


def _crc16(word: int) -> int:
    """CRC-16/CCITT of the 48 information bits (as 6 bytes, big-endian)."""
    return binascii.crc_hqx(word.to_bytes(N_INFO // 8, "big"), 0xFFFF)


# --------------------------------------------------------------------------------------------- payload
@dataclass(frozen=True)
class WatermarkPayload:
    """What the mark carries: faceweave's version (major.minor) and a 32-bit hash of the job id."""

    job_hash: int
    major: int = 0
    minor: int = 1
    scheme: int = SCHEME_VERSION

    @classmethod
    def for_job(cls, job_id: str, version: str | None = None) -> WatermarkPayload:
        """The payload for ``job_id`` (any string) written by faceweave ``version`` (default: this one)."""
        from faceweave import __version__

        parts = (version or __version__).split(".")
        major = int(parts[0]) if parts and parts[0].isdigit() else 0
        minor = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
        return cls(job_hash=job_hash(job_id), major=major % 16, minor=minor % 256)

    def to_bits(self) -> np.ndarray:
        """``(64,)`` int64 0/1 message: scheme 4 | major 4 | minor 8 | job hash 32 | CRC-16 of those 48 (MSB first)."""
        word = ((self.scheme & 0xF) << 44) | ((self.major & 0xF) << 40) | ((self.minor & 0xFF) << 32)
        word |= self.job_hash & 0xFFFF_FFFF
        word = (word << N_CRC) | _crc16(word)
        return np.array([(word >> (N_BITS - 1 - i)) & 1 for i in range(N_BITS)], np.int64)

    @staticmethod
    def parse(bits: np.ndarray) -> tuple[bool, WatermarkPayload]:
        """Decode ``(64,)`` message bits (0/1); returns ``(CRC and scheme match, payload)``."""
        word = 0
        for b in bits.astype(np.int64):
            word = (word << 1) | int(b)
        info, crc = word >> N_CRC, word & ((1 << N_CRC) - 1)
        payload = WatermarkPayload(
            job_hash=info & 0xFFFF_FFFF, major=(info >> 40) & 0xF, minor=(info >> 32) & 0xFF, scheme=(info >> 44) & 0xF
        )
        return crc == _crc16(info) and payload.scheme == SCHEME_VERSION, payload

    @property
    def version(self) -> str:
        return f"{self.major}.{self.minor}"

    def to_dict(self) -> dict[str, object]:
        return {"scheme": self.scheme, "faceweave_version": self.version, "job_hash": f"{self.job_hash:08x}"}


def job_hash(job_id: str) -> int:
    """32-bit hash of a job id (the first 4 bytes of its SHA-256): what ties a mark to a job log, not the id."""
    return int.from_bytes(hashlib.sha256(job_id.encode("utf-8")).digest()[:4], "big")


# --------------------------------------------------------------------------------------------- embedding
def cell_size(height: int, width: int) -> float:
    """Pixels per cell of the luma mark for a ``height × width`` picture: the pattern scales with the picture."""
    return max(MIN_CELL, min(height, width) / CELLS_PER_SHORT_SIDE)


def chroma_cell_size(height: int, width: int) -> float:
    """Picture pixels (luma samples) per cell of the chroma mark (video frames) for a ``height × width`` picture."""
    return max(CHROMA_MIN_CELL, min(height, width) / CHROMA_CELLS_PER_SHORT_SIDE)


def _tile_chips(payload: WatermarkPayload) -> np.ndarray:
    """``(TILE, TILE)`` float32 ±1 chips of one tile."""
    chips = np.zeros(TILE * TILE, np.float32)
    chips[_SYNC_IDX] = _SYNC_CHIPS
    chips[_PAYLOAD_IDX] = conv_encode(payload.to_bits())[_CHIP_BIT] * _WHITENING
    return chips.reshape(TILE, TILE)


def _pattern(height: int, width: int, payload: WatermarkPayload, c: float, amplitude: float,
             plane: tuple[int, int] | None = None) -> np.ndarray:
    """The tiled pattern of cell ``c`` picture pixels over a ``height × width`` picture, sampled on a plane of
    ``plane = (rows, cols)`` samples spread over the picture (default: one per pixel). ``(rows, cols)`` float32."""
    ph, pw = plane or (height, width)
    gh, gw = math.ceil(height / c) + 2, math.ceil(width / c) + 2
    tile = _tile_chips(payload)
    grid = np.tile(tile, (gh // TILE + 1, gw // TILE + 1))[:gh, :gw] * np.float32(amplitude)
    # sample centre (x + 0.5) sits at picture x' = (x + 0.5) * width / pw, i.e. at grid coordinate x' / c - 0.5
    # (cell centres at integers)
    sx, sy = width / pw / c, height / ph / c
    m = np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5]], np.float64)
    return cv2.warpAffine(grid, m, (pw, ph), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REFLECT)


def watermark_delta(height: int, width: int, payload: WatermarkPayload, amplitude: float = AMPLITUDE) -> np.ndarray:
    """The luma offset that marks a ``height × width`` picture: ``(H, W)`` float32, in 8-bit levels (about ±3).

    Compute it once per video (it depends only on the size and the payload) and add it to every frame.
    """
    return _pattern(height, width, payload, cell_size(height, width), amplitude)


def chroma_delta(height: int, width: int, payload: WatermarkPayload, plane: tuple[int, int],
                 amplitude: float = CHROMA_AMPLITUDE) -> np.ndarray:
    """The Cr (V plane) offset that marks a video frame of ``height × width`` pixels whose V plane has
    ``plane = (rows, cols)`` samples (``((H + 1) // 2, (W + 1) // 2)`` for 4:2:0): ``plane``-shaped float32, in 8-bit
    levels (about ±3). Its cells are :func:`chroma_cell_size` picture pixels, so the pattern is the same on the
    picture whatever the chroma subsampling."""
    return _pattern(height, width, payload, chroma_cell_size(height, width), amplitude, plane)


def embed_watermark(rgb: np.ndarray, payload: WatermarkPayload, *, delta: np.ndarray | None = None) -> np.ndarray:
    """Mark one image. ``(H, W, 3)`` uint8 RGB in, a new ``(H, W, 3)`` uint8 RGB out (PSNR ≈ 41 dB).

    ``delta``: a precomputed :func:`watermark_delta` for this size (video frames), else computed here.
    """
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ShapeError(f"image to mark must be (H, W, 3) uint8 RGB, got {getattr(rgb, 'shape', None)}")
    h, w = rgb.shape[:2]
    if delta is None:
        delta = watermark_delta(h, w, payload)
    # one saturating pass of OpenCV over uint8 + int16 (= clip(rgb + rint(delta), 0, 255), bit for bit): 3× faster
    # than widening the picture to int16, adding, clipping and narrowing it again in numpy (1080p: 6 vs 18 ms)
    d16 = np.rint(delta).astype(np.int16)
    return cv2.add(np.ascontiguousarray(rgb), cv2.merge([d16, d16, d16]), dtype=cv2.CV_8U)


def embed_watermark_luma(y: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """Mark a luma plane in place of its YUV frame. ``(H, W)`` uint8 in, new ``(H, W)`` uint8 out.

    Adding the offset to Y is exactly what adding it to R, G and B does (BT.601/709 weights sum to one), scaled by
    219/255 for limited-range video, which the detector does not care about.
    """
    out = y.astype(np.int16) + np.rint(delta).astype(np.int16)
    return np.clip(out, 0, 255).astype(np.uint8)


class _PlaneMarker:
    """Adds a precomputed offset to one plane of video frames, in place, with saturation (two OpenCV passes)."""

    def __init__(self, delta: np.ndarray, bits: int) -> None:
        d = np.rint(delta * float(1 << (bits - 8)))
        dtype = np.uint8 if bits <= 8 else np.uint16
        # one of the two is 0 at every pixel, so add-then-subtract with saturation is exactly clip(y + d)
        self._pos: np.ndarray[Any, np.dtype[np.unsignedinteger[Any]]] = np.clip(d, 0, None).astype(dtype)
        self._neg: np.ndarray[Any, np.dtype[np.unsignedinteger[Any]]] = np.clip(-d, 0, None).astype(dtype)
        self._max = (1 << bits) - 1
        self.shape: tuple[int, ...] = d.shape
        self._delta = d.astype(np.int16) if bits <= 8 else None  # the offsets, for apply_torch
        self._on_device: dict[Any, torch.Tensor] = {}  # apply_torch's offsets, moved once per device

    def apply(self, y: np.ndarray) -> None:
        """Mark ``y`` in place: the plane, ``(rows, cols)`` uint8 (or uint16 for deeper planes), rows may be strided."""
        if y.shape != self.shape or y.dtype != self._pos.dtype:
            raise ShapeError(f"plane must be {self.shape} {self._pos.dtype}, got {y.shape} {y.dtype}")
        cv2.add(y, self._pos, dst=y)
        cv2.subtract(y, self._neg, dst=y)
        if self._max not in (255, 65535):  # 10/12-bit samples in 16-bit words: OpenCV saturates at 65535
            np.minimum(y, self._max, out=y)

    def apply_torch(self, planes: torch.Tensor) -> None:
        """Mark 8-bit planes on their device, in place, with the same bytes as :meth:`apply`: ``planes`` ``(B,
        rows * cols)`` uint8, each row one plane flattened (e.g. the V part of packed ``yuv420p`` frames). The video
        path marks the frames it swapped this way before their one copy to the host, so the encoder's thread (the
        stream's bound) does not."""
        import torch

        if self._delta is None:
            raise ShapeError("apply_torch marks 8-bit planes only")
        if planes.dtype != torch.uint8 or planes.ndim != 2 or planes.shape[1] != self._delta.size:
            raise ShapeError(f"planes must be (B, {self._delta.size}) uint8, got {tuple(planes.shape)} {planes.dtype}")
        delta = self._on_device.get(planes.device)
        if delta is None:
            delta = self._on_device[planes.device] = torch.from_numpy(self._delta.reshape(1, -1)).to(planes.device)
        planes.copy_((planes.to(torch.int16) + delta).clamp_(0, 255))


class LumaMarker(_PlaneMarker):
    """Adds one payload's pattern to the luma plane of video frames of one size, in place (the video writer's step
    until it moved to :class:`ChromaMarker`; still found by the detector). The pattern is computed once; each frame
    then costs two saturating OpenCV passes (about 0.1 ms per 1080p frame on one dev-VM core, against 2 ms for
    :func:`embed_watermark_luma`'s int16 round trip).

    ``bits``: the plane's sample depth (8; 10 or 12 for ``…p10le``/``…p12le`` planes stored as uint16), the pattern
    scaled to it so the mark is the same strength in every output format.
    """

    def __init__(self, height: int, width: int, payload: WatermarkPayload, bits: int = 8) -> None:
        super().__init__(watermark_delta(height, width, payload), bits)


class ChromaMarker(_PlaneMarker):
    """Adds one payload's pattern to the V (Cr) plane of video frames of one size, in place: what the video writer
    does (0.03 ms per 1080p 4:2:0 frame). The Y plane stays bit-identical, so x264's lookahead (luma only) chooses
    the frame types it would choose unmarked. ``plane``: the V plane's ``(rows, cols)``; ``bits`` as for
    :class:`LumaMarker`."""

    def __init__(self, height: int, width: int, payload: WatermarkPayload, plane: tuple[int, int],
                 bits: int = 8) -> None:
        super().__init__(chroma_delta(height, width, payload, plane), bits)


def embed_watermark_torch(frames: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """Mark a batch on its device. ``frames``: ``(B, 3, H, W)`` float RGB ``[0, 1]``; ``delta``: ``(H, W)`` in 8-bit
    levels (``torch.from_numpy(watermark_delta(...))`` moved once to the frames' device). Returns the same shape."""
    d = (delta.to(device=frames.device, dtype=frames.dtype) / 255.0)[None, None]
    return (frames + d).clamp_(0.0, 1.0)


# --------------------------------------------------------------------------------------------- detection
@dataclass(frozen=True)
class WatermarkResult:
    """What :func:`detect_watermark` found.

    ``found``: the sync peak is above :data:`Z_FOUND`. ``payload``: the decoded payload when its magic and scheme
    match, else None (found but unreadable after heavy compression). ``confidence``: 1 minus the probability that
    unmarked media gives a peak this high (over every offset and scale tried), 0 when not found. ``score``: the
    sync z-score. ``bit_agreement``: fraction of payload chips that agree with their decoded bit.
    """

    found: bool
    confidence: float
    score: float
    payload: WatermarkPayload | None
    bit_agreement: float
    cell: float
    plane: str = "luma"  # where the best peak is: "luma" (images, videos before the chroma mark) or "chroma"

    def to_dict(self) -> dict[str, object]:
        return {"found": self.found, "confidence": round(self.confidence, 6), "score": round(self.score, 2),
                "bit_agreement": round(self.bit_agreement, 3), "plane": self.plane,
                "payload": self.payload.to_dict() if self.payload is not None else None}


def _luma(rgb: np.ndarray) -> np.ndarray:
    if rgb.ndim == 2:
        return rgb.astype(np.float32)
    return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY).astype(np.float32)


def _chroma(rgb: np.ndarray) -> np.ndarray:
    """Cr of ``(H, W, 3)`` uint8 RGB (BT.601 weights; a V offset moves it alike under BT.709), ``(H, W)`` float32."""
    return cv2.transform(np.ascontiguousarray(rgb, dtype=np.float32), _CR_WEIGHTS)


def _whiten(y: np.ndarray) -> np.ndarray:
    """Remove the picture and keep the pattern: subtract the local mean, divide by the local contrast, clip."""
    hp = y - cv2.GaussianBlur(y, (0, 0), 1.5, borderType=cv2.BORDER_REFLECT)
    local = np.sqrt(cv2.GaussianBlur(hp * hp, (0, 0), 4.0, borderType=cv2.BORDER_REFLECT)) + 1.0
    return np.clip(hp / local, -2.0, 2.0)


def _fold(y: np.ndarray, c: float) -> np.ndarray | None:
    """Resample ``y`` to ``SAMPLES`` per cell of size ``c``, whiten, and sum modulo the tile. None when too small."""
    h, w = y.shape
    n = TILE * SAMPLES
    gh, gw = round(h * SAMPLES / c), round(w * SAMPLES / c)
    if gh < n // 2 or gw < n // 2:
        return None
    g = _whiten(cv2.resize(y, (gw, gh), interpolation=cv2.INTER_AREA if gh < h else cv2.INTER_LINEAR))
    ph, pw = -gh % n, -gw % n
    g = np.pad(g, ((0, ph), (0, pw)))
    return g.reshape(g.shape[0] // n, n, g.shape[1] // n, n).sum(axis=(0, 2))


def _kernels() -> tuple[np.ndarray, np.ndarray]:
    """FFTs of the sync template and of one chip's footprint, at ``SAMPLES`` per cell, whitened like the image."""
    n = TILE * SAMPLES

    def upsample(chips: np.ndarray) -> np.ndarray:
        # same bilinear-between-cell-centres shape as the writer, on a wrapped tile
        wrapped = np.pad(chips, 1, mode="wrap")
        m = np.array([[1 / SAMPLES, 0, 0.5 / SAMPLES - 0.5 + 1], [0, 1 / SAMPLES, 0.5 / SAMPLES - 0.5 + 1]])
        up = cv2.warpAffine(wrapped.astype(np.float32), m, (n, n), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
        hp = up - cv2.GaussianBlur(np.tile(up, (3, 3)), (0, 0), 1.5)[n : 2 * n, n : 2 * n]
        return hp

    sync = np.zeros(TILE * TILE, np.float32)
    sync[_SYNC_IDX] = _SYNC_CHIPS
    one = np.zeros((TILE, TILE), np.float32)
    one[0, 0] = 1.0
    return np.fft.rfft2(upsample(sync.reshape(TILE, TILE))), np.fft.rfft2(upsample(one))


_SYNC_F, _CHIP_F = _kernels()


def _candidate_cells(height: int, width: int, cell: Callable[[int, int], float] = cell_size) -> list[float]:
    """Cell sizes to try: as ``cell`` (:func:`cell_size` or :func:`chroma_cell_size`) draws them for this picture,
    or for a bigger one that was cropped (to 90 % or 80 %: same cell in pixels) and/or resized (to ½, ¾ or ⅔: the
    cell shrinks with it)."""
    out: list[float] = []
    for scale in (1.0, 0.5, 0.75, 2.0 / 3.0):
        for crop in (1.0, 0.9, 0.8):
            before = scale * crop
            c = cell(round(height / before), round(width / before)) * scale
            if all(abs(c - o) / o > 0.01 for o in out):
                out.append(c)
    return out


def _decode(fold: np.ndarray, c: float, n_tests: int, plane: str = "luma") -> WatermarkResult:
    n = TILE * SAMPLES
    f = np.fft.rfft2(fold)
    corr = np.fft.irfft2(f * np.conj(_SYNC_F), s=(n, n))
    std = float(corr.std()) or 1.0
    peak = int(np.argmax(corr))
    dy, dx = divmod(peak, n)
    z = float((corr.flat[peak] - corr.mean()) / std)
    chip_resp = np.fft.irfft2(f * np.conj(_CHIP_F), s=(n, n))
    cy, cx = np.divmod(np.arange(TILE * TILE), TILE)
    found = z >= Z_FOUND
    # the peak is the grid offset to half a cell; when the CRC fails there, its neighbours (best correlation first)
    # are tried: a resize or crop leaves the true offset between samples. Each try is a 2^-16 chance of a false read.
    ring = [(dy + a) % n * n + (dx + b) % n for a in (-1, 0, 1) for b in (-1, 0, 1) if a or b]
    tries = [peak] + (sorted(ring, key=lambda k: -corr.flat[k])[:NEIGHBOUR_TRIES] if found else [])
    for k, at in enumerate(tries):
        oy, ox = divmod(at, n)
        soft_chips = chip_resp[(cy * SAMPLES + oy) % n, (cx * SAMPLES + ox) % n]
        votes = soft_chips[_PAYLOAD_IDX] * _WHITENING  # (512,): one soft vote per payload chip
        soft_coded = np.bincount(_CHIP_BIT, weights=votes, minlength=N_CODED)  # copies add up (equal-gain combining)
        message = viterbi_decode(soft_coded)
        ok, payload = WatermarkPayload.parse(message)
        if k == 0 or ok:
            agree = float(np.mean(np.sign(votes) == conv_encode(message)[_CHIP_BIT]))
        if ok:
            break
    # one-sided Gaussian tail over every offset and cell size tried: the chance that noise peaks this high
    p_noise = min(1.0, n_tests * 0.5 * math.erfc(z / math.sqrt(2.0)))
    return WatermarkResult(found=found, confidence=(1.0 - p_noise) if found else 0.0, score=z,
                           payload=payload if found and ok else None,
                           bit_agreement=agree, cell=c, plane=plane)


def detect_watermark(images: np.ndarray | list[np.ndarray]) -> WatermarkResult:
    """Look for faceweave's mark in one image or in several frames of one video (their evidence adds up): in the
    luma (images; videos written before the chroma mark) and, for colour input, in Cr (videos).

    Args:
        images: ``(H, W, 3)`` uint8 RGB, ``(H, W)`` luma (the luma mark only), or a list of either (all one size:
            video frames).

    Returns:
        :class:`WatermarkResult` of the best plane and candidate cell size (``found`` False for unmarked media).
    """
    frames = [np.asarray(f) for f in (images if isinstance(images, list) else [images])]
    if not frames:
        raise ShapeError("detect_watermark needs at least one image")
    planes: list[tuple[str, list[np.ndarray], Callable[[int, int], float]]] = [
        ("luma", [_luma(f) for f in frames], cell_size)]
    if all(f.ndim == 3 for f in frames):
        planes.append(("chroma", [_chroma(f) for f in frames], chroma_cell_size))
    h, w = planes[0][1][0].shape
    tries = [(name, ys, c) for name, ys, fn in planes for c in _candidate_cells(h, w, fn)]
    n_tests = len(tries) * (TILE * SAMPLES) ** 2  # the false-alarm chance counts every plane and cell size tried
    best: WatermarkResult | None = None
    for name, ys, c in tries:
        folds = [fd for fd in (_fold(y, c) for y in ys) if fd is not None]
        if not folds:
            continue
        res = _decode(np.sum(folds, axis=0), c, n_tests, name)
        if best is None or (res.found, res.score) > (best.found, best.score):
            best = res
    if best is None:
        return WatermarkResult(found=False, confidence=0.0, score=0.0, payload=None, bit_agreement=0.0, cell=0.0)
    return best


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB between two uint8 images of one shape (inf when equal)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


__all__ = [
    "ChromaMarker",
    "LumaMarker",
    "WatermarkPayload",
    "WatermarkResult",
    "cell_size",
    "chroma_cell_size",
    "chroma_delta",
    "conv_encode",
    "detect_watermark",
    "embed_watermark",
    "embed_watermark_luma",
    "embed_watermark_torch",
    "job_hash",
    "psnr",
    "viterbi_decode",
    "watermark_delta",
]
