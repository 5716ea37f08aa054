"""GraphNet's CUDA-graph replay: same outputs as the eager ops, copies that outlive later calls, one capture per
shape, safe from two threads; on the CPU it never captures. Real face crops, every device × dtype."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import torch

from faceweave.analysis import detect as detect_module
from faceweave.analysis.detect import FaceDetector
from faceweave.models.blazeface import load_blazeface
from faceweave.models.facemesh import load_facemesh
from faceweave.models.tflite_graph import GraphNet, TfConv2d, cuda_batch_bucket, set_cuda_graphs, set_depthwise_kernels
from faceweave.pipeline.engine import SwapEngine
from faceweave.settings import SwapSettings


def _pair(device: torch.device, dtype: torch.dtype) -> tuple[GraphNet, GraphNet]:
    """The FaceMesh graph twice: CUDA-graph replay on (the default) and off."""
    graphed, eager = load_facemesh(device, dtype).net, load_facemesh(device, dtype).net
    eager.cuda_graphs = False
    return graphed, eager


def test_replay_matches_eager(device: torch.device, dtype: torch.dtype, crops: torch.Tensor) -> None:
    graphed, eager = _pair(device, dtype)
    x = crops.to(device, dtype) * 2 - 1
    with torch.inference_mode():
        ref = eager(x)
        first, again = graphed(x), graphed(x)
    for r, a, b in zip(ref, first, again, strict=True):
        assert a.shape == r.shape and a.dtype == r.dtype
        # The graph replays the very kernels the eager pass launched: the same numbers, not just close ones.
        assert float((a.float() - r.float()).abs().max()) <= (1e-5 if dtype == torch.float32 else 1e-2)
        assert torch.equal(a, b)
    # one capture per input shape on CUDA (4 crops pad to the bucket of 8); never on the CPU
    assert len(graphed.captured) == (1 if device.type == "cuda" else 0)
    assert not eager.captured


def test_results_outlive_later_calls(device: torch.device, crops: torch.Tensor) -> None:
    graphed, eager = _pair(device, torch.float32)
    x = crops.to(device) * 2 - 1
    with torch.inference_mode():
        kept = graphed(x[:2])
        snapshot = [t.clone() for t in kept]
        graphed(x[2:])  # same padded shape: replays the same graph into the same static buffers
        for k, s in zip(kept, snapshot, strict=True):
            assert torch.equal(k, s), "an earlier result changed when the graph was replayed"
        assert float((kept[0] - eager(x[:2])[0]).abs().max()) <= 1e-5


def test_outputs_usable_outside_inference_mode(device: torch.device, crops: torch.Tensor) -> None:
    graphed, _ = _pair(device, torch.float32)
    points, _ = graphed(crops.to(device) * 2 - 1)
    assert not points.is_inference()
    points.add_(1.0)  # an in-place update would raise on an inference tensor


def test_two_threads_get_their_own_results(device: torch.device, crops: torch.Tensor) -> None:
    # The video pipeline swaps batch n in one thread while it analyses batch n+1 in another.
    graphed, eager = _pair(device, torch.float32)
    inputs = [crops[k : k + 1].to(device) * 2 - 1 for k in range(len(crops))]
    with torch.inference_mode():
        expected = [eager(x)[0] for x in inputs]
    errors: list[str] = []

    def work(k: int) -> None:
        for _ in range(10):
            with torch.inference_mode():
                got = graphed(inputs[k])[0]
            if float((got - expected[k]).abs().max()) > 1e-5:
                errors.append(f"thread {k} got another input's result")

    threads = [threading.Thread(target=work, args=(k,)) for k in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_settings_switch_reaches_every_net(device: torch.device) -> None:
    engine = SwapEngine(SwapSettings(device=device.type, dtype="float32", cuda_graphs=False))
    nets = [m for owner in (engine.detector, engine.mesh) for m in owner.modules() if isinstance(m, GraphNet)]
    assert len(nets) == 3 and not any(n.cuda_graphs for n in nets)
    set_cuda_graphs(engine.detector, True)
    assert engine.detector.short.net.cuda_graphs and engine.detector.full.net.cuda_graphs


def test_detector_same_faces_with_and_without_graphs(device: torch.device, dtype: torch.dtype, media: Any) -> None:
    frames = torch.stack([torch.from_numpy(media.rgb(n)).permute(2, 0, 1).float() / 255
                          for n in ("astronaut.png", "astronaut.png")]).to(device, dtype)
    with_graphs, without = FaceDetector(device, dtype), FaceDetector(device, dtype)
    set_cuda_graphs(without, False)
    a, b = with_graphs.detect(frames), without.detect(frames)
    assert [len(f) for f in a] == [len(f) for f in b] == [1, 1]
    for fa, fb in zip(a, b, strict=True):
        assert float((fa[0].keypoints - fb[0].keypoints).abs().max()) <= 1e-3


@pytest.mark.parametrize("choice", ["aten", "cudnn"])
def test_depthwise_kernels_same_faces(device: torch.device, media: Any, choice: str) -> None:
    """set_depthwise_kernels reaches every depthwise convolution, drops the graphs captured with the other kernels,
    and PyTorch's and cuDNN's kernels find the same faces at the same points as faceweave's own (the default); on
    the CPU the choice changes nothing."""
    frames = torch.stack([torch.from_numpy(media.rgb(n)).permute(2, 0, 1).float() / 255
                          for n in ("astronaut.png", "astronaut.png")]).to(device)
    default, other = FaceDetector(device), FaceDetector(device)
    other.detect(frames)  # on CUDA: graphs captured with the default kernels
    set_depthwise_kernels(other, choice)  # type: ignore[arg-type]
    nets = [m for m in other.modules() if isinstance(m, GraphNet)]
    depthwise = [m for m in other.modules() if isinstance(m, TfConv2d) and m.groups > 1]
    assert depthwise and all(m.depthwise_kernels == choice for m in depthwise)
    assert all(not net.captured for net in nets)
    a, b = default.detect(frames), other.detect(frames)
    assert [len(f) for f in a] == [len(f) for f in b] == [1, 1]
    for fa, fb in zip(a, b, strict=True):
        assert float((fa[0].keypoints - fb[0].keypoints).abs().max()) <= 1e-2
        assert abs(fa[0].score - fb[0].score) <= 1e-3


def test_set_depthwise_kernels_rejects_unknown_choice() -> None:
    with pytest.raises(ValueError, match="faceweave, aten or cudnn"):
        set_depthwise_kernels(FaceDetector(torch.device("cpu")), "winograd")  # type: ignore[arg-type]


def test_blazeface_capture_per_bucket(device: torch.device) -> None:
    net = load_blazeface("short", device)
    x = torch.rand(3, 3, 128, 128, device=device) * 2 - 1
    with torch.inference_mode():
        net(x[:1])
        net(x)  # 1 and 3 share the bucket of 8
        net(x.repeat(4, 1, 1, 1))  # 12 → 16: a second graph
    assert len(net.net.captured) == (2 if device.type == "cuda" else 0)


def test_warm_up_captures_every_shape_a_video_needs(device: torch.device, media: Any) -> None:
    # A job's GPU memory must not depend on its content: after warm_up for the frame size, a frame with a face and a
    # batch where every face is lost (tiles + rotated retries, the detector's largest shapes) capture nothing new.
    engine = SwapEngine(SwapSettings(device=device.type, dtype="float32", batch_size=4))
    height, width = 360, 640
    engine.warm_up((height, width))
    nets = [m for owner in (engine.detector, engine.mesh) for m in owner.modules() if isinstance(m, GraphNet)]
    before = [len(n.captured) for n in nets]
    face = torch.from_numpy(media.rgb("obama.jpg")).permute(2, 0, 1).float()[None] / 255
    frame = torch.nn.functional.interpolate(face, size=(height, width), mode="bilinear").to(device)
    found = engine.analyze(frame.expand(4, -1, -1, -1))
    assert all(len(f) == 1 for f in found)
    assert not any(engine.detector.detect(torch.zeros(3, 3, height, width, device=device)))
    assert [len(n.captured) for n in nets] == before
    assert (sum(before) > 0) == (device.type == "cuda")
    if device.type == "cuda":  # one pool for every graph of the engine
        assert len({id(n.graph_pool) for n in nets}) == 1 and nets[0].graph_pool is not None


def test_forward_batch_sizes_cover_every_miss_pattern(media: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # warm_up captures the nets at forward_batch_sizes: every size detect() really runs them at must be among them,
    # whatever number of frames in a batch has no face (each missing frame adds tiles and rotated retries).
    # The graphs are a CUDA feature, and only the CPU splits a forward into chunks: here each forward runs whole.
    monkeypatch.setattr(detect_module, "CPU_VIEW_CHUNK", 1 << 20)
    detector = FaceDetector()
    height, width, batch = 1080, 1920, 4  # 6 small-face tiles per frame: more views than the 4 retries
    face = torch.from_numpy(media.rgb("obama.jpg")).permute(2, 0, 1).float()[None] / 255
    frame = torch.nn.functional.interpolate(face, size=(height, width), mode="bilinear")[0]
    seen: dict[str, set[int]] = {"short": set(), "full": set()}
    for name in seen:
        net = getattr(detector, name)
        original = net.net.forward
        net.net.forward = lambda x, _n=name, _f=original: (seen[_n].add(int(x.shape[0])), _f(x))[1]
    for missing in range(batch + 1):
        frames = torch.stack([torch.zeros_like(frame) if k < missing else frame for k in range(batch)])
        for tiles in (True, False):  # a video between its recall passes skips the tiles
            faces = detector.detect(frames, tiles=tiles)
            assert [len(f) for f in faces] == [0] * missing + [1] * (batch - missing)
    planned = detector.forward_batch_sizes(height, width, batch)
    for name, sizes in seen.items():
        assert {cuda_batch_bucket(n) for n in sizes} <= set(planned[name]), (name, sorted(sizes), planned[name])
    assert max(seen["full"]) > batch  # the tiles and retries really ran
