"""BlazeFace (short/full range) in PyTorch: anchors, parity with the original tflite, decoding, devices."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from faceweave.errors import InvalidOption, ShapeError
from faceweave.models.blazeface import ANCHOR_OPTIONS, SPECS, BlazeFace, generate_anchors, load_blazeface
from faceweave.models.registry import EMBEDDED_DIR, get_spec, sha256_file

FACES = ("astronaut.png", "grace_hopper.jpg", "obama.jpg")


def letterbox(rgb: np.ndarray, size: int) -> np.ndarray:
    """MediaPipe-style letterbox of an HxWx3 uint8 image to (size, size, 3) float32 in [-1, 1] (black padding)."""
    h, w = rgb.shape[:2]
    scale = size / max(h, w)
    nh, nw = round(h * scale), round(w * scale)
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255
    x = F.interpolate(x, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
    top, left = (size - nh) // 2, (size - nw) // 2
    x = F.pad(x, (left, size - nw - left, top, size - nh - top))
    return (x[0].permute(1, 2, 0).numpy() * 2 - 1).astype(np.float32)


@pytest.fixture(scope="module")
def nets() -> dict[str, BlazeFace]:
    return {v: load_blazeface(v) for v in ("short", "full")}


def test_anchor_counts_and_grid() -> None:
    short, full = generate_anchors(ANCHOR_OPTIONS["short"]), generate_anchors(ANCHOR_OPTIONS["full"])
    assert short.shape == (896, 2) and full.shape == (2304, 2)
    # 16x16 grid with 2 anchors per cell, then 8x8 with 6 per cell (MediaPipe SSD options).
    assert torch.allclose(short[0], torch.tensor([0.5 / 16, 0.5 / 16])) and torch.equal(short[0], short[1])
    assert torch.allclose(short[512], torch.tensor([0.5 / 8, 0.5 / 8])) and torch.equal(short[512], short[517])
    assert torch.allclose(full[-1], torch.tensor([47.5 / 48, 47.5 / 48]))


def test_registry_specs_verify() -> None:
    for variant, spec in SPECS.items():
        assert get_spec(spec.name) is spec and spec.licence == "Apache-2.0"
        assert spec.require(verify=True).is_file(), variant
        assert sha256_file(EMBEDDED_DIR / str(spec.derived_from)) == spec.extra["tflite_sha256"]


@pytest.mark.parametrize("variant", ["short", "full"])
def test_parity_with_tflite(variant: str, nets: dict[str, BlazeFace], media: Any) -> None:
    litert = pytest.importorskip("ai_edge_litert.interpreter", reason="ai-edge-litert (dev extra) is not installed")
    net = nets[variant]
    size = net.input_size
    inputs = np.stack([letterbox(media.rgb(name), size) for name in FACES])
    interpreter = litert.Interpreter(model_path=str(EMBEDDED_DIR / str(SPECS[variant].derived_from)))
    interpreter.allocate_tensors()
    refs: list[list[np.ndarray]] = []
    for x in inputs:
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x[None])
        interpreter.invoke()
        refs.append([interpreter.get_tensor(o["index"])[0] for o in interpreter.get_output_details()])
    with torch.inference_mode():
        outs = net(torch.from_numpy(inputs).permute(0, 3, 1, 2))  # batch of 3 real faces at once
    for k, out in enumerate(outs):
        ref = np.stack([r[k] for r in refs])
        assert out.shape == ref.shape
        assert np.abs(out.numpy() - ref).max() <= 1e-3, f"{variant} output {k}"
    # The real faces are there: the best anchor is confident.
    _, _, scores = net.decode(*outs)
    assert (scores.amax(dim=1) > 0.75).all()


@pytest.mark.parametrize("variant", ["short", "full"])
def test_decode_keypoints_inside_box(variant: str, nets: dict[str, BlazeFace], media: Any) -> None:
    net = nets[variant]
    x = torch.from_numpy(letterbox(media.rgb("grace_hopper.jpg"), net.input_size)).permute(2, 0, 1)[None]
    with torch.inference_mode():
        boxes, keypoints, scores = net.decode(*net(x))
    best = scores[0].argmax()
    box, kps = boxes[0, best], keypoints[0, best]
    assert (box[2:] > box[:2]).all()
    eyes = kps[:2]
    assert ((eyes >= box[:2]) & (eyes <= box[2:])).all()
    assert eyes[0, 0] < eyes[1, 0]  # keypoint 0 = subject's right eye = image-left in an upright face
    assert kps[3, 1] > kps[2, 1] > eyes[:, 1].mean()  # mouth below nose below eyes


def test_device_dtype(device: torch.device, dtype: torch.dtype, nets: dict[str, BlazeFace], media: Any) -> None:
    x = torch.from_numpy(letterbox(media.rgb("obama.jpg"), 128)).permute(2, 0, 1)[None]
    with torch.inference_mode():
        ref = nets["short"](x)
        net = load_blazeface("short", device, dtype)
        out = net(x.to(device, dtype))
    assert out[0].dtype == dtype and out[0].device.type == device.type
    # regressors are in input pixels (up to ~190); fp16 measured 0.58 on an H100 at the padded GPU batch size
    tol = 1e-4 if dtype == torch.float32 else 1.0
    assert (out[0].float().cpu() - ref[0]).abs().max() <= tol


def test_checks(nets: dict[str, BlazeFace]) -> None:
    with pytest.raises(ShapeError):
        nets["short"](torch.zeros(1, 3, 192, 192))
    with pytest.raises(InvalidOption):
        BlazeFace("back")  # type: ignore[arg-type]
    with pytest.raises(InvalidOption):
        load_blazeface("short", torch.device("cpu"), torch.float16)


def test_conversion_is_reproducible(tmp_path: Path) -> None:
    """scripts/convert_mediapipe.py turns the vendored tflite into exactly the pinned safetensors file."""
    pytest.importorskip("tflite", reason="the tflite package (dev extra) is needed to convert")
    script = Path(__file__).resolve().parents[2] / "scripts" / "convert_mediapipe.py"
    module_spec = importlib.util.spec_from_file_location("convert_mediapipe", script)
    assert module_spec is not None and module_spec.loader is not None
    converter = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(converter)
    spec = SPECS["short"]
    shutil.copy(EMBEDDED_DIR / str(spec.derived_from), tmp_path)
    produced = converter.convert(Path(str(spec.derived_from)).stem, tmp_path)
    assert sha256_file(produced) == spec.sha256
