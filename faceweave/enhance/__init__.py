"""Face enhancers: the built-in weight-free ``detail`` sharpener and the ONNX restorers (GFPGAN, CodeFormer, GPEN).

Every enhancer has one method, ``enhance(frames, faces) -> frames``; :func:`load_enhancer` builds one by name.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch

from faceweave.analysis.face import Face


class Enhancer(Protocol):
    """What the engine calls after the swap."""

    def enhance(self, frames: torch.Tensor, faces: list[list[Face]]) -> torch.Tensor:
        """``frames (B, 3, H, W)`` float ``[0, 1]`` RGB and the faces of each frame → enhanced frames, same
        shape/dtype/device; pixels away from every face are unchanged."""
        ...


def load_enhancer(name: str, *, device: torch.device, dtype: torch.dtype, settings: Any) -> Enhancer:
    """``'detail'`` → :class:`~faceweave.enhance.detail.DetailEnhancer`; a registry name of the ``enhancer``
    family (``gfpgan_1.4``, ``codeformer``, ``gpen_bfr_256``, ``gpen_bfr_512``) →
    :class:`~faceweave.enhance.onnx.OnnxEnhancer` (raises ``ModelMissing`` when its file is absent)."""
    if name == "detail":
        from faceweave.enhance.detail import DetailEnhancer

        return DetailEnhancer(strength=float(getattr(settings, "enhancer_blend", 0.8)))
    from faceweave.enhance.onnx import load_onnx_enhancer

    return load_onnx_enhancer(name, device=device, dtype=dtype, settings=settings)


__all__ = ["Enhancer", "load_enhancer"]
