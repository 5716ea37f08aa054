"""The built-in weight-free 'detail' enhancer on real faces."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from faceweave.analysis.onnx_detect import RetinaFaceDetector
from faceweave.enhance import load_enhancer
from faceweave.enhance.detail import sharpen_faces
from faceweave.settings import SwapSettings


def _laplacian_energy(x: torch.Tensor) -> float:
    k = torch.tensor([[0, 1, 0], [1, -4, 1], [0, 1, 0]], dtype=x.dtype).view(1, 1, 3, 3).repeat(3, 1, 1, 1)
    return float(F.conv2d(x, k, groups=3).pow(2).mean())


def test_detail_sharpens_faces_only(media, device, dtype) -> None:
    frames = torch.stack([
        torch.from_numpy(media.rgb(n)).permute(2, 0, 1).float() / 255 for n in ("astronaut.png", "astronaut.png")
    ])
    frames[1] = frames[1].flip(-1)
    faces = RetinaFaceDetector("cpu").detect(frames)
    enhancer = load_enhancer("detail", device=device, dtype=dtype, settings=SwapSettings.build(enhancer="detail"))
    x = frames.to(device, dtype)
    out = enhancer.enhance(x, faces)
    assert out.shape == x.shape and out.dtype == x.dtype
    for b in range(2):
        x0, y0, x1, y1 = (int(v) for v in faces[b][0].box.tolist())
        before = _laplacian_energy(x[b : b + 1, :, y0:y1, x0:x1].float().cpu())
        after = _laplacian_energy(out[b : b + 1, :, y0:y1, x0:x1].float().cpu())
        assert after > 1.15 * before
    # Far from the face (the bottom rows of the image) nothing changed, bit for bit.
    assert torch.equal(out[:, :, -60:], x[:, :, -60:])
    assert float(out.min()) >= 0 and float(out.max()) <= 1


def test_detail_zero_strength_and_no_faces_are_identity(media) -> None:
    x = torch.from_numpy(media.rgb("obama.jpg")).permute(2, 0, 1)[None].float() / 255
    faces = RetinaFaceDetector("cpu").detect(x)
    assert torch.equal(sharpen_faces(x, faces, strength=0.0), x)
    assert torch.equal(sharpen_faces(x, [[]]), x)


def test_before_limits_sharpening_to_what_the_swap_changed() -> None:
    """``before``: the same result as sharpening everything and keeping the un-swapped pixels afterwards (what the
    engine did with a full-frame test), on a real face with half of its window left as it was."""
    from faceweave.analysis.detect import detect_faces
    from faceweave.data import media_path
    from faceweave.enhance.detail import sharpen_faces
    from faceweave.media.image import read_image

    rgb = read_image(media_path("astronaut.png")).rgb.copy()
    faces = detect_faces(rgb)
    before = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255
    swapped = before.clone()
    x0, y0, x1, y1 = (int(v) for v in faces[0].box.tolist())
    swapped[:, :, y0:y1, x0 : (x0 + x1) // 2] = swapped[:, :, y0:y1, x0 : (x0 + x1) // 2].flip(-1)  # "the swap"
    full = sharpen_faces(swapped, [faces])
    expected = torch.where((swapped != before).any(1, keepdim=True), full, swapped)
    got = sharpen_faces(swapped, [faces], before=before)
    assert torch.equal(got, expected) and not torch.equal(got, swapped) and not torch.equal(got, full)
