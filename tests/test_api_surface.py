"""The public surface is pinned: an accidental rename, removal or change of a default fails here.

A deliberate change edits the inventory below in the same commit (the diff then shows the break to reviewers).
Additions to ``SwapSettings`` and to the CLI's options are allowed without editing it; removing or renaming one is not.
"""

from __future__ import annotations

import inspect
from typing import Any

import typer

import faceweave

PINNED_ALL = ["SwapResult", "SwapSettings", "swap", "swap_image", "swap_video"]

_SWAP_PARAMS = [
    ("sources", "POSITIONAL_OR_KEYWORD", None),
    ("target", "POSITIONAL_OR_KEYWORD", None),
    ("output", "POSITIONAL_OR_KEYWORD", None),
    ("settings", "POSITIONAL_OR_KEYWORD", "None"),
    ("progress", "KEYWORD_ONLY", "<function>"),
    ("work_dir", "KEYWORD_ONLY", "None"),
    ("reference", "KEYWORD_ONLY", "None"),
]
PINNED_SIGNATURES: dict[str, list[tuple[str, str, str | None]]] = {
    "swap": _SWAP_PARAMS,
    "swap_image": _SWAP_PARAMS,
    "swap_video": _SWAP_PARAMS,
    "SwapResult": [
        ("output", "POSITIONAL_OR_KEYWORD", None),
        ("kind", "POSITIONAL_OR_KEYWORD", None),
        ("faces_swapped", "POSITIONAL_OR_KEYWORD", None),
        ("frames", "POSITIONAL_OR_KEYWORD", "1"),
        ("seconds", "POSITIONAL_OR_KEYWORD", "0.0"),
        ("stats", "POSITIONAL_OR_KEYWORD", "<factory>"),
    ],
}

PINNED_SETTINGS_DEFAULTS: dict[str, Any] = {
    "selector": "one", "face_index": 0, "reference_threshold": None, "swapper": "mesh", "shape_transfer": 0.6,
    "keep_mouth": True, "keep_eyes": False, "colour_transfer": "lab", "blend": "laplacian", "mask_erosion": 0.04,
    "mask_feather": 0.06, "enhancer": "detail", "enhancer_blend": 0.8, "codeformer_fidelity": 0.5,
    "detector": "blazeface", "recogniser": "dlib", "occlusion_mask": None, "pixel_boost": 1, "model_dir": None,
    "provenance_label": False, "device": "auto", "dtype": "auto", "batch_size": 8, "devices": None,
    "cuda_graphs": True, "max_pixels": 80_000_000, "max_duration_s": 3600.0, "video_codec": None, "crf": None,
    "preset": None, "pix_fmt": None, "trim_start": None, "trim_end": None, "workers": 1, "detect_every": 5,
    "smoothing": True, "skip_corrupt": False,
}

PINNED_CLI: dict[str, list[str]] = {
    'analyze': [
        '--device', '--identity', '--landmarks', 'IMAGE',
    ],
    'bench': [
        '--batch-sizes', '--cold-start', '--compile', '--content', '--cpu-frames', '--crf', '--device', '--devices',
        '--e2e-workers', '--input', '--json', '--plain-workers', '--preset', '--repeats', '--seconds', '--size',
        '--stages', '--workers',
    ],
    'demo': [
        '--device', '--out-dir', '--video',
    ],
    'eval': [
        '--output', '--source', '--target', '-o', '-s', '-t',
    ],
    'keys create': [
        '--data-dir', '--env-file', '--tenant',
    ],
    'live': [
        '--blend', '--detect-every', '--device', '--dtype', '--enhancer', '--input', '--label', '--output',
        '--selector', '--smoothing', '--source', '--stats-json', '--swapper', '-i', '-o', '-s',
    ],
    'models fetch': [
        '--model-dir', '--retries', '--sha256', '--url', 'NAME',
    ],
    'models list': [
        '--json', '--model-dir',
    ],
    'models path': [
        '--model-dir', 'NAME',
    ],
    'models verify': [
        '--model-dir', 'NAMES',
    ],
    'serve': [
        '--data-dir', '--env-file', '--host', '--port', '--ssl-certfile', '--ssl-keyfile',
    ],
    'swap': [
        '--batch-size', '--blend', '--crf', '--cuda-graphs', '--detect-every', '--detector', '--device', '--devices',
        '--dtype', '--enhancer', '--face-index', '--keep-eyes', '--keep-mouth', '--label', '--max-duration',
        '--max-pixels', '--model-dir', '--occlusion-mask', '--output', '--pix-fmt', '--pixel-boost', '--preset',
        '--recogniser', '--reference', '--reference-threshold', '--selector', '--shape-transfer', '--skip-corrupt',
        '--smoothing', '--source', '--swapper', '--target', '--trim-end', '--trim-start', '--video-codec',
        '--workers', '-o', '-s', '-t',
    ],
}

