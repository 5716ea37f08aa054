"""faceweave's CUDA depthwise kernel (faceweave/models/cuda_depthwise.py): same numbers as PyTorch's convolution,
TF padding, graph capture, the on-disk binary cache. The kernel needs a GPU; on the CPU only the cache naming and the
dispatch rules run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from faceweave.models import cuda_depthwise
from faceweave.models.tflite_graph import TfConv2d

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run `pytest -m gpu` there)")


def _reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, stride: int, padding: str,
               activation: str) -> torch.Tensor:
    """TF 'SAME'/'VALID' depthwise convolution in float64 on the CPU."""
    x, weight, bias = x.double().cpu(), weight.double().cpu(), bias.double().cpu()
    if padding == "same":
        pads = []
        for size in (x.shape[3], x.shape[2]):  # F.pad order: W then H
            total = max((-(-size // stride) - 1) * stride + 3 - size, 0)
            pads += [total // 2, total - total // 2]
        x = F.pad(x, pads)
    y = F.conv2d(x, weight, bias, stride, 0, 1, x.shape[1])
    return {"none": y, "relu": y.relu(), "relu6": y.clamp(0, 6)}[activation]


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("padding", ["same", "valid"])
@pytest.mark.parametrize(("channels", "size"), [(24, (16, 16)), (6, (7, 5)), (32, (1, 1)), (28, (2, 3)), (4, (9, 12))])
def test_matches_pytorch_convolution(stride: int, padding: str, channels: int, size: tuple[int, int]) -> None:
    """Every stride, padding and shape class (4-channel vectors, odd channel counts, 1-px and odd sizes) through a
    TfConv2d on CUDA against the float64 reference; relu6 and a misaligned input (a view one float in) too."""
    if padding == "valid" and min(size) < 3:
        pytest.skip("a 3×3 'valid' convolution needs 3 px")
    g = torch.Generator().manual_seed(channels * 100 + size[0])
    layer = TfConv2d(channels, channels, (3, 3), (stride, stride), (1, 1), padding, channels, "relu6")
    layer.weight.data = torch.randn(channels, 1, 3, 3, generator=g)
    layer.bias.data = torch.randn(channels, generator=g)
    x = torch.randn(3, channels, *size, generator=g) * 3
    want = _reference(x, layer.weight, layer.bias, stride, padding, "relu6")
    layer = layer.cuda()
    layer.depthwise_kernels = "faceweave"
    got = layer(x.cuda().contiguous(memory_format=torch.channels_last))
    assert got.shape == want.shape
    assert got.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(got.cpu().double(), want, atol=1e-5, rtol=1e-5)
    # an input that starts one float into its storage: the kernel must take its one-channel path
    storage = torch.randn(x.numel() + 1, generator=g)
    shifted = storage[1:].view(3, *size, channels).permute(0, 3, 1, 2)
    assert shifted.is_contiguous(memory_format=torch.channels_last)
    want_shifted = _reference(shifted, layer.weight, layer.bias, stride, padding, "relu6")
    on_device = storage.cuda()[1:].view(3, *size, channels).permute(0, 3, 1, 2)  # .cuda() of the view would realign
    assert on_device.data_ptr() % 16 != 0
    got_shifted = layer(on_device)
    torch.testing.assert_close(got_shifted.cpu().double(), want_shifted, atol=1e-5, rtol=1e-5)


@pytest.mark.gpu
@needs_cuda
def test_replays_from_a_cuda_graph() -> None:
    """Launched through the driver on the current stream, the kernel is recorded by a CUDA-graph capture: the replay
    on new input gives what an eager call gives."""
    layer = TfConv2d(32, 32, (3, 3), (2, 2), (1, 1), "same", 32, "none").cuda()
    layer.depthwise_kernels = "faceweave"
    torch.nn.init.normal_(layer.weight)
    torch.nn.init.normal_(layer.bias)
    static = torch.randn(8, 32, 64, 64, device="cuda").contiguous(memory_format=torch.channels_last)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        layer(static)  # warm: loads the kernels, prepares the weight layout
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = layer(static)
    fresh = torch.randn_like(static)
    static.copy_(fresh)
    graph.replay()
    torch.testing.assert_close(out, layer(fresh), atol=0, rtol=0)


@pytest.mark.gpu
@needs_cuda
def test_binary_cached_and_a_corrupt_cache_rebuilt(tmp_path: Path) -> None:
    """The first load compiles and writes the binary; the next loads it without compiling; a damaged file is
    compiled anew and replaced."""
    device = torch.device("cuda")
    first = cuda_depthwise.load_kernels(device, tmp_path)
    assert first.compiled and first.cubin_path is not None and first.cubin_path.is_file()
    second = cuda_depthwise.load_kernels(device, tmp_path)
    assert not second.compiled and second.cubin_path == first.cubin_path
    first.cubin_path.write_bytes(b"not a cubin")
    third = cuda_depthwise.load_kernels(device, tmp_path)
    assert third.compiled and first.cubin_path.stat().st_size > 1000
    x = torch.randn(2, 8, 5, 5, device=device).contiguous(memory_format=torch.channels_last)
    w, b = torch.randn(3, 3, 8, device=device), torch.zeros(8, device=device)
    y = cuda_depthwise.depthwise3x3_nhwc(x, w, b, 1, 1, 1, (5, 5), "none", third)
    want = _reference(x, w.permute(2, 0, 1)[:, None], b, 1, "same", "none")
    torch.testing.assert_close(y.cpu().double(), want, atol=1e-5, rtol=1e-5)


def test_cache_path_follows_versions_and_the_user_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The binary lives under the user cache folder, one name per GPU capability and source/version set."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    hopper, ampere = cuda_depthwise.cubin_cache_path((9, 0)), cuda_depthwise.cubin_cache_path((8, 6))
    assert hopper.parent == tmp_path / "faceweave" / "kernels"
    assert hopper != ampere and "sm90" in hopper.name and "sm86" in ampere.name
    monkeypatch.setattr(cuda_depthwise, "SOURCE", cuda_depthwise.SOURCE + "\n// changed")
    assert cuda_depthwise.cubin_cache_path((9, 0)) != hopper


def test_only_cuda_float32_3x3_depthwise_is_taken() -> None:
    """The dispatch rule: anything the kernel does not compute stays on PyTorch's convolution."""
    x = torch.zeros(1, 8, 4, 4)
    assert not cuda_depthwise.supports(x, (3, 3), (1, 1), (1, 1), 8, 8)  # the CPU
