"""GFPGAN / GPEN / CodeFormer contracts (FFHQ-512 or arcface-128 alignment, [-1,1] I/O, fidelity weight, feathered
paste-back, blend) against a NumPy/OpenCV reference, on a real face."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from faceweave.analysis.onnx_detect import RetinaFaceDetector
from faceweave.enhance import load_enhancer
from faceweave.errors import ModelMissing
from faceweave.models.arcface import align_crops
from faceweave.models.onnx_zoo import template_points
from faceweave.settings import SwapSettings

_path = Path(__file__).parents[1] / "models" / "test_onnx_graphs.py"
_spec = importlib.util.spec_from_file_location("faceweave_test_onnx_graphs", _path)
assert _spec is not None and _spec.loader is not None
graphs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(graphs)


@pytest.fixture(scope="module")
def obama(media):
    rgb = media.rgb("obama.jpg")
    t = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255
    return rgb.astype(np.float32) / 255, t, RetinaFaceDetector("cpu").detect(t)[0][0]


@pytest.fixture(autouse=True)
def _quiet(caplog) -> None:
    caplog.set_level(logging.ERROR)


@pytest.mark.parametrize(("name", "file", "size", "template"), [
    ("gfpgan_1.4", "gfpgan_1.4.onnx", 512, "ffhq_512"),
    ("gpen_bfr_256", "gpen_bfr_256.onnx", 256, "arcface_128"),
])
def test_restorer_matches_numpy_reference(obama, tmp_path: Path, device, dtype, name, file, size, template) -> None:
    img, t, face = obama
    graphs.build_restorer(tmp_path / file, size)  # output = -input: the restored crop is the colour negative
    settings = SwapSettings.build(enhancer=name, model_dir=str(tmp_path), enhancer_blend=0.7)
    enhancer = load_enhancer(name, device=device, dtype=dtype, settings=settings)
    frames = t.to(device, dtype)
    out = enhancer.enhance(frames, [[face]])[0].float().permute(1, 2, 0).cpu().numpy()

    crop, m = graphs.norm_crop_numpy(img, face.keypoints.numpy(), template_points(template, size), size,
                                     border=cv2.BORDER_REPLICATE)
    restored = (np.clip(-(crop * 2 - 1), -1, 1) + 1) / 2
    mask = enhancer.crop_mask(1)[0, 0].cpu().numpy() * 0.7  # type: ignore[attr-defined]
    h, w = img.shape[:2]
    inv = cv2.invertAffineTransform(m)
    pasted = cv2.warpAffine(restored, inv, (w, h), flags=cv2.INTER_LINEAR)
    alpha = cv2.warpAffine(mask, inv, (w, h), flags=cv2.INTER_LINEAR)[..., None]
    ref = alpha * pasted + (1 - alpha) * img
    diff = np.abs(out - ref)
    tol = 1.0 if dtype is torch.float32 else 2.0
    assert diff.mean() < 2e-3 * tol and np.percentile(diff, 99.9) < 0.05 * tol
    assert np.abs(out - img)[alpha[..., 0] > 0.6].mean() > 0.1  # the face really changed
    # Untouched outside the mask, bit for bit. One pixel of margin: on the support's edge OpenCV's bilinear warp can
    # give exactly 0 where ours gives ~1e-9 (measured: one pixel changed by 1.8e-7 with the refined RetinaFace points).
    # Compared with the frame as the enhancer got it: in float16 the input itself is rounded (≤ 2.4e-4 on [0, 1]).
    outside = cv2.dilate((alpha[..., 0] > 0).astype(np.uint8), np.ones((3, 3), np.uint8)) == 0
    given = frames[0].float().permute(1, 2, 0).cpu().numpy()
    assert outside.mean() > 0.5 and np.array_equal(out[outside], given[outside])


def test_codeformer_fidelity_weight(obama, tmp_path: Path) -> None:
    _, t, face = obama
    graphs.build_restorer(tmp_path / "codeformer.onnx", 512, with_weight=True)  # output = input · (1 − 2w)
    settings = SwapSettings.build(enhancer="codeformer", model_dir=str(tmp_path), codeformer_fidelity=0.25)
    enhancer = load_enhancer("codeformer", device=torch.device("cpu"), dtype=torch.float32, settings=settings)
    crops, _ = align_crops(t, torch.tensor([0]), face.keypoints[None], "ffhq_512", 512, padding="border")
    got = enhancer.restore_crops(crops)  # type: ignore[attr-defined]
    ref = ((crops * 2 - 1) * 0.5 + 1) / 2
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)


def test_missing_enhancer_is_model_missing(tmp_path: Path) -> None:
    settings = SwapSettings.build(enhancer="gfpgan_1.4", model_dir=str(tmp_path))
    with pytest.raises(ModelMissing, match="gfpgan_1.4.onnx"):
        load_enhancer("gfpgan_1.4", device=torch.device("cpu"), dtype=torch.float32, settings=settings)
