"""Square views and crops of frames: view/crop → frame affine maps and their batched sampling.

Conventions: frames are ``(B, 3, H, W)`` float RGB in ``[0, 1]``; the matrices here are ``(N, 2, 3)`` maps
view/crop pixel → frame pixel in *continuous* coordinates (0 = outer edge of the first pixel, so continuous =
pixel-centre coordinate + 0.5), unlike :mod:`faceweave.ops.geometry`'s pixel-centre matrices; rolls are radians
(or degrees where named so), positive = clockwise in the image.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from faceweave.cuda_graphs import device_constant
from faceweave.device import to_device_async
from faceweave.ops.warp import affine_grid


def roll_from_eyes(eye_a: torch.Tensor, eye_b: torch.Tensor) -> torch.Tensor:
    """Roll in radians (positive = clockwise in the image) of the line eye A → eye B; ``(..., 2)`` → ``(...)``."""
    delta = eye_b - eye_a
    return torch.atan2(delta[..., 1], delta[..., 0])



def view_matrices(height: int, width: int, size: int, angles_deg: torch.Tensor) -> torch.Tensor:
    """Affine maps of square views of a frame: view pixel → frame pixel.

    A view of ``size``² shows the whole frame (letterboxed when ``angle = 0``) turned by ``angle`` about the
    frame centre; positive angles are clockwise in the image, so a face rolled by ``+a`` looks upright in the
    view of angle ``+a``.

    Args:
        height, width: frame size in pixels.
        size: view side in pixels.
        angles_deg: ``(V,)`` float angles in degrees.

    Returns:
        ``(V, 2, 3)`` float32 matrices ``M`` (view→frame) in *continuous* coordinates (0 = left/top edge of the
        first pixel): ``p_frame = M @ [u, v, 1]``.
    """
    theta = torch.deg2rad(angles_deg.to(torch.float32))
    cos, sin = torch.cos(theta), torch.sin(theta)
    # Frame pixels per view pixel: the turned frame's bounding box must fit the view.
    extent = torch.maximum(width * cos.abs() + height * sin.abs(), width * sin.abs() + height * cos.abs())
    scale = extent / size
    half = size / 2.0
    m = torch.zeros(angles_deg.shape[0], 2, 3)
    m[:, 0, 0], m[:, 0, 1] = scale * cos, -scale * sin
    m[:, 1, 0], m[:, 1, 1] = scale * sin, scale * cos
    m[:, 0, 2] = width / 2.0 - half * (m[:, 0, 0] + m[:, 0, 1])
    m[:, 1, 2] = height / 2.0 - half * (m[:, 1, 0] + m[:, 1, 1])
    return m



def sample_views(frames: torch.Tensor, view_to_frame: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Sample ``size``² views of every frame (black outside the frame), antialiased.

    Args:
        frames: ``(B, 3, H, W)`` float RGB in ``[0, 1]``.
        view_to_frame: ``(V, 2, 3)`` continuous-coordinate affine maps view→frame (see :func:`view_matrices`);
            all views of one call share the scale (only rotations differ).
        size: output side, or ``(height, width)`` of a view that is not square.

    Returns:
        ``(B * V, 3, size, size)`` (or ``(B * V, 3, height, width)``) float in ``[0, 1]``, frame-major (all views
        of frame 0 first); dtype/device of ``frames``.
    """
    view_h, view_w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    batch, _, height, width = frames.shape
    views = view_to_frame.shape[0]
    scale = float(torch.linalg.norm(view_to_frame[0, :, 0]))  # frame pixels per view pixel
    source = frames
    if scale > 1.0:
        # Downscale once with an antialiasing filter so that the bilinear sampler below sees ~1:1 pixels.
        source = F.interpolate(frames, size=(max(1, round(height / scale)), max(1, round(width / scale))),
                               mode="bilinear", antialias=True, align_corners=False)
    # affine_grid wants normalised [-1, 1] coordinates on both sides (align_corners=False: -1/1 = outer edges).
    to_norm_frame = torch.tensor([[2.0 / width, 0.0, -1.0], [0.0, 2.0 / height, -1.0]])
    from_norm_view = torch.tensor([[view_w / 2.0, 0.0, view_w / 2.0], [0.0, view_h / 2.0, view_h / 2.0],
                                   [0.0, 0.0, 1.0]])
    full = torch.cat([view_to_frame, torch.tensor([[[0.0, 0.0, 1.0]]]).expand(views, 1, 3)], dim=1)
    theta = to_norm_frame @ full @ from_norm_view  # (V, 2, 3): normalised view -> normalised frame
    # pinned and asynchronous: a plain copy from pageable memory would wait for the device's queued work
    theta = to_device_async(theta.to(frames.dtype), frames.device).repeat(batch, 1, 1)
    grid = affine_grid(theta, (view_h, view_w))
    source = source.repeat_interleave(views, dim=0) if views > 1 else source
    return F.grid_sample(source, grid, mode="bilinear", padding_mode="zeros", align_corners=False)



