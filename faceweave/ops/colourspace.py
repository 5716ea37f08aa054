"""YUV 4:2:0 ↔ RGB on batches of video frames, as tensor ops on any device (the GPU side of the video data path).

Video decoders give ``yuv420p`` planes: a full-size luma plane Y and two half-size chroma planes U (Cb), V (Cr).
Moving those to the device costs 1.5 bytes per pixel instead of 3 for RGB, and converting there keeps the CPU
free for the encoder. Conventions:

* ``y``: ``(B, H, W)`` uint8; ``u``, ``v``: ``(B, ⌈H/2⌉, ⌈W/2⌉)`` uint8 (the layout of FFmpeg's ``yuv420p``).
* ``rgb``: ``(B, 3, H, W)`` floating, **RGB** order, values in ``[0, 1]`` (gamma-encoded, as the video stores them).
* ``matrix``: ``"bt601"`` (SD; also FFmpeg's default when a stream does not say), ``"bt709"`` (HD) or ``"bt2020"``
  (non-constant luminance). ``full_range``: ``False`` for limited ("MPEG", TV) range — Y in ``[16, 235]``, U/V in
  ``[16, 240]`` — which nearly all video uses; ``True`` for full ("JPEG") range.
* Chroma is upsampled by nearest neighbour (each chroma sample covers its 2×2 luma block, like swscale's default
  fast path) and downsampled by the 2×2 box mean, so YUV → RGB → YUV gives the input back exactly (up to RGB
  values clamped into ``[0, 1]``): regions the face stages did not touch come back unchanged.
* Maths is float32 whatever the output dtype (float16 keeps ~1/2048 steps: fine for the face stages, but the
  rounding back to 8 bits is done from float32).

Ops follow the input's device. The ``packed`` layout (``pack_yuv420``/``unpack_yuv420``) puts a frame's Y, U and V
planes back to back in one row, so a batch moves between host and device in a single copy.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from faceweave.errors import InvalidOption, ShapeError, check_shape

__all__ = [
    "MATRICES",
    "Matrix",
    "Yuv420Batch",
    "pack_yuv420",
    "packed_size",
    "rgb_to_yuv420",
    "unpack_yuv420",
    "update_yuv420",
    "yuv420_to_rgb",
]

Matrix = Literal["bt601", "bt709", "bt2020"]

# (Kr, Kb) luma coefficients of each matrix (ITU-R BT.601, BT.709, BT.2020 non-constant luminance).
MATRICES: dict[str, tuple[float, float]] = {
    "bt601": (0.299, 0.114),
    "bt709": (0.2126, 0.0722),
    "bt2020": (0.2627, 0.0593),
}


def _coefficients(matrix: str) -> tuple[float, float]:
    try:
        return MATRICES[matrix]
    except KeyError:
        raise InvalidOption(f"unknown colour matrix {matrix!r}", hint=f"use one of {', '.join(MATRICES)}") from None


def _scales(full_range: bool) -> tuple[float, float, float]:
    """(luma offset, luma scale, chroma scale) in 8-bit code values."""
    return (0.0, 255.0, 255.0) if full_range else (16.0, 219.0, 224.0)


def _check_planes(y: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> None:
    check_shape(y, ["B", "H", "W"], "y")
    b, h, w = y.shape
    want = (b, (h + 1) // 2, (w + 1) // 2)
    if tuple(u.shape) != want or tuple(v.shape) != want:
        raise ShapeError(f"u and v must have shape {want} for y of shape {tuple(y.shape)}, "
                         f"got {tuple(u.shape)} and {tuple(v.shape)}")


def yuv420_to_rgb(
    y: torch.Tensor,
    u: torch.Tensor,
    v: torch.Tensor,
    *,
    matrix: str = "bt601",
    full_range: bool = False,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """8-bit YUV 4:2:0 planes → RGB in ``[0, 1]``.

    Args:
        y: ``(B, H, W)`` uint8 luma.
        u, v: ``(B, ⌈H/2⌉, ⌈W/2⌉)`` uint8 chroma (Cb, Cr).
        matrix: ``"bt601"``, ``"bt709"`` or ``"bt2020"``.
        full_range: the planes use full (JPEG) range instead of limited (MPEG) range.
        dtype: floating dtype of the result.

    Returns:
        ``(B, 3, H, W)`` RGB in ``[0, 1]`` (clamped), ``dtype``, on the planes' device.
    """
    _check_planes(y, u, v)
    kr, kb = _coefficients(matrix)
    kg = 1.0 - kr - kb
    off, ys, cs = _scales(full_range)
    h, w = y.shape[1:]
    # (R, G, B) - Y' for each chroma sample, at chroma resolution: a 3×2 matrix applied to (Cb, Cr)
    m = torch.tensor([[0.0, 2.0 * (1.0 - kr)],
                      [-2.0 * kb * (1.0 - kb) / kg, -2.0 * kr * (1.0 - kr) / kg],
                      [2.0 * (1.0 - kb), 0.0]], device=y.device, dtype=torch.float32) / cs
    chroma = torch.stack([u, v], 1).float().sub_(128.0)  # (B, 2, h/2, w/2)
    delta = torch.einsum("ck,bkhw->bchw", m, chroma)  # (B, 3, h/2, w/2)
    bsz, hc, wc = chroma.shape[0], chroma.shape[2], chroma.shape[3]
    if (h, w) != (2 * hc, 2 * wc):  # odd size: pad luma to the chroma grid, crop at the end
        y = F.pad(y, (0, 2 * wc - w, 0, 2 * hc - h))
    luma = y.float().sub_(off).mul_(1.0 / ys)  # (B, 2·hc, 2·wc)
    # nearest upsampling as a broadcast: each chroma sample covers its 2×2 luma block; one pass writes the output
    rgb = luma.view(bsz, 1, hc, 2, wc, 2) + delta.view(bsz, 3, hc, 1, wc, 1)
    rgb = rgb.view(bsz, 3, 2 * hc, 2 * wc)[:, :, :h, :w].clamp_(0.0, 1.0)
    return rgb.to(dtype)


def rgb_to_yuv420(
    rgb: torch.Tensor, *, matrix: str = "bt601", full_range: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """RGB in ``[0, 1]`` → 8-bit YUV 4:2:0 planes (rounded to nearest; chroma is the 2×2 box mean).

    Args:
        rgb: ``(B, 3, H, W)`` floating RGB in ``[0, 1]`` (values outside are clamped).
        matrix: ``"bt601"``, ``"bt709"`` or ``"bt2020"``.
        full_range: write full (JPEG) range instead of limited (MPEG) range.

    Returns:
        ``(y, u, v)``: ``(B, H, W)`` and twice ``(B, ⌈H/2⌉, ⌈W/2⌉)`` uint8 on ``rgb``'s device.
    """
    check_shape(rgb, ["B", "3", "H", "W"], "rgb")
    if not rgb.is_floating_point():
        raise ShapeError(f"rgb must be a floating tensor in [0, 1], got {rgb.dtype}")
    kr, kb = _coefficients(matrix)
    kg = 1.0 - kr - kb
    off, ys, cs = _scales(full_range)
    x = rgb.float().clamp(0.0, 1.0)
    weights = torch.tensor([kr, kg, kb], device=x.device, dtype=torch.float32)
    luma = torch.einsum("c,bchw->bhw", weights, x)  # (B, H, W) in [0, 1]
    # Cb, Cr are linear in RGB, so the 2×2 box mean of chroma is the chroma of the 2×2 mean of RGB (cheaper: the
    # matrix runs at chroma resolution); on odd sizes the last row/column averages the pixels that exist
    mean = F.avg_pool2d(x, 2, ceil_mode=True, count_include_pad=False)  # (B, 3, h/2, w/2)
    m = torch.tensor([[-kr / (2.0 * (1.0 - kb)), -kg / (2.0 * (1.0 - kb)), 0.5],
                      [0.5, -kg / (2.0 * (1.0 - kr)), -kb / (2.0 * (1.0 - kr))]], device=x.device,
                     dtype=torch.float32) * cs
    chroma = torch.einsum("kc,bchw->bkhw", m, mean).add_(128.0)  # (B, 2, h/2, w/2)
    y8 = luma.mul_(ys).add_(off).round_().clamp_(0, 255).to(torch.uint8)
    c8 = chroma.round_().clamp_(0, 255).to(torch.uint8)
    return y8, c8[:, 0].contiguous(), c8[:, 1].contiguous()


def packed_size(height: int, width: int) -> int:
    """Bytes of one ``yuv420p`` frame in the packed layout: ``H·W + 2·⌈H/2⌉·⌈W/2⌉``."""
    return height * width + 2 * ((height + 1) // 2) * ((width + 1) // 2)


def unpack_yuv420(packed: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Split packed frames into planes (views, no copy).

    Args:
        packed: ``(B, N)`` uint8, each row a frame's Y plane then U then V, ``N = packed_size(height, width)``.

    Returns:
        ``(y, u, v)``: ``(B, H, W)`` and twice ``(B, ⌈H/2⌉, ⌈W/2⌉)`` uint8 views of ``packed``.
    """
    n = packed_size(height, width)
    if packed.ndim != 2 or packed.shape[1] != n:
        raise ShapeError(f"packed must have shape (B, {n}) for {width}x{height} frames, got {tuple(packed.shape)}")
    hc, wc = (height + 1) // 2, (width + 1) // 2
    b, ny, nc = packed.shape[0], height * width, hc * wc
    y = packed[:, :ny].view(b, height, width)
    u = packed[:, ny : ny + nc].view(b, hc, wc)
    v = packed[:, ny + nc :].view(b, hc, wc)
    return y, u, v


