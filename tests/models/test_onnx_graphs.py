"""Small ONNX graphs with the exact I/O signatures of the plug-in models, whose outputs are known functions of
their inputs (built with ``onnx.helper``), plus NumPy versions of those functions for the reference tests.

Other test files load this module by path (``load_graphs()``); its own tests check that every graph is valid
ONNX and that ONNX Runtime computes what the NumPy twin says.
"""

from __future__ import annotations

import functools
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def load_graphs() -> ModuleType:
    """This module, importable from any test directory."""
    name = "faceweave_test_onnx_graphs"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, Path(__file__))
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="faceweave-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _init(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.ascontiguousarray(array), name)


# --- swappers ---------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=4)
def swapper_params(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "P": (rng.normal(size=(512, 3)) * 0.5).astype(np.float32),
        # A random (not orthonormal) matrix: the final l2-normalisation of the latent matters.
        "emap": (rng.normal(size=(512, 512)) * 0.15).astype(np.float32),
    }


def build_swapper(path: Path, size: int = 128, seed: int = 0, batch: int | str = 1) -> Path:
    """``target (b,3,S,S)``, ``source (b,512)`` → ``output = clip(0.5·target + (source @ P)[:, :, None, None], 0, 1)``;
    the LAST initializer is ``emap`` (512×512), as in insightface's inswapper."""
    p = swapper_params(seed)
    nodes = [
        helper.make_node("MatMul", ["source", "P"], ["bias"]),
        helper.make_node("Unsqueeze", ["bias", "axes23"], ["bias4"]),
        helper.make_node("Mul", ["target", "half"], ["scaled"]),
        helper.make_node("Add", ["scaled", "bias4"], ["raw"]),
        helper.make_node("Clip", ["raw", "zero", "one"], ["output"]),
    ]
    inits = [
        _init("P", p["P"]),
        _init("axes23", np.array([2, 3], dtype=np.int64)),
        _init("half", np.array(0.5, dtype=np.float32)),
        _init("zero", np.array(0.0, dtype=np.float32)),
        _init("one", np.array(1.0, dtype=np.float32)),
        _init("emap", p["emap"]),
    ]
    graph = helper.make_graph(
        nodes,
        "swapper",
        [
            helper.make_tensor_value_info("target", TensorProto.FLOAT, [batch, 3, size, size]),
            helper.make_tensor_value_info("source", TensorProto.FLOAT, [batch, 512]),
        ],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [batch, 3, size, size])],
        inits,
    )
    return _save(graph, path)


def swapper_numpy(target: np.ndarray, source: np.ndarray, seed: int = 0) -> np.ndarray:
    p = swapper_params(seed)
    return np.clip(0.5 * target + (source @ p["P"])[:, :, None, None], 0.0, 1.0)


# --- recogniser and converter ---------------------------------------------------------------------------------
def arcface_params(seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(48, 512)).astype(np.float32)


def build_arcface(path: Path, seed: int = 1) -> Path:
    """``input.1 (N,3,112,112)`` → ``683 (N,512)`` = ``flatten(avgpool28(x)) @ W`` (dynamic batch)."""
    nodes = [
        helper.make_node("AveragePool", ["input.1"], ["pooled"], kernel_shape=[28, 28], strides=[28, 28]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "W"], ["683"]),
    ]
    graph = helper.make_graph(
        nodes,
        "arcface",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["N", 3, 112, 112])],
        [helper.make_tensor_value_info("683", TensorProto.FLOAT, ["N", 512])],
        [_init("W", arcface_params(seed))],
    )
    return _save(graph, path)


def arcface_numpy(x: np.ndarray, seed: int = 1) -> np.ndarray:
    pooled = x.reshape(x.shape[0], 3, 4, 28, 4, 28).mean(axis=(3, 5))
    return pooled.reshape(x.shape[0], 48) @ arcface_params(seed)


def converter_params(seed: int = 2) -> np.ndarray:
    return (np.random.default_rng(seed).normal(size=(512, 512)) / 20).astype(np.float32)


def build_converter(path: Path, seed: int = 2) -> Path:
    """``input (1,512)`` → ``output = input @ C`` (SimSwap's embedding converter signature)."""
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "C"], ["output"])],
        "converter",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 512])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 512])],
        [_init("C", converter_params(seed))],
    )
    return _save(graph, path)


