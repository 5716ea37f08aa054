"""``recogniser="arcface"``: the engine's identity step through the ArcFace plug-in contract.

The real w600k_r50 weights cannot be downloaded here, so the graph is the test-built one of the same signature
(``input.1 (N,3,112,112)`` → ``(N,512)``) from ``test_onnx_graphs.py``; what is checked is faceweave's side of the
contract — alignment to ``arcface_112_v2``, normalisation, unit-length embeddings, batching over frames — and that
selection, thresholds and errors follow the chosen recogniser.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")

from faceweave import api  # noqa: E402
from faceweave.analysis.face import Face  # noqa: E402
from faceweave.analysis.identity import ARCFACE_SAME_PERSON, DLIB_SAME_PERSON, same_person_distance  # noqa: E402
from faceweave.analysis.select import select_faces  # noqa: E402
from faceweave.errors import InvalidOption, ModelMissing, NoMatchingFace  # noqa: E402
from faceweave.media.image import read_image, write_image  # noqa: E402
from faceweave.models.onnx_zoo import template_points  # noqa: E402
from faceweave.pipeline.engine import SwapEngine  # noqa: E402
from faceweave.settings import SwapSettings  # noqa: E402


def _load_graphs():  # the shared ONNX test-graph builders live in tests/models/test_onnx_graphs.py
    path = Path(__file__).parent / "test_onnx_graphs.py"
    spec = importlib.util.spec_from_file_location("faceweave_test_onnx_graphs_arcface", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


graphs = _load_graphs()


@pytest.fixture(scope="module")
def composite_two_people(media, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """astronaut (left) | obama (right) on one 1024×512 canvas (PNG) and the split column."""
    right = media.rgb("obama.jpg")
    right = cv2.resize(right, (round(right.shape[1] * 512 / right.shape[0]), 512), interpolation=cv2.INTER_AREA)
    left = media.rgb("astronaut.png")
    path = tmp_path_factory.mktemp("arcface") / "two_people.png"
    write_image(path, np.concatenate([left, right], axis=1))
    return path, left.shape[1]


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "models"
    folder.mkdir()
    graphs.build_arcface(folder / "arcface_w600k_r50.onnx")
    return folder


def test_engine_embeddings_follow_the_arcface_contract(media, model_dir: Path) -> None:
    engine = SwapEngine(SwapSettings(device="cpu", recogniser="arcface", model_dir=str(model_dir)))
    images = [media.rgb("grace_hopper.jpg"), media.rgb("obama.jpg")]
    frames = [engine.to_tensor(rgb) for rgb in images]
    faces = [engine.analyze(t)[0][:1] for t in frames]
    assert all(faces)
    for rgb, t, row in zip(images, frames, faces, strict=True):
        got = engine.identify(t, [row])[0][0].embedding
        assert got is not None and got.shape == (512,)
        # NumPy reference of the published contract: norm_crop to arcface_112_v2, (x − 127.5)/127.5, l2-normalise.
        crop, _ = graphs.norm_crop_numpy(rgb.astype(np.float32) / 255, row[0].keypoints.double().numpy(),
                                         template_points("arcface_112_v2", 112), 112)
        x = ((crop * 255.0 - 127.5) / 127.5).transpose(2, 0, 1)[None].astype(np.float32)
        ref = graphs.arcface_numpy(x)[0]
        ref /= np.linalg.norm(ref)
        assert float(np.linalg.norm(got.numpy() - ref)) < 0.02
        assert abs(float(got.norm()) - 1.0) < 1e-5


def test_reference_selection_uses_arcface_embeddings(composite_two_people, media, model_dir: Path,
                                                     tmp_path: Path) -> None:
    path, split = composite_two_people
    canvas = read_image(path).rgb
    reference = tmp_path / "right_person.png"
    write_image(reference, canvas[:, split:])  # the same pixels as the right face: distance ~0 under any recogniser
    # watermark=False: the invisible mark touches every pixel by design; here "untouched" must mean byte-identical
    settings = SwapSettings(device="cpu", selector="reference", recogniser="arcface", model_dir=str(model_dir),
                            reference_threshold=0.05, watermark=False)
    out = tmp_path / "out.png"
    result = api.swap(media.path("grace_hopper.jpg"), path, out, settings, reference=reference)
    assert result.faces_swapped == 1
    after = read_image(out).rgb
    assert np.array_equal(after[:, :split], canvas[:, :split]), "the other person must stay byte-identical"
    assert (np.abs(after[:, split:].astype(int) - canvas[:, split:].astype(int)).max(2) > 0).sum() > 2000


def test_missing_arcface_file_is_model_missing(media, tmp_path: Path) -> None:
    settings = SwapSettings(device="cpu", selector="reference", recogniser="arcface", model_dir=str(tmp_path))
    with pytest.raises(ModelMissing) as info:
        api.swap(media.path("grace_hopper.jpg"), media.path("obama.jpg"), tmp_path / "x.png", settings,
                 reference=media.path("obama2.jpg"))
    assert "arcface_w600k_r50.onnx" in info.value.one_line() and str(tmp_path) in info.value.one_line()
    assert not (tmp_path / "x.png").exists()


def _face(x0: float, embedding: torch.Tensor) -> Face:
    kp = torch.tensor([[x0 + 30, 40], [x0 + 70, 40], [x0 + 50, 60], [x0 + 35, 80], [x0 + 65, 80]], dtype=torch.float32)
    return Face(box=torch.tensor([x0, 0.0, x0 + 100, 120]), score=0.9, keypoints=kp, roll=0.0, embedding=embedding)


def test_default_threshold_is_the_recognisers() -> None:
    ref = torch.tensor([1.0, 0.0])
    at = torch.tensor([float(np.cos(1.0)), float(np.sin(1.0))])  # unit vector at distance 2·sin(0.5) ≈ 0.959
    faces = [_face(0, at)]
    src = [_face(0, ref)]
    # 0.959 is the same person for ArcFace (limit 1.095) but not for dlib (0.6).
    assert len(select_faces(faces, SwapSettings(selector="reference", recogniser="arcface"), src, [ref])) == 1
    with pytest.raises(NoMatchingFace, match=str(DLIB_SAME_PERSON)):
        select_faces(faces, SwapSettings(selector="reference"), src, [ref])
    assert same_person_distance("arcface") == ARCFACE_SAME_PERSON
    with pytest.raises(InvalidOption):
        same_person_distance("vgg")
