"""How many ops the live swap dispatches around its crops (issue 20): structural bounds, not timings.

On a GPU the live engine thread is bound by Python and op dispatch at batch 1–4: the work inside the crops replays
from a CUDA graph, but the geometry around it (output mesh, crop matrices, the crops' warp) and the paste-back run
eagerly, each aten op a dispatch (and a kernel launch on device tensors). These tests count those ops on the CPU
with torch.profiler on real faces, per face, and check that no op reads a value on the host (a device sync where the
tensor lives on the GPU) or calls ``linalg``. The bounds sit above what this tree dispatches (see
docs/benchmarks.md, "Issue 20: ops per live frame") and well below the 760 ops per face of the tree before
(benchmarks/live_ops.py), so an added per-face chain of small ops fails them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch.profiler import ProfilerActivity, profile, record_function

from faceweave.live import LIVE_DEFAULTS
from faceweave.ops.blend import paste_back_region
from faceweave.ops.geometry import invert_affine
from faceweave.ops.warp import affine_theta, warp_affine
from faceweave.pipeline.engine import SwapEngine
from faceweave.settings import SwapSettings
from faceweave.swapper import mesh

LABEL = "test_live_ops:"
HOST_READS = {"aten::_local_scalar_dense", "aten::nonzero", "aten::masked_select", "aten::unique",
              "aten::repeat_interleave"}

#: Top-level aten ops of swap_faces outside swap_in_crops (what runs eagerly on CUDA), per call with one face. This
#: tree: 413 (the CPU path, which also finds the masks' window: 26 of them); before issue 20's cuts: 760.
SWAP_EAGER_OPS = 430


def _ops(fn: Callable[[], Any]) -> dict[str, list[str]]:
    """Top-level aten ops (not called by another aten op) per innermost test label, and every op under a label."""
    with profile(activities=[ProfilerActivity.CPU]) as prof, record_function(LABEL + "call"):
        fn()
    out: dict[str, list[str]] = {}
    for ev in prof.events():
        if not ev.name.startswith("aten::"):
            continue
        parent, label, top = ev.cpu_parent, None, True
        while parent is not None:
            if parent.name.startswith("aten::"):
                top = False
            elif parent.name.startswith(LABEL) and label is None:
                label = parent.name[len(LABEL):]
            parent = parent.cpu_parent
        if label is not None:
            out.setdefault(label + (" top" if top else " all"), []).append(ev.name)
            if top:
                out.setdefault(label + " all", []).append(ev.name)
    return out


@pytest.fixture(scope="module")
def scene(media: type) -> dict[str, Any]:
    engine = SwapEngine(SwapSettings(device="cpu", **LIVE_DEFAULTS))  # what a live session runs
    source = engine.prepare_sources([media.rgb("obama.jpg")])[0].texture
    frame = engine.to_tensor(media.rgb("grace_hopper.jpg"))
    faces = engine.analyze(frame)[0]
    assert faces
    return {"frame": frame, "items": [(0, faces[0], source)],
            "options": mesh.MeshSwapOptions.from_settings(engine.settings)}


def test_swap_geometry_and_paste_op_count(scene: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    real = mesh.swap_in_crops

    def labelled(*args: Any, **kwargs: Any) -> Any:
        with record_function(LABEL + "crops"):
            return real(*args, **kwargs)

    monkeypatch.setattr(mesh, "swap_in_crops", labelled)
    frame, items, options = scene["frame"], scene["items"], scene["options"]
    mesh.swap_faces(frame, items, options)  # warm: per-size constants are made once
    ops = _ops(lambda: mesh.swap_faces(frame, items, options))
    eager = ops["call top"]
    assert len(ops["crops top"]) > 500  # the crops ran, and were labelled apart
    assert len(eager) <= SWAP_EAGER_OPS, f"{len(eager)} ops around the crops"
    assert not [n for n in ops["call all"] if n.startswith(("aten::linalg", "aten::_linalg"))]


def test_paste_back_samples_once_and_reads_nothing(scene: dict[str, Any]) -> None:
    """The crop, its mask, the base and the detail weights share one grid and one ``grid_sample``; the box comes
    from the host matrix without an op that reads a value."""
    frame = scene["frame"]
    size = 192
    m = torch.tensor([[[0.9, 0.05, -150.0], [-0.05, 0.9, -40.0]]])
    crop = warp_affine(frame, m, (size, size))
    base = crop.flip(-1)  # a different image, so a mix-up of the parts would show
    mask = torch.zeros(1, 1, size, size)
    mask[..., 40:150, 50:140] = 1.0
    keep = mask * 0.5
    index = torch.zeros(1, dtype=torch.long)
    region, _ = paste_back_region(frame, index, crop, mask, m, base=base, keep=keep, detail_limit=0.03)
    ops = _ops(lambda: paste_back_region(frame, index, crop, mask, m, base=base, keep=keep, detail_limit=0.03))
    assert ops["call all"].count("aten::grid_sampler_2d") == 1
    assert not HOST_READS & set(ops["call all"])
    # the same values as separate warps of each part
    region_sep, box = _paste_with_separate_warps(frame, crop, mask, m, base, keep)
    assert region is not None
    torch.testing.assert_close(region, region_sep, atol=1e-6, rtol=0)


def _paste_with_separate_warps(frame: torch.Tensor, crop: torch.Tensor, mask: torch.Tensor, m: torch.Tensor,
                               base: torch.Tensor, keep: torch.Tensor) -> tuple[torch.Tensor, Any]:
    """paste_back_region's region for one crop, its parts warped one by one (the reference)."""
    from faceweave.ops.blend import _DETAIL_SIGMA, feather_blend
    from faceweave.ops.filters import gaussian_blur

    _, (x0, y0, x1, y1) = paste_back_region(frame, torch.zeros(1, dtype=torch.long), crop, mask, m)
    shift = torch.tensor([[[1.0, 0.0, -x0], [0.0, 1.0, -y0]]])
    inv = invert_affine(m)
    to_box = torch.cat([shift[:, :, :2] @ inv[:, :, :2], shift[:, :, :2] @ inv[:, :, 2:] + shift[:, :, 2:]], -1)
    size = (y1 - y0, x1 - x0)
    fg = warp_affine(crop, to_box, size)
    msk = warp_affine(mask, to_box, size).clamp(max=1.0)
    bg = frame[:, :, y0:y1, x0:x1]
    lost = bg - warp_affine(base, to_box, size)
    energy = gaussian_blur(lost.square().mean(1, keepdim=True), _DETAIL_SIGMA)
    lost = lost * (0.03**2 / (0.03**2 + energy)) ** 2
    fg = fg + warp_affine(keep, to_box, size) * lost
    return feather_blend(fg, bg, msk), (x0, y0, x1, y1)


