"""Every stage implementation satisfies its protocol in :mod:`faceweave.stages` (at run time and for mypy), and an
object missing a stage's method is rejected by both."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest
import torch

from faceweave.analysis.detect import FaceDetector
from faceweave.analysis.face import Face
from faceweave.analysis.landmarks import FaceMesh
from faceweave.analysis.onnx_detect import RetinaFaceDetector, ScrfdDetector
from faceweave.enhance.detail import DetailEnhancer
from faceweave.enhance.onnx import OnnxEnhancer
from faceweave.models.arcface import ArcFaceRecogniser
from faceweave.models.dlib_identity import DlibIdentity
from faceweave.settings import SwapSettings
from faceweave.stages import DescriptorRecogniser, Detector, EmbeddingRecogniser, Enhancer, Landmarker, Swapper
from faceweave.swapper.mesh import MeshSwapOptions, MeshSwapper
from faceweave.swapper.onnx import OnnxSwapper

IMPLEMENTATIONS = [
    (FaceDetector, Detector),
    (RetinaFaceDetector, Detector),
    (ScrfdDetector, Detector),
    (FaceMesh, Landmarker),
    (ArcFaceRecogniser, EmbeddingRecogniser),
    (DlibIdentity, DescriptorRecogniser),
    (MeshSwapper, Swapper),
    (OnnxSwapper, Swapper),
    (DetailEnhancer, Enhancer),
    (OnnxEnhancer, Enhancer),
]


class _NoDetect:
    """Has a stage-looking method under the wrong name."""

    def find(self, frames: torch.Tensor) -> list[list[Face]]:
        return [[] for _ in range(frames.shape[0])]


class _HalfSwapper:
    """Swaps, but cannot prepare a source."""

    def swap(self, frames: torch.Tensor, items: list[tuple[int, Face, torch.Tensor]]) -> torch.Tensor:
        return frames


class _HalfDlib:
    """Box descriptors only (no five-point path)."""

    def descriptors(self, rgb: object, boxes: object) -> object:
        return None


@pytest.mark.parametrize(("cls", "protocol"), IMPLEMENTATIONS, ids=lambda x: getattr(x, "__name__", str(x)))
def test_implementation_is_a_stage(cls: type, protocol: type) -> None:
    assert issubclass(cls, protocol)


def test_built_stage_instances_are_stages() -> None:
    """Instances too (the ones that need no plug-in file), and an enhancer is not mistaken for a detector."""
    assert isinstance(DetailEnhancer(), Enhancer)
    assert not isinstance(DetailEnhancer(), Detector)
    assert isinstance(MeshSwapper(MeshSwapOptions.from_settings(SwapSettings())), Swapper)


@pytest.mark.parametrize(("obj", "protocol"), [(_NoDetect(), Detector), (_HalfSwapper(), Swapper),
                                               (_HalfDlib(), DescriptorRecogniser), (object(), Enhancer),
                                               (object(), Landmarker), (object(), EmbeddingRecogniser)])
def test_missing_method_is_rejected(obj: object, protocol: type) -> None:
    assert not isinstance(obj, protocol)


_CHECKED = '''
from __future__ import annotations

import torch

from faceweave.analysis.detect import FaceDetector
from faceweave.analysis.landmarks import FaceMesh
from faceweave.enhance.detail import DetailEnhancer
from faceweave.enhance.onnx import OnnxEnhancer
from faceweave.models.arcface import ArcFaceRecogniser
from faceweave.models.dlib_identity import DlibIdentity
from faceweave.analysis.onnx_detect import RetinaFaceDetector, ScrfdDetector
from faceweave.stages import DescriptorRecogniser, Detector, EmbeddingRecogniser, Enhancer, Landmarker, Swapper
from faceweave.swapper.mesh import MeshSwapper, SourceTexture
from faceweave.swapper.onnx import OnnxSwapper


def good(a: FaceDetector, b: RetinaFaceDetector, c: ScrfdDetector, d: FaceMesh, e: ArcFaceRecogniser,
         f: DlibIdentity, g: MeshSwapper, h: OnnxSwapper, i: DetailEnhancer, j: OnnxEnhancer) -> None:
    detectors: list[Detector] = [a, b, c]
    landmarker: Landmarker = d
    embedder: EmbeddingRecogniser = e
    descriptor: DescriptorRecogniser = f
    mesh_swapper: Swapper[SourceTexture] = g
    onnx_swapper: Swapper[torch.Tensor] = h
    enhancers: list[Enhancer] = [i, j]


class NoDetect:
    def find(self, frames: torch.Tensor) -> None: ...


def bad(a: NoDetect, b: FaceMesh, c: MeshSwapper, d: DlibIdentity) -> None:
    detector: Detector = a  # BAD: no detect
    not_a_detector: Detector = b  # BAD: a landmarker
    wrong_payload: Swapper[torch.Tensor] = c  # BAD: the mesh swapper's source is a texture
    not_an_embedder: EmbeddingRecogniser = d  # BAD: dlib has no batched embed
'''


def test_stages_for_mypy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """mypy accepts every implementation where its protocol is expected (signatures, not only names) and rejects
    exactly the four wrong assignments."""
    api = pytest.importorskip("mypy.api")
    root = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(root)  # mypy finds this tree's faceweave (the working directory comes before site-packages)
    snippet = tmp_path / "stage_check.py"
    snippet.write_text(textwrap.dedent(_CHECKED))
    stdout, stderr, _ = api.run(["--config-file", str(root / "pyproject.toml"), "--cache-dir",
                                 str(root / ".mypy_cache"), "--no-error-summary", "--hide-error-context",
                                 str(snippet)])
    lines = _CHECKED.splitlines()
    expected = {n + 1 for n, line in enumerate(lines) if "# BAD" in line}
    errors = [m for m in (re.match(r".*stage_check\.py:(\d+): error: (.*)", row) for row in stdout.splitlines()) if m]
    assert {int(m.group(1)) for m in errors} == expected, stdout + stderr
    assert all("Incompatible types in assignment" in m.group(2) for m in errors), stdout
