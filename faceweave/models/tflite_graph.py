"""Run the op graph of a MediaPipe ``.tflite`` model as a plain PyTorch module, weights from safetensors.

Two halves:

* :func:`read_tflite` (conversion time only, needs the pure-Python ``tflite`` package): walks the flatbuffer and
  returns a *program* (a JSON-able list of ops with their hyper-parameters and tensor ids) and the fp32 weights,
  already in PyTorch layouts (conv ``[O,kh,kw,I]`` → ``[O,I,kh,kw]``, depthwise ``[1,kh,kw,C]`` → ``[C,1,kh,kw]``,
  fp16 ``DEQUANTIZE`` folded into fp32 parameters).
* :class:`GraphNet` (run time): an ``nn.Module`` with one sub-module per op and every weight a registered
  parameter, built from the program stored in the safetensors metadata (key ``faceweave``, JSON). No tflite at run time.

Activations run in NCHW; tensors of rank 4 in the tflite graph are NHWC, so ``RESHAPE``/``CONCATENATION`` axes
are translated, and rank-4 graph outputs are returned in NHWC to match the original output shapes exactly.
TF "SAME" padding is asymmetric (the extra row/column goes to the bottom/right) and is computed per call.

On CUDA a forward is replayed from a CUDA graph captured once per input shape and dtype (see
:meth:`GraphNet.forward`): the graphs hold ~100–200 small kernels each, whose Python dispatch and launches cost
more host time than the GPU spends running them.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from faceweave.cuda_graphs import CapturedCall, GraphCache, GraphPool
from faceweave.models import cuda_depthwise

# NHWC axis -> NCHW axis for rank-4 tensors.
_NHWC_TO_NCHW_AXIS = {0: 0, 1: 2, 2: 3, 3: 1}

#: which CUDA kernels run the depthwise convolutions (see set_depthwise_kernels)
DepthwiseChoice = Literal["faceweave", "aten", "cudnn"]


def _same_pad(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TF 'SAME' padding (before, after) for one spatial axis; the odd pixel goes after (bottom/right)."""
    effective = (kernel - 1) * dilation + 1
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


def _activation(x: torch.Tensor, name: str) -> torch.Tensor:
    if name == "relu":
        return F.relu(x)
    if name == "relu6":
        return F.relu6(x)
    return x


#: CPU forwards of one input shape run eagerly before :meth:`GraphNet.run` traces them.
CPU_TRACE_AFTER = 3


def cuda_batch_bucket(n: int) -> int:
    """The batch size a GPU forward of ``n`` items runs at: 8 up to 8, else the next power of two."""
    return 8 if n <= 8 else 1 << (int(n) - 1).bit_length()


