"""ONNX swapper contracts (inswapper_128, simswap_256, pixel boost) against NumPy/OpenCV references of the
published pre/post-processing, on real faces (detected by the embedded RetinaFace)."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")

from faceweave.analysis.onnx_detect import RetinaFaceDetector  # noqa: E402
from faceweave.errors import ModelMissing  # noqa: E402
from faceweave.models.arcface import align_crops  # noqa: E402
from faceweave.models.onnx_zoo import template_points  # noqa: E402
from faceweave.settings import SwapSettings  # noqa: E402
from faceweave.swapper.onnx import explode_pixel_boost, implode_pixel_boost, load_swapper  # noqa: E402


def _load_graphs():  # the shared ONNX test-graph builders live in tests/models/test_onnx_graphs.py
    path = Path(__file__).parents[1] / "models" / "test_onnx_graphs.py"
    spec = importlib.util.spec_from_file_location("faceweave_test_onnx_graphs", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


graphs = _load_graphs()

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406])
IMAGENET_STD = np.array([0.229, 0.224, 0.225])


@pytest.fixture(scope="module")
def faces(media):
    """Real source/target images (float HxWx3 RGB) and their detected 5-point keypoints."""
    det = RetinaFaceDetector("cpu")
    out = {}
    for name in ("grace_hopper.jpg", "obama.jpg"):
        rgb = media.rgb(name)
        t = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255
        out[name] = (rgb.astype(np.float32) / 255, t, det.detect(t)[0][0])
    return out


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    graphs.build_swapper(tmp_path / "inswapper_128.onnx")
    graphs.build_arcface(tmp_path / "arcface_w600k_r50.onnx")
    return tmp_path


def _reference_embedding(image: np.ndarray, keypoints: np.ndarray) -> np.ndarray:
    crop, _ = graphs.norm_crop_numpy(image, keypoints, template_points("arcface_112_v2", 112), 112)
    x = ((crop * 255.0 - 127.5) / 127.5).transpose(2, 0, 1)[None].astype(np.float32)
    return graphs.arcface_numpy(x)[0]


def test_missing_swapper_names_file_hash_url_folder(tmp_path: Path) -> None:
    settings = SwapSettings.build(swapper="inswapper_128", model_dir=str(tmp_path))
    with pytest.raises(ModelMissing) as info:
        load_swapper("inswapper_128", device=torch.device("cpu"), dtype=torch.float32, settings=settings)
    text = info.value.one_line()
    assert "inswapper_128.onnx" in text and str(tmp_path) in text and "sha256" in text
    assert "https://github.com/facefusion/facefusion-assets/releases/download/models-3.0.0/inswapper_128.onnx" in text


def test_missing_recogniser_is_model_missing(tmp_path: Path) -> None:
    graphs.build_swapper(tmp_path / "inswapper_128.onnx")
    settings = SwapSettings.build(swapper="inswapper_128", model_dir=str(tmp_path))
    with pytest.raises(ModelMissing, match="arcface_w600k_r50.onnx"):
        load_swapper("inswapper_128", device=torch.device("cpu"), dtype=torch.float32, settings=settings)


def test_inswapper_matches_numpy_reference(faces, model_dir: Path, device, dtype, caplog) -> None:
    caplog.set_level(logging.ERROR)
    settings = SwapSettings.build(swapper="inswapper_128", model_dir=str(model_dir))
    swapper = load_swapper("inswapper_128", device=device, dtype=dtype, settings=settings)
    src_img, src_t, src_face = faces["grace_hopper.jpg"]
    tgt_img, tgt_t, tgt_face = faces["obama.jpg"]

    # Source latent: l2norm(normed_embedding @ emap), emap = the graph's last initializer (insightface INSwapper).
    latent = swapper.prepare_source(src_t.to(device, dtype), src_face)
    emb = _reference_embedding(src_img, src_face.keypoints.numpy())
    emap = graphs.swapper_params()["emap"]
    ref_latent = (emb / np.linalg.norm(emb)) @ emap
    ref_latent /= np.linalg.norm(ref_latent)
    assert latent.shape == (512,)
    fp32 = dtype is torch.float32
    np.testing.assert_allclose(latent.float().cpu().numpy(), ref_latent, atol=3e-3 if fp32 else 1e-2)
    assert float(np.dot(latent.float().cpu().numpy(), ref_latent)) > (0.9999 if fp32 else 0.999)

    frames = tgt_t.to(device, dtype)
    out = swapper.swap(frames, [(0, tgt_face, latent)])
    assert out.shape == frames.shape and out.dtype == frames.dtype

    # NumPy/OpenCV reference: arcface template + 8 px at 128 (insightface estimate_norm), RGB/255, model,
    # then paste back: warp crop and mask with the inverse similarity, alpha-blend.
    kps = tgt_face.keypoints.numpy()
    crop, m = graphs.norm_crop_numpy(tgt_img, kps, template_points("arcface_128", 128), 128)
    np.testing.assert_allclose(template_points("arcface_128", 128)[0], [38.2946 + 8, 51.6963], atol=1e-6)
    y = graphs.swapper_numpy(crop.transpose(2, 0, 1)[None], ref_latent[None].astype(np.float32))[0]
    mask = swapper.crop_mask(torch.from_numpy(crop.transpose(2, 0, 1))[None])[0, 0].numpy()
    h, w = tgt_img.shape[:2]
    inv = cv2.invertAffineTransform(m)
    pasted = cv2.warpAffine(y.transpose(1, 2, 0), inv, (w, h), flags=cv2.INTER_LINEAR)
    alpha = cv2.warpAffine(mask, inv, (w, h), flags=cv2.INTER_LINEAR)[..., None]
    ref = alpha * pasted + (1 - alpha) * tgt_img
    got = out[0].float().permute(1, 2, 0).cpu().numpy()
    diff = np.abs(got - ref)
    tol = 1.0 if dtype is torch.float32 else 2.0
    assert diff.mean() < 2e-3 * tol, diff.mean()
    assert np.percentile(diff, 99.9) < 0.03 * tol
    # The swap really changed the face, and far from it nothing moved (bit-identical).
    assert np.abs(got - tgt_img)[alpha[..., 0] > 0.9].mean() > 0.05
    # one pixel of margin: where OpenCV's warped mask is exactly 0 at its edge ours can be 1e-7 (fp16 on CUDA moved
    # such a pixel once the keypoints changed)
    far = cv2.erode((alpha[..., 0] == 0).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    assert torch.equal(out[0][:, torch.from_numpy(far)], frames[0][:, torch.from_numpy(far)])


def test_batch_of_frames_equals_one_by_one(faces, model_dir: Path, caplog) -> None:
    caplog.set_level(logging.ERROR)
    settings = SwapSettings.build(swapper="inswapper_128", model_dir=str(model_dir))
    swapper = load_swapper("inswapper_128", device=torch.device("cpu"), dtype=torch.float32, settings=settings)
    _, src_t, src_face = faces["grace_hopper.jpg"]
    _, tgt_t, tgt_face = faces["obama.jpg"]
    latent = swapper.prepare_source(src_t, src_face)
    frames = torch.cat([tgt_t, tgt_t * 0.8, tgt_t * 0.9])
    batched = swapper.swap(frames, [(0, tgt_face, latent), (2, tgt_face, latent)])
    single0 = swapper.swap(frames[:1], [(0, tgt_face, latent)])
    single2 = swapper.swap(frames[2:], [(0, tgt_face, latent)])
    torch.testing.assert_close(batched[0], single0[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(batched[2], single2[0], atol=1e-5, rtol=0)
    assert torch.equal(batched[1], frames[1])


def test_pixel_boost_is_polyphase_of_the_big_crop(faces, model_dir: Path, caplog) -> None:
    caplog.set_level(logging.ERROR)
    settings = SwapSettings.build(swapper="inswapper_128", model_dir=str(model_dir), pixel_boost=2)
    swapper = load_swapper("inswapper_128", device=torch.device("cpu"), dtype=torch.float32, settings=settings)
    assert swapper.crop_size == 256
    tgt_img, tgt_t, tgt_face = faces["obama.jpg"]
    latent = torch.from_numpy(np.random.default_rng(0).normal(size=512).astype(np.float32))
    latent = latent / latent.norm()
    crops, _ = align_crops(tgt_t, torch.tensor([0]), tgt_face.keypoints[None], "arcface_128", 256)
    got = swapper.swap_crops(crops, latent[None])[0].permute(1, 2, 0).numpy()

    big, _ = graphs.norm_crop_numpy(tgt_img, tgt_face.keypoints.numpy(), template_points("arcface_128", 256), 256)
    ref = np.zeros_like(big)
    for i in range(2):
        for j in range(2):
            tile = big[i::2, j::2].transpose(2, 0, 1)[None]
            ref[i::2, j::2] = graphs.swapper_numpy(tile, latent.numpy()[None])[0].transpose(1, 2, 0)
    assert np.abs(got - ref).mean() < 2e-3
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    assert torch.equal(explode_pixel_boost(implode_pixel_boost(x, 4), 4), x)
    assert torch.equal(implode_pixel_boost(x, 2)[1], x[0, :, 0::2, 1::2])


@pytest.mark.parametrize(("name", "file", "size", "imagenet"), [
    ("simswap_256", "simswap_256.onnx", 256, True),
    ("simswap_512", "simswap_unofficial_512.onnx", 512, False),
])
def test_simswap_contract(faces, tmp_path: Path, caplog, name: str, file: str, size: int, imagenet: bool) -> None:
    caplog.set_level(logging.ERROR)
    graphs.build_swapper(tmp_path / file, size=size)
    graphs.build_arcface(tmp_path / "arcface_w600k_r50.onnx")
    graphs.build_converter(tmp_path / "crossface_simswap.onnx")
    settings = SwapSettings.build(swapper=name, model_dir=str(tmp_path))
    swapper = load_swapper(name, device=torch.device("cpu"), dtype=torch.float32, settings=settings)
    src_img, src_t, src_face = faces["grace_hopper.jpg"]
    tgt_img, tgt_t, tgt_face = faces["obama.jpg"]

    latent = swapper.prepare_source(src_t, src_face).numpy()
    emb = _reference_embedding(src_img, src_face.keypoints.numpy())
    ref_latent = emb @ graphs.converter_params()
    ref_latent /= np.linalg.norm(ref_latent)
    np.testing.assert_allclose(latent, ref_latent, atol=3e-3)

    crops, _ = align_crops(tgt_t, torch.tensor([0]), tgt_face.keypoints[None], "arcface_112_v1", size)
    got = swapper.swap_crops(crops, torch.from_numpy(latent)[None])[0].permute(1, 2, 0).numpy()
    crop, _ = graphs.norm_crop_numpy(tgt_img, tgt_face.keypoints.numpy(), template_points("arcface_112_v1", size),
                                     size)
    x = ((crop - IMAGENET_MEAN) / IMAGENET_STD if imagenet else crop).astype(np.float32).transpose(2, 0, 1)[None]
    ref = graphs.swapper_numpy(x, latent[None])[0].transpose(1, 2, 0)
    assert np.abs(got - ref).mean() < 4e-3


# --- end to end: faceweave.api.swap and the `faceweave swap` CLI ------------------------------------------------
def _run_cli(monkeypatch, capsys, args: list[str]) -> tuple[int, str]:
    from faceweave.cli import main

    monkeypatch.setattr("sys.argv", ["faceweave", *args])
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


def test_cli_swap_without_model_file_exits_with_model_missing(media, tmp_path: Path, monkeypatch, capsys) -> None:
    from faceweave.errors import ModelMissing

    args = ["swap", "-s", str(media.path("grace_hopper.jpg")), "-t", str(media.path("obama.jpg")),
            "-o", str(tmp_path / "out.png"), "--swapper", "inswapper_128", "--model-dir", str(tmp_path),
            "--device", "cpu"]
    code, err = _run_cli(monkeypatch, capsys, args)
    text = " ".join(err.split())  # rich wraps long lines
    assert code == ModelMissing.exit_code, err
    for expected in ("inswapper_128.onnx", "sha256", str(tmp_path), "facefusion-assets/releases/download"):
        assert expected in text, (expected, text)
    assert not (tmp_path / "out.png").exists()


def test_end_to_end_image_and_video_with_test_built_model(media, model_dir: Path, tmp_path: Path, monkeypatch,
                                                          capsys, caplog) -> None:
    import av

    from faceweave import api
    from faceweave.media.image import read_image

    caplog.set_level(logging.ERROR)
    settings = SwapSettings.build(swapper="inswapper_128", model_dir=str(model_dir), device="cpu")
    result = api.swap(media.path("grace_hopper.jpg"), media.path("obama.jpg"), tmp_path / "out.png", settings)
    assert result.kind == "image" and result.faces_swapped == 1
    out = read_image(tmp_path / "out.png").rgb.astype(np.float32)
    target = media.rgb("obama.jpg").astype(np.float32)
    assert out.shape == target.shape
    changed = np.abs(out - target).max(axis=2) > 8
    assert 0.01 < changed.mean() < 0.5  # the face region changed, the rest of the photo did not

    settings = SwapSettings.build(swapper="inswapper_128", model_dir=str(model_dir), device="cpu", trim_end="6f")
    result = api.swap(media.path("grace_hopper.jpg"), media.path("carphone_pristine.mp4"), tmp_path / "out.mp4",
                      settings)
    assert result.kind == "video" and result.frames == 6 and result.faces_swapped >= 5
    with av.open(str(tmp_path / "out.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == 6

    code, err = _run_cli(monkeypatch, capsys, [
        "swap", "-s", str(media.path("grace_hopper.jpg")), "-t", str(media.path("astronaut.png")),
        "-o", str(tmp_path / "cli.png"), "--swapper", "inswapper_128", "--model-dir", str(model_dir),
        "--device", "cpu"])
    assert code == 0, err
    assert (tmp_path / "cli.png").is_file()


def test_occlusion_mask_keeps_non_face_pixels(faces, model_dir: Path, caplog) -> None:
    """With a face parser, the paste mask is box × face-region: where the parser sees no face (an occluder),
    the target's pixels stay."""
    from faceweave.swapper.onnx import box_mask

    caplog.set_level(logging.ERROR)
    graphs.build_parser(model_dir / "bisenet_resnet_34.onnx")
    settings = SwapSettings.build(swapper="inswapper_128", model_dir=str(model_dir),
                                  occlusion_mask="bisenet_resnet_34")
    swapper = load_swapper("inswapper_128", device=torch.device("cpu"), dtype=torch.float32, settings=settings)
    assert swapper.parser is not None
    _, tgt_t, tgt_face = faces["obama.jpg"]
    crops, _ = align_crops(tgt_t, torch.tensor([0]), tgt_face.keypoints[None], "arcface_128", 128)
    mask = swapper.crop_mask(crops)
    region = swapper.parser.face_mask(crops)
    assert 0.05 < float(region.mean()) < 0.95
    box = box_mask(1, 128, border_px=round(128 * swapper.mask_border), sigma_px=128 * swapper.mask_feather / 2,
                   device=crops.device)
    torch.testing.assert_close(mask, box * region)
    assert float(mask[region == 0].abs().max()) == 0.0
