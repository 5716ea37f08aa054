"""Recogniser, SCRFD and face-parser contracts against NumPy/OpenCV references; registry, store and file checks."""

from __future__ import annotations

import hashlib
import importlib.util
import logging
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from faceweave.analysis.onnx_detect import RetinaFaceDetector, ScrfdDetector
from faceweave.errors import ModelIntegrityError, ModelMissing
from faceweave.models import store
from faceweave.models.arcface import ArcFaceRecogniser, align_crops
from faceweave.models.face_parser import FACE_CLASSES, FaceParser
from faceweave.models.onnx_zoo import (
    FACEFUSION_ASSETS,
    TEMPLATES,
    is_pinned,
    plugin_names,
    resolve_model_file,
    template_points,
)
from faceweave.models.registry import get_spec
from faceweave.models.scrfd import ScrfdNet, decode_scrfd, letterbox_top_left
from faceweave.ops.boxes import nms
from faceweave.pipeline.engine import make_detector
from faceweave.settings import SwapSettings

_path = Path(__file__).parent / "test_onnx_graphs.py"
_spec = importlib.util.spec_from_file_location("faceweave_test_onnx_graphs", _path)
assert _spec is not None and _spec.loader is not None
graphs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(graphs)


@pytest.fixture(scope="module")
def obama(media):
    rgb = media.rgb("obama.jpg")
    t = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255
    return rgb, t, RetinaFaceDetector("cpu").detect(t)[0][0]


@pytest.fixture(autouse=True)
def _quiet(caplog) -> None:
    caplog.set_level(logging.ERROR)  # "unpinned sha256" warnings for the test-built files


# --- ArcFace -----------------------------------------------------------------------------------------------------
def test_arcface_template_and_normalisation(obama, media, tmp_path: Path, device, dtype) -> None:
    rec = ArcFaceRecogniser(graphs.build_arcface(tmp_path / "arc.onnx"), device)
    rgb, t, face = obama
    frames = torch.cat([t, t.flip(-1)]).to(device, dtype)
    flipped_kps = face.keypoints.clone()
    flipped_kps[:, 0] = rgb.shape[1] - 1 - flipped_kps[:, 0]
    kps = torch.stack([face.keypoints, flipped_kps[[1, 0, 2, 4, 3]]]).to(device)
    got = rec.embed(frames, torch.tensor([0, 1], device=device), kps).cpu().numpy()
    for i, (img, k) in enumerate(((rgb, kps[0]), (np.ascontiguousarray(rgb[:, ::-1]), kps[1]))):
        crop, _ = graphs.norm_crop_numpy(img.astype(np.float32) / 255, k.cpu().numpy(),
                                         template_points("arcface_112_v2", 112), 112)
        x = ((crop * 255 - 127.5) / 127.5).transpose(2, 0, 1)[None].astype(np.float32)
        ref = graphs.arcface_numpy(x)[0]
        tol = 3e-3 if dtype is torch.float32 else 2e-2  # fp16 crops on CUDA
        np.testing.assert_allclose(got[i], ref, rtol=0, atol=tol * np.abs(ref).max())
    published = [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]]
    np.testing.assert_allclose(template_points("arcface_112_v2", 112), published, atol=1e-9)
    np.testing.assert_allclose(template_points("arcface_128", 128), np.array(published) + [8, 0], atol=1e-9)


def test_alignment_puts_keypoints_on_template(obama) -> None:
    _, t, face = obama
    for name in TEMPLATES:
        for size in (112, 128, 256, 512):
            _, m = align_crops(t, torch.tensor([0]), face.keypoints[None], name, size)
            ref = graphs.umeyama_similarity(face.keypoints.numpy(), template_points(name, size))
            np.testing.assert_allclose(m[0].numpy(), ref, rtol=1e-4, atol=1e-3)


