"""Tests of faceweave.ops.warp against OpenCV on a real face photo (astronaut.png).

OpenCV reference values were produced by the installed ``opencv-python-headless``; the version that produced
them at the time of writing was 5.0.0 (``cv2.__version__`` is printed by each reference test and named in
its failure message).
"""

from __future__ import annotations

import time
from typing import Any

import cv2
import numpy as np
import pytest
import torch
from scipy.spatial import Delaunay

from faceweave.errors import ShapeError
from faceweave.ops.warp import affine_grid, piecewise_affine_warp, rasterise_triangles, warp_affine

OPENCV_VERSION_WRITTEN_AGAINST = "5.0.0"
# astronaut.png is 512²; her face spans roughly x 170..300, y 60..200
FACE_BOX = (165.0, 55.0, 305.0, 205.0)


def to_tensor(img: np.ndarray, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].to(device=device, dtype=dtype)


def to_numpy(t: torch.Tensor) -> np.ndarray:
    return t[0].permute(1, 2, 0).float().cpu().numpy()


@pytest.fixture(scope="module")
def face(media: Any) -> np.ndarray:
    return media.rgb("astronaut.png").astype(np.float32) / 255.0


@pytest.mark.parametrize("size", [(288, 288), (192, 256), (7, 13)])
def test_affine_grid_equals_torch(device: torch.device, dtype: torch.dtype, size: tuple[int, int]) -> None:
    gen = torch.Generator().manual_seed(0)
    theta = (torch.randn(5, 2, 3, generator=gen) * 0.7).to(device=device, dtype=dtype)
    want = torch.nn.functional.affine_grid(theta.float(), [5, 3, *size], align_corners=False)
    got = affine_grid(theta, size)
    assert got.shape == want.shape and got.dtype == dtype and got.device == theta.device
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    assert float((got.float() - want).abs().max()) < tol


def test_warp_affine_matches_opencv(face: np.ndarray, device: torch.device, dtype: torch.dtype) -> None:
    m = cv2.getRotationMatrix2D((230.0, 130.0), 17.0, 1.35)
    m[:, 2] += np.array([-101.3, -7.7])  # sub-pixel shift, face moved into a 300×260 crop
    ref = cv2.warpAffine(face, m, (300, 260), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    got = warp_affine(
        to_tensor(face, device, dtype), torch.tensor(m, dtype=torch.float32, device=device)[None], (260, 300)
    )
    assert got.shape == (1, 3, 260, 300) and got.dtype == dtype
    diff = np.abs(to_numpy(got) - ref)
    print(f"cv2 {cv2.__version__}: warp_affine mean {diff.mean():.2e} max {diff.max():.2e}")
    # OpenCV quantises sample positions to 1/32 px (INTER_BITS=5) in some builds, hence max < 0.02, not ~0
    mean_tol, max_tol = (5e-4, 0.02) if dtype == torch.float32 else (3e-3, 0.03)
    assert diff.mean() < mean_tol and diff.max() < max_tol, f"vs cv2 {cv2.__version__}: {diff.mean()} {diff.max()}"


def test_warp_affine_border_matches_replicate(face: np.ndarray) -> None:
    m = np.array([[0.7, 0.2, -40.5], [-0.2, 0.7, 100.25]])
    ref = cv2.warpAffine(face, m, (400, 400), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    got = warp_affine(
        to_tensor(face, torch.device("cpu"), torch.float32), torch.tensor(m)[None].float(), (400, 400), padding="border"
    )
    diff = np.abs(to_numpy(got) - ref)
    assert diff.mean() < 5e-4 and diff.max() < 0.02, f"vs cv2 {cv2.__version__}"


def test_identity_warp_is_identity(face: np.ndarray, device: torch.device, dtype: torch.dtype) -> None:
    img = to_tensor(face, device, dtype)
    ident = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]], device=device)
    out = warp_affine(img, ident, img.shape[-2:])
    torch.testing.assert_close(out.float(), img.float(), atol=5e-5 if dtype == torch.float32 else 2e-3, rtol=0)


def test_warp_affine_batched_equals_per_item(face: np.ndarray) -> None:
    img = to_tensor(face, torch.device("cpu"), torch.float32).expand(3, -1, -1, -1) * torch.tensor(
        [1.0, 0.5, 0.2]
    ).view(3, 1, 1, 1)
    m = torch.stack([torch.tensor([[1.0 + k / 10, 0.1 * k, -k * 7.0], [0.0, 1.0, 3.0 * k]]) for k in range(3)])
    full = warp_affine(img, m, (128, 160))
    for i in range(3):
        torch.testing.assert_close(full[i : i + 1], warp_affine(img[i : i + 1], m[i : i + 1], (128, 160)))


