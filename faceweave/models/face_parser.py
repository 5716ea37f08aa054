"""BiSeNet face parser plug-in (19 CelebAMask-HQ classes): the occlusion / region mask of the ONNX swappers.

Whatever covers the face — a hand, a microphone, hair, glasses frames — is not one of the face classes, so the
mask is 0 there and the paste-back keeps the target's pixels: occluders stay in front of the swapped face.

Contract (FaceFusion ``bisenet_resnet_18/34.onnx``): input ``(1,3,512,512)`` RGB ImageNet-normalised
``(x/255 - mean) / std``; output ``(1,19,512,512)`` logits. Classes: 0 background, 1 skin, 2/3 brows, 4/5 eyes,
6 glasses, 7/8 ears, 9 earring, 10 nose, 11 mouth, 12/13 lips, 14 neck, 15 necklace, 16 cloth, 17 hair, 18 hat.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from faceweave.errors import check_shape
from faceweave.models.onnx_runtime import OnnxModel

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# skin, brows, eyes, nose, mouth, lips — the swapped region. Glasses (6) are left out: they stay in front.
FACE_CLASSES = (1, 2, 3, 4, 5, 10, 11, 12, 13)
PARSER_SIZE = 512


class FaceParser:
    """Face-region masks from a BiSeNet ONNX.

    Args:
        model_path: located/verified ``.onnx``. device: where crops live and ORT runs.
        classes: the class ids that count as "face" (the rest are treated as occluders/background).
    """

    def __init__(
        self, model_path: Path, device: torch.device | str = "cpu", *, classes: tuple[int, ...] = FACE_CLASSES
    ) -> None:
        self.device = torch.device(device)
        self.classes = classes
        self.model = OnnxModel(model_path, device=self.device)
        self.input_name = self.model.input_names[0]

    @torch.no_grad()
    def face_mask(self, crops: torch.Tensor) -> torch.Tensor:
        """Face-region mask of aligned crops.

        Args:
            crops: ``(N, 3, S, S)`` float ``[0, 1]`` RGB (any S; resized to 512 for the network, bilinear).
        Returns:
            ``(N, 1, S, S)`` float32 in ``{0, 1}`` (bilinear-resized back, so edges are in between): 1 where the
            arg-max class is one of :attr:`classes`.
        """
        check_shape(crops, ["N", "3", "S", "S"], "crops")
        size = crops.shape[-1]
        x = crops.float()
        if size != PARSER_SIZE:
            x = F.interpolate(x, size=(PARSER_SIZE, PARSER_SIZE), mode="bilinear", align_corners=False)
        mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
        x = (x - mean) / std
        logits = self.model.run_batched({self.input_name: x})[0]
        labels = logits.argmax(1, keepdim=True)
        keep = torch.zeros_like(labels, dtype=torch.float32)
        for c in self.classes:
            keep += (labels == c).float()
        if size != PARSER_SIZE:
            keep = F.interpolate(keep, size=(size, size), mode="bilinear", align_corners=False)
        return keep.to(crops.device)