def pack_yuv420(y: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Planes → ``(B, N)`` uint8 packed rows (the inverse of :func:`unpack_yuv420`; one copy)."""
    _check_planes(y, u, v)
    b = y.shape[0]
    return torch.cat([y.reshape(b, -1), u.reshape(b, -1), v.reshape(b, -1)], 1)


def update_yuv420(
    y: torch.Tensor,
    u: torch.Tensor,
    v: torch.Tensor,
    rgb: torch.Tensor,
    changed: torch.Tensor,
    *,
    matrix: str = "bt601",
    full_range: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Write ``rgb`` into existing planes where ``changed``; everywhere else the planes stay bit-exact.

    Args:
        y, u, v: ``(B, H, W)``, ``(B, ⌈H/2⌉, ⌈W/2⌉)`` uint8 planes of the frames before the change.
        rgb: ``(B, 3, H, W)`` floating RGB in ``[0, 1]`` after the change.
        changed: ``(B, H, W)`` bool, the pixels that changed; a chroma sample is rewritten when any pixel of its
            2×2 block changed.

    Returns:
        New ``(y, u, v)`` uint8 planes (the inputs are not modified).
    """
    _check_planes(y, u, v)
    if tuple(changed.shape) != tuple(y.shape):
        raise ShapeError(f"changed must have shape {tuple(y.shape)}, got {tuple(changed.shape)}")
    ny, nu, nv = rgb_to_yuv420(rgb, matrix=matrix, full_range=full_range)
    changed_c = F.max_pool2d(changed[:, None].to(torch.float16 if changed.is_cuda else torch.float32), 2,
                             ceil_mode=True)[:, 0] > 0
    return torch.where(changed, ny, y), torch.where(changed_c, nu, u), torch.where(changed_c, nv, v)


def _consecutive(index: list[int]) -> slice | None:
    """``index`` as a slice when it is a run of consecutive frames (a live frame's ``[0]``, most video batches), else
    None. Indexing with a list sends it to the device from pageable memory, which waits for every kernel queued on the
    stream (a live session's frame waited for the other sessions' work, docs/benchmarks.md §0-28)."""
    if index and list(index) == list(range(index[0], index[0] + len(index))):
        return slice(index[0], index[0] + len(index))
    return None


class Yuv420Batch:
    """Frames as packed ``yuv420p`` rows on a device (uploaded once), converted to RGB on demand, and the frames a
    stage changed converted back — pixels the stage left alone keep their original planes exactly.

    Args:
        packed: ``(B, N)`` uint8 rows (see :func:`unpack_yuv420`), on the device that does the work.
        height, width: frame size.
        matrix, full_range: the frames' colour (see the module docstring).
    """

    def __init__(self, packed: torch.Tensor, height: int, width: int, *, matrix: str = "bt601",
                 full_range: bool = False) -> None:
        unpack_yuv420(packed, height, width)  # checks the shape
        _coefficients(matrix)
        self.packed = packed
        self.height, self.width = height, width
        self.matrix, self.full_range = matrix, full_range

    @property
    def device(self) -> torch.device:
        return self.packed.device

    def __len__(self) -> int:
        return int(self.packed.shape[0])

    def rgb(self, index: list[int] | slice, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Frames ``index`` as ``(k, 3, H, W)`` RGB in ``[0, 1]``, ``dtype``, on :attr:`device`."""
        rows = index if isinstance(index, slice) else (_consecutive(index) or index)
        y, u, v = unpack_yuv420(self.packed[rows], self.height, self.width)
        return yuv420_to_rgb(y, u, v, matrix=self.matrix, full_range=self.full_range, dtype=dtype)

    def luma_thumbnails(self, size: tuple[int, int] = (64, 36)) -> torch.Tensor:
        """Every frame's luma area-averaged to ``size`` ``(w, h)`` and mapped to full range: ``(B, h, w)`` uint8 on
        :attr:`device` — a grey thumbnail for scene-cut checks, without converting any frame to RGB."""
        y = unpack_yuv420(self.packed, self.height, self.width)[0]
        small = F.adaptive_avg_pool2d(y[:, None].float(), (size[1], size[0]))[:, 0]
        off, ys, _ = _scales(self.full_range)
        return small.sub_(off).mul_(255.0 / ys).round_().clamp_(0, 255).to(torch.uint8)

    def encode(self, rgb: torch.Tensor, index: list[int], before: torch.Tensor | None = None) -> torch.Tensor:
        """Frames ``index`` after a stage: ``rgb`` ``(k, 3, H, W)`` in ``[0, 1]`` → ``(k, N)`` uint8 packed rows.

        A pixel whose RGB equals what :meth:`rgb` gave for it (same dtype) keeps its original Y (and its chroma
        block keeps U/V when all four pixels are unchanged), so untouched regions survive bit-exact. ``before``:
        that :meth:`rgb` result when the caller still holds it (saves converting the frames again). Only the
        smallest even-aligned rectangle holding every changed pixel of the batch is converted back (a face is a
        small part of a frame).
        """
        check_shape(rgb, ["B", "3", str(self.height), str(self.width)], "rgb")
        if rgb.shape[0] != len(index):
            raise ShapeError(f"rgb has {rgb.shape[0]} frames for {len(index)} indices")
        if before is None:
            before = self.rgb(index, rgb.dtype)
        elif tuple(before.shape) != tuple(rgb.shape):
            raise ShapeError(f"before must have shape {tuple(rgb.shape)}, got {tuple(before.shape)}")
        changed = (rgb != before).any(1)  # (k, H, W)
        rows_run = _consecutive(index)  # a copy either way: the decoded rows stay as they were
        out = self.packed[rows_run].clone() if rows_run is not None else self.packed[list(index)]
        # the changed rectangle's bounds in one copy to the host (each copy waits for the device)
        any_row, any_col = changed.any(2).any(0), changed.any(1).any(0)
        found, first_row, last_row, first_col, last_col = torch.stack([
            any_row.any().long(), any_row.int().argmax(), self.height - 1 - any_row.flip(0).int().argmax(),
            any_col.int().argmax(), self.width - 1 - any_col.flip(0).int().argmax()]).tolist()
        if not found:
            return out
        # even-aligned so the rectangle holds whole chroma blocks
        y0, y1 = first_row // 2 * 2, min(self.height, (last_row + 2) // 2 * 2)
        x0, x1 = first_col // 2 * 2, min(self.width, (last_col + 2) // 2 * 2)
        y, u, v = unpack_yuv420(out, self.height, self.width)
        cy0, cy1, cx0, cx1 = y0 // 2, (y1 + 1) // 2, x0 // 2, (x1 + 1) // 2
        ny, nu, nv = update_yuv420(y[:, y0:y1, x0:x1], u[:, cy0:cy1, cx0:cx1], v[:, cy0:cy1, cx0:cx1],
                                   rgb[:, :, y0:y1, x0:x1], changed[:, y0:y1, x0:x1], matrix=self.matrix,
                                   full_range=self.full_range)
        y[:, y0:y1, x0:x1] = ny
        u[:, cy0:cy1, cx0:cx1] = nu
        v[:, cy0:cy1, cx0:cx1] = nv
        return out
