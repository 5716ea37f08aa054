"""Face enhancers: the built-in weight-free ``detail`` sharpener and the ONNX restorers (GFPGAN, CodeFormer, GPEN).

Every enhancer has one method, ``enhance(frames, faces) -> frames`` (:class:`~faceweave.stages.Enhancer`);
:func:`load_enhancer` builds one by name.
"""

from __future__ import annotations

import torch

from faceweave.settings import SwapSettings
from faceweave.stages import Enhancer


def load_enhancer(name: str, *, device: torch.device, dtype: torch.dtype, settings: SwapSettings) -> Enhancer:
    """``'detail'`` → :class:`~faceweave.enhance.detail.DetailEnhancer` (strength ``settings.enhancer_blend``); a
    registry name of the ``enhancer`` family (``gfpgan_1.4``, ``codeformer``, ``gpen_bfr_256``, ``gpen_bfr_512``) →
    :class:`~faceweave.enhance.onnx.OnnxEnhancer` (raises ``ModelMissing`` when its file is absent)."""
    if name == "detail":
        from faceweave.enhance.detail import DetailEnhancer

        return DetailEnhancer(strength=settings.enhancer_blend)
    from faceweave.enhance.onnx import load_onnx_enhancer

    return load_onnx_enhancer(name, device=device, dtype=dtype, settings=settings)


__all__ = ["Enhancer", "load_enhancer"]
