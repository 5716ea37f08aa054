"""faceweave's own CUDA kernel for the 3×3 depthwise convolutions of the NHWC TFLite nets (BlazeFace, FaceMesh).

Why: on CUDA the two stock choices both cost something the nets cannot afford.
- PyTorch's own depthwise kernel takes NCHW, so in the channels-last nets each of the 56 (BlazeFace) and 20
  (FaceMesh) depthwise convolutions is framed by two layout copies: 27 of the 60.7 ms of element-wise kernels per batch
  of 32 1080p frames with the small-face tiles (H100, docs/benchmarks.md §0-26).
- cuDNN's NHWC kernels avoid the copies (detection 225.9 → 162.1 ms per batch) but build a runtime-compiled execution
  plan for every new shape, about a second each: a cold job's first frame came 12–15 s later (§0-27), and PyTorch keeps
  those plans per thread and per process.

This kernel reads and writes channels-last directly, applies the TF 'SAME' padding itself (no padded copy for the
stride-2 layers) and adds the bias in the same pass. It is compiled once per machine with NVRTC (the library PyTorch's
CUDA wheels bring) and the binary is kept in the user cache folder, keyed by the source, the GPU's compute
capability and the CUDA, PyTorch and faceweave versions, so a later process only loads it (milliseconds).

Launches go to the current stream through the driver API, so CUDA-graph capture records them like any other kernel.
Anything that fails here (no NVRTC, an unwritable cache, a driver refusal) makes :func:`depthwise_kernels` return
``None`` once per device, with a warning, and the nets fall back to PyTorch's kernel.

Status: the default on CUDA (``TfConv2d.depthwise_kernels``; ``set_depthwise_kernels(net, "aten")`` brings PyTorch's
kernel back). On an H100 it compiled in 377 ms and loaded from the cache in 0.7 ms, passed ``pytest -m gpu`` and cut
the detector's time per batch of 32 1080p frames from 255 to 173 ms (docs/benchmarks.md §0-28).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import faceweave
from faceweave.models.store import user_cache_dir

log = logging.getLogger(__name__)

#: threads per block (one output element, or four channels of one, per thread)
BLOCK = 256

#: The kernels: one output pixel's VEC channels per thread; channel index fastest, so neighbouring threads read
#: neighbouring addresses of the NHWC input (coalesced) and the 3×3 window's rows come from L1/L2.
#: ``act``: 0 none, 1 relu, 2 relu6 (the nets' fused activations).
SOURCE = r"""
template <int VEC> struct Vec;
template <> struct Vec<1> {
    float v[1];
    __device__ __forceinline__ static Vec load(const float* p) { Vec r; r.v[0] = __ldg(p); return r; }
    __device__ __forceinline__ void store(float* p) const { p[0] = v[0]; }
};
template <> struct Vec<4> {
    float v[4];
    __device__ __forceinline__ static Vec load(const float* p) {
        float4 q = __ldg(reinterpret_cast<const float4*>(p));
        Vec r; r.v[0] = q.x; r.v[1] = q.y; r.v[2] = q.z; r.v[3] = q.w; return r;
    }
    __device__ __forceinline__ void store(float* p) const {
        *reinterpret_cast<float4*>(p) = make_float4(v[0], v[1], v[2], v[3]);
    }
};

template <int STRIDE, int VEC>
__device__ __forceinline__ void depthwise3x3(
        const float* __restrict__ x, const float* __restrict__ w, const float* __restrict__ bias,
        float* __restrict__ y, int total, int C, int H, int W, int Ho, int Wo, int pad_top, int pad_left, int act) {
    int idx = blockIdx.x * blockDim.x + threadIdx.x;  // over total / VEC
    if (idx >= total) return;
    const int groups = C / VEC;
    const int c = (idx % groups) * VEC;
    int t = idx / groups;
    const int ox = t % Wo; t /= Wo;
    const int oy = t % Ho;
    const int b = t / Ho;
    const int iy0 = oy * STRIDE - pad_top, ix0 = ox * STRIDE - pad_left;
    const float* xb = x + (long long)b * H * W * C + c;
    float acc[VEC];
    #pragma unroll
    for (int v = 0; v < VEC; ++v) acc[v] = 0.f;
    #pragma unroll
    for (int ky = 0; ky < 3; ++ky) {
        const int iy = iy0 + ky;
        if (iy < 0 || iy >= H) continue;
        #pragma unroll
        for (int kx = 0; kx < 3; ++kx) {
            const int ix = ix0 + kx;
            if (ix < 0 || ix >= W) continue;
            const Vec<VEC> xv = Vec<VEC>::load(xb + ((long long)iy * W + ix) * C);
            const Vec<VEC> wv = Vec<VEC>::load(w + (ky * 3 + kx) * C + c);
            #pragma unroll
            for (int v = 0; v < VEC; ++v) acc[v] = fmaf(xv.v[v], wv.v[v], acc[v]);
        }
    }
    const Vec<VEC> bv = Vec<VEC>::load(bias + c);
    Vec<VEC> out;
    #pragma unroll
    for (int v = 0; v < VEC; ++v) {
        float r = acc[v] + bv.v[v];
        if (act == 1) r = fmaxf(r, 0.f);
        else if (act == 2) r = fminf(fmaxf(r, 0.f), 6.f);
        out.v[v] = r;
    }
    out.store(y + (long long)idx * VEC);
}

