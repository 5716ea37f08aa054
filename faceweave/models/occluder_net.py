"""The occluder net: which pixels of a target face crop are not the face (a hand, an object, a patch).

A small U-Net (0.24 M parameters) trained by ``benchmarks/occluder_net/train.py`` on faceweave's own synthetic
occluders over the *tune* people of the bundled media only (astronaut, grace_hopper) and the carphone clip's speaker;
never on obama / obama2, the held-out split's targets (docs/quality.md, "A learned occluder net"). Its weights ship
in the wheel (``models/data/occluder_net.safetensors``, 0.97 MB): nothing is downloaded.

Three people are few: on a person it never saw, the net's probability is high on its occluders and middling on parts
of the face (a shiny forehead, teeth). So the swap keeps a pixel only from a probability of :data:`KEEP_LOW`, and
takes the larger of this mask and the hand-built estimate's (``faceweave.swapper.occlusion``), which follows hair
strands the strict net loses.

Input contract (:func:`occluder_input`): the mesh swap's target crop and masks resampled to :data:`GRID`²:

- channels 0-2: the crop normalised by its own skin's statistics, ``(rgb - mean) / (std + 0.02) / 5``, clamped to
  ``[-1, 1]``: a dark, bright or tinted face is judged against its own skin, and the net never sees a face's
  absolute colour (a first net that also saw the RGB called an unseen person's whole face an occluder);
- channels 3-6: the mesh's face mask, skin, eyes-and-brows and lips, each in ``[0, 1]``.

Output: ``(B, 1, GRID, GRID)`` logits of "occluder". Read only inside the face mask.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from faceweave.errors import check_shape
from faceweave.models.registry import InputContract, ModelSpec, register
from faceweave.ops.filters import gaussian_blur, max_filter

GRID = 160
IN_CHANNELS = 7
WIDTHS = (24, 32, 48, 64)
#: Added to the skin's spread before normalising (an overexposed face has almost none).
SPREAD_FLOOR = 0.02
#: The normalised colour is divided by this and clamped to [-1, 1].
NORMALISED_RANGE = 5.0

SPEC = register(ModelSpec(
    name="occluder_net", family="parser", file="occluder_net.safetensors",
    sha256="b348ca67d78e60337ad708a309b7f7d0f85f1a604e17f1141ee57b5bfc8d0f1d",
    licence="Apache-2.0 (faceweave's own weights, trained on the bundled media: data/media/ATTRIBUTION.md)",
    source="benchmarks/occluder_net/train.py (docs/quality.md)", embedded=True, size_bytes=973308,
    contract=InputContract(size=(GRID, GRID), value_range="[-1,1] and [0,1]",
                           notes="7 channels: the mesh swap's target crop normalised by its skin's mean and spread, "
                                 "then its face, skin, eyes+brows and lips masks; output occluder logits"),
))


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(8, cout), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.GroupNorm(8, cout), nn.ReLU(inplace=True))


class OccluderNet(nn.Module):
    """``forward(x (B, 7, 160, 160))`` → ``(B, 1, 160, 160)`` occluder logits (a 4-level U-Net)."""

    def __init__(self) -> None:
        super().__init__()
        w = WIDTHS
        self.down = nn.ModuleList([_block(IN_CHANNELS, w[0]), _block(w[0], w[1]), _block(w[1], w[2]),
                                   _block(w[2], w[3])])
        self.up = nn.ModuleList([_block(w[3] + w[2], w[2]), _block(w[2] + w[1], w[1]), _block(w[1] + w[0], w[0])])
        self.head = nn.Conv2d(w[0], 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for k, block in enumerate(self.down):
            x = block(x if k == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        for block, skip in zip(self.up, reversed(skips[:-1]), strict=True):
            x = block(torch.cat([F.interpolate(x, size=skip.shape[-2:], mode="nearest"), skip], 1))
        return self.head(x)


def occluder_input(target: torch.Tensor, region: torch.Tensor, skin: torch.Tensor, features: torch.Tensor,
                   lips: torch.Tensor) -> torch.Tensor:
    """The net's ``(B, 7, GRID, GRID)`` float32 input from the mesh swap's crops (module docstring).

    Args:
        target: ``(B, 3, S, S)`` float RGB ``[0, 1]`` target face crops (any S).
        region, skin, features, lips: ``(B, 1, S, S)`` float ``[0, 1]``: the face mask, the skin, the eyes and brows,
            the lips.
    """
    check_shape(target, ["B", "3", "S", "S"], "occluder net target")
    size = target.shape[-1]

    def grid(x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        return x if size == GRID else F.interpolate(x, size=(GRID, GRID), mode="area" if size > GRID else "bilinear",
                                                    **({} if size > GRID else {"align_corners": False}))

    rgb, masks = grid(target), grid(torch.cat([region, skin, features, lips], 1)).clamp(0, 1)
    return torch.cat([normalised_by_skin(rgb, masks[:, 1:2]), masks], 1)


def normalised_by_skin(rgb: torch.Tensor, skin: torch.Tensor) -> torch.Tensor:
    """``(B, 3, H, W)`` RGB in units of the skin's own spread: ``(rgb - mean) / (std + SPREAD_FLOOR)``, divided by
    :data:`NORMALISED_RANGE` and clamped to ``[-1, 1]`` (weighted by the ``(B, 1, H, W)`` skin mask)."""
    weight = skin / skin.sum((2, 3), keepdim=True).clamp_min(1e-6)
    mean = (rgb * weight).sum((2, 3), keepdim=True)
    std = (((rgb - mean) ** 2) * weight).sum((2, 3), keepdim=True).sqrt()
    return ((rgb - mean) / (std + SPREAD_FLOOR) / NORMALISED_RANGE).clamp(-1, 1)


def load_occluder_net(device: torch.device, path: str | None = None) -> OccluderNet:
    """An occluder net in eval mode on ``device``, float32: the shipped one (checked against :data:`SPEC`), or
    ``path`` (a safetensors file of ``benchmarks/occluder_net/train.py``)."""
    from safetensors.torch import load_file

    net = OccluderNet()
    net.load_state_dict(load_file(path or str(SPEC.require())), strict=True)
    return net.to(device=device).eval().requires_grad_(False)


_NETS: dict[torch.device, OccluderNet] = {}


def shipped_occluder_net(device: torch.device) -> OccluderNet:
    """The shipped net on ``device``, loaded once per process (read-only weights; a host→device copy inside a CUDA
    graph's capture would fail, and the swap's eager warm-up makes it first)."""
    if device not in _NETS:
        _NETS[device] = load_occluder_net(device)
    return _NETS[device]


#: The net's probability is mapped to a keep-mask by a ramp from LOW (nothing kept) to HIGH (kept whole). Strict:
#: from 0.35 the net kept a third of an unseen person's face; from 0.93, 0.04-0.11 of it, and every hand, patch and
#: object of the held-out split (docs/quality.md).
KEEP_LOW, KEEP_HIGH = 0.93, 0.99
#: The kept mask grows by this many crop pixels (at least; more when the crop is finer than the net's grid) and is
#: softened by a 0.7-px gaussian, so the edge of a kept occluder shows no line of swapped pixels.
GROW_PX = 2


def occluder_mask(net: OccluderNet, target: torch.Tensor, skin: torch.Tensor, region: torch.Tensor,
                  features: torch.Tensor, *, lips: torch.Tensor, keep: tuple[float, float] = (KEEP_LOW, KEEP_HIGH)
                  ) -> torch.Tensor:
    """Where the target's face is covered by something else, by the occluder net.

    Args:
        net: the net (:func:`shipped_occluder_net`), on the crops' device.
        target: ``(B, 3, S, S)`` float RGB ``[0, 1]``, the target face crops.
        skin, region, features, lips: ``(B, 1, S, S)`` in ``[0, 1]``: the skin (colour-statistics region), the face
            mask (where occluders are looked for), the eyes/brows/lips and the lips.
        keep: the probabilities from which a pixel starts to be kept and is kept whole.

    Returns:
        ``(B, 1, S, S)`` float32 in ``[0, 1]``: 1 = an occluder (keep the target), 0 outside ``region``.
    """
    x = occluder_input(target, region, skin, features, lips)
    with torch.no_grad():
        prob = torch.sigmoid(net(x).float())
    kept = ((prob - keep[0]) / (keep[1] - keep[0])).clamp(0, 1)
    size = target.shape[-1]
    if size != GRID:
        kept = F.interpolate(kept, size=(size, size), mode="bilinear", align_corners=False)
    grow = max(GROW_PX, round(GROW_PX * size / GRID))
    return gaussian_blur(max_filter(kept, grow), 0.7).clamp(0, 1) * region.float()
