"""Tests of faceweave.ops.geometry: estimation against an independent NumPy Umeyama/lstsq, algebra identities."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from faceweave.errors import ShapeError
from faceweave.ops.geometry import (
    compose_affine,
    estimate_affine,
    estimate_similarity,
    invert_affine,
    transform_points,
)

TOL = {torch.float32: 1e-4, torch.float16: 3e-2, torch.bfloat16: 1e-1}


def umeyama_numpy(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Reference: Umeyama (1991) with the SVD, no reflection."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    sc, dc = src - mu_s, dst - mu_d
    cov = dc.T @ sc / len(src)
    u, s, vt = np.linalg.svd(cov)
    d = np.diag([1.0, np.sign(np.linalg.det(u @ vt))])
    r = u @ d @ vt
    scale = np.trace(np.diag(s) @ d) / (sc**2).sum(1).mean()
    t = mu_d - scale * r @ mu_s
    return np.concatenate([scale * r, t[:, None]], 1)


def _points(rng: np.random.Generator, b: int, n: int) -> np.ndarray:
    # a face-sized cloud of points (a 5-point template scaled to ~200 px plus a few extra)
    template = np.array([[38.29, 51.70], [73.53, 51.50], [56.03, 71.74], [41.55, 92.37], [70.73, 92.20]])
    extra = rng.uniform(20, 100, size=(n - 5, 2))
    base = np.concatenate([template, extra]) * 2.0
    return np.stack([base + rng.normal(0, 1.0, base.shape) for _ in range(b)])


def test_similarity_matches_umeyama_svd(device: torch.device, dtype: torch.dtype) -> None:
    rng = np.random.default_rng(0)
    src = _points(rng, 3, 12)
    ang, scale, t = 0.4, 1.7, np.array([30.0, -12.5])
    rot = scale * np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    dst = src @ rot.T + t + rng.normal(0, 2.0, src.shape)  # noisy: a least-squares problem
    got = estimate_similarity(
        torch.tensor(src, device=device, dtype=dtype), torch.tensor(dst, device=device, dtype=dtype)
    )
    assert got.dtype == dtype and got.device.type == device.type
    for i in range(3):
        ref = umeyama_numpy(src[i], dst[i])
        rel = np.abs(got[i].double().cpu().numpy() - ref) / np.maximum(np.abs(ref), 1.0)
        assert rel.max() < TOL[dtype] * 10, (got[i], ref)


def test_similarity_weights_equal_subset() -> None:
    rng = np.random.default_rng(1)
    src = torch.tensor(_points(rng, 1, 10))
    dst = src * 1.3 + 5 + torch.tensor(rng.normal(0, 1.0, src.shape))
    dst[0, -3:] += 80.0  # outliers
    w = torch.ones(1, 10, dtype=torch.float64)
    w[0, -3:] = 0
    a = estimate_similarity(src, dst, w)
    b = estimate_similarity(src[:, :-3], dst[:, :-3])
    torch.testing.assert_close(a, b)


def test_affine_matches_lstsq(device: torch.device, dtype: torch.dtype) -> None:
    rng = np.random.default_rng(2)
    src = _points(rng, 2, 20)
    true = np.array([[1.2, 0.3, 10.0], [-0.2, 0.9, -4.0]])
    dst = src @ true[:, :2].T + true[:, 2] + rng.normal(0, 1.5, src.shape)
    got = estimate_affine(torch.tensor(src, device=device, dtype=dtype), torch.tensor(dst, device=device, dtype=dtype))
    for i in range(2):
        a = np.concatenate([src[i], np.ones((20, 1))], 1)
        sol, *_ = np.linalg.lstsq(a, dst[i], rcond=None)
        rel = np.abs(got[i].double().cpu().numpy() - sol.T) / np.maximum(np.abs(sol.T), 1.0)
        assert rel.max() < TOL[dtype] * 10


def test_exact_recovery_and_roundtrip(device: torch.device, dtype: torch.dtype) -> None:
    rng = np.random.default_rng(3)
    src = torch.tensor(_points(rng, 3, 8), device=device, dtype=torch.float32)
    m = torch.tensor([[[0.9, -0.4, 12.0], [0.4, 0.9, -3.0]]] * 3, device=device)
    dst = transform_points(m, src)
    torch.testing.assert_close(estimate_similarity(src, dst), m, atol=1e-3, rtol=1e-4)
    torch.testing.assert_close(estimate_affine(src, dst), m, atol=1e-3, rtol=1e-4)
    p = src.to(dtype)
    md = m.to(dtype)
    back = transform_points(invert_affine(md), transform_points(md, p))
    torch.testing.assert_close(back.float(), p.float(), atol=TOL[dtype] * 300, rtol=TOL[dtype])
    # A after A⁻¹ is the identity
    ident = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]], device=device).expand(3, 2, 3)
    torch.testing.assert_close(compose_affine(md, invert_affine(md)).float(), ident, atol=TOL[dtype] * 100, rtol=0)


def test_compose_order() -> None:
    a = torch.tensor([[[2.0, 0.0, 1.0], [0.0, 2.0, 0.0]]])
    b = torch.tensor([[[0.0, -1.0, 0.0], [1.0, 0.0, 5.0]]])
    p = torch.tensor([[[3.0, 4.0]]])
    torch.testing.assert_close(transform_points(compose_affine(a, b), p), transform_points(a, transform_points(b, p)))


def test_batched_equals_per_item() -> None:
    rng = np.random.default_rng(4)
    src = torch.tensor(_points(rng, 3, 15))
    dst = torch.tensor(_points(rng, 3, 15))
    for fn in (estimate_similarity, estimate_affine):
        full = fn(src, dst)
        for i in range(3):
            torch.testing.assert_close(full[i : i + 1], fn(src[i : i + 1], dst[i : i + 1]))


def test_gradcheck_similarity_and_affine() -> None:
    rng = np.random.default_rng(5)
    src = torch.tensor(_points(rng, 2, 6) / 100, requires_grad=True)
    dst = torch.tensor(_points(rng, 2, 6) / 100, requires_grad=True)
    w = torch.rand(2, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda s, d, ww: estimate_similarity(s, d, ww), (src, dst, w), fast_mode=True)
    assert torch.autograd.gradcheck(lambda s, d: estimate_affine(s, d), (src, dst), fast_mode=True)
    m = torch.tensor([[[1.1, 0.2, 0.3], [-0.1, 0.8, 0.5]]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(invert_affine, (m,), fast_mode=True)


def test_shape_errors() -> None:
    with pytest.raises(ShapeError, match="src must have shape"):
        estimate_similarity(torch.zeros(5, 2), torch.zeros(5, 2))
    with pytest.raises(ShapeError):
        estimate_affine(torch.zeros(1, 5, 2), torch.zeros(1, 6, 2))
    with pytest.raises(ShapeError):
        invert_affine(torch.zeros(1, 3, 3))
