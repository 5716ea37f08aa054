"""The mesh swap's built-in occlusion mask (``occlusion=True``): which pixels of a target face keep the target.

Two estimates, and the larger of their masks:

- the hand-built one (:func:`faceweave.ops.occlusion.occlusion_mask`): pixels unlike the target's own skin, flooded
  from where they cross the face's outline; it follows hair strands into the eyes and brows;
- the occluder net (:mod:`faceweave.models.occluder_net`), read strictly: hands, patches and objects, also where
  their colour is the skin's.

Measured on the issue-21 test set (docs/quality.md, "A learned occluder net"): on the mirrored set, which neither was
fitted to, the hand-built estimate alone misses 6 of 32 occluders (two hands and an object of colours it takes for
skin, three hair cases), the two together 3 (hair strands, 3.3-3.8 levels of error). The net alone, read strictly,
loses hair; the estimate alone loses hands whose skin is like the face's.
"""

from __future__ import annotations

import torch

from faceweave.models.occluder_net import KEEP_HIGH, KEEP_LOW, OccluderNet, occluder_mask, shipped_occluder_net
from faceweave.ops.occlusion import occlusion_mask as estimate_by_rules


def occlusion_mask(target: torch.Tensor, skin: torch.Tensor, region: torch.Tensor, features: torch.Tensor, *,
                   face_px: float, lips: torch.Tensor, net: OccluderNet | None = None,
                   keep: tuple[float, float] = (KEEP_LOW, KEEP_HIGH)) -> torch.Tensor:
    """Where the target's face is covered by something else: the larger of the two estimates' masks.

    Args:
        target: ``(B, 3, S, S)`` float RGB ``[0, 1]``, the target face crops.
        skin: ``(B, 1, S, S)`` weights of the target's skin (the colour-statistics region).
        region: ``(B, 1, S, S)`` the face mask, where occluders are looked for.
        features: ``(B, 1, S, S)`` the eyes, brows and lips (grown). lips: ``(B, 1, S, S)``, the lips' part.
        face_px: the faces' size in crop pixels.
        net, keep: the occluder net (None: the shipped one) and how strictly it is read
            (:func:`~faceweave.models.occluder_net.occluder_mask`); other values for benchmarks/occluder_net.

    Returns:
        ``(B, 1, S, S)`` float32 in ``[0, 1]``: 1 = an occluder (keep the target), 0 outside ``region``.
    """
    by_rules = estimate_by_rules(target, skin, region, features, face_px=face_px, lips=lips).float()
    net = net if net is not None else shipped_occluder_net(target.device)
    by_net = occluder_mask(net, target, skin, region, features, lips=lips, keep=keep)
    return torch.maximum(by_rules, by_net)