def test_affine_theta_and_inverse_are_a_few_ops() -> None:
    m = torch.tensor([[[1.3, 0.2, 5.0], [-0.1, 0.9, -3.0]], [[0.5, -0.4, 100.0], [0.4, 0.5, -20.0]]])
    affine_theta(m, (720, 1280), (256, 256))  # warm: the per-size constants
    ops = _ops(lambda: affine_theta(m, (720, 1280), (256, 256)))
    # 18 here; the 3×3 chain with a float64 linalg.inv it replaces dispatched 45
    assert len(ops["call top"]) <= 20, ops["call top"]
    assert not HOST_READS & set(ops["call all"])
    assert not [n for n in ops["call all"] if "linalg" in n]
    # the values: M⁻¹ and grid_sample's theta from their definitions
    inv = invert_affine(m)
    lin = torch.linalg.inv(m[:, :, :2].double())
    torch.testing.assert_close(inv.double(), torch.cat([lin, -(lin @ m[:, :, 2:].double())], -1), atol=1e-5,
                               rtol=1e-6)
    h, w, src_h, src_w = 256, 256, 720, 1280

    def norm(hh: int, ww: int) -> torch.Tensor:
        return torch.tensor([[2 / ww, 0, 1 / ww - 1], [0, 2 / hh, 1 / hh - 1], [0, 0, 1]], dtype=torch.float64)

    full = torch.cat([inv.double(), torch.tensor([[[0.0, 0.0, 1.0]]], dtype=torch.float64).expand(2, 1, 3)], 1)
    ref = (norm(src_h, src_w) @ full @ torch.linalg.inv(norm(h, w)))[:, :2]
    torch.testing.assert_close(affine_theta(m, (src_h, src_w), (h, w)).double(), ref, atol=1e-6, rtol=1e-6)
