"""Small separable filters shared by the ops: gaussian blur, mask-normalised blur, separable max/min filters.

Convention: images are ``(B, C, H, W)`` floating tensors; the filters follow the input's device and dtype.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from faceweave.errors import InvalidOption, check_shape

__all__ = ["gaussian_kernel1d", "gaussian_blur", "gaussian_blur_items", "gaussian_blur_traced", "normalised_blur",
           "max_filter", "min_filter", "sliding_max", "area_window"]


def gaussian_kernel1d(
    sigma: float, *, radius: int | None = None, device: torch.device | None = None, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """A normalised 1-D gaussian kernel of length ``2*radius+1`` (default radius ``ceil(3*sigma)``).

    Returns:
        ``(2*radius+1,)`` tensor summing to 1, on ``device`` with ``dtype``.
    """
    if sigma <= 0:
        raise InvalidOption(f"gaussian sigma must be > 0, got {sigma}", hint="pass a positive sigma in pixels")
    r = int(math.ceil(3.0 * sigma)) if radius is None else int(radius)
    xs = torch.arange(-r, r + 1, device=device, dtype=torch.float64)
    k = torch.exp(-0.5 * (xs / sigma) ** 2)
    return (k / k.sum()).to(dtype or torch.float32)


def _separable(x: torch.Tensor, k: torch.Tensor, padding_mode: str) -> torch.Tensor:
    """Depthwise separable convolution of ``x`` (B,C,H,W) with the 1-D kernel ``k`` along W then H: ``(K,)`` for
    every item, or ``(B, K)``, one kernel per item.

    On the CPU the taps are summed from shifted slices of the padded image (``2r+1`` fused multiply-adds per
    axis): 5–10× faster there than oneDNN's convolution of a one-channel image, which also compiles a kernel for
    every new image shape (tens of ms whenever a face crop changes size). Elsewhere one grouped convolution per
    axis.
    """
    b, c, h, w = x.shape
    r = k.shape[-1] // 2
    mode = "constant" if padding_mode == "zeros" else padding_mode
    if x.device.type == "cpu":
        rows = k.reshape(-1, k.shape[-1]).tolist()
        if all(row == rows[0] for row in rows):  # one kernel for every item: scalar taps
            taps: list[float | torch.Tensor] = list(rows[0])
        else:  # one kernel per item: a (B, 1, 1, 1) column of taps each; a tap 0 for every item is skipped
            columns = k.to(x.dtype).t().reshape(-1, b, 1, 1, 1)
            taps = [columns[i] if any(row[i] for row in rows) else 0.0 for i in range(len(rows[0]))]
        return _sum_taps(_sum_taps(x, taps, r, mode, -1), taps, r, mode, -2)
    return _separable_conv(x, k, mode)


def _separable_conv(x: torch.Tensor, k: torch.Tensor, mode: str) -> torch.Tensor:
    """:func:`_separable` off the CPU: one convolution per axis (grouped, one group per item and channel, for a
    kernel per item). ``mode``: F.pad's."""
    b, c, h, w = x.shape
    r = k.shape[-1] // 2
    if k.dim() == 2:  # per item: a grouped convolution over (1, B·C, H, W)
        weights = k.to(x.dtype)[:, None].expand(b, c, k.shape[-1]).reshape(b * c, -1)  # no repeat_interleave: it syncs
        flat = x.reshape(1, b * c, h, w)
        out = F.conv2d(F.pad(flat, (r, r, 0, 0), mode=mode), weights.view(b * c, 1, 1, -1), groups=b * c)
        out = F.conv2d(F.pad(out, (0, 0, r, r), mode=mode), weights.view(b * c, 1, -1, 1), groups=b * c)
        return out.reshape(b, c, h, w)
    flat = x.reshape(b * c, 1, h, w)
    out = F.conv2d(F.pad(flat, (r, r, 0, 0), mode=mode), k.view(1, 1, 1, -1))
    out = F.conv2d(F.pad(out, (0, 0, r, r), mode=mode), k.view(1, 1, -1, 1))
    return out.reshape(b, c, h, w)


