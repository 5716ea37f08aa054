"""Gaussian blurs with a sigma per item (faceweave/ops/filters.py): each item comes out as it would alone, on the CPU's
shifted-slice path and on the convolution path the GPU takes; one sigma for all is the plain blur exactly. Real face
crops (the bundled photos)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from faceweave.errors import InvalidOption
from faceweave.ops import filters
from faceweave.ops.filters import gaussian_blur, gaussian_blur_items, gaussian_blur_traced


@pytest.fixture(scope="module")
def faces(media: type) -> torch.Tensor:
    """``(3, 3, 96, 80)`` float crops of three bundled faces."""
    out = [cv2.resize(media.rgb(n), (80, 96), interpolation=cv2.INTER_AREA)
           for n in ("astronaut.png", "grace_hopper.jpg", "obama.jpg")]
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float() / 255


def test_items_blur_as_they_would_alone(faces: torch.Tensor, device: torch.device, dtype: torch.dtype) -> None:
    x = faces.to(device, dtype)
    sigmas = [0.8, 2.1, 1.3]
    out = gaussian_blur_items(x, sigmas)
    atol = 2e-3 if dtype == torch.float16 else 1e-6
    for i, s in enumerate(sigmas):
        torch.testing.assert_close(out[i : i + 1], gaussian_blur(x[i : i + 1], s), atol=atol, rtol=0)
    assert torch.equal(gaussian_blur_items(x, [1.5] * 3), gaussian_blur(x, 1.5))  # one sigma: the plain blur


def test_traced_blur_takes_a_sigma_per_item(faces: torch.Tensor, device: torch.device, dtype: torch.dtype) -> None:
    x = faces.to(device, dtype)
    sigmas = torch.tensor([0.8, 2.1, 1.3], device=device)
    out = gaussian_blur_traced(x, sigmas, 4.0)
    atol = 2e-3 if dtype == torch.float16 else 1e-6
    for i in range(3):
        torch.testing.assert_close(out[i : i + 1], gaussian_blur_traced(x[i : i + 1], sigmas[i], 4.0), atol=atol,
                                   rtol=0)
    assert not torch.allclose(out[0], gaussian_blur_traced(x[:1], sigmas[1], 4.0)[0], atol=1e-3)
    with pytest.raises(InvalidOption, match="2 sigmas for a batch of 3"):
        gaussian_blur_traced(x, sigmas[:2], 4.0)


def test_convolution_path_equals_the_slice_path(faces: torch.Tensor) -> None:
    # the GPU's path (grouped convolutions), run on the CPU against the CPU's shifted slices
    r = 7
    xs = torch.arange(-r, r + 1, dtype=torch.float64)
    s = torch.tensor([[0.8], [2.1], [1.3]], dtype=torch.float64)
    k = (torch.exp(-0.5 * (xs / s) ** 2) * (xs.abs() <= torch.ceil(3 * s))).float()
    k = k / k.sum(-1, keepdim=True)
    for kernel in (k, k[1]):
        torch.testing.assert_close(filters._separable_conv(faces, kernel, "replicate"),
                                   filters._separable(faces, kernel, "replicate"), atol=1e-6, rtol=0)
