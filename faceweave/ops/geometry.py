"""2-D affine geometry on batches: similarity/affine estimation, inversion, composition, point transforms.

Conventions (all functions):
    * points are ``(x, y)`` pixel coordinates with pixel centres at integers (OpenCV's convention);
    * a matrix ``M`` is ``(B, 2, 3)`` and maps a point ``p`` to ``M[:, :, :2] @ p + M[:, :, 2]``; each function
      states which space it maps from and to ("src→dst");
    * everything is batched, differentiable, follows the input's device and dtype, and never syncs with the host.

Half-precision inputs are estimated in float32 internally (the normal equations lose too much in fp16) and the
result is cast back to the input dtype.
"""

from __future__ import annotations

import torch

from faceweave.cuda_graphs import device_constant
from faceweave.errors import ShapeError, check_shape

__all__ = ["estimate_similarity", "estimate_affine", "invert_affine", "transform_points", "compose_affine"]


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    """float16/bfloat16 → float32 for numerically sensitive steps; float32/float64 unchanged."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _check_pairs(src: torch.Tensor, dst: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    check_shape(src, ["B", "N", "2"], "src")
    check_shape(dst, ["B", "N", "2"], "dst")
    if src.shape != dst.shape:
        raise ShapeError(f"src and dst must have the same shape, got {tuple(src.shape)} and {tuple(dst.shape)}")
    wd = _work_dtype(src.dtype)
    if weights is None:
        return torch.ones(src.shape[:2], device=src.device, dtype=wd)
    check_shape(weights, ["B", "N"], "weights")
    if weights.shape != src.shape[:2]:
        raise ShapeError(f"weights must have shape {tuple(src.shape[:2])}, got {tuple(weights.shape)}")
    return weights.to(wd)


def _weighted_centre(
    src: torch.Tensor, dst: torch.Tensor, w: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Normalised weights (B,N,1), weighted means (B,1,2) and centred points (B,N,2) of src and dst."""
    wn = (w / w.sum(dim=1, keepdim=True).clamp_min(torch.finfo(w.dtype).tiny)).unsqueeze(-1)
    mu_s = (wn * src).sum(dim=1, keepdim=True)
    mu_d = (wn * dst).sum(dim=1, keepdim=True)
    return wn, mu_s, mu_d, src - mu_s, dst - mu_d