def test_warp_affine_shape_errors(face: np.ndarray) -> None:
    img = to_tensor(face, torch.device("cpu"), torch.float32)
    with pytest.raises(ShapeError):
        warp_affine(img[0], torch.zeros(1, 2, 3), (4, 4))
    with pytest.raises(ShapeError):
        warp_affine(img, torch.zeros(2, 2, 3), (4, 4))


# ----------------------------------------------------------------------------------------------------------
# piecewise-affine warp


def face_mesh(seed: int = 0, out: int = 256) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A real-ish face mesh: a jittered 22×22 grid over the astronaut's face (src, 512² image coords), Delaunay
    triangulated (~900 triangles), and the destination = a similarity into an ``out``² crop plus a smooth
    non-rigid deformation (like a different face shape / expression)."""
    rng = np.random.default_rng(seed)
    x0, y0, x1, y1 = FACE_BOX
    gx, gy = np.meshgrid(np.linspace(x0, x1, 22), np.linspace(y0, y1, 22))
    src = np.stack([gx, gy], -1).reshape(-1, 2) + rng.uniform(-2.0, 2.0, (22 * 22, 2))
    tri = Delaunay(src).simplices.astype(np.int64)
    u = (src - [x0, y0]) / [x1 - x0, y1 - y0]  # 0..1 in the face box
    dst = 12 + u * (out - 24)
    dst = dst + np.stack([6 * np.sin(np.pi * u[:, 1]) * (u[:, 0] - 0.5), 5 * np.sin(2 * np.pi * u[:, 0]) * u[:, 1]], -1)
    return src, dst, tri


def reference_piecewise(
    img: np.ndarray, src: np.ndarray, dst: np.ndarray, tri: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Straightforward per-triangle OpenCV reference: getAffineTransform + warpAffine + fillConvexPoly."""
    out = np.zeros((size, size, img.shape[2]), np.float32)
    cov = np.zeros((size, size), np.uint8)
    for t in tri:
        a = cv2.getAffineTransform(src[t].astype(np.float32), dst[t].astype(np.float32))
        warped = cv2.warpAffine(img, a, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        mask = np.zeros((size, size), np.uint8)
        cv2.fillConvexPoly(mask, np.round(dst[t] * 16).astype(np.int32), 1, lineType=cv2.LINE_8, shift=4)
        out[mask > 0] = warped[mask > 0]
        cov |= mask
    return out, cov


def test_piecewise_matches_opencv_reference(face: np.ndarray, device: torch.device, dtype: torch.dtype) -> None:
    src, dst, tri = face_mesh()
    assert 850 <= len(tri) <= 1000
    ref, ref_cov = reference_piecewise(face, src, dst, tri, 256)
    got, cov = piecewise_affine_warp(
        to_tensor(face, device, dtype),
        torch.tensor(src, device=device, dtype=dtype)[None],
        torch.tensor(dst, device=device, dtype=dtype)[None],
        torch.tensor(tri, device=device),
        (256, 256),
    )
    assert got.dtype == dtype and cov.shape == (1, 1, 256, 256)
    c = cov[0, 0].float().cpu().numpy()
    assert set(np.unique(c)) <= {0.0, 1.0}
    # coverage: the union of triangles; fillConvexPoly also fills boundary pixels, so compare as IoU
    iou = ((c > 0) & (ref_cov > 0)).sum() / ((c > 0) | (ref_cov > 0)).sum()
    assert iou > 0.99, iou
    # texture: where both cover, away from the mesh's outer border (fillConvexPoly's boundary rule differs)
    both = (c > 0) & (cv2.erode(ref_cov, np.ones((3, 3), np.uint8)) > 0)
    diff = np.abs(to_numpy(got) - ref)[both]
    print(f"cv2 {cv2.__version__}: piecewise mean {diff.mean():.2e} p99 {np.percentile(diff, 99):.2e}")
    # Both sample the same bilinear texture at the same barycentric point; what differs is (a) OpenCV's
    # fixed-point sample positions and (b) which of two triangles owns an edge pixel (their maps agree on the
    # edge itself, so only by ~a pixel's worth of texture gradient). 2e-3 mean ≈ 0.5 grey levels of 255.
    mean_tol = 2e-3 if dtype == torch.float32 else 6e-3
    assert diff.mean() < mean_tol, f"vs cv2 {cv2.__version__}: {diff.mean()}"
    # outside every triangle: zero texture and zero coverage
    outside = torch.from_numpy(c == 0).to(device)
    assert bool(outside.any())
    assert float(got[0][:, outside].abs().max()) == 0.0


def test_piecewise_identity_mesh_is_identity(face: np.ndarray) -> None:
    src, _, tri = face_mesh()
    img = to_tensor(face, torch.device("cpu"), torch.float32)
    p = torch.tensor(src, dtype=torch.float32)[None]
    got, cov = piecewise_affine_warp(img, p, p, torch.tensor(tri), (512, 512))
    inside = cov.bool().expand_as(img)
    torch.testing.assert_close(got[inside], img[inside], atol=2e-5, rtol=0)


def test_piecewise_grid_size_error(face: np.ndarray) -> None:
    src, dst, tri = face_mesh()
    args = (
        to_tensor(face, torch.device("cpu"), torch.float32),
        torch.tensor(src).float()[None],
        torch.tensor(dst).float()[None],
        torch.tensor(tri),
        (256, 256),
    )
    full, cov = piecewise_affine_warp(*args)
    coarse, cov_c = piecewise_affine_warp(*args, grid_size=128)
    interior = (cov > 0) & (cov_c > 0.999)
    err = (full - coarse).abs()[interior.expand_as(full)]
    print(f"grid_size=128 vs exact at 256²: mean {err.mean():.2e}, max {err.max():.2e}")
    assert float(err.mean()) < 0.01
    assert float(cov_c.min()) >= 0.0 and float(cov_c.max()) <= 1.0


def test_piecewise_batched_equals_per_item(face: np.ndarray) -> None:
    meshes = [face_mesh(seed) for seed in range(3)]
    img = to_tensor(face, torch.device("cpu"), torch.float32).expand(3, -1, -1, -1).contiguous()
    sp = torch.tensor(np.stack([m[0] for m in meshes])).float()
    dp = torch.tensor(np.stack([m[1] for m in meshes])).float()
    tri = torch.tensor(meshes[0][2])  # one triangulation shared by the batch
    full, cov = piecewise_affine_warp(img, sp, dp, tri, (200, 200))
    for i in range(3):
        one, c1 = piecewise_affine_warp(img[i : i + 1], sp[i : i + 1], dp[i : i + 1], tri, (200, 200))
        torch.testing.assert_close(full[i : i + 1], one)
        torch.testing.assert_close(cov[i : i + 1], c1)


def test_rasterise_matches_fill_convex_poly() -> None:
    src, dst, tri = face_mesh()
    ids = rasterise_triangles(torch.tensor(dst)[None], torch.tensor(tri), (256, 256))[0].numpy()
    # every covered pixel centre lies in the triangle it was assigned to (barycentric check in float64)
    ys, xs = np.nonzero(ids >= 0)
    t = tri[ids[ys, xs]]
    a, b, c = dst[t[:, 0]], dst[t[:, 1]], dst[t[:, 2]]
    p = np.stack([xs, ys], -1).astype(np.float64)

    def cross(o: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        return (u[:, 0] - o[:, 0]) * (v[:, 1] - o[:, 1]) - (u[:, 1] - o[:, 1]) * (v[:, 0] - o[:, 0])

    area = cross(a, b, c)
    lam = np.stack([cross(p, b, c), cross(a, p, c), cross(a, b, p)], -1) / area[:, None]
    assert lam.min() > -1e-4
    # no holes: every pixel strictly inside the union (OpenCV fill, eroded by 1) is covered
    union = np.zeros((256, 256), np.uint8)
    for tt in tri:
        cv2.fillConvexPoly(union, np.round(dst[tt] * 16).astype(np.int32), 1, shift=4)
    inner = cv2.erode(union, np.ones((3, 3), np.uint8)) > 0
    assert (ids[inner] >= 0).all()


def test_piecewise_speed_print(face: np.ndarray) -> None:
    """Not asserted: prints the time of the product-sized call (B=1, ~950 triangles, 256² output)."""
    src, dst, tri = face_mesh()
    args = (
        to_tensor(face, torch.device("cpu"), torch.float32),
        torch.tensor(src).float()[None],
        torch.tensor(dst).float()[None],
        torch.tensor(tri),
        (256, 256),
    )
    piecewise_affine_warp(*args)
    times = []
    for _ in range(7):
        t0 = time.perf_counter()
        piecewise_affine_warp(*args)
        times.append(time.perf_counter() - t0)
    print(
        f"piecewise_affine_warp 256², T={len(tri)}: median {np.median(times) * 1e3:.1f} ms, "
        f"min {min(times) * 1e3:.1f} ms ({torch.get_num_threads()} threads)"
    )


def test_host_matrix_equals_device_matrix(face: np.ndarray, device: torch.device) -> None:
    """A host matrix (the swap's geometry lives there) warps a device image like the same matrix on the device."""
    img = to_tensor(face, device, torch.float32).repeat(2, 1, 1, 1)
    m = torch.tensor([[[1.3, 0.2, -180.0], [-0.2, 1.3, -40.0]], [[0.9, 0.0, 10.0], [0.0, 0.9, 5.0]]])
    on_host = warp_affine(img, m, (160, 200))
    on_device = warp_affine(img, m.to(device), (160, 200))
    assert on_host.device == img.device
    # theta is computed on the host CPU in one case and on the GPU in the other: ~3e-5 apart on [0, 1] pixels
    # (H200), far below one 8-bit level; a matrix that went wrong moves pixels by whole levels.
    torch.testing.assert_close(on_host, on_device, atol=1e-4, rtol=0)
