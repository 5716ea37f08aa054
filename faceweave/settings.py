"""The one immutable settings object that a swap request or job carries (CLI, Python API and service alike)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from faceweave.errors import InvalidOption

SelectorMode = Literal["one", "many", "reference", "index"]
BlendMode = Literal["laplacian", "poisson", "feather"]
ColourMode = Literal["lab", "none"]
DeviceName = str  # "auto" | "cpu" | "cuda" | "cuda:N"
DTypeName = Literal["auto", "float32", "float16", "bfloat16"]


class SwapSettings(BaseModel):
    """Everything that decides how one swap job runs. Frozen: a job's settings never change under it.

    Unknown fields are rejected (``extra="forbid"``) so that a misspelt option is an error, not a no-op.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    # --- which faces -------------------------------------------------------------------------------------
    selector: SelectorMode = "one"
    face_index: int = Field(0, ge=0, description="with selector=index: 0-based position, left to right")
    reference_threshold: float | None = Field(
        None, gt=0.0, le=2.0,
        description="with selector=reference: max identity distance to count as the same person "
        "(default: the recogniser's own limit, 0.6 for dlib, 1.095 for arcface)",
    )

    # --- the swap ------------------------------------------------------------------------------------------
    swapper: str = Field("mesh", description="'mesh' (built-in) or a plug-in model name")
    shape_transfer: float = Field(
        0.6, ge=0.0, le=1.0, description="move the target's face outline toward the source's (identity vs fit)"
    )
    keep_mouth: bool = Field(True, description="keep the target's mouth interior (teeth, tongue)")
    keep_eyes: bool = Field(False, description="keep the target's eyes (gaze) instead of the source's")
    colour_transfer: ColourMode = "lab"
    blend: BlendMode = "laplacian"
    mask_erosion: float = Field(0.04, ge=0.0, le=0.3, description="face-hull erosion, fraction of face size")
    mask_feather: float = Field(0.06, ge=0.0, le=0.3, description="mask feather width, fraction of face size")
    enhancer: str | None = Field(
        "detail", description="'detail' (built-in sharpening of the swapped face) or a plug-in model; None: off"
    )
    enhancer_blend: float = Field(0.8, ge=0.0, le=1.0, description="how much of the enhanced face to keep")
    codeformer_fidelity: float = Field(0.5, ge=0.0, le=1.0)
    detector: str = Field("blazeface", description="'blazeface' (built-in), 'retinaface' (embedded ONNX), 'scrfd'…")
    recogniser: Literal["dlib", "arcface"] = Field("dlib", description="'dlib' (built-in) or 'arcface' (plug-in ONNX)")
    occlusion_mask: str | None = Field(None, description="face-parser plug-in name (keeps occluders in front)")
    occlusion: bool = Field(False, description="built-in occlusion (mesh, experimental): hands, hair, objects in front "
                            "of the face keep the target's pixels (a hand-built estimate and faceweave's own small "
                            "net, shipped); off by default: it also keeps a few hundredths of some faces, and a kept "
                            "occluder costs identity (docs/quality.md)")
    detail_restore: bool = Field(True, description="built-in swap: sharpen the swapped eyes, brows and lips of a face "
                                 "magnified more than 1× (in full from 1.25×) with their own detail band, scaled by "
                                 "the magnification (held-out sharpness 0.805 → 1.124, docs/quality.md); live sessions "
                                 "leave it off")
    hairline_fill: bool = Field(True, description="built-in swap: on targets whose forehead is skin past the face "
                                "mesh's top (bald, high forehead), replace the top of the source's fringe by its own "
                                "forehead skin and show the target's forehead where the rest of it would be (no hair "
                                "band there); other targets are untouched. Costs 0.3-0.4 % of the mean identity "
                                "distance on the held-out sets (docs/quality.md)")
    pixel_boost: int = Field(1, ge=1, le=4, description="128-px swappers: run on k×k tiles of a k·128 crop")
    model_dir: str | None = Field(None, description="plug-in model folder (default: $FACEWEAVE_MODELS)")
    provenance_label: bool = Field(False, description="draw a small visible 'AI-generated' label")
    # operator switches: the service sets these itself and refuses them from clients (serve's SERVICE_ONLY_FIELDS)
    watermark: bool = Field(True, description="embed faceweave's invisible watermark in the pixels")
    c2pa: bool = Field(True, description="sign C2PA Content Credentials into PNG/JPEG/WebP/TIFF/MP4/MOV outputs")
    c2pa_cert: str | None = Field(None, description="PEM certificate chain for C2PA (default: a local, untrusted one)")
    c2pa_key: str | None = Field(None, description="PEM private key of c2pa_cert")

    # --- compute -------------------------------------------------------------------------------------------
    device: DeviceName = "auto"
    dtype: DTypeName = Field("auto", description="precision of the swap, enhancer and plug-in nets (auto: float16 on "
                             "CUDA, float32 elsewhere); the detector and FaceMesh always run in float32")
    batch_size: int = Field(8, ge=1, le=256)
    devices: str | None = Field(None, description="video segments across devices, e.g. '0,1' (GPUs) or 'cpu,cpu'")
    cuda_graphs: bool = Field(
        True, description="on a GPU, replay the analysis nets and the built-in swap from CUDA graphs (fixed shapes)"
    )

    # --- limits --------------------------------------------------------------------------------------------
    max_pixels: int = Field(80_000_000, ge=1, description="largest decoded image/frame area accepted")
    max_duration_s: float = Field(3600.0, gt=0, description="longest video accepted")

    # --- video ---------------------------------------------------------------------------------------------
    video_codec: str | None = Field(None, description="libx264, libx265, libsvtav1, h264_nvenc…; None: auto")
    crf: int | None = Field(None, ge=0, le=63)
    preset: str | None = None
    pix_fmt: str | None = None
    trim_start: str | None = Field(None, description="seconds ('1.5', '1.5s') or frames ('45f')")
    trim_end: str | None = None
    workers: int = Field(1, ge=1, le=64, description="parallel segment encoders")
    detect_every: int = Field(5, ge=1, le=300, description="run the detector every N frames, track between")
    smoothing: bool = Field(True, description="One-Euro smoothing of landmarks over time")
    skip_corrupt: bool = False

    @field_validator("device")
    @classmethod
    def _check_device(cls, v: str) -> str:
        if v in ("auto", "cpu", "cuda", "mps") or (v.startswith("cuda:") and v[5:].isdigit()):
            return v
        raise ValueError("device must be auto, cpu, cuda or cuda:N")

    @field_validator("enhancer")
    @classmethod
    def _check_enhancer(cls, v: str | None) -> str | None:
        return None if v is None or v.lower() in ("none", "off", "") else v

    @classmethod
    def build(cls, **values: object) -> SwapSettings:
        """Validate ``values`` into settings, raising :class:`InvalidOption` (not pydantic's error) on failure."""
        try:
            return cls(**values)  # type: ignore[arg-type]
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "settings"
            raise InvalidOption(
                f"invalid option {where}: {first['msg']}", hint="see `faceweave swap --help` for valid values"
            ) from None