# --- SCRFD -------------------------------------------------------------------------------------------------------
def _numpy_scrfd_decode(outs: list[np.ndarray], size: int, thresh: float = 0.5, iou: float = 0.4):
    """insightface SCRFD.forward + NMS in NumPy/OpenCV."""
    scores_all, boxes_all, kps_all = [], [], []
    for i, s in enumerate((8, 16, 32)):
        n = size // s
        grid = np.mgrid[:n, :n]  # insightface: np.stack(np.mgrid[:h, :w][::-1], axis=-1)
        centres = np.stack([grid[1], grid[0]], axis=-1).astype(np.float32)
        centres = np.stack([(centres * s).reshape(-1, 2)] * 2, axis=1).reshape(-1, 2)
        sc = outs[i].reshape(-1)
        d = outs[i + 3].reshape(-1, 4) * s
        k = outs[i + 6].reshape(-1, 10) * s
        boxes = np.hstack([centres - d[:, :2], centres + d[:, 2:]])
        kps = np.stack([centres[:, 0:1] + k[:, 0::2], centres[:, 1:2] + k[:, 1::2]], axis=-1)
        keep = sc > thresh
        scores_all.append(sc[keep])
        boxes_all.append(boxes[keep])
        kps_all.append(kps[keep])
    sc, bx, kp = np.concatenate(scores_all), np.concatenate(boxes_all), np.concatenate(kps_all)
    xywh = [[b[0], b[1], b[2] - b[0], b[3] - b[1]] for b in bx]
    idx = np.array(cv2.dnn.NMSBoxes(xywh, sc.tolist(), thresh, iou)).reshape(-1)
    idx = idx[np.argsort(-sc[idx], kind="stable")]
    return sc[idx], bx[idx], kp[idx]


def test_scrfd_preprocessing_matches_insightface(obama) -> None:
    rgb, t, _ = obama
    canvas, scale = letterbox_top_left(t * 255, 640)
    h, w = rgb.shape[:2]
    nh, nw = 640, int(640 / (h / w))  # insightface: portrait → height 640
    ref = np.zeros((640, 640, 3), np.float32)
    ref[:nh, :nw] = cv2.resize(rgb, (nw, nh)).astype(np.float32)
    assert scale == pytest.approx(nh / h)
    got = canvas[0].permute(1, 2, 0).numpy()
    assert np.abs(got - ref).mean() < 0.6 and np.abs(got - ref).max() < 8  # cv2 rounds to uint8; torch does not


def test_scrfd_decoding_matches_numpy(obama, tmp_path: Path) -> None:
    rgb, _, _ = obama
    net = ScrfdNet(graphs.build_scrfd(tmp_path / "scrfd.onnx"), "cpu")
    side = min(rgb.shape[:2])  # a square face photo fills the canvas: no flat letterbox area (score ties)
    canvas = cv2.resize(rgb[:side, :side], (640, 640)).astype(np.float32)
    x = np.ascontiguousarray(((canvas - 127.5) / 128).transpose(2, 0, 1)[None], dtype=np.float32)
    outs = graphs.scrfd_numpy_outputs(x)
    # A random graph: keep the top ~1 % of candidates so NMS has work to do but stays small; the threshold sits
    # halfway between two distinct scores.
    distinct = np.unique(np.concatenate([o.reshape(-1) for o in outs[:3]]))
    k = int(len(distinct) * 0.99)
    thresh = float(distinct[k] + distinct[k + 1]) / 2
    ref_scores, ref_boxes, ref_kps = _numpy_scrfd_decode(outs, 640, thresh=thresh)
    ort_outs = net.model.run({"input.1": torch.from_numpy(x)})
    for got, want in zip(ort_outs, outs, strict=True):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-4, atol=1e-5)
    scores, boxes, kps = decode_scrfd([o[0] for o in ort_outs], 640, 640)
    keep = scores > thresh
    idx = nms(boxes[keep], scores[keep], 0.4)
    assert len(idx) == len(ref_scores) > 3
    np.testing.assert_allclose(scores[keep][idx].numpy(), ref_scores, atol=1e-5)
    np.testing.assert_allclose(boxes[keep][idx].numpy(), ref_boxes, atol=1e-3)
    np.testing.assert_allclose(kps[keep][idx].numpy(), ref_kps, atol=1e-3)


