"""ONNX face swappers (FaceFusion/insightface contracts): ``inswapper_128`` (+ fp16), ``simswap_256``, ``simswap_512``.

Per batch of frames: all target faces are aligned with ONE batched warp (:func:`faceweave.models.arcface.align_crops`),
normalised, run through the graph (batched when the export allows, else face by face), and pasted back with a
feathered box mask (× the face-parser mask when ``occlusion_mask`` is set) by :func:`faceweave.ops.blend.paste_back`.

Contracts:
- ``inswapper``: crop aligned to ``arcface_128`` (the arcface template + 8 px in x, insightface's
  ``estimate_norm(…, 128)``); ``target`` = RGB/255; ``source`` = ``l2norm(normed_embedding @ emap)`` where
  ``emap`` is the graph's last initializer (512×512) — exactly insightface ``INSwapper.get``; output RGB [0,1].
- ``simswap``: crop aligned to ``arcface_112_v1`` scaled to 256/512; ``target`` = ``(RGB/255 - mean) / std``
  (ImageNet mean/std for 256, none for 512); ``source`` = ``l2norm(crossface_simswap(embedding))``; output RGB [0,1].
- pixel boost ``k`` (128-px models): the crop is ``k·128`` px and split into ``k²`` polyphase sub-images
  ``crop[i::k, j::k]`` (each is still a whole aligned face, which the network needs — FaceFusion's
  ``implode_pixel_boost``); each is swapped and the results are interleaved back into the ``k·128`` crop.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from faceweave.analysis.face import Face
from faceweave.errors import InvalidOption, ShapeError, check_shape
from faceweave.models.arcface import ArcFaceRecogniser, align_crops, l2_normalise
from faceweave.models.face_parser import FaceParser
from faceweave.models.onnx_runtime import OnnxModel
from faceweave.models.onnx_zoo import resolve_model_file
from faceweave.models.registry import ModelSpec, get_spec
from faceweave.ops.masks import feather_mask
from faceweave.settings import SwapSettings

_LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class SwapContract:
    """What a swapper graph expects: kind, crop side, template, normalisation."""

    kind: str  # "inswapper" | "simswap"
    size: int
    template: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def from_spec(cls, spec: ModelSpec) -> SwapContract:
        c = spec.contract
        if c.template is None:
            raise InvalidOption(f"model {spec.name!r} has no alignment template")
        return cls(spec.extra.get("kind", "inswapper"), c.size[0], c.template, c.mean, c.std)


def implode_pixel_boost(crops: torch.Tensor, k: int) -> torch.Tensor:
    """Polyphase split ``(N, C, k·s, k·s)`` → ``(N·k², C, s, s)``; sub-image ``n·k² + i·k + j`` is
    ``crops[n, :, i::k, j::k]``."""
    if k == 1:
        return crops
    n, c, h, w = crops.shape
    s = h // k
    return crops.reshape(n, c, s, k, s, k).permute(0, 3, 5, 1, 2, 4).reshape(n * k * k, c, s, s)


def explode_pixel_boost(tiles: torch.Tensor, k: int) -> torch.Tensor:
    """Inverse of :func:`implode_pixel_boost`: ``(N·k², C, s, s)`` → ``(N, C, k·s, k·s)``."""
    if k == 1:
        return tiles
    nk, c, s, _ = tiles.shape
    n = nk // (k * k)
    return tiles.reshape(n, k, k, c, s, s).permute(0, 3, 4, 1, 5, 2).reshape(n, c, s * k, s * k)


def box_mask(n: int, size: int, *, border_px: int, sigma_px: float, device: torch.device) -> torch.Tensor:
    """Feathered box mask of the aligned crop: ``(n, 1, size, size)`` float32 in [0, 1], 0 on a ``border_px`` frame,
    softened with a gaussian of ``sigma_px`` (so the paste has no visible edge)."""
    mask = torch.zeros(n, 1, size, size, device=device)
    b = max(1, min(border_px, size // 2 - 1))
    mask[..., b:-b, b:-b] = 1.0
    return feather_mask(mask, sigma_px) if sigma_px > 0 else mask


def paste_faces(
    frames: torch.Tensor, crops: torch.Tensor, masks: torch.Tensor, matrices: torch.Tensor, frame_index: torch.Tensor
) -> torch.Tensor:
    """Paste ``N`` crops back into their frames with :func:`faceweave.ops.blend.paste_back`.

    Args:
        frames: ``(B, 3, H, W)`` float [0, 1] RGB. crops: ``(N, 3, S, S)`` [0, 1]. masks: ``(N, 1, S, S)`` [0, 1].
        matrices: ``(N, 2, 3)`` frame → crop pixels. frame_index: ``(N,)`` long, frame of each crop.
    Returns:
        new ``(B, 3, H, W)`` tensor (input untouched); pixels where every warped mask is 0 are bit-identical.

    ``paste_back`` takes one crop per frame, so crops are pasted in rounds: round ``r`` holds the ``r``-th face of
    each frame (one round for the common one-face-per-frame case); later faces blend over earlier ones.
    """
    from faceweave.ops.blend import paste_back

    out = frames.clone()
    rounds: list[list[int]] = []
    seen: dict[int, int] = {}
    for n, fi in enumerate(frame_index.tolist()):
        r = seen.get(fi, 0)
        seen[fi] = r + 1
        if r == len(rounds):
            rounds.append([])
        rounds[r].append(n)
    for members in rounds:
        sel = torch.tensor(members, dtype=torch.long, device=frames.device)
        fidx = frame_index[sel]
        # CPU: compute in float32 (fp16 grid_sample is slow and crashed on CPU with torch 2.13).
        work = out[fidx] if frames.device.type == "cuda" else out[fidx].float()
        pasted = paste_back(
            work, crops[sel].to(work.dtype), masks[sel].to(work.dtype), matrices[sel].to(work.dtype)
        )
        out[fidx] = pasted.to(out.dtype)
    return out


class OnnxSwapper:
    """A loaded ONNX swapper with its recogniser (and SimSwap's embedding converter, and the optional parser).

    Built by :func:`load_swapper`; see the module docstring for the contracts.
    """

    def __init__(
        self,
        spec: ModelSpec,
        model: OnnxModel,
        recogniser: ArcFaceRecogniser,
        *,
        converter: OnnxModel | None = None,
        parser: FaceParser | None = None,
        device: torch.device,
        dtype: torch.dtype = torch.float32,
        pixel_boost: int = 1,
        mask_border: float = 0.1,
        mask_feather: float = 0.06,
    ) -> None:
        self.spec, self.model, self.recogniser = spec, model, recogniser
        self.converter, self.parser = converter, parser
        self.device, self.dtype = device, dtype
        self.contract = SwapContract.from_spec(spec)
        if pixel_boost > 1 and self.contract.size != 128:
            _LOG.warning("pixel boost applies to 128-px swappers; %s runs at %d px", spec.name, self.contract.size)
            pixel_boost = 1
        self.pixel_boost = pixel_boost
        self.mask_border, self.mask_feather = mask_border, mask_feather
        names = set(model.input_names)
        if not {"target", "source"} <= names:
            raise InvalidOption(
                f"{spec.file} has inputs {sorted(names)}, a {self.contract.kind} swapper needs 'target' and 'source'",
                hint="this file is not the published model",
            )
        self.emap: torch.Tensor | None = None
        if self.contract.kind == "inswapper":
            emap = torch.from_numpy(model.initializer(-1).astype("float32"))
            if tuple(emap.shape) != (512, 512):
                raise InvalidOption(
                    f"{spec.file}: the last initializer has shape {tuple(emap.shape)}, inswapper's emap is 512×512"
                )
            self.emap = emap.to(device)
        elif self.converter is None:
            raise InvalidOption(f"{spec.name} needs its embedding converter (crossface_simswap)")

    @property
    def crop_size(self) -> int:
        """Side of the aligned crop pasted back (model size × pixel boost)."""
        return self.contract.size * self.pixel_boost

    @torch.no_grad()
    def latent_from_embedding(self, embedding: torch.Tensor) -> torch.Tensor:
        """Raw ArcFace embeddings ``(N, 512)`` → the swapper's ``source`` input ``(N, 512)`` float32."""
        if self.contract.kind == "inswapper":
            assert self.emap is not None
            return l2_normalise(l2_normalise(embedding) @ self.emap)
        assert self.converter is not None
        converted = self.converter.run_batched({self.converter.input_names[0]: embedding.float()})[0]
        return l2_normalise(converted.reshape(embedding.shape[0], -1))

    @torch.no_grad()
    def prepare_source(self, image: torch.Tensor, face: Face) -> torch.Tensor:
        """The source latent of one face.

        Args:
            image: ``(1, 3, H, W)`` float ``[0, 1]`` RGB; face: its keypoints ``(5, 2)`` in image pixels.
        Returns:
            ``(512,)`` float32 latent on :attr:`device` (compute once per job, reuse for every frame).
        """
        check_shape(image, ["1", "3", "H", "W"], "image")
        index = torch.zeros(1, dtype=torch.long, device=image.device)
        embedding = self.recogniser.embed(image, index, face.keypoints.to(image.device)[None].float())
        return self.latent_from_embedding(embedding)[0].to(self.device)

    @torch.no_grad()
    def swap_crops(self, crops: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """Run the graph on aligned crops.

        Args:
            crops: ``(N, 3, k·s, k·s)`` float ``[0, 1]`` RGB aligned to the contract's template; latents ``(N, 512)``.
        Returns:
            ``(N, 3, k·s, k·s)`` float32 ``[0, 1]`` RGB swapped crops.
        """
        k = self.pixel_boost
        tiles = implode_pixel_boost(crops.float(), k)
        mean = torch.tensor(self.contract.mean, device=tiles.device).view(1, 3, 1, 1)
        std = torch.tensor(self.contract.std, device=tiles.device).view(1, 3, 1, 1)
        x = (tiles - mean) / std
        source = latents.float().repeat_interleave(k * k, dim=0)
        out = self.model.run_batched({"target": x, "source": source})[0]
        return explode_pixel_boost(out.clamp(0.0, 1.0), k)

    def crop_mask(self, crops: torch.Tensor) -> torch.Tensor:
        """Paste mask of aligned crops ``(N, 3, S, S)`` → ``(N, 1, S, S)`` float32 [0, 1]: feathered box ×
        face-parser mask (when an occlusion model is loaded)."""
        size = crops.shape[-1]
        mask = box_mask(
            crops.shape[0],
            size,
            border_px=round(size * self.mask_border),
            sigma_px=size * self.mask_feather / 2,
            device=crops.device,
        )
        if self.parser is not None:
            mask = mask * self.parser.face_mask(crops).to(mask.device)
        return mask

    @torch.no_grad()
    def swap(self, frames: torch.Tensor, items: list[tuple[int, Face, torch.Tensor]]) -> torch.Tensor:
        """Swap faces into a batch of frames.

        Args:
            frames: ``(B, 3, H, W)`` float ``[0, 1]`` RGB.
            items: ``(frame index, target face, source latent (512,))``; several faces per frame are fine.
        Returns:
            ``(B, 3, H, W)`` same dtype/device as ``frames``; frames without items come back unchanged.
        """
        check_shape(frames, ["B", "3", "H", "W"], "frames")
        if not items:
            return frames
        for fi, _, _ in items:
            if not 0 <= fi < frames.shape[0]:
                raise ShapeError(f"frame index {fi} outside the batch of {frames.shape[0]}")
        dev = frames.device
        index = torch.tensor([fi for fi, _, _ in items], dtype=torch.long, device=dev)
        keypoints = torch.stack([f.keypoints.float() for _, f, _ in items]).to(dev)
        latents = torch.stack([lat.float().to(dev) for _, _, lat in items])
        crops, matrices = align_crops(frames, index, keypoints, self.contract.template, self.crop_size)
        swapped = self.swap_crops(crops, latents)
        masks = self.crop_mask(crops)
        return paste_faces(frames, swapped, masks, matrices, index)


def _require(name: str, family: str, model_dir: str | None) -> tuple[ModelSpec, Path]:
    spec = get_spec(name)
    if spec.family != family:
        raise InvalidOption(f"model {name!r} is a {spec.family}, not a {family}")
    return spec, resolve_model_file(spec, model_dir)


def load_swapper(name: str, *, device: torch.device, dtype: torch.dtype, settings: SwapSettings) -> OnnxSwapper:
    """Load swapper ``name`` (+ its recogniser, converter, and ``settings.occlusion_mask`` parser), with
    ``settings.pixel_boost`` and ``settings.mask_feather``; files from ``settings.model_dir``.

    Every file is located (and checked) before any session is built, so a missing one fails fast with
    :class:`~faceweave.errors.ModelMissing` naming file, sha256, URL and folder.
    """
    model_dir = settings.model_dir
    spec, path = _require(name, "swapper", model_dir)
    rec_spec, rec_path = _require(spec.extra.get("recogniser", "arcface"), "recogniser", model_dir)
    conv_path = _require(spec.extra["converter"], "recogniser", model_dir)[1] if "converter" in spec.extra else None
    parser_name = settings.occlusion_mask
    parser_path = _require(parser_name, "parser", model_dir)[1] if parser_name else None
    _LOG.info("loading swapper %s (%s), recogniser %s", name, path, rec_spec.name)
    return OnnxSwapper(
        spec,
        OnnxModel(path, device=device),
        ArcFaceRecogniser(rec_path, device=device),
        converter=OnnxModel(conv_path, device=device) if conv_path else None,
        parser=FaceParser(parser_path, device=device) if parser_path else None,
        device=device,
        dtype=dtype,
        pixel_boost=settings.pixel_boost,
        mask_feather=settings.mask_feather,
    )