def _sum_taps(x: torch.Tensor, taps: list[float | torch.Tensor], r: int, mode: str, dim: int) -> torch.Tensor:
    """The CPU half of :func:`_separable` along ``dim`` (-1: W, -2: H): a float tap scales the whole batch, a tensor
    tap ``(B, 1, 1, 1)`` each item; a tap 0 (a traced or per-item kernel's taps past its own radius) is skipped."""
    n = x.shape[dim]
    p = F.pad(x, (r, r, 0, 0) if dim == -1 else (0, 0, r, r), mode=mode)
    out = p.narrow(dim, 0, n) * taps[0]
    for i in range(1, len(taps)):
        tap = taps[i]
        if isinstance(tap, torch.Tensor):
            out.addcmul_(p.narrow(dim, i, n), tap)
        elif tap:
            out.add_(p.narrow(dim, i, n), alpha=tap)
    return out


def gaussian_blur(x: torch.Tensor, sigma: float, *, padding: str = "replicate") -> torch.Tensor:
    """Separable gaussian blur.

    Args:
        x: ``(B, C, H, W)`` floating tensor, any range.
        sigma: standard deviation in pixels (> 0); the kernel radius is ``ceil(3*sigma)``.
        padding: ``"replicate"`` (default, no dark border), ``"reflect"`` or ``"zeros"``.

    Returns:
        ``(B, C, H, W)``, same device and dtype as ``x``.
    """
    check_shape(x, ["B", "C", "H", "W"], "x")
    if padding not in ("replicate", "reflect", "zeros"):
        raise InvalidOption(f"unknown padding {padding!r}", hint="use replicate, reflect or zeros")
    k = gaussian_kernel1d(sigma, device=x.device, dtype=x.dtype)
    if padding == "reflect" and k.numel() // 2 >= min(x.shape[-2:]):
        padding = "replicate"  # reflect cannot pad by more than the image size
    return _separable(x, k, padding)


