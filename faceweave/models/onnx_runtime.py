"""ONNX Runtime sessions for plug-in models: provider choice (TensorRT → CUDA → CPU), warm-up, GPU I/O binding.

One :class:`OnnxModel` owns one ``InferenceSession``; its owner (a swapper, enhancer, detector object) decides
its lifetime — nothing is cached globally. Providers are picked from what the installed onnxruntime reports
(``onnxruntime`` has only CPU; ``onnxruntime-gpu`` adds CUDA and, with TensorRT libraries, TensorRT). When the
device asks for CUDA but the build cannot, the session runs on CPU and a warning says exactly what to install.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from faceweave.errors import DependencyMissing, ModelIntegrityError

_LOG = logging.getLogger(__name__)

TRT = "TensorrtExecutionProvider"
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"

_ORT_TO_NUMPY = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}


def import_onnxruntime() -> Any:
    """``import onnxruntime``, or :class:`DependencyMissing` naming the extra to install."""
    try:
        import onnxruntime
    except ImportError:  # pragma: no cover - the [onnx] extra is installed in CI
        raise DependencyMissing(
            "ONNX plug-in models need onnxruntime", hint="pip install 'faceweave[onnx]' (or onnxruntime-gpu)"
        ) from None
    return onnxruntime


@dataclass(frozen=True)
class ProviderChoice:
    """The providers handed to ONNX Runtime, in priority order, and why others were skipped."""

    providers: list[tuple[str, dict[str, str]]]
    notes: list[str]

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.providers]


def choose_providers(
    device: torch.device,
    available: Sequence[str],
    *,
    fp16: bool = False,
    cache_dir: Path | None = None,
    use_tensorrt: bool = True,
) -> ProviderChoice:
    """Pick execution providers for ``device`` from the ``available`` ones (``ort.get_available_providers()``).

    CPU device → CPU only. CUDA device → TensorRT (``fp16``, engine + timing cache in ``cache_dir``) if
    available and ``use_tensorrt``, then CUDA on the same GPU index, then CPU as the last resort; every provider
    that was wanted but is missing gives a note saying what to install.
    """
    notes: list[str] = []
    chosen: list[tuple[str, dict[str, str]]] = []
    if device.type == "cuda":
        index = str(device.index or 0)
        if use_tensorrt:
            if TRT in available:
                trt_opts = {"device_id": index, "trt_fp16_enable": "True" if fp16 else "False"}
                if cache_dir is not None:
                    trt_opts.update(
                        trt_engine_cache_enable="True",
                        trt_engine_cache_path=str(cache_dir),
                        trt_timing_cache_enable="True",
                        trt_timing_cache_path=str(cache_dir),
                    )
                chosen.append((TRT, trt_opts))
            else:
                notes.append("TensorRT provider not available (needs onnxruntime-gpu with TensorRT libraries)")
        if CUDA in available:
            chosen.append((CUDA, {"device_id": index}))
        else:
            notes.append(
                f"device {device} asked for CUDA but this onnxruntime has no {CUDA} "
                f"(available: {', '.join(available)}): running ONNX models on the CPU — "
                "pip uninstall onnxruntime && pip install onnxruntime-gpu"
            )
    chosen.append((CPU, {}))
    return ProviderChoice(chosen, notes)


def _concrete_shape(shape: Sequence[Any], batch: int = 1, default: int = 64) -> list[int]:
    # Symbolic dims: the first is the batch; the others (e.g. height/width of a detector) get ``default``.
    return [d if isinstance(d, int) and d > 0 else (batch if i == 0 else default) for i, d in enumerate(shape)]


class OnnxModel:
    """One ONNX Runtime session with named inputs/outputs that takes and returns torch tensors.

    Args:
        path: the .onnx file (already located and verified by the caller), or raw model bytes.
        device: where the caller's tensors live; picks the providers (see :func:`choose_providers`).
        fp16: let TensorRT build fp16 engines (inputs/outputs stay as the graph declares them).
        cache_dir: TensorRT engine/timing cache folder (created); default ``<model folder>/trt_cache``.
        warmup: run once on zeros at load so the first real call is not slow (TensorRT builds engines then).
        warmup_shapes: concrete shapes for inputs with symbolic dims (default: batch 1, other free dims 64).
        threads: intra-op threads for the CPU provider (default: ORT's choice).
        io_binding: bind torch tensors' memory directly (default: on for a CUDA device with ORT's CUDA provider).
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | bytes,
        *,
        device: torch.device,
        fp16: bool = False,
        cache_dir: Path | None = None,
        warmup: bool = True,
        warmup_shapes: Mapping[str, Sequence[int]] | None = None,
        threads: int | None = None,
        io_binding: bool | None = None,
    ) -> None:
        ort = import_onnxruntime()
        self.device = device
        self.path = None if isinstance(path, bytes) else Path(path)
        if cache_dir is None and self.path is not None:
            cache_dir = self.path.parent / "trt_cache"
        available = ort.get_available_providers()
        want_trt = device.type == "cuda" and TRT in available
        if want_trt and cache_dir is not None:
            cache_dir.mkdir(parents=True, exist_ok=True)
        self.choice = choose_providers(device, available, fp16=fp16, cache_dir=cache_dir)
        for note in self.choice.notes:
            _LOG.warning(note)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
        source = path if isinstance(path, bytes) else str(path)
        try:
            self.session = ort.InferenceSession(source, sess_options=options, providers=self.choice.providers)
        except Exception as exc:  # ORT raises its own types (InvalidProtobuf, Fail, ...)
            raise ModelIntegrityError(
                f"onnxruntime cannot load {self.path or 'the model bytes'}: {exc}",
                hint="the file is not a valid ONNX model for this onnxruntime; fetch it again",
            ) from None
        self.providers: list[str] = list(self.session.get_providers())
        self.inputs = {i.name: (list(i.shape), i.type) for i in self.session.get_inputs()}
        self.outputs = {o.name: (list(o.shape), o.type) for o in self.session.get_outputs()}
        self.input_names = list(self.inputs)
        self.output_names = list(self.outputs)
        self._binding = (device.type == "cuda" and CUDA in self.providers) if io_binding is None else io_binding
        if warmup:
            self.warmup(warmup_shapes or {})

    def warmup(self, shapes: Mapping[str, Sequence[int]]) -> None:
        """Run once on zeros (shapes from the graph, symbolic dims from ``shapes`` or defaults)."""
        feeds: dict[str, np.ndarray] = {}
        for name, (shape, ort_type) in self.inputs.items():
            concrete = list(shapes.get(name, _concrete_shape(shape)))
            feeds[name] = np.zeros(concrete, dtype=_ORT_TO_NUMPY.get(ort_type, np.float32))
        self.session.run(None, feeds)

    def input_dtype(self, name: str) -> np.dtype:
        """NumPy dtype the graph declares for input ``name``."""
        return np.dtype(_ORT_TO_NUMPY.get(self.inputs[name][1], np.float32))

    def run(self, feeds: Mapping[str, torch.Tensor | np.ndarray]) -> list[torch.Tensor]:
        """Run the graph; tensors are cast to the declared input dtype; outputs come back as float32 tensors on
        :attr:`device`, in graph output order.

        On a CUDA device with ORT's CUDA provider, CUDA tensors are bound in place (no host round trip); otherwise
        the tensors go through host memory.
        """
        if self._binding:
            return self._run_bound(feeds)
        arrays = {}
        for name, value in feeds.items():
            arr = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
            arrays[name] = np.ascontiguousarray(arr, dtype=self.input_dtype(name))
        results = self.session.run(None, arrays)
        return [torch.from_numpy(np.asarray(r, dtype=np.float32)).to(self.device) for r in results]

    def _run_bound(self, feeds: Mapping[str, torch.Tensor | np.ndarray]) -> list[torch.Tensor]:
        # I/O binding: hand ORT the memory of contiguous torch tensors, let it allocate outputs on the same
        # device, then import them through DLPack (OrtValue implements __dlpack__), else one copy via host.
        binding = self.session.io_binding()
        index = self.device.index or 0
        kind = "cuda" if self.device.type == "cuda" else "cpu"
        keep_alive = []
        for name, value in feeds.items():
            dtype = torch.from_numpy(np.zeros(0, dtype=self.input_dtype(name))).dtype
            tensor = torch.as_tensor(value).to(device=self.device, dtype=dtype).contiguous()
            keep_alive.append(tensor)
            binding.bind_input(
                name=name,
                device_type=kind,
                device_id=index,
                element_type=self.input_dtype(name).type,
                shape=tuple(tensor.shape),
                buffer_ptr=tensor.data_ptr(),
            )
        for name in self.output_names:
            binding.bind_output(name, kind, index)
        if kind == "cuda":
            torch.cuda.synchronize(self.device)  # inputs written by torch streams must be complete
        self.session.run_with_iobinding(binding)
        out = []
        for value in binding.get_outputs():
            if hasattr(value, "__dlpack__"):
                # clone: the tensor must not alias memory that the binding frees when it goes away
                out.append(torch.from_dlpack(value).to(self.device).float().clone())
            else:
                out.append(torch.from_numpy(value.numpy()).to(self.device).float())
        del keep_alive
        return out

    def batch_is_dynamic(self, name: str | None = None) -> bool:
        """Whether input ``name`` (default the first) accepts any batch size (symbolic first dim)."""
        shape = self.inputs[name or self.input_names[0]][0]
        return not (shape and isinstance(shape[0], int) and shape[0] > 0)

    def run_batched(
        self, feeds: Mapping[str, torch.Tensor], shared: Mapping[str, torch.Tensor | np.ndarray] | None = None
    ) -> list[torch.Tensor]:
        """:meth:`run` on a batch; graphs exported with a fixed batch of 1 are run item by item and the outputs
        concatenated along dim 0. ``feeds`` share the batch dim; ``shared`` inputs (e.g. CodeFormer's
        ``weight``) are passed whole to every call."""
        shared = dict(shared or {})
        if all(self.batch_is_dynamic(n) for n in feeds):
            return self.run({**feeds, **shared})
        batch = next(iter(feeds.values())).shape[0]
        parts = [self.run({**{n: v[i : i + 1] for n, v in feeds.items()}, **shared}) for i in range(batch)]
        return [torch.cat([p[k] for p in parts]) for k in range(len(parts[0]))]

    def initializer(self, index: int = -1) -> np.ndarray:
        """A graph initializer as a NumPy array (``index=-1``: the last, e.g. inswapper's ``emap``)."""
        import onnx
        from onnx import numpy_helper

        if self.path is None:
            raise ValueError("initializers can only be read from a model loaded from a file")
        model = onnx.load(str(self.path), load_external_data=False)
        return np.asarray(numpy_helper.to_array(model.graph.initializer[index]))
