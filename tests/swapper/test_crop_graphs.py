"""The built-in swapper's graph path: fixed shapes (texture box, rasteriser blocks, traced grain blur), no host
work inside the crop stage, and CUDA-graph replay equal to running it eagerly — on real faces."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import cv2
import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from faceweave.models import topology
from faceweave.ops.crops import square_boxes
from faceweave.ops.filters import gaussian_blur, gaussian_blur_traced
from faceweave.ops.geometry import transform_points
from faceweave.ops.warp import rasterise_triangles, triangle_blocks
from faceweave.pipeline.engine import SwapEngine
from faceweave.settings import SwapSettings
from faceweave.swapper import geometry, mesh

# Ops that wait for the device (or make shapes depend on data), and tensors made from host data: a CUDA graph
# cannot hold them.
_NOT_CAPTURABLE = ("aten._local_scalar_dense", "aten.nonzero", "aten.masked_select", "aten.unique",
                   "aten._unique2", "aten.repeat_interleave.Tensor", "aten.lift_fresh", "aten.item")


def _frames(rgb: np.ndarray, n: int, size: tuple[int, int] = (720, 1280)) -> np.ndarray:
    """``n`` frames of ``size`` with the photo's face moved, turned and scaled a little in each."""
    h, w = size
    out = []
    for k in range(n):
        m = cv2.getRotationMatrix2D((rgb.shape[1] / 2, rgb.shape[0] / 2), 5 * k - 8, 0.9 + 0.08 * k)
        m[:, 2] += (w / 2 - rgb.shape[1] / 2 + 30 * k, h / 2 - rgb.shape[0] / 2)
        out.append(cv2.warpAffine(rgb, m, (w, h), borderMode=cv2.BORDER_CONSTANT))
    return np.stack(out)


