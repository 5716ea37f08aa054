"""sample_crops keeps values that vary with the input out of the shared, bounded device_constant cache: captured CUDA
graphs read that cache's tensors by address, so images of many sizes must not evict them."""

from __future__ import annotations

import torch

from faceweave.cuda_graphs import device_constant
from faceweave.ops.crops import crop_matrices, sample_crops


def test_frames_of_many_sizes_leave_the_device_constant_cache_alone(media: type) -> None:
    face = torch.from_numpy(media.rgb("obama.jpg")).permute(2, 0, 1)[None].float() / 255
    m = crop_matrices(torch.tensor([[100.0, 100.0]]), torch.tensor([120.0]), torch.tensor([0.0]), 64)
    sample_crops(face[..., :200, :200], torch.zeros(1, dtype=torch.int64), m, 64)  # the fixed constants, once
    before = device_constant.cache_info().currsize
    for extra in range(40):  # 40 more frame sizes
        crops = sample_crops(face[..., : 200 + extra, : 201 + extra], torch.zeros(1, dtype=torch.int64), m, 64)
        assert crops.shape == (1, 3, 64, 64)
    assert device_constant.cache_info().currsize == before