def estimate_similarity(src: torch.Tensor, dst: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Weighted least-squares similarity (rotation, uniform scale, translation; no reflection) src→dst.

    This is Umeyama's estimator; in 2-D it has a closed form without an SVD: with centred points and
    ``M = [[a, -b, tx], [b, a, ty]]``, ``a = Σw(s·d) / Σw|s|²`` and ``b = Σw(s×d) / Σw|s|²``. That is the
    same minimiser (the rotation-scale group in 2-D is linear in (a, b)), and it is smooth, so gradients are
    well defined even for symmetric point sets where an SVD's are not.

    Args:
        src: ``(B, N, 2)`` source points (x, y), N >= 2.
        dst: ``(B, N, 2)`` destination points (x, y).
        weights: optional ``(B, N)`` non-negative weights (default all ones).

    Returns:
        ``(B, 2, 3)`` matrix mapping src→dst (``dst ≈ M @ [x, y, 1]``), dtype of ``src``.
    """
    w = _check_pairs(src, dst, weights)
    wd = w.dtype
    s, d = src.to(wd), dst.to(wd)
    wn, mu_s, mu_d, sc, dc = _weighted_centre(s, d, w)
    var = (wn * sc.pow(2)).sum(dim=(1, 2)).clamp_min(torch.finfo(wd).tiny)
    dot = (wn[..., 0] * (sc[..., 0] * dc[..., 0] + sc[..., 1] * dc[..., 1])).sum(dim=1)
    cross = (wn[..., 0] * (sc[..., 0] * dc[..., 1] - sc[..., 1] * dc[..., 0])).sum(dim=1)
    a, b = dot / var, cross / var
    lin = torch.stack([torch.stack([a, -b], dim=-1), torch.stack([b, a], dim=-1)], dim=1)  # (B,2,2)
    t = mu_d.squeeze(1) - (lin @ mu_s.squeeze(1).unsqueeze(-1)).squeeze(-1)
    return torch.cat([lin, t.unsqueeze(-1)], dim=-1).to(src.dtype)


def estimate_affine(src: torch.Tensor, dst: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Weighted least-squares full affine src→dst (6 degrees of freedom), closed form on centred points.

    ``L = C_ds · C_ss⁻¹`` with the 2×2 weighted covariances (inverted in closed form, no ``linalg`` call so it
    works for every dtype/device); ``t = μ_d − L μ_s``. Needs N >= 3 points not all on one line, otherwise the
    result is inf/nan (no host sync is done to check it).

    Args:
        src: ``(B, N, 2)`` source points (x, y).
        dst: ``(B, N, 2)`` destination points (x, y).
        weights: optional ``(B, N)`` non-negative weights.

    Returns:
        ``(B, 2, 3)`` matrix mapping src→dst, dtype of ``src``.
    """
    w = _check_pairs(src, dst, weights)
    wd = w.dtype
    s, d = src.to(wd), dst.to(wd)
    wn, mu_s, mu_d, sc, dc = _weighted_centre(s, d, w)
    c_ss = (wn * sc).transpose(1, 2) @ sc  # (B,2,2)
    c_ds = (wn * dc).transpose(1, 2) @ sc  # (B,2,2)
    lin = c_ds @ _inv2x2(c_ss)
    t = mu_d.squeeze(1) - (lin @ mu_s.squeeze(1).unsqueeze(-1)).squeeze(-1)
    return torch.cat([lin, t.unsqueeze(-1)], dim=-1).to(src.dtype)


def _inv2x2(m: torch.Tensor) -> torch.Tensor:
    """Closed-form inverse of ``(..., 2, 2)`` matrices (works for fp16/bf16 on every device)."""
    a, b, c, d = m[..., 0, 0], m[..., 0, 1], m[..., 1, 0], m[..., 1, 1]
    det = a * d - b * c
    row0 = torch.stack([d, -b], dim=-1)
    row1 = torch.stack([-c, a], dim=-1)
    return torch.stack([row0, row1], dim=-2) / det[..., None, None]


def invert_affine(M: torch.Tensor) -> torch.Tensor:  # noqa: N803 (M is the conventional name of a matrix)
    """Inverse of an affine map.

    Args:
        M: ``(B, 2, 3)`` matrix mapping A→B.

    Returns:
        ``(B, 2, 3)`` matrix mapping B→A, same dtype/device. A singular ``M`` gives inf/nan.
    """
    check_shape(M, ["B", "2", "3"], "M")
    wd = _work_dtype(M.dtype)
    f = M.to(wd).reshape(-1, 6)  # a, b, tx, c, d, ty
    # [[a, b, tx], [c, d, ty]]⁻¹ = [[d, −b, b·ty − d·tx], [−c, a, c·tx − a·ty]] / (a·d − b·c), in a dozen ops on
    # the batch (a live frame inverts several of these; each op's dispatch is what it costs, see affine_theta)
    dev = f.device
    q = f[:, device_constant((1, 4, 3, 0, 0, 1), dev, torch.long)] * f[:, device_constant((5, 2, 2, 5, 4, 3), dev,
                                                                                           torch.long)]
    v = torch.cat([f, q[:, 0::2] - q[:, 1::2]], 1)  # a, b, tx, c, d, ty, b·ty − d·tx, c·tx − a·ty, det
    sign = device_constant((1, -1, 1, -1, 1, 1), dev, wd)
    inv = v[:, device_constant((4, 1, 6, 3, 0, 7), dev, torch.long)] * sign / v[:, 8:]
    return inv.view(-1, 2, 3).to(M.dtype)


def transform_points(M: torch.Tensor, pts: torch.Tensor) -> torch.Tensor:  # noqa: N803
    """Apply ``M`` (src→dst) to points.

    Args:
        M: ``(B, 2, 3)`` matrix mapping src→dst.
        pts: ``(B, N, 2)`` points (x, y) in src space.

    Returns:
        ``(B, N, 2)`` points in dst space, dtype of ``pts``.
    """
    check_shape(M, ["B", "2", "3"], "M")
    check_shape(pts, ["B", "N", "2"], "pts")
    m = M.to(pts.dtype)
    return pts @ m[:, :, :2].transpose(1, 2) + m[:, :, 2].unsqueeze(1)


def compose_affine(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:  # noqa: N803
    """``A ∘ B``: the map that applies ``B`` first and then ``A``.

    Args:
        A: ``(B, 2, 3)`` mapping Y→Z.
        B: ``(B, 2, 3)`` mapping X→Y.

    Returns:
        ``(B, 2, 3)`` mapping X→Z.
    """
    check_shape(A, ["B", "2", "3"], "A")
    check_shape(B, ["B", "2", "3"], "B")
    lin = A[:, :, :2] @ B[:, :, :2]
    t = A[:, :, :2] @ B[:, :, 2:] + A[:, :, 2:]
    return torch.cat([lin, t], dim=-1)
