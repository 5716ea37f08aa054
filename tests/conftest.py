"""Shared fixtures: device × dtype parametrisation (kornia-style) and the bundled real-face media."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from faceweave.data import media_path

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--device", default=None, help="comma list of devices to test (default: cpu, cuda if present)")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "device" in metafunc.fixturenames:
        opt = metafunc.config.getoption("--device")
        devices = opt.split(",") if opt else DEVICES
        # a CUDA case carries the gpu mark, so `pytest -m gpu` on the GPU box runs every device-parametrised test there
        metafunc.parametrize("device", [pytest.param(torch.device(d), marks=[pytest.mark.gpu] if d.startswith("cuda")
                                                     else []) for d in devices], ids=devices)
    if "dtype" in metafunc.fixturenames:
        metafunc.parametrize("dtype", [torch.float32, torch.float16], ids=["float32", "float16"])


@pytest.fixture(autouse=True)
def _skip_fp16_on_cpu(request: pytest.FixtureRequest) -> None:
    # Half precision is a GPU feature here: on CPU it is slow and fp16 grid_sample crashed with torch 2.13.
    params = getattr(request.node, "callspec", None)
    if params is None:
        return
    dev, dt = params.params.get("device"), params.params.get("dtype")
    if dev is not None and dt is not None and dev.type == "cpu" and dt is not torch.float32:
        pytest.skip("float16 runs on CUDA only (CPU computes in float32)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU; this machine has none (run `pytest -m gpu` on the GPU box)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def media() -> type:
    """Access to the bundled media: ``media.path('astronaut.png')`` and ``media.rgb('obama.jpg')``."""

    class _Media:
        @staticmethod
        def path(name: str) -> Path:
            return media_path(name)

        @staticmethod
        def rgb(name: str) -> np.ndarray:
            import cv2

            bgr = cv2.imread(str(media_path(name)), cv2.IMREAD_COLOR)
            assert bgr is not None
            return np.ascontiguousarray(bgr[:, :, ::-1])

    return _Media


def tolerance(dtype: torch.dtype) -> float:
    """Absolute tolerance scaled to dtype."""
    return {torch.float32: 1e-4, torch.float16: 2e-2, torch.bfloat16: 5e-2, torch.float64: 1e-8}[dtype]


@pytest.fixture
def pinned_plugins() -> None:
    """Request this to see the plug-in registry as shipped (sha256 pins active); see ``_plugin_stand_ins``."""


@pytest.fixture(autouse=True)
def _plugin_stand_ins(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Contract tests save test-built ONNX graphs under the real plug-in file names (``inswapper_128.onnx``, ...).
    Such stand-ins cannot match the sha256 pinned for the published files, so here the plug-in specs are looked up
    unpinned. Tests that request ``pinned_plugins`` see the pins (and check ``ModelIntegrityError`` on stand-ins)."""
    if "pinned_plugins" in request.fixturenames:
        return
    from dataclasses import replace

    from faceweave.models import registry
    from faceweave.models.onnx_zoo import UNPINNED, is_pinned, plugin_names

    registry.all_specs()  # import every family first: a later import would re-register and clash with the patch
    for name in plugin_names():
        spec = registry.get_spec(name)
        if is_pinned(spec):
            stand_in = replace(spec, sha256="", extra={**spec.extra, "sha256_status": UNPINNED})
            monkeypatch.setitem(registry._REGISTRY, name, stand_in)