# --- restorers ----------------------------------------------------------------------------------------------------
def build_restorer(path: Path, size: int, *, with_weight: bool = False) -> Path:
    """``input (1,3,S,S)`` in [-1,1] → ``output = -input`` (colour negative), or with CodeFormer's
    ``weight (1,)`` float64: ``output = input · (1 − 2w)``."""
    inputs = [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, size, size])]
    if with_weight:
        inputs.append(helper.make_tensor_value_info("weight", TensorProto.DOUBLE, [1]))
        nodes = [
            helper.make_node("Cast", ["weight"], ["wf"], to=TensorProto.FLOAT),
            helper.make_node("Mul", ["wf", "two"], ["w2"]),
            helper.make_node("Sub", ["one", "w2"], ["factor"]),
            helper.make_node("Mul", ["input", "factor"], ["output"]),
        ]
        inits = [_init("two", np.array(2.0, np.float32)), _init("one", np.array(1.0, np.float32))]
    else:
        nodes, inits = [helper.make_node("Neg", ["input"], ["output"])], []
    graph = helper.make_graph(
        nodes, "restorer", inputs, [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, size, size])],
        inits,
    )
    return _save(graph, path)


# --- face parser ----------------------------------------------------------------------------------------------------
def build_parser(path: Path) -> Path:
    """``input (1,3,512,512)`` ImageNet-normalised → 19 logits: class 1 (skin) = normalised green, class 17
    (hair) = normalised red, background 0 = 0, others −10. So arg-max is skin where G is above its mean and
    above R, hair where R wins, background elsewhere."""
    w = np.zeros((19, 3, 1, 1), np.float32)
    b = np.full((19,), -10.0, np.float32)
    w[1, 1] = 1.0
    w[17, 0] = 1.0
    b[[0, 1, 17]] = 0.0
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input", "W", "B"], ["output"], kernel_shape=[1, 1])],
        "parser",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 512, 512])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 19, 512, 512])],
        [_init("W", w), _init("B", b)],
    )
    return _save(graph, path)


# --- SCRFD ----------------------------------------------------------------------------------------------------------
def scrfd_params(seed: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for s in (8, 16, 32):
        out[f"ws{s}"] = rng.normal(size=(2, 3, 1, 1)).astype(np.float32) * 2
        out[f"wb{s}"] = rng.normal(size=(8, 3, 1, 1)).astype(np.float32)
        out[f"wk{s}"] = rng.normal(size=(20, 3, 1, 1)).astype(np.float32)
    return out


def build_scrfd(path: Path, size: int = 640, seed: int = 3) -> Path:
    """``input.1 (1,3,S,S)`` → 9 outputs like insightface SCRFD (batched layout ``(1,N,C)``): per stride,
    ``avgpool_s(x)`` then 1×1 convs to 2·1 / 2·4 / 2·10 channels (anchor-major), ``Sigmoid`` for scores and
    ``Abs`` for box distances, transposed to ``(1, h·w·2, C)``."""
    p = scrfd_params(seed)
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    outputs: dict[str, list[onnx.ValueInfoProto]] = {"score": [], "bbox": [], "kps": []}
    inits.append(_init("pix_c1", np.array([1, -1, 1], np.int64)))
    inits.append(_init("pix_c4", np.array([1, -1, 4], np.int64)))
    inits.append(_init("pix_c10", np.array([1, -1, 10], np.int64)))
    for s in (8, 16, 32):
        nodes.append(helper.make_node("AveragePool", ["input.1"], [f"pool{s}"], kernel_shape=[s, s], strides=[s, s]))
        for kind, key, channels, act in (("score", "ws", 1, "Sigmoid"), ("bbox", "wb", 4, "Abs"),
                                          ("kps", "wk", 10, None)):
            inits.append(_init(f"{key}{s}", p[f"{key}{s}"]))
            nodes.append(helper.make_node("Conv", [f"pool{s}", f"{key}{s}"], [f"{kind}{s}_c"], kernel_shape=[1, 1]))
            src = f"{kind}{s}_c"
            if act:
                nodes.append(helper.make_node(act, [src], [f"{kind}{s}_a"]))
                src = f"{kind}{s}_a"
            nodes.append(helper.make_node("Transpose", [src], [f"{kind}{s}_t"], perm=[0, 2, 3, 1]))
            nodes.append(helper.make_node("Reshape", [f"{kind}{s}_t", f"pix_c{channels}"], [f"{kind}_{s}"]))
            outputs[kind].append(helper.make_tensor_value_info(f"{kind}_{s}", TensorProto.FLOAT, [1, None, channels]))
    graph = helper.make_graph(
        nodes,
        "scrfd",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, size, size])],
        outputs["score"] + outputs["bbox"] + outputs["kps"],
        inits,
    )
    return _save(graph, path)