#define FW_DEPTHWISE(S, V) \
extern "C" __global__ void __launch_bounds__(256) fw_depthwise3x3_s##S##_v##V( \
        const float* x, const float* w, const float* bias, float* y, int total, int C, int H, int W, \
        int Ho, int Wo, int pad_top, int pad_left, int act) { \
    depthwise3x3<S, V>(x, w, bias, y, total, C, H, W, Ho, Wo, pad_top, pad_left, act); \
}
FW_DEPTHWISE(1, 1)
FW_DEPTHWISE(1, 4)
FW_DEPTHWISE(2, 1)
FW_DEPTHWISE(2, 4)
"""

KERNEL_NAMES = tuple(f"fw_depthwise3x3_s{s}_v{v}" for s in (1, 2) for v in (1, 4))
ACTIVATIONS = {"none": 0, "relu": 1, "relu6": 2}


@dataclass(frozen=True)
class DepthwiseKernels:
    """The loaded kernels of one device, by (stride, channels per thread)."""

    by_variant: dict[tuple[int, int], Any]
    cubin_path: Path | None  # where the binary was cached (None: not cached)
    compiled: bool  # compiled in this process (False: loaded from the cache)


def cubin_cache_path(capability: tuple[int, int], root: Path | None = None) -> Path:
    """Where the compiled kernels of a GPU of ``capability`` are kept: under the user cache folder, named by a hash
    of everything that makes a binary stale (the source, the capability, CUDA, PyTorch and faceweave versions)."""
    key = "\n".join([SOURCE, f"sm_{capability[0]}{capability[1]}", str(torch.version.cuda), torch.__version__,
                     faceweave.__version__])
    digest = hashlib.sha256(key.encode()).hexdigest()[:20]
    return (root or user_cache_dir() / "kernels") / f"depthwise3x3_sm{capability[0]}{capability[1]}_{digest}.cubin"


def _nvrtc_library() -> ctypes.CDLL:
    """NVRTC of PyTorch's CUDA major version: by soname (PyTorch's pip wheels bring it as a dependency and put it on
    the loader's path once torch is loaded), else from the ``nvidia`` wheel folders on ``sys.path``."""
    major = str(torch.version.cuda or "").split(".")[0]
    names = [f"libnvrtc.so.{major}", "libnvrtc.so"]
    for name in names:
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    for entry in sys.path:
        for found in sorted(Path(entry).glob(f"nvidia/*/lib/libnvrtc.so.{major}*")):
            try:
                return ctypes.CDLL(str(found))
            except OSError:
                continue
    raise OSError(f"no NVRTC library (libnvrtc.so.{major}) for CUDA {torch.version.cuda}")


def _compile(capability: tuple[int, int]) -> bytes:
    """The kernels compiled by NVRTC to a CUBIN for ``sm_XY`` (no CUDA toolkit needed: NVRTC ships with PyTorch)."""
    nvrtc = _nvrtc_library()

    def check(result: int) -> None:
        if result != 0:
            nvrtc.nvrtcGetErrorString.restype = ctypes.c_char_p
            raise RuntimeError(f"NVRTC error {result}: {nvrtc.nvrtcGetErrorString(result)!r}")

    program = ctypes.c_void_p()
    check(nvrtc.nvrtcCreateProgram(ctypes.byref(program), SOURCE.encode(), b"fw_depthwise.cu", 0, None, None))
    try:
        options = [f"--gpu-architecture=sm_{capability[0]}{capability[1]}".encode(), b"--std=c++17"]
        array = (ctypes.c_char_p * len(options))(*options)
        result = nvrtc.nvrtcCompileProgram(program, len(options), array)
        if result != 0:
            size = ctypes.c_size_t()
            nvrtc.nvrtcGetProgramLogSize(program, ctypes.byref(size))
            log_text = ctypes.create_string_buffer(size.value)
            nvrtc.nvrtcGetProgramLog(program, log_text)
            raise RuntimeError(f"NVRTC could not compile the depthwise kernels: {log_text.value.decode()[:2000]}")
        size = ctypes.c_size_t()
        check(nvrtc.nvrtcGetCUBINSize(program, ctypes.byref(size)))
        cubin = ctypes.create_string_buffer(size.value)
        check(nvrtc.nvrtcGetCUBIN(program, cubin))
        return cubin.raw
    finally:
        nvrtc.nvrtcDestroyProgram(ctypes.byref(program))


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_kernels(device: torch.device, cache_root: Path | None = None) -> DepthwiseKernels:
    """Compile (or load from the cache) and load the kernels on ``device``; raises on any failure."""
    from torch.cuda._utils import _cuda_load_module  # private: loads a CUBIN, launches on the current stream

    capability = torch.cuda.get_device_capability(device)
    path = cubin_cache_path(capability, cache_root)
    with torch.cuda.device(device):
        if path.is_file():
            try:
                kernels = _cuda_load_module(path.read_bytes(), list(KERNEL_NAMES))
                return DepthwiseKernels(_by_variant(kernels), path, compiled=False)
            except (OSError, RuntimeError) as exc:  # a truncated or foreign file: compile anew
                log.warning("depthwise kernel cache %s unusable (%s); compiling again", path, exc)
        cubin = _compile(capability)
        kernels = _cuda_load_module(cubin, list(KERNEL_NAMES))
    cached: Path | None = path
    try:
        _write_atomic(path, cubin)
    except OSError as exc:  # a read-only home: the next process compiles again, nothing else changes
        log.warning("could not cache the depthwise kernels in %s (%s)", path, exc)
        cached = None
    return DepthwiseKernels(_by_variant(kernels), cached, compiled=True)