def gaussian_blur_items(x: torch.Tensor, sigmas: Sequence[float], *, padding: str = "replicate") -> torch.Tensor:
    """:func:`gaussian_blur` with a sigma per item (``len(sigmas) == B``, pixels, > 0): item ``i``'s kernel is
    ``gaussian_kernel1d(sigmas[i])`` with zero taps up to the longest one, so item ``i`` comes out as
    ``gaussian_blur(x[i:i+1], sigmas[i])`` (up to rounding) whatever the other items are; with one sigma for every
    item it is ``gaussian_blur(x, sigma)`` exactly."""
    check_shape(x, ["B", "C", "H", "W"], "x")
    if len(sigmas) != x.shape[0]:
        raise InvalidOption(f"{len(sigmas)} sigmas for a batch of {x.shape[0]}", hint="pass one sigma per item")
    if len(set(sigmas)) == 1:
        return gaussian_blur(x, sigmas[0], padding=padding)
    kernels = [gaussian_kernel1d(s, device=x.device, dtype=x.dtype) for s in sigmas]
    r = max(k.numel() for k in kernels) // 2
    k = torch.stack([F.pad(k, (r - k.numel() // 2,) * 2) for k in kernels])
    if padding == "reflect" and r >= min(x.shape[-2:]):
        padding = "replicate"  # as gaussian_blur
    return _separable(x, k, padding)


def gaussian_blur_traced(x: torch.Tensor, sigma: torch.Tensor, max_sigma: float, *, padding: str = "replicate"
                         ) -> torch.Tensor:
    """:func:`gaussian_blur` with ``sigma`` a tensor on ``x``'s device (``0 < sigma <= max_sigma``): 0-dim, or ``(B,)``
    for a sigma per item. The kernel has the fixed length ``2·ceil(3·max_sigma) + 1``, its taps past ``ceil(3·sigma)``
    zero, so the result equals ``gaussian_blur(x, float(sigma))`` (per item: of that item alone; up to rounding) while
    the kernels launched do not depend on ``sigma`` and nothing waits for the device (CUDA graphs).
    """
    check_shape(x, ["B", "C", "H", "W"], "x")
    r = int(math.ceil(3.0 * max_sigma))
    xs = torch.arange(-r, r + 1, device=x.device, dtype=torch.float64)
    s = sigma.to(x.device, torch.float64)
    if s.dim() == 1:
        if s.shape[0] != x.shape[0]:
            raise InvalidOption(f"{s.shape[0]} sigmas for a batch of {x.shape[0]}", hint="pass one sigma per item")
        s = s[:, None]
    k = torch.exp(-0.5 * (xs / s) ** 2) * (xs.abs() <= torch.ceil(3.0 * s)).to(torch.float64)
    return _separable(x, (k / k.sum(-1, keepdim=True)).to(x.dtype), padding)


def normalised_blur(x: torch.Tensor, weight: torch.Tensor, sigma: float, eps: float = 1e-6) -> torch.Tensor:
    """Normalised convolution: ``blur(x*weight) / blur(weight)`` with zero padding.

    The result is the local weighted mean of ``x``: it does not darken near the border of ``weight`` or of the
    image, because the missing weight is divided out.

    Args:
        x: ``(B, C, H, W)`` floating tensor.
        weight: ``(B, 1, H, W)`` non-negative weights (e.g. a mask in [0, 1]).
        sigma: gaussian sigma in pixels.

    Returns:
        ``(B, C, H, W)``; where ``blur(weight)`` is ~0 (far from any weight) the value is ~0.
    """
    check_shape(x, ["B", "C", "H", "W"], "x")
    check_shape(weight, ["B", "1", "H", "W"], "weight")
    k = gaussian_kernel1d(sigma, device=x.device, dtype=x.dtype)
    num = _separable(x * weight, k, "zeros")
    den = _separable(weight, k, "zeros")
    return num / (den + eps)


def max_filter(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Square ``(2r+1)²`` max filter, done separably (O(r) per pixel, not O(r²)); the border is ignored.

    Args:
        x: ``(B, C, H, W)`` tensor. radius: half-width in pixels (>= 0).

    Returns:
        ``(B, C, H, W)``, same device and dtype.
    """
    check_shape(x, ["B", "C", "H", "W"], "x")
    r = int(radius)
    if r < 0:
        raise InvalidOption(f"radius must be >= 0, got {radius}", hint="pass a pixel radius >= 0")
    if r == 0:
        return x
    return sliding_max(sliding_max(x, r, -1), r, -2)


def sliding_max(x: torch.Tensor, radius: int, dim: int) -> torch.Tensor:
    """Max over the window ``[i − r, i + r]`` along ``dim`` (positions past the ends are ignored).

    Built from element-wise maxima of shifted slices, doubling the window each step (``⌈log₂(2r+1)⌉ + 1`` passes
    over the tensor): several times faster than ``max_pool2d`` on the CPU for a window along H, and a handful of
    simple kernels on a GPU.

    Args:
        x: any floating tensor. radius: r >= 0. dim: the axis.

    Returns:
        Same shape, dtype and device.
    """
    r = int(radius)
    if r <= 0:
        return x
    n = 2 * r + 1
    pad = [0, 0] * (x.dim() - 1 - (dim % x.dim())) + [r, r]
    acc = F.pad(x, pad, value=float("-inf"))  # (L + 2r) along dim
    width = 1
    while 2 * width <= n:  # acc[i] = max of the `width` samples starting at i
        length = acc.shape[dim] - width
        acc = torch.maximum(acc.narrow(dim, 0, length), acc.narrow(dim, width, length))
        width *= 2
    size = x.shape[dim]
    if width == n:
        return acc.narrow(dim, 0, size)
    # two overlapping windows of `width` cover the n samples starting at i
    return torch.maximum(acc.narrow(dim, 0, size), acc.narrow(dim, n - width, size))


def min_filter(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Square ``(2r+1)²`` min filter (``-max_filter(-x)``). Shapes as :func:`max_filter`."""
    return -max_filter(-x, radius)


def area_window(n_in: int, n_out: int, lo: int, hi: int) -> tuple[int, int, int, int]:
    """Where an area resampling (``F.interpolate(mode="area")``, i.e. adaptive average pooling) of one axis from
    ``n_in`` to ``n_out`` samples can be cut: ``(a, b, c, d)`` such that input samples ``[lo, hi)`` lie in
    ``[a, b)``, and resampling ``x[a:b]`` to ``d − c`` samples gives exactly outputs ``[c, d)`` of the whole axis.

    Output ``i`` averages inputs ``floor(i·n_in/n_out)`` to ``ceil((i+1)·n_in/n_out) − 1``; with ``g = gcd(n_in,
    n_out)`` that pattern repeats every ``n_in/g`` inputs (``n_out/g`` outputs) and no window crosses a period,
    so the cut is at whole periods around ``[lo, hi)`` (an image 0 outside them needs only that part resampled).
    """
    g = math.gcd(n_in, n_out)
    p, q = n_in // g, n_out // g
    first, last = max(0, lo) // p, min(g, -(-min(hi, n_in) // p))
    return first * p, max(first, last) * p, first * q, max(first, last) * q
