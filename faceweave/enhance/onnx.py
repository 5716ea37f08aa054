"""ONNX face restorers on the aligned crop: ``gfpgan_1.4``, ``codeformer`` (fidelity weight), ``gpen_bfr_256/512``.

Contract (FaceFusion ``face_enhancer``): crop aligned to the model's template (``ffhq_512`` scaled to the model
size; ``arcface_128`` for GPEN-256), border replicated; input ``input`` ``(1,3,S,S)`` RGB ``(x/255 - 0.5)/0.5``;
CodeFormer has a second input ``weight`` ``(1,)`` float64 = fidelity (0 = most restoration, 1 = most faithful);
output ``(1,3,S,S)`` in ``[-1, 1]`` → ``(clip(y,-1,1)+1)/2``. The result is pasted back with a feathered box mask
and mixed with the input frame by ``enhancer_blend`` (FaceFusion's ``face_enhancer_blend``).
"""

from __future__ import annotations

import numpy as np
import torch

from faceweave.analysis.face import Face
from faceweave.errors import InvalidOption, check_shape
from faceweave.models.arcface import align_crops
from faceweave.models.onnx_runtime import OnnxModel
from faceweave.models.onnx_zoo import resolve_model_file
from faceweave.models.registry import ModelSpec, get_spec
from faceweave.settings import SwapSettings
from faceweave.swapper.onnx import box_mask, paste_faces


class OnnxEnhancer:
    """A loaded restorer. ``fidelity`` feeds CodeFormer's ``weight``; ``blend`` in [0, 1] mixes the result in."""

    def __init__(
        self,
        spec: ModelSpec,
        model: OnnxModel,
        *,
        device: torch.device,
        dtype: torch.dtype = torch.float32,
        fidelity: float = 0.5,
        blend: float = 0.8,
        mask_border: float = 0.0,
        mask_blur: float = 0.3,
    ) -> None:
        if spec.contract.template is None:
            raise InvalidOption(f"model {spec.name!r} has no alignment template")
        self.spec, self.model, self.device, self.dtype = spec, model, device, dtype
        self.size, self.template = spec.contract.size[0], spec.contract.template
        self.fidelity, self.blend = fidelity, blend
        self.mask_border, self.mask_blur = mask_border, mask_blur
        if "input" not in model.input_names:
            raise InvalidOption(f"{spec.file} has inputs {model.input_names}; a restorer needs 'input'")
        self.has_weight = "weight" in model.input_names

    @torch.no_grad()
    def restore_crops(self, crops: torch.Tensor) -> torch.Tensor:
        """``crops (N, 3, S, S)`` float ``[0, 1]`` RGB, aligned → restored ``(N, 3, S, S)`` float32 ``[0, 1]``."""
        check_shape(crops, ["N", "3", str(self.size), str(self.size)], "crops")
        x = crops.float() * 2.0 - 1.0
        shared = {"weight": np.array([self.fidelity], dtype=np.float64)} if self.has_weight else None
        y = self.model.run_batched({"input": x}, shared=shared)[0]
        return (y.clamp(-1.0, 1.0) + 1.0) / 2.0

    def crop_mask(self, n: int) -> torch.Tensor:
        """FaceFusion's box mask with ``face_mask_blur`` 0.3: ``(n, 1, S, S)`` float32 [0, 1]."""
        blur = int(self.size * 0.5 * self.mask_blur)
        return box_mask(
            n,
            self.size,
            border_px=max(blur // 2, 1) + round(self.size * self.mask_border),
            sigma_px=blur * 0.25,
            device=self.device,
        )

    @torch.no_grad()
    def enhance(self, frames: torch.Tensor, faces: list[list[Face]]) -> torch.Tensor:
        """Restore every face of every frame.

        Args:
            frames: ``(B, 3, H, W)`` float ``[0, 1]`` RGB; faces: per frame, faces with ``keypoints (5, 2)``.
        Returns:
            ``(B, 3, H, W)`` same dtype/device; pixels outside every pasted face mask unchanged.
        """
        check_shape(frames, ["B", "3", "H", "W"], "frames")
        if len(faces) != frames.shape[0]:
            raise InvalidOption(f"faces has {len(faces)} entries for {frames.shape[0]} frames")
        pairs = [(b, f) for b, fs in enumerate(faces) for f in fs]
        if not pairs:
            return frames
        dev = frames.device
        index = torch.tensor([b for b, _ in pairs], dtype=torch.long, device=dev)
        keypoints = torch.stack([f.keypoints.float() for _, f in pairs]).to(dev)
        crops, matrices = align_crops(frames, index, keypoints, self.template, self.size, padding="border")
        restored = self.restore_crops(crops)
        # The blend amount scales the paste mask: out = frame·(1 − b·m) + restored·b·m.
        masks = self.crop_mask(len(pairs)).to(dev) * self.blend
        return paste_faces(frames, restored, masks, matrices, index)


def load_onnx_enhancer(name: str, *, device: torch.device, dtype: torch.dtype, settings: SwapSettings
                       ) -> OnnxEnhancer:
    """Locate (``ModelMissing`` if absent, in ``settings.model_dir``), check and load enhancer ``name`` with
    ``settings.codeformer_fidelity`` and ``settings.enhancer_blend``."""
    spec = get_spec(name)
    if spec.family != "enhancer":
        raise InvalidOption(f"model {name!r} is a {spec.family}, not an enhancer",
                            hint="enhancers: detail, gfpgan_1.4, codeformer, gpen_bfr_256, gpen_bfr_512")
    path = resolve_model_file(spec, settings.model_dir)
    return OnnxEnhancer(
        spec,
        OnnxModel(path, device=device),
        device=device,
        dtype=dtype,
        fidelity=settings.codeformer_fidelity,
        blend=settings.enhancer_blend,
    )