def _default(value: Any) -> str | None:
    if value is inspect.Parameter.empty:
        return None
    if isinstance(value, (int, float, str, bool, type(None))):
        return repr(value)
    if type(value).__name__ == "_HAS_DEFAULT_FACTORY_CLASS":
        return "<factory>"
    return f"<{type(value).__name__}>"


def signature_inventory(obj: Any) -> list[tuple[str, str, str | None]]:
    return [(p.name, p.kind.name, _default(p.default)) for p in inspect.signature(obj).parameters.values()]


def cli_inventory() -> dict[str, list[str]]:
    """Every leaf command of the ``faceweave`` CLI → its option strings and argument names."""
    from faceweave.cli import app

    def walk(command: Any, prefix: str) -> dict[str, list[str]]:
        if hasattr(command, "commands"):
            found: dict[str, list[str]] = {}
            for name, sub in sorted(command.commands.items()):
                found.update(walk(sub, f"{prefix} {name}".strip()))
            return found
        names = [o for p in command.params for o in (p.opts if p.param_type_name == "option" else [p.name.upper()])]
        return {prefix: sorted(names)}

    return walk(typer.main.get_command(app), "")


def test_public_names_are_pinned() -> None:
    assert sorted(faceweave.__all__) == sorted(PINNED_ALL)
    for name in PINNED_ALL:
        assert getattr(faceweave, name) is not None


def test_public_signatures_are_pinned() -> None:
    for name, expected in PINNED_SIGNATURES.items():
        assert signature_inventory(getattr(faceweave, name)) == expected, name


def test_settings_fields_and_defaults_are_kept() -> None:
    fields = faceweave.SwapSettings.model_fields
    missing = sorted(set(PINNED_SETTINGS_DEFAULTS) - set(fields))
    assert missing == []
    changed = {k: (v, fields[k].default) for k, v in PINNED_SETTINGS_DEFAULTS.items() if fields[k].default != v}
    assert changed == {}


def test_cli_commands_and_options_are_kept() -> None:
    current = cli_inventory()
    lost = {cmd: sorted(set(opts) - set(current.get(cmd, []))) for cmd, opts in PINNED_CLI.items()}
    assert {cmd: opts for cmd, opts in lost.items() if opts or cmd not in current} == {}


def test_inventory_notices_a_break() -> None:
    # The check must be able to fail: a function with one keyword renamed differs from the pin.
    def renamed(sources, target, output, settings=None, *, progress=print, work_dir=None, ref=None):  # type: ignore[no-untyped-def]
        ...

    assert signature_inventory(renamed) != PINNED_SIGNATURES["swap"]


def test_no_submodule_shadows_a_public_name() -> None:
    # Importing a subpackage sets it as an attribute of its parent: a `faceweave/swap/` package replaced the public
    # `faceweave.swap` function as soon as anything imported it (every swap does).
    from pathlib import Path

    root = Path(faceweave.__file__).parent
    clashes = [n for n in PINNED_ALL if (root / n).is_dir() or (root / f"{n}.py").exists()]
    assert clashes == []


def test_public_names_survive_the_pipeline_being_imported() -> None:
    import importlib
    import pkgutil

    for module in pkgutil.walk_packages(faceweave.__path__, "faceweave."):
        if module.name.startswith(("faceweave.serve", "faceweave.live")) or module.name.endswith("__main__"):
            continue  # optional extras; they import nothing named like the public API
        importlib.import_module(module.name)
    assert callable(faceweave.swap) and signature_inventory(faceweave.swap) == PINNED_SIGNATURES["swap"]