class TfConv2d(nn.Module):
    """CONV_2D / DEPTHWISE_CONV_2D with TF padding and a fused activation. ``(B,I,H,W)`` → ``(B,O,H',W')``."""

    def __init__(self, in_ch: int, out_ch: int, kernel: tuple[int, int], stride: tuple[int, int],
                 dilation: tuple[int, int], padding: str, groups: int, activation: str) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_ch, in_ch // groups, *kernel), requires_grad=False)
        self.bias = nn.Parameter(torch.empty(out_ch), requires_grad=False)
        self.kernel, self.stride, self.dilation = kernel, stride, dilation
        self.padding, self.groups, self.activation = padding, groups, activation
        self.depthwise_kernels: DepthwiseChoice = "faceweave"  # on CUDA, see set_depthwise_kernels
        self._hwc: tuple[tuple[Any, ...], torch.Tensor, torch.Tensor] | None = None  # (key, weight (3,3,C), bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top = bottom = left = right = 0
        if self.padding == "same":
            top, bottom = _same_pad(x.shape[2], self.kernel[0], self.stride[0], self.dilation[0])
            left, right = _same_pad(x.shape[3], self.kernel[1], self.stride[1], self.dilation[1])
        if (x.is_cuda and self.groups > 1 and self.depthwise_kernels == "faceweave"
                and not torch.compiler.is_compiling()  # a driver launch through ctypes: not for dynamo to trace
                and cuda_depthwise.supports(x, self.kernel, self.stride, self.dilation, self.groups,
                                            self.weight.shape[0])):
            kernels = cuda_depthwise.depthwise_kernels(x.device)
            if kernels is not None:
                w = self.weight  # an inference tensor (weights moved under inference_mode) has no version counter
                key = (w.data_ptr(), w.device, w.dtype, -1 if w.is_inference() else w._version)
                if self._hwc is None or self._hwc[0] != key:  # made on the eager warm-up run, before any capture
                    self._hwc = (key, self.weight[:, 0].permute(1, 2, 0).contiguous(), self.bias.contiguous())
                out = ((x.shape[2] + top + bottom - 3) // self.stride[0] + 1,
                       (x.shape[3] + left + right - 3) // self.stride[1] + 1)
                return cuda_depthwise.depthwise3x3_nhwc(x.contiguous(memory_format=torch.channels_last), self._hwc[1],
                                                        self._hwc[2], self.stride[0], top, left, out, self.activation,
                                                        kernels)
        conv_pad = (top, left)  # symmetric (or none): the conv pads, no extra copy
        if top != bottom or left != right:
            x, conv_pad = F.pad(x, (left, right, top, bottom)), (0, 0)
        if x.is_cuda and self.groups > 1 and self.depthwise_kernels != "cudnn":
            # PyTorch's own depthwise kernels, not cuDNN's: cuDNN (9.10 and later) builds a runtime-compiled plan for
            # each new shape, about a second each (a cold job's first frame 12-15 s later, H100, benchmarks.md §0-27)
            with torch.backends.cudnn.flags(enabled=False):
                y = F.conv2d(x, self.weight, self.bias, self.stride, conv_pad, self.dilation, self.groups)
        else:
            y = F.conv2d(x, self.weight, self.bias, self.stride, conv_pad, self.dilation, self.groups)
        return _activation_(y, self.activation)


class TfPReLU(nn.Module):
    """PRELU with one slope per channel: ``max(x,0) + alpha * min(x,0)``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(channels), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.prelu(x, self.weight)


class TfMaxPool(nn.Module):
    """MAX_POOL_2D; TF 'SAME' pads with -inf so padded cells never win."""

    def __init__(self, kernel: tuple[int, int], stride: tuple[int, int], padding: str, activation: str) -> None:
        super().__init__()
        self.kernel, self.stride, self.padding, self.activation = kernel, stride, padding, activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.padding == "same":
            top, bottom = _same_pad(x.shape[2], self.kernel[0], self.stride[0])
            left, right = _same_pad(x.shape[3], self.kernel[1], self.stride[1])
            if top or bottom or left or right:
                x = F.pad(x, (left, right, top, bottom), value=float("-inf"))
        return _activation(F.max_pool2d(x, self.kernel, self.stride), self.activation)


class TfPad(nn.Module):
    """PAD with constant zeros; ``pads`` is the NHWC ``[[b0,b1],[h0,h1],[w0,w1],[c0,c1]]`` of the graph."""

    def __init__(self, pads: list[list[int]]) -> None:
        super().__init__()
        (_, _), (top, bottom), (left, right), (c0, c1) = pads
        self.torch_pads = (left, right, top, bottom, c0, c1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, self.torch_pads)


class TfResizeBilinear(nn.Module):
    """RESIZE_BILINEAR to the graph's fixed size (half-pixel centres ≙ ``align_corners=False``), or to ``size``
    given per call (a net run on a larger input than its graph's, see :meth:`GraphNet.run_eager`)."""

    def __init__(self, size: tuple[int, int], align_corners: bool, half_pixel: bool) -> None:
        super().__init__()
        if not align_corners and not half_pixel:
            raise NotImplementedError("legacy TF resize (no half-pixel centres) is not used by the MediaPipe models")
        self.size, self.align_corners = size, align_corners

    def forward(self, x: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        return F.interpolate(x, size=size or self.size, mode="bilinear", align_corners=self.align_corners)


class GraphNet(nn.Module):
    """A tflite graph as an ``nn.Module``: ``forward(x (B,3,H,W) float)`` → tuple of the graph's outputs.

    Args:
        program: the op list written by :func:`read_tflite` (stored in the safetensors metadata).

    The input is NCHW (the graph's NHWC input transposed); outputs have the graph's own (NHWC) shapes with the
    batch dimension ``B`` first. Parameters are named ``layers.{op index}.weight|bias`` as in the safetensors file.

    Attributes:
        cuda_graphs: on CUDA, replay forwards from CUDA graphs (default True); False runs every op eagerly.
        graphs: the :class:`~faceweave.cuda_graphs.GraphCache` of :meth:`run`, one graph per input shape.
        graph_pool: its :class:`~faceweave.cuda_graphs.GraphPool`, shared by the graphs of the nets of one engine's
            stage, or None for a private pool per graph.
        cpu_trace: on the CPU, replay forwards from a TorchScript trace of the eager ops (default True; see
            :meth:`run`); False runs every op eagerly. traced: those traces, one per input shape.
    """

    def __init__(self, program: dict[str, Any]) -> None:
        super().__init__()
        self.cuda_graphs = True
        self.cpu_trace = True
        self.traced: dict[Any, Any] = {}  # CPU: the ops of :meth:`run_eager` traced once per input shape and weights
        self.eager_calls: dict[Any, int] = {}  # CPU: eager forwards per key before it is traced
        self.graphs = GraphCache(self.run)
        self.program = program
        self.input_id: int = program["input"]
        self.output_ids: list[int] = program["outputs"]
        self.output_ranks: list[int] = program["output_ranks"]
        self.rank: dict[int, int] = {int(k): v for k, v in program["ranks"].items()}
        self.steps: list[tuple[str, list[int], int, dict[str, Any]]] = []
        layers: list[nn.Module] = []
        for op in program["ops"]:
            kind, args = op["kind"], op["args"]
            module: nn.Module
            if kind == "conv":
                module = TfConv2d(args["in_ch"], args["out_ch"], tuple(args["kernel"]), tuple(args["stride"]),
                                  tuple(args["dilation"]), args["padding"], args["groups"], args["activation"])
            elif kind == "prelu":
                module = TfPReLU(args["channels"])
            elif kind == "maxpool":
                module = TfMaxPool(tuple(args["kernel"]), tuple(args["stride"]), args["padding"], args["activation"])
            elif kind == "pad":
                module = TfPad(args["pads"])
            elif kind == "resize":
                module = TfResizeBilinear(tuple(args["size"]), args["align_corners"], args["half_pixel"])
            else:
                module = nn.Identity()  # add / relu / reshape / concat are stateless and handled in forward
            layers.append(module)
            self.steps.append((kind, op["inputs"], op["output"], args))
        self.layers = nn.ModuleList(layers)
        self._plan_memory()

    def _plan_memory(self) -> None:
        """Which tensors die at which step, and which channel PADs feed a single ADD (see :meth:`forward`)."""
        users: dict[int, int] = {}
        consumer: dict[int, str] = {}  # the kind of the (last) op reading each tensor
        self.dies_at: list[list[int]] = [[] for _ in self.steps]
        last: dict[int, int] = {}
        for i, (_, inputs, _, _) in enumerate(self.steps):
            for tid in inputs:
                last[tid] = i
                users[tid] = users.get(tid, 0) + 1
                consumer[tid] = self.steps[i][0]
        protected = {self.input_id, *self.output_ids}
        for tid, i in last.items():
            if tid not in protected:
                self.dies_at[i].append(tid)
        self.kept = protected
        # A residual block's shortcut is zero-padded in channels and added to the block's output: adding it to the
        # first channels in place gives the same result without materialising the padded copy.
        self.channel_pad: set[int] = set()  # outputs of such PADs
        for kind, _, output, args in self.steps:
            if kind != "pad" or users.get(output) != 1 or consumer[output] != "add" or output in protected:
                continue
            (b0, b1), (h0, h1), (w0, w1), (c0, _) = args["pads"]
            if not (b0 or b1 or h0 or h1 or w0 or w1 or c0):
                self.channel_pad.add(output)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Run the graph on ``x`` ``(B, 3, H, W)``; on CUDA padded to a batch bucket and replayed from a CUDA graph
        (unless :attr:`cuda_graphs` is off, or inside ``torch.compile`` or another capture)."""
        n = x.shape[0]
        if x.is_cuda and (padded_n := cuda_batch_bucket(n)) != n:
            # cuDNN plans each new conv shape on first use (50 ms–4 s per net, measured on an H100), and in video
            # the batch size follows the content (re-detections, faces entering): pad to a few fixed sizes, which
            # the engine warms up, so that plan cost is paid once. Warm time hardly depends on the batch.
            x = torch.cat([x, x.new_zeros(padded_n - n, *x.shape[1:])])
            return tuple(out[:n] for out in self.forward(x))
        if x.is_cuda and x.dtype == torch.float32 and torch.backends.cudnn.allow_tf32:
            # float32 means float32: at the padded batch sizes cuDNN picks TF32 kernels (10-bit mantissa), which moved
            # FaceMesh points by 0.016 px and BlazeFace boxes by 0.06 px against the CPU (H100); scoped, restored.
            with torch.backends.cudnn.flags(enabled=torch.backends.cudnn.enabled,
                                            benchmark=torch.backends.cudnn.benchmark,
                                            deterministic=torch.backends.cudnn.deterministic, allow_tf32=False):
                return self.forward(x)
        if (x.is_cuda and self.cuda_graphs and not torch.compiler.is_compiling()
                and not torch.cuda.is_current_stream_capturing()):
            return self.replay(x)
        return self.run(x)

    @property
    def captured(self) -> dict[Any, CapturedCall]:
        """The CUDA graphs captured so far, one per input shape/dtype/device."""
        return self.graphs.captured

    @property
    def graph_pool(self) -> GraphPool | None:
        return self.graphs.pool

    @graph_pool.setter
    def graph_pool(self, pool: GraphPool | None) -> None:
        self.graphs.pool = pool

    def replay(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """:meth:`run` on CUDA through a graph captured at the first call with this shape/dtype/device.

        Returns fresh tensors (copies of the graph's static outputs), so results of earlier calls stay valid.
        """
        return self.graphs((x.device, torch.backends.cudnn.allow_tf32), (x,))  # the cache adds shape and dtype

    def run(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Run the graph's ops: :meth:`run_eager`, or on the CPU (with :attr:`cpu_trace`, from the
        :data:`CPU_TRACE_AFTER`-th call of an input shape on) the same ops traced once and replayed by TorchScript,
        outputs bit-identical: the replay saves 0.9 ms (short-range BlazeFace, a quarter of its forward at batch 1)
        to 2.1 ms (full-range) of Python per call (dev VM, one thread)."""
        if (not self.cpu_trace or x.device.type != "cpu" or torch.jit.is_tracing() or torch.jit.is_scripting()
                or torch.compiler.is_compiling()):
            return self.run_eager(x)
        first = next(iter(self.parameters()))
        # the weights' storage in the key: a module moved or reloaded traces anew (the trace holds its tensors)
        key = (tuple(x.shape[1:]), x.dtype, x.is_contiguous(memory_format=torch.channels_last), first.data_ptr())
        if key not in self.traced:
            # tracing costs ~0.2–0.8 s and TorchScript's next call profiles: a one-shot image stays eager, a video or a
            # live session (or a service) traces on its third forward of a shape
            seen = self.eager_calls[key] = self.eager_calls.get(key, 0) + 1
            if seen < CPU_TRACE_AFTER:
                return self.run_eager(x)
            self.traced[key] = self._trace(x)
        traced = self.traced[key]
        return self.run_eager(x) if traced is None else tuple(traced(x))

    def _trace(self, x: torch.Tensor) -> Any:
        """:meth:`run_eager` traced at ``x`` (the shapes it fixes, padding and reshapes, are those of the key; the
        batch stays free), or None where this torch cannot trace (``torch.jit`` is deprecated: eager then)."""
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                warnings.simplefilter("ignore", DeprecationWarning)
                return torch.jit.trace(_EagerRun(self), (x,), check_trace=False)
        except Exception:  # noqa: BLE001 - an optimisation only: the eager ops give the same outputs
            return None

    def run_eager(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Run the graph's ops eagerly. Inference only: intermediates are freed after their last use and written in
        place where nothing else reads them (the graphs hold ~100 tensors; keeping them all alive cost memory
        traffic and made every op allocate fresh, cold buffers).

        ``x`` may be larger than the graph's input (a fully convolutional net, e.g. the full-range BlazeFace over a
        whole frame at a tile's scale): RESIZE targets scale with the input, and RESHAPEs that flatten a feature
        map to ``(B, N, C)`` keep ``C`` and let ``N`` follow. At the graph's own input size the ops are the same
        as before."""
        _, in_h, in_w, _ = self.program["input_shape"]
        stretch = (int(x.shape[2]), int(x.shape[3])) != (in_h, in_w)
        # NHWC ("channels last") is the layout oneDNN/cuDNN run depthwise convolutions fastest in (~1.5x on CPU).
        env: dict[int, torch.Tensor] = {self.input_id: x.contiguous(memory_format=torch.channels_last)}
        padded: dict[int, tuple[torch.Tensor, int]] = {}  # channel-pad outputs not materialised: (tensor, channels)
        fresh: set[int] = set()  # tensors that own their storage (not views of another): safe to overwrite when dying
        for i, (layer, (kind, inputs, output, args)) in enumerate(zip(self.layers, self.steps, strict=True)):
            dying = self.dies_at[i]
            if kind == "pad" and output in self.channel_pad:
                src = env[inputs[0]]
                padded[output] = (src, int(src.shape[1]) + int(args["pads"][3][1]))
                y = src  # placeholder in env, so the liveness bookkeeping below stays uniform
            elif kind == "resize" and stretch:
                out_h, out_w = args["size"]
                y = layer(env[inputs[0]], (out_h * int(x.shape[2]) // in_h, out_w * int(x.shape[3]) // in_w))
                fresh.add(output)
            elif kind in ("conv", "prelu", "maxpool", "pad", "resize"):
                y = layer(env[inputs[0]])
                fresh.add(output)
            elif kind == "add":
                y = _activation_(self._add(env, padded, fresh, inputs, dying), args["activation"])
                fresh.add(output)
            elif kind == "relu":
                src = env[inputs[0]]
                owned = inputs[0] in dying and inputs[0] in fresh and all(src is not t for t, _ in padded.values())
                y = src.relu_() if owned else F.relu(src)
                fresh.add(output)
            elif kind == "reshape":
                src = env[inputs[0]]
                if self.rank[inputs[0]] == 4:
                    src = src.permute(0, 2, 3, 1)
                shape = args["shape"][1:]
                if stretch:
                    if len(shape) != 2:  # pragma: no cover - not in the MediaPipe graphs
                        raise NotImplementedError("RESHAPE to rank 4 on an input of another size")
                    shape = [-1, shape[1]]
                y = src.reshape(src.shape[0], *shape)
                if len(args["shape"]) == 4:
                    y = y.permute(0, 3, 1, 2)
            elif kind == "concat":
                y = torch.cat([env[t] for t in inputs], dim=args["axis"])
                fresh.add(output)
            else:  # pragma: no cover - the converter only emits the kinds above
                raise NotImplementedError(kind)
            env[output] = y
            for tid in dying:
                env.pop(tid, None)
        outs = []
        for oid, rank in zip(self.output_ids, self.output_ranks, strict=True):
            out = env[oid]
            outs.append(out.permute(0, 2, 3, 1) if rank == 4 else out)
        return tuple(outs)

    def _add(self, env: dict[int, torch.Tensor], padded: dict[int, tuple[torch.Tensor, int]], fresh: set[int],
             inputs: list[int], dying: list[int]) -> torch.Tensor:
        """ADD of two graph tensors, in place into an operand that dies here and owns its storage (never the graph's
        input or outputs, never a view of a live tensor)."""
        a_id, b_id = inputs[0], inputs[1]

        def reusable(tid: int) -> bool:
            if tid not in dying or tid not in fresh or tid in self.kept or a_id == b_id or tid in padded:
                return False
            return all(env[tid] is not t for t, _ in padded.values())  # a pending channel pad still reads it

        if a_id in padded or b_id in padded:
            small_id, big_id = (a_id, b_id) if a_id in padded else (b_id, a_id)
            small, channels = padded.pop(small_id)
            big = env[big_id]
            if big_id in padded or int(big.shape[1]) != channels:  # pragma: no cover - not in the MediaPipe graphs
                raise NotImplementedError("channel-padded ADD of unexpected shapes")
            out = big if reusable(big_id) else big.clone(memory_format=torch.channels_last)
            out[:, : small.shape[1]] += small
            return out
        a, b = env[a_id], env[b_id]
        for keep, other, tid in ((a, b, a_id), (b, a, b_id)):
            if reusable(tid) and keep.shape == other.shape and keep.dtype == other.dtype:  # no broadcasting
                return keep.add_(other)
        return a + b


class _EagerRun(nn.Module):
    """:meth:`GraphNet.run_eager` as a module's forward (what ``torch.jit.trace`` takes); shares the net's weights."""

    def __init__(self, net: GraphNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.net.run_eager(x)


def _activation_(x: torch.Tensor, name: str) -> torch.Tensor:
    """:func:`_activation` in place (``x`` is a fresh result nobody else holds)."""
    if name == "relu":
        return x.relu_()
    if name == "relu6":
        return x.clamp_(0.0, 6.0)
    return x


def set_cuda_graphs(module: nn.Module, enabled: bool, pool: GraphPool | None = None) -> None:
    """Turn CUDA-graph replay on or off for every :class:`GraphNet` inside ``module`` (off drops captured graphs);
    ``pool`` (a :class:`~faceweave.cuda_graphs.GraphPool`) is shared by the graphs they capture from now on."""
    for sub in module.modules():
        if isinstance(sub, GraphNet):
            sub.cuda_graphs, sub.graph_pool = enabled, pool
            if not enabled:
                sub.graphs.clear()


def set_depthwise_kernels(module: nn.Module, choice: DepthwiseChoice) -> None:
    """Choose the CUDA kernels of the depthwise convolutions of every :class:`GraphNet` inside ``module``; graphs
    captured so far are dropped (they replay the kernels they were captured with). No effect on the CPU.

    - ``faceweave`` (the default): :mod:`faceweave.models.cuda_depthwise`, channels-last in and out, padding and bias
      in the kernel; compiled once per machine and cached (falls back to ``aten`` where it cannot load). Detection
      255 → 173 ms per batch of 32 1080p frames, FaceMesh 10.9 → 8.0 (H100, docs/benchmarks.md §0-28).
    - ``aten``: PyTorch's own kernel, which takes NCHW: in the NHWC nets each depthwise convolution is framed by two
      layout copies (27 of the detector's 60.7 ms of element-wise kernels per batch, §0-26).
    - ``cudnn``: cuDNN's NHWC kernels (detection 225.9 → 162.1 ms per batch, §0-26), but a runtime-compiled plan per
      new shape, about a second each: a cold job's first frame 12-15 s later (§0-27)."""
    if choice not in ("faceweave", "aten", "cudnn"):
        raise ValueError(f"depthwise kernels: {choice!r} (faceweave, aten or cudnn)")
    for sub in module.modules():
        if isinstance(sub, GraphNet):
            sub.graphs.clear()
            for layer in sub.layers:
                if isinstance(layer, TfConv2d):
                    layer.depthwise_kernels = choice


def load_graphnet(path: Path) -> GraphNet:
    """Build a :class:`GraphNet` from a converted safetensors file (program in the metadata), strict load."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    if "faceweave" not in metadata:
        raise ValueError(f"{path} has no 'faceweave' metadata; regenerate it with scripts/convert_mediapipe.py")
    net = GraphNet(json.loads(metadata["faceweave"])["program"])
    net.load_state_dict(load_file(str(path)), strict=True)
    net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # documented, missing in stubs
    return net.eval()


# --------------------------------------------------------------------------------------------------------------
# conversion time: flatbuffer -> program + weights (needs the `tflite` package)
# --------------------------------------------------------------------------------------------------------------
def read_tflite(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Parse a MediaPipe ``.tflite`` into ``(program, weights)``; weights are fp32 arrays in torch layouts."""
    import tflite

    buf = Path(path).read_bytes()
    model = tflite.Model.GetRootAsModel(buf, 0)
    graph = model.Subgraphs(0)
    opnames = {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}
    act_names = {0: "none", 1: "relu", 3: "relu6"}
    np_types = {tflite.TensorType.FLOAT32: np.float32, tflite.TensorType.FLOAT16: np.float16,
                tflite.TensorType.INT32: np.int32}

    def shape(tid: int) -> list[int]:
        return [int(v) for v in graph.Tensors(tid).ShapeAsNumpy()]

    def raw_const(tid: int) -> np.ndarray | None:
        tensor = graph.Tensors(tid)
        data = model.Buffers(tensor.Buffer()).DataAsNumpy()
        if isinstance(data, int) or data.size == 0:
            return None
        return np.frombuffer(data.tobytes(), dtype=np_types[tensor.Type()]).reshape(shape(tid))

    constants: dict[int, np.ndarray] = {}

    def const(tid: int) -> np.ndarray:
        if tid in constants:
            return constants[tid]
        value = raw_const(tid)
        if value is None:
            raise ValueError(f"tensor {tid} is not a constant")
        return value

    def options(op: Any, cls: Any) -> Any:
        table = op.BuiltinOptions()
        opt = cls()
        opt.Init(table.Bytes, table.Pos)
        return opt

    ops: list[dict[str, Any]] = []
    weights: dict[str, np.ndarray] = {}
    ranks: dict[int, int] = {}
    input_id = int(graph.Inputs(0))
    ranks[input_id] = 4
    for index in range(graph.OperatorsLength()):
        op = graph.Operators(index)
        code = model.OperatorCodes(op.OpcodeIndex())
        name = opnames[max(code.BuiltinCode(), code.DeprecatedBuiltinCode())]
        inputs = [int(op.Inputs(i)) for i in range(op.InputsLength())]
        output = int(op.Outputs(0))
        if name == "DEQUANTIZE":
            constants[output] = const(inputs[0]).astype(np.float32)
            continue
        layer = len(ops)
        args: dict[str, Any] = {}
        if name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            depthwise = name == "DEPTHWISE_CONV_2D"
            opt = options(op, tflite.DepthwiseConv2DOptions if depthwise else tflite.Conv2DOptions)
            w = const(inputs[1]).astype(np.float32)
            if depthwise:
                if opt.DepthMultiplier() != 1:
                    raise NotImplementedError("depth multiplier != 1")
                w_t = w.transpose(3, 0, 1, 2)  # [1,kh,kw,C] -> [C,1,kh,kw]
                in_ch = groups = w.shape[3]
            else:
                w_t = w.transpose(0, 3, 1, 2)  # [O,kh,kw,I] -> [O,I,kh,kw]
                in_ch, groups = w.shape[3], 1
            bias = const(inputs[2]).astype(np.float32) if len(inputs) > 2 and inputs[2] >= 0 \
                else np.zeros(w_t.shape[0], np.float32)
            weights[f"layers.{layer}.weight"] = np.ascontiguousarray(w_t)
            weights[f"layers.{layer}.bias"] = bias
            args = {"in_ch": in_ch, "out_ch": int(w_t.shape[0]), "kernel": list(w_t.shape[2:]),
                    "stride": [opt.StrideH(), opt.StrideW()],
                    "dilation": [opt.DilationHFactor(), opt.DilationWFactor()],
                    "padding": "same" if opt.Padding() == tflite.Padding.SAME else "valid",
                    "groups": groups, "activation": act_names[opt.FusedActivationFunction()]}
            kind, op_inputs = "conv", inputs[:1]
        elif name == "PRELU":
            alpha = const(inputs[1]).astype(np.float32)
            per_channel = alpha.reshape(-1, alpha.shape[-1])
            if not np.all(per_channel == per_channel[:1]):
                raise NotImplementedError("PRELU slope varies over space")
            weights[f"layers.{layer}.weight"] = np.ascontiguousarray(per_channel[0])
            args, kind, op_inputs = {"channels": int(alpha.shape[-1])}, "prelu", inputs[:1]
        elif name == "MAX_POOL_2D":
            opt = options(op, tflite.Pool2DOptions)
            args = {"kernel": [opt.FilterHeight(), opt.FilterWidth()], "stride": [opt.StrideH(), opt.StrideW()],
                    "padding": "same" if opt.Padding() == tflite.Padding.SAME else "valid",
                    "activation": act_names[opt.FusedActivationFunction()]}
            kind, op_inputs = "maxpool", inputs[:1]
        elif name == "PAD":
            args, kind, op_inputs = {"pads": const(inputs[1]).tolist()}, "pad", inputs[:1]
        elif name == "RESIZE_BILINEAR":
            opt = options(op, tflite.ResizeBilinearOptions)
            args = {"size": [int(v) for v in const(inputs[1])], "align_corners": bool(opt.AlignCorners()),
                    "half_pixel": bool(opt.HalfPixelCenters())}
            kind, op_inputs = "resize", inputs[:1]
        elif name == "ADD":
            opt = options(op, tflite.AddOptions)
            if any(i in constants or raw_const(i) is not None for i in inputs):
                raise NotImplementedError("ADD of a constant")
            args, kind, op_inputs = {"activation": act_names[opt.FusedActivationFunction()]}, "add", inputs
        elif name == "RELU":
            kind, op_inputs = "relu", inputs[:1]
        elif name == "RESHAPE":
            args, kind, op_inputs = {"shape": shape(output)}, "reshape", inputs[:1]
        elif name == "CONCATENATION":
            opt = options(op, tflite.ConcatenationOptions)
            rank = ranks[inputs[0]]
            axis = opt.Axis() % rank
            args = {"axis": _NHWC_TO_NCHW_AXIS[axis] if rank == 4 else axis}
            kind, op_inputs = "concat", inputs
        else:
            raise NotImplementedError(f"tflite op {name} is not supported")
        ranks[output] = len(shape(output))
        ops.append({"kind": kind, "inputs": op_inputs, "output": output, "args": args, "tflite_op": name})
    outputs = [int(graph.Outputs(i)) for i in range(graph.OutputsLength())]
    program = {"input": input_id, "input_shape": shape(input_id), "outputs": outputs,
               "output_names": [graph.Tensors(o).Name().decode() for o in outputs],
               "output_ranks": [ranks[o] for o in outputs], "ranks": {str(k): v for k, v in ranks.items()},
               "ops": ops}
    return program, weights
