"""ArcFace recogniser plug-in (insightface ``w600k_r50`` / FaceFusion ``arcface_w600k_r50.onnx``) and the 5-point
template alignment that every ONNX plug-in (recogniser, swappers, enhancers) uses.

Alignment = insightface ``norm_crop``: the similarity transform (Umeyama least squares) that maps the face's 5
keypoints onto a template scaled to the crop size, then one bilinear warp. Here it is batched over all faces
of all frames: one :func:`~faceweave.ops.geometry.estimate_similarity` and one
:func:`~faceweave.ops.warp.warp_affine` call.

ArcFace contract: input ``(B,3,112,112)`` RGB ``(x - 127.5) / 127.5`` aligned to ``arcface_112_v2``; output
``(B,512)``, the raw embedding (``normed_embedding`` = it divided by its L2 norm).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch

from faceweave.errors import ShapeError, check_shape
from faceweave.models.onnx_runtime import OnnxModel
from faceweave.models.onnx_zoo import template_points
from faceweave.ops.geometry import estimate_similarity
from faceweave.ops.warp import warp_affine


def alignment_matrices(keypoints: torch.Tensor, template: str, size: int) -> torch.Tensor:
    """Similarity transforms frame → crop that put ``keypoints`` on ``template`` scaled to ``size``.

    Args:
        keypoints: ``(N, 5, 2)`` ``(x, y)`` frame pixels, pixel centres at integers, FaceKeypoint order.
        template: a name of :data:`faceweave.models.onnx_zoo.TEMPLATES`; size: crop side in pixels.
    Returns:
        ``M (N, 2, 3)`` mapping frame pixels → crop pixels (src→dst), dtype of ``keypoints`` (float32 at least).
    """
    check_shape(keypoints, ["N", "5", "2"], "keypoints")
    dtype = keypoints.dtype if keypoints.dtype in (torch.float32, torch.float64) else torch.float32
    dst = torch.as_tensor(template_points(template, size), device=keypoints.device, dtype=dtype)
    return estimate_similarity(keypoints.to(dtype), dst.expand(keypoints.shape[0], 5, 2))


def align_crops(
    frames: torch.Tensor,
    frame_index: torch.Tensor,
    keypoints: torch.Tensor,
    template: str,
    size: int,
    *,
    padding: Literal["zeros", "border", "reflection"] = "zeros",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Aligned square crops of ``N`` faces taken from a batch of frames, in one batched warp.

    Args:
        frames: ``(B, 3, H, W)`` float ``[0, 1]`` RGB.
        frame_index: ``(N,)`` long, which frame each face is in.
        keypoints: ``(N, 5, 2)`` frame pixels (x, y), FaceKeypoint order.
        template, size: alignment template name and crop side.
        padding: outside the frame: ``zeros`` (insightface's ``norm_crop``) or ``border`` (FaceFusion's enhancers).
    Returns:
        crops ``(N, 3, size, size)`` in the dtype of ``frames``, and ``M (N, 2, 3)`` float32 frame → crop.
    """
    check_shape(frames, ["B", "3", "H", "W"], "frames")
    if frame_index.shape[0] != keypoints.shape[0]:
        raise ShapeError(f"frame_index has {frame_index.shape[0]} entries, keypoints {keypoints.shape[0]}")
    matrices = alignment_matrices(keypoints.float(), template, size)
    # grid_sample in float32 on CPU (fp16 grid_sample is slow and crashed on CPU with torch 2.13).
    work = frames if frames.device.type == "cuda" else frames.float()
    crops = warp_affine(work.index_select(0, frame_index.to(frames.device)), matrices.to(work.dtype), (size, size),
                        padding=padding)
    return crops.to(frames.dtype), matrices


class ArcFaceRecogniser:
    """Identity embeddings with an ArcFace ONNX (w600k_r50 contract).

    Args:
        model_path: located/verified ``.onnx``. device: where frames live and ORT runs (see ``OnnxModel``).
    """

    template = "arcface_112_v2"
    size = 112

    def __init__(self, model_path: Path, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.model = OnnxModel(model_path, device=self.device)
        self.input_name = self.model.input_names[0]

    @torch.no_grad()
    def embed_crops(self, crops: torch.Tensor) -> torch.Tensor:
        """``crops (N, 3, 112, 112)`` float ``[0, 1]`` RGB, already aligned → raw embeddings ``(N, 512)`` float32."""
        check_shape(crops, ["N", "3", "112", "112"], "crops")
        x = crops.float() * 2.0 - 1.0  # == (255·x − 127.5) / 127.5
        return self.model.run({self.input_name: x})[0].reshape(crops.shape[0], -1)

    @torch.no_grad()
    def embed(self, frames: torch.Tensor, frame_index: torch.Tensor, keypoints: torch.Tensor) -> torch.Tensor:
        """Raw embeddings ``(N, 512)`` of the faces at ``keypoints (N, 5, 2)`` in ``frames (B, 3, H, W)`` [0,1] RGB."""
        crops, _ = align_crops(frames, frame_index, keypoints, self.template, self.size)
        return self.embed_crops(crops)


def l2_normalise(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """``x / ||x||₂`` along the last dim (float32)."""
    x = x.float()
    return x / x.norm(dim=-1, keepdim=True).clamp(min=eps)

