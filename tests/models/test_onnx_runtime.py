"""ONNX Runtime sessions: provider choice TensorRT → CUDA → CPU, fallback message, warm-up, fixed-batch graphs."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from faceweave.errors import ModelIntegrityError
from faceweave.models.onnx_runtime import CPU, CUDA, TRT, OnnxModel, choose_providers

_path = Path(__file__).parent / "test_onnx_graphs.py"
_spec = importlib.util.spec_from_file_location("faceweave_test_onnx_graphs", _path)
assert _spec is not None and _spec.loader is not None
graphs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(graphs)


def test_provider_order_on_a_full_gpu_build(tmp_path: Path) -> None:
    choice = choose_providers(torch.device("cuda:1"), [TRT, CUDA, CPU], fp16=True, cache_dir=tmp_path)
    assert choice.names == [TRT, CUDA, CPU] and not choice.notes
    trt = dict(choice.providers)[TRT]
    assert trt["device_id"] == "1" and trt["trt_fp16_enable"] == "True"
    assert trt["trt_engine_cache_enable"] == "True" and trt["trt_engine_cache_path"] == str(tmp_path)
    assert trt["trt_timing_cache_path"] == str(tmp_path)
    assert dict(choice.providers)[CUDA] == {"device_id": "1"}


def test_missing_providers_fall_back_with_a_message() -> None:
    choice = choose_providers(torch.device("cuda"), [CUDA, CPU])
    assert choice.names == [CUDA, CPU] and any("TensorRT" in n for n in choice.notes)
    choice = choose_providers(torch.device("cuda"), ["AzureExecutionProvider", CPU])
    assert choice.names == [CPU]
    assert any("onnxruntime-gpu" in n and "CPU" in n for n in choice.notes)
    cpu = choose_providers(torch.device("cpu"), [TRT, CUDA, CPU])
    assert cpu.names == [CPU] and not cpu.notes  # a CPU job never grabs the GPU


def test_session_runs_fixed_batch_graph_item_by_item(tmp_path: Path) -> None:
    model = OnnxModel(graphs.build_swapper(tmp_path / "s.onnx"), device=torch.device("cpu"))
    assert model.providers == [CPU] and model.input_names == ["target", "source"]
    assert not model.batch_is_dynamic()
    rng = np.random.default_rng(0)
    target = rng.random((3, 3, 128, 128), dtype=np.float32)
    source = rng.normal(size=(3, 512)).astype(np.float32) / 30
    out = model.run_batched({"target": torch.from_numpy(target), "source": torch.from_numpy(source)})[0]
    np.testing.assert_allclose(out.numpy(), graphs.swapper_numpy(target, source), atol=1e-5)
    emap = model.initializer(-1)
    np.testing.assert_array_equal(emap, graphs.swapper_params()["emap"])


def test_dynamic_batch_graph_runs_in_one_call(tmp_path: Path) -> None:
    model = OnnxModel(graphs.build_arcface(tmp_path / "a.onnx"), device=torch.device("cpu"))
    assert model.batch_is_dynamic()
    x = torch.rand(5, 3, 112, 112)
    np.testing.assert_allclose(model.run_batched({"input.1": x})[0].numpy(), graphs.arcface_numpy(x.numpy()),
                               rtol=1e-4, atol=1e-4)


def test_not_an_onnx_file_is_an_integrity_error(tmp_path: Path) -> None:
    bad = tmp_path / "inswapper_128.onnx"
    bad.write_bytes(b"<html>404 page from a proxy</html>")
    with pytest.raises(ModelIntegrityError, match="cannot load"):
        OnnxModel(bad, device=torch.device("cpu"))


def test_cuda_request_on_cpu_build_warns(tmp_path: Path, caplog, monkeypatch) -> None:
    import onnxruntime

    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["AzureExecutionProvider", CPU])
    caplog.set_level(logging.WARNING, logger="faceweave.models.onnx_runtime")
    model = OnnxModel(graphs.build_arcface(tmp_path / "a.onnx"), device=torch.device("cuda"), warmup=True)
    assert model.providers == [CPU]
    assert "pip install onnxruntime-gpu" in caplog.text


def test_io_binding_path_matches_plain_run(tmp_path: Path) -> None:
    # The GPU path binds tensor memory and imports outputs through DLPack; the same code runs on CPU memory here.
    path = graphs.build_arcface(tmp_path / "a.onnx")
    plain = OnnxModel(path, device=torch.device("cpu"))
    bound = OnnxModel(path, device=torch.device("cpu"), io_binding=True)
    x = torch.rand(3, 3, 112, 112)
    torch.testing.assert_close(bound.run({"input.1": x})[0], plain.run({"input.1": x})[0])
