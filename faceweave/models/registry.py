"""The model registry: one :class:`ModelSpec` per weight file faceweave knows, with its full sha256 and licence.

Built-in (embedded) models live in ``faceweave/models/data`` and ship in the wheel. Plug-in models (ONNX files
a user owns) live in the model directory (``FACEWEAVE_MODELS``). Building the registry never touches the
network; only ``faceweave models fetch`` does.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from faceweave.errors import ModelIntegrityError, ModelMissing

EMBEDDED_DIR = Path(__file__).parent / "data"

Family = Literal["detector", "landmarks", "recogniser", "swapper", "enhancer", "parser"]


@dataclass(frozen=True)
class InputContract:
    """What a network expects: square size, channel order, normalisation ``(x/255 - mean) / std`` or raw."""

    size: tuple[int, int]
    colour: Literal["RGB", "BGR"] = "RGB"
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    value_range: str = "[0,1]"
    template: str | None = None  # name of the alignment template, e.g. "arcface_112", "ffhq_512"
    notes: str = ""


@dataclass(frozen=True)
class ModelSpec:
    """One weight file: where it comes from, how to check it, under what terms, and its input contract."""

    name: str
    family: Family
    file: str
    sha256: str
    licence: str
    source: str
    contract: InputContract
    size_bytes: int | None = None
    url: str | None = None
    embedded: bool = False
    non_commercial: bool = False
    derived_from: str | None = None  # e.g. the .tflite a safetensors file was converted from
    package: str | None = None  # weights shipped inside another installed package (e.g. dlib's models)
    extra: dict[str, str] = field(default_factory=dict)
    #: sha256 -> description of other published builds of the same model with the same input/output contract
    #: (e.g. the roop-family ``inswapper_128.onnx``): accepted by the checks, reported by ``models verify``.
    variants: dict[str, str] = field(default_factory=dict)

    def accepts(self, digest: str) -> bool:
        """Whether a file with sha256 ``digest`` is this model: the pinned build or a listed variant."""
        return digest == self.sha256 or digest in self.variants

    def path(self, model_dir: Path | None = None) -> Path:
        """Where the file is (embedded dir, or the user's model dir for plug-ins)."""
        if self.package:
            from importlib.resources import files

            return Path(str(files(self.package) / self.file))
        if self.embedded:
            return EMBEDDED_DIR / self.file
        from faceweave.models.store import model_dir as default_dir  # plug-in store (issue: ONNX plug-ins)

        return (model_dir or default_dir()) / self.file

    def require(self, model_dir: Path | None = None, *, verify: bool = True) -> Path:
        """Return the verified path, or raise :class:`ModelMissing` / :class:`ModelIntegrityError`."""
        path = self.path(model_dir)
        if not path.is_file():
            raise ModelMissing(
                f"model {self.name!r} needs file {self.file} (sha256 {self.sha256}) which is not in {path.parent}",
                hint=f"put it there or run `faceweave models fetch {self.name}`"
                + (f" (source: {self.url})" if self.url else ""),
            )
        if verify:
            got = sha256_file(path)
            if not self.accepts(got):
                raise ModelIntegrityError(
                    f"model file {path} has sha256 {got}, expected {self.sha256}",
                    hint="the file is corrupt or not the published one: delete it and fetch it again",
                )
        return path


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


_REGISTRY: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    """Add a spec at import time of its model-family module (names are unique)."""
    if spec.name in _REGISTRY and _REGISTRY[spec.name] != spec:
        raise ValueError(f"model name {spec.name!r} registered twice")
    _REGISTRY[spec.name] = spec
    return spec


def get_spec(name: str) -> ModelSpec:
    _load_families()
    if name not in _REGISTRY:
        from faceweave.errors import InvalidOption

        raise InvalidOption(f"unknown model {name!r}", hint=f"known models: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def all_specs() -> list[ModelSpec]:
    _load_families()
    return sorted(_REGISTRY.values(), key=lambda s: (s.family, s.name))


def _load_families() -> None:
    # Importing a family module registers its specs; the list is static, so this is idempotent.
    import importlib

    for mod in ("blazeface", "facemesh", "iris", "occluder_net", "dlib_identity", "onnx_zoo"):
        try:
            importlib.import_module(f"faceweave.models.{mod}")
        except ModuleNotFoundError as exc:
            if exc.name != f"faceweave.models.{mod}":
                raise