class _Direct:
    """Runs the cache's function eagerly: the graph path's shapes and inputs without a GPU."""

    def __init__(self, settings: SwapSettings) -> None:
        self.fn = mesh.crop_graphs(mesh.MeshSwapOptions.from_settings(settings)).fn
        self.calls: list[tuple[Hashable, Sequence[torch.Tensor]]] = []

    def __call__(self, key: Hashable, inputs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        self.calls.append((key, inputs))
        return self.fn(*inputs)


@pytest.fixture(scope="module")
def scene(media: type) -> dict[str, Any]:
    engine = SwapEngine(SwapSettings(device="cpu", enhancer=None))
    source = engine.prepare_sources([media.rgb("astronaut.png")])[0].texture
    frames = torch.cat([engine.to_tensor(f) for f in _frames(media.rgb("obama.jpg"), 3)])
    faces = engine.analyze(frames)
    assert all(len(row) >= 1 for row in faces)
    items = [(b, row[0], source) for b, row in enumerate(faces)]
    return {"engine": engine, "frames": frames, "items": items, "source": source}


@pytest.mark.parametrize("crop_size", [None, 128, 512])
def test_graph_path_matches_eager_path(scene: dict[str, Any], crop_size: int | None) -> None:
    """The fixed texture box, fixed block count and traced grain blur change the result by rounding only."""
    settings = scene["engine"].settings
    options = mesh.MeshSwapOptions.from_settings(settings)
    direct = _Direct(settings)
    eager = mesh.swap_faces(scene["frames"], scene["items"], options, crop_size=crop_size)
    graphed = mesh.swap_faces(scene["frames"], scene["items"], options, graphs=direct, crop_size=crop_size)
    assert len(direct.calls) == 1, "the batch was not within the graph's block capacity"
    box, inputs = direct.calls[0]
    n_graph, size = inputs[0].shape[0], inputs[0].shape[-1]
    assert n_graph == 8 and box == geometry.fixed_texture_box(size)
    diff = (eager - graphed).abs()
    assert float(diff.max()) < 2 / 255 and float(diff.mean()) < 1e-4
    assert float((eager - scene["frames"]).abs().max()) > 0.2  # the faces really were swapped


def test_block_capacity_holds_real_faces(scene: dict[str, Any]) -> None:
    tri = torch.as_tensor(np.array(topology.TRIANGLES))
    src = scene["source"].points[None]
    for _, face, _ in scene["items"]:
        geo = geometry.output_geometry(face.landmarks[None, :, :2].float(), src, 0.6)
        box = square_boxes(geo, geometry.CROP_MARGIN)
        for size in geometry.CROP_SIZES:
            y0, y1, x0, x1 = geometry.fixed_texture_box(size)
            pts = transform_points(geometry.crop_matrix(box, size), geo) - torch.tensor([x0, y0])
            assert float(pts.min()) >= 0 and float(pts[..., 0].max()) < x1 - x0 and float(pts[..., 1].max()) < y1 - y0
            used = int(triangle_blocks(pts, tri, (y1 - y0, x1 - x0))[2].prod(-1).sum())
            assert used < 0.6 * geometry.block_capacity(size, 1), (size, used)


def test_rasteriser_with_fixed_blocks_is_exact(scene: dict[str, Any]) -> None:
    tri = torch.as_tensor(np.array(topology.TRIANGLES))
    pts = torch.stack([f.landmarks[:, :2].float() for _, f, _ in scene["items"]])
    pts = pts - pts.amin(dim=(0, 1)) + 2
    size = (int(pts[..., 1].max()) + 4, int(pts[..., 0].max()) + 4)
    exact = rasterise_triangles(pts, tri, size)
    used = int(triangle_blocks(pts, tri, size)[2].prod(-1).sum())
    assert torch.equal(rasterise_triangles(pts, tri, size, max_blocks=used + 1000), exact)
    assert torch.equal(rasterise_triangles(pts, tri, size, max_blocks=used), exact)
    # too few blocks: triangles are left out (the caller must check the count first)
    short = rasterise_triangles(pts, tri, size, max_blocks=used // 2)
    assert int((short >= 0).sum()) < int((exact >= 0).sum())


@pytest.mark.parametrize("sigma", [0.6, 1.0, 1.7, 3.0])
def test_traced_blur_equals_gaussian_blur(media: type, sigma: float) -> None:
    x = torch.from_numpy(media.rgb("grace_hopper.jpg")[:96, :128]).permute(2, 0, 1)[None].float() / 255
    traced = gaussian_blur_traced(x, torch.tensor(sigma), 3.0)
    torch.testing.assert_close(traced, gaussian_blur(x, sigma), atol=1e-6, rtol=0)


class _Spy(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.bad: list[str] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if any(str(func).startswith(name) for name in _NOT_CAPTURABLE):
            self.bad.append(str(func))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("blend", ["laplacian", "feather"])
def test_crop_stage_has_no_host_work(scene: dict[str, Any], blend: str) -> None:
    """What a CUDA graph replays does not read device values on the host or copy host data in (after the first
    call, which makes the cached device constants)."""
    settings = scene["engine"].settings.model_copy(update={"blend": blend, "keep_eyes": True})
    options = mesh.MeshSwapOptions.from_settings(settings)
    captured: list[Sequence[torch.Tensor]] = []

    def record(key: Hashable, inputs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        captured.append(inputs)
        return mesh.crop_graphs(options).fn(*inputs)

    mesh.swap_faces(scene["frames"], scene["items"], options, graphs=record, crop_size=192)
    fn = mesh.crop_graphs(options).fn
    with _Spy() as spy:
        fn(*captured[0])
    assert spy.bad == []
    with _Spy() as spy:  # the spy does see them
        torch.tensor([1.0]).sum().item()
    assert spy.bad


@pytest.mark.gpu
def test_graph_replay_matches_eager_on_cuda(scene: dict[str, Any]) -> None:
    dev = torch.device("cuda")
    settings = scene["engine"].settings.model_copy(update={"device": "cuda", "dtype": "float32"})
    engine = SwapEngine(settings)
    frames = scene["frames"].to(dev)
    items = [(b, f, scene["source"].to(dev)) for b, f, _ in scene["items"]]
    options = engine.swap_options
    eager_static = mesh.swap_faces(frames, items, options, graphs=_Direct(settings))
    graphs = engine.crop_graphs
    assert graphs is not None
    replayed = mesh.swap_faces(frames, items, options, graphs=graphs)
    again = mesh.swap_faces(frames, items, options, graphs=graphs)  # a replay, not the capture
    assert len(graphs.captured) == 1 and not graphs.failed
    torch.testing.assert_close(replayed, eager_static, atol=1e-4, rtol=0)
    assert torch.equal(again, replayed)


@pytest.mark.gpu
def test_warm_up_captures_every_swap_graph(media: type) -> None:
    """After a frame-size warm-up a video's swaps replay graphs captured up front: none is added later."""
    engine = SwapEngine(SwapSettings(device="cuda", dtype="float16", batch_size=8))
    frames_np = _frames(media.rgb("obama.jpg"), 8, (1080, 1920))
    engine.warm_up((1080, 1920))
    graphs = engine.crop_graphs
    assert graphs is not None and not graphs.failed and len(graphs.captured) == len(geometry.CROP_SIZES)
    sources = engine.prepare_sources([media.rgb("astronaut.png")])
    frames = torch.cat([engine.to_tensor(f) for f in frames_np])
    faces = engine.analyze(frames)
    out = engine.swap(frames, [engine.select(row, sources) for row in faces], sources)
    assert len(graphs.captured) == len(geometry.CROP_SIZES)
    assert float((out.float() - frames.float()).abs().max()) > 0.2


def test_swap_warm_up_frames_smaller_than_the_face_image(media: type, monkeypatch: pytest.MonkeyPatch) -> None:
    """The swap warm-up (CUDA-only in ``warm_up``) places the bundled face at opposite corners of frames of the
    job's size, cropped where the frame is smaller than the photo; here it runs eagerly on the CPU."""
    engine = SwapEngine(SwapSettings(device="cpu", enhancer=None))
    image = engine.to_tensor(media.rgb("astronaut.png"))
    face = engine.analyze(image)[0][0]
    calls: list[int] = []
    real = mesh.swap_faces

    def counting(*args: Any, **kwargs: Any) -> torch.Tensor:
        out = real(*args, **kwargs)
        assert out.shape[-2:] == (360, 640) and bool(torch.isfinite(out).all())
        calls.append(kwargs["crop_size"])
        return out

    monkeypatch.setattr("faceweave.pipeline.engine.swap_faces", counting)
    engine._warm_up_swap(image, face, (360, 640), [2])
    assert calls == list(geometry.CROP_SIZES)