def test_load_detector_by_name(tmp_path: Path) -> None:
    cpu = torch.device("cpu")
    settings = SwapSettings(detector="scrfd", model_dir=str(tmp_path))
    assert isinstance(make_detector(SwapSettings(detector="retinaface"), cpu, torch.float32), RetinaFaceDetector)
    with pytest.raises(ModelMissing, match="scrfd_2.5g.onnx"):
        make_detector(settings, cpu, torch.float32)
    graphs.build_scrfd(tmp_path / "scrfd_2.5g.onnx")
    det = make_detector(settings, cpu, torch.float32)
    assert isinstance(det, ScrfdDetector)
    faces = det.detect(torch.rand(2, 3, 300, 400))
    assert len(faces) == 2 and all(f.keypoints.shape == (5, 2) for fs in faces for f in fs)


# --- face parser ---------------------------------------------------------------------------------------------------
def test_face_parser_mask_matches_numpy(obama, tmp_path: Path) -> None:
    rgb, t, face = obama
    parser = FaceParser(graphs.build_parser(tmp_path / "p.onnx"))
    crops, _ = align_crops(t, torch.tensor([0]), face.keypoints[None], "arcface_128", 256)
    got = parser.face_mask(crops)[0, 0].numpy()
    crop = crops[0].permute(1, 2, 0).numpy()
    big = cv2.resize(crop, (512, 512), interpolation=cv2.INTER_LINEAR)
    x = (big - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    logits = np.zeros((19, 512, 512))
    logits[[2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 18]] = -10
    logits[1], logits[17] = x[..., 1], x[..., 0]
    keep = np.isin(logits.argmax(0), FACE_CLASSES).astype(np.float32)
    ref = cv2.resize(keep, (256, 256), interpolation=cv2.INTER_LINEAR)
    assert 0.05 < ref.mean() < 0.95  # the reference mask is not trivial on this face
    assert np.abs(got - ref).mean() < 0.02


# --- registry, store, files ------------------------------------------------------------------------------------------
def test_registry_entries_are_complete() -> None:
    names = plugin_names()
    for required in ("inswapper_128", "simswap_256", "simswap_512", "arcface", "scrfd", "retinaface_r50",
                     "gfpgan_1.4", "codeformer", "gpen_bfr_256", "gpen_bfr_512", "bisenet_resnet_34"):
        assert required in names
    for name in names:
        spec = get_spec(name)
        assert spec.licence and spec.source and spec.file.endswith(".onnx")
        assert spec.url is None or spec.url.startswith(FACEFUSION_ASSETS + "/models-")
        assert spec.contract.template is None or spec.contract.template in TEMPLATES
        # Never an invented hash: either a real pinned sha256 or explicitly unpinned.
        assert is_pinned(spec) or (spec.sha256 == "" and spec.extra.get("sha256_status") == "unpinned")
    for nc in ("inswapper_128", "simswap_256", "codeformer", "gpen_bfr_512", "arcface", "scrfd"):
        assert get_spec(nc).non_commercial
    assert not get_spec("gfpgan_1.4").non_commercial
    assert is_pinned(get_spec("retinaface"))


def test_model_dir_precedence(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv(store.ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert store.model_dir() == tmp_path / "xdg" / "faceweave" / "models"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    assert store.model_dir() == Path.home() / ".cache" / "faceweave" / "models"
    monkeypatch.setenv(store.ENV_VAR, str(tmp_path / "env"))
    assert store.model_dir() == tmp_path / "env"
    assert store.model_dir(tmp_path / "explicit") == tmp_path / "explicit"
    assert not (tmp_path / "env").exists()  # resolving never creates folders


def test_resolve_model_file_checks_pinned_hash(tmp_path: Path) -> None:
    payload = b"not really an onnx file"
    spec = replace(get_spec("gfpgan_1.4"), sha256=hashlib.sha256(payload).hexdigest(), extra={})
    with pytest.raises(ModelMissing) as info:
        resolve_model_file(spec, tmp_path)
    msg = info.value.one_line()
    assert all(s in msg for s in ("gfpgan_1.4.onnx", spec.sha256, str(spec.url), str(tmp_path)))
    (tmp_path / "gfpgan_1.4.onnx").write_bytes(payload)
    assert resolve_model_file(spec, tmp_path) == tmp_path / "gfpgan_1.4.onnx"
    (tmp_path / "gfpgan_1.4.onnx").write_bytes(payload + b"!")
    with pytest.raises(ModelIntegrityError, match="expected"):
        resolve_model_file(spec, tmp_path)