def scrfd_numpy_outputs(x: np.ndarray, seed: int = 3) -> list[np.ndarray]:
    """The 9 outputs of :func:`build_scrfd` for ``x (1,3,S,S)``, computed in NumPy."""
    p = scrfd_params(seed)
    size = x.shape[-1]
    res: dict[str, list[np.ndarray]] = {"score": [], "bbox": [], "kps": []}
    for s in (8, 16, 32):
        n = size // s
        pooled = x.reshape(1, 3, n, s, n, s).mean(axis=(3, 5))
        for kind, key, channels in (("score", "ws", 1), ("bbox", "wb", 4), ("kps", "wk", 10)):
            w = p[f"{key}{s}"][:, :, 0, 0]
            y = np.einsum("oc,bchw->bohw", w, pooled)
            if kind == "score":
                y = 1 / (1 + np.exp(-y))
            elif kind == "bbox":
                y = np.abs(y)
            res[kind].append(y.transpose(0, 2, 3, 1).reshape(1, -1, channels))
    return res["score"] + res["bbox"] + res["kps"]


# --- reference geometry (NumPy / OpenCV), the published contracts ----------------------------------------------
def umeyama_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """skimage ``SimilarityTransform.estimate`` (Umeyama 1991) in NumPy: ``(2, 3)`` src → dst."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    sc, dc = src - mu_s, dst - mu_d
    cov = dc.T @ sc / len(src)
    u, d, vt = np.linalg.svd(cov)
    sign = np.ones(2)
    if np.linalg.det(cov) < 0:
        sign[-1] = -1
    r = u @ np.diag(sign) @ vt
    scale = (d * sign).sum() / sc.var(0).sum()
    t = mu_d - scale * r @ mu_s
    return np.hstack([scale * r, t[:, None]])


def norm_crop_numpy(image: np.ndarray, keypoints: np.ndarray, template_px: np.ndarray, size: int,
                    border: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """insightface ``norm_crop``: ``image`` HxWx3 float → aligned ``size``² crop (cv2 bilinear) and ``M``."""
    import cv2

    m = umeyama_similarity(keypoints, template_px)
    crop = cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=border, borderValue=0.0)
    return crop, m


# --- tests of the builders themselves -------------------------------------------------------------------------------
def test_graphs_are_valid_and_match_numpy(tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    rng = np.random.default_rng(5)
    sess = ort.InferenceSession(str(build_swapper(tmp_path / "s.onnx")), providers=["CPUExecutionProvider"])
    t = rng.random((1, 3, 128, 128), dtype=np.float32)
    src = rng.normal(size=(1, 512)).astype(np.float32) / 20
    np.testing.assert_allclose(sess.run(None, {"target": t, "source": src})[0], swapper_numpy(t, src), atol=1e-5)
    last = onnx.load(str(tmp_path / "s.onnx")).graph.initializer[-1]
    assert last.name == "emap" and list(last.dims) == [512, 512]

    sess = ort.InferenceSession(str(build_arcface(tmp_path / "a.onnx")), providers=["CPUExecutionProvider"])
    x = rng.random((2, 3, 112, 112), dtype=np.float32)
    np.testing.assert_allclose(sess.run(None, {"input.1": x})[0], arcface_numpy(x), rtol=1e-4, atol=1e-4)

    sess = ort.InferenceSession(str(build_scrfd(tmp_path / "d.onnx", size=64)), providers=["CPUExecutionProvider"])
    x = rng.random((1, 3, 64, 64), dtype=np.float32)
    for got, want in zip(sess.run(None, {"input.1": x}), scrfd_numpy_outputs(x), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