def _by_variant(kernels: Any) -> dict[tuple[int, int], Any]:
    return {(s, v): kernels[f"fw_depthwise3x3_s{s}_v{v}"] for s in (1, 2) for v in (1, 4)}


_LOAD_LOCK = threading.Lock()


@functools.cache
def _kernels_of_device(device_index: int) -> DepthwiseKernels | None:
    try:
        return load_kernels(torch.device("cuda", device_index))
    except Exception as exc:  # noqa: BLE001 - any failure means: use PyTorch's kernel, say so once
        log.warning("faceweave's depthwise CUDA kernel is unavailable on cuda:%d (%s: %s); using PyTorch's",
                    device_index, type(exc).__name__, exc)
        return None


def depthwise_kernels(device: torch.device) -> DepthwiseKernels | None:
    """The kernels of CUDA ``device``, compiled or loaded once per process (``None``: unavailable, see the log)."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    with _LOAD_LOCK:  # two threads' first calls must not both compile
        return _kernels_of_device(index)


def depthwise3x3_nhwc(x: torch.Tensor, weight_hwc: torch.Tensor, bias: torch.Tensor, stride: int,
                      pad_top: int, pad_left: int, out_size: tuple[int, int], activation: str,
                      kernels: DepthwiseKernels) -> torch.Tensor:
    """3×3 depthwise convolution of a channels-last CUDA float32 batch, zero padding ``pad_top``/``pad_left`` before
    (the rest of TF's padding is implied by ``out_size``), then bias and activation.

    Args:
        x: ``(B, C, H, W)`` float32 on CUDA, channels-last contiguous.
        weight_hwc: ``(3, 3, C)`` float32 contiguous: ``weight[:, 0].permute(1, 2, 0)`` of a ``(C, 1, 3, 3)`` weight.
        bias: ``(C,)`` float32 contiguous.
        stride: 1 or 2 (both axes).
        out_size: ``(Ho, Wo)``.
        activation: ``none``, ``relu`` or ``relu6``.
    Returns:
        ``(B, C, Ho, Wo)`` float32, channels-last contiguous, a fresh tensor.
    """
    b, c, h, w = x.shape
    ho, wo = out_size
    y = torch.empty((b, c, ho, wo), device=x.device, dtype=x.dtype, memory_format=torch.channels_last)
    vec = 4 if c % 4 == 0 and x.data_ptr() % 16 == 0 else 1
    total = b * ho * wo * c // vec
    if total == 0:
        return y
    kernel = kernels.by_variant[(stride, vec)]
    kernel(grid=((total + BLOCK - 1) // BLOCK, 1, 1), block=(BLOCK, 1, 1),
           args=[x, weight_hwc, bias, y, total, c, h, w, ho, wo, pad_top, pad_left, ACTIVATIONS[activation]])
    return y


def supports(x: torch.Tensor, kernel: tuple[int, int], stride: tuple[int, int], dilation: tuple[int, int],
             groups: int, in_channels: int) -> bool:
    """Whether :func:`depthwise3x3_nhwc` computes this convolution: CUDA float32, 3×3, equal strides of 1 or 2, no
    dilation, one channel per group, and an index range that fits 32 bits."""
    return (x.is_cuda and x.dtype == torch.float32 and kernel == (3, 3) and stride[0] == stride[1]
            and stride[0] in (1, 2) and dilation == (1, 1) and groups == in_channels == x.shape[1]
            and x.numel() < 2**31 - 1)