def square_boxes(points: torch.Tensor, margin: float) -> torch.Tensor:
    """``(F, 4)`` square ``x0, y0, side, side`` around each ``(F, N, 2)`` point set, with ``margin`` × size added."""
    lo, hi = points.min(1).values, points.max(1).values
    centre = (lo + hi) / 2
    side = (hi - lo).max(1).values * (1 + 2 * margin)
    return torch.cat([centre - side[:, None] / 2, side[:, None], side[:, None]], 1)


def crop_matrices(centres: torch.Tensor, sizes: torch.Tensor, rolls: torch.Tensor, crop: int) -> torch.Tensor:
    """Affine maps crop pixel → frame pixel for square crops turned by ``rolls``.

    Args:
        centres: ``(N, 2)`` crop centres ``(x, y)`` in frame pixels (pixel centres at integers).
        sizes: ``(N,)`` crop side in frame pixels.
        rolls: ``(N,)`` radians, positive = clockwise in the image (the face's roll).
        crop: crop side in crop pixels.

    Returns:
        ``(N, 2, 3)`` float32 ``M`` with ``p_frame = M @ [u, v, 1]``, both in *continuous* coordinates
        (0 = outer edge of the first pixel; frame continuous = pixel-centre coordinate + 0.5).
    """
    scale = sizes / crop
    cos, sin = torch.cos(rolls) * scale, torch.sin(rolls) * scale
    half = crop / 2.0
    m = torch.stack([torch.stack([cos, -sin, centres[:, 0] + 0.5 - half * (cos - sin)], dim=1),
                     torch.stack([sin, cos, centres[:, 1] + 0.5 - half * (sin + cos)], dim=1)], dim=1)
    return m.to(torch.float32)



@functools.lru_cache(maxsize=64)
def _frame_scale(height: int, width: int, device: torch.device) -> torch.Tensor:
    """:func:`sample_crops`' row scale to the frame's normalised coordinates, ``(2, 1)`` float32. Not in
    :func:`~faceweave.cuda_graphs.device_constant`'s cache: images come in every size, and churning that shared,
    bounded cache would drop constants that captured CUDA graphs still read (the colour conversions')."""
    return torch.tensor(((2.0 / width,), (2.0 / height,)), dtype=torch.float32).to(device)


def sample_crops(frames: torch.Tensor, frame_index: torch.Tensor, crop_to_frame: torch.Tensor,
                 crop: int) -> torch.Tensor:
    """Sample ``crop``² patches (zeros outside the frame) with ONE ``grid_sample``.

    Args:
        frames: ``(B, 3, H, W)`` float RGB in ``[0, 1]``.
        frame_index: ``(N,)`` int64, which frame each crop comes from.
        crop_to_frame: ``(N, 2, 3)`` continuous-coordinate maps crop→frame (see :func:`crop_matrices`).

    Returns:
        ``(N, 3, crop, crop)`` with the dtype/device of ``frames``.
    """
    _, _, height, width = frames.shape
    n = crop_to_frame.shape[0]
    # normalised crop → crop → frame → normalised frame, ``S · (M · R) + O`` with per-size constants (the frame's
    # normalisation is a row scale and an offset): two ops where building and chaining 3×3 matrices took a dozen
    host = crop_to_frame.device
    # crop sizes are the nets' fixed inputs; the frame's size is any image's, so its scale has a cache of its own
    from_norm = device_constant(((crop / 2.0, 0.0, crop / 2.0), (0.0, crop / 2.0, crop / 2.0), (0.0, 0.0, 1.0)),
                                host, torch.float32)
    scale = _frame_scale(height, width, host)
    offset = device_constant(((0.0, 0.0, -1.0), (0.0, 0.0, -1.0)), host, torch.float32)
    theta = torch.addcmul(offset, scale, crop_to_frame.float() @ from_norm)
    # host matrices and indices reach the device in asynchronous copies: a plain copy would wait for the GPU
    theta = to_device_async(theta.to(frames.dtype), frames.device)
    grid = affine_grid(theta, (crop, crop))
    if frame_index.shape[0] == frames.shape[0] and frame_index.tolist() == list(range(n)):
        source = frames  # one crop per frame, in order: no gathered copy of whole frames
    else:
        source = frames.index_select(0, to_device_async(frame_index, frames.device))
    return F.grid_sample(source, grid, mode="bilinear", padding_mode="zeros", align_corners=False)



__all__ = ["roll_from_eyes", "view_matrices", "sample_views", "crop_matrices", "sample_crops", "square_boxes"]
