"""``faceweave models list | path | verify | fetch NAME`` — the model registry from the command line.

Only ``fetch`` opens a network connection. Errors are raised as typed :mod:`faceweave.errors` exceptions; the main
CLI maps them to exit codes (``ModelMissing`` 50, ``ModelIntegrityError`` 51, ``ModelDownloadError`` 52).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from faceweave.errors import InvalidOption, ModelIntegrityError, ModelMissing
from faceweave.models import store
from faceweave.models.onnx_zoo import is_pinned, plugin_names
from faceweave.models.registry import ModelSpec, all_specs, get_spec, sha256_file

models_app = typer.Typer(help="List, locate, verify and download the model files.", no_args_is_help=True)

ModelDirOption = Annotated[
    Path | None, typer.Option("--model-dir", help="plug-in model folder (default: $FACEWEAVE_MODELS or user cache)")
]


def _where(spec: ModelSpec, model_dir: Path | None) -> Path:
    return spec.path(None) if spec.embedded else store.model_dir(model_dir) / spec.file


def _in_folder_or_embedded(spec: ModelSpec) -> bool:
    # Other non-embedded specs (dlib) are files inside another installed package, located by their own module.
    return spec.embedded or spec.name in plugin_names()


def _row(spec: ModelSpec, model_dir: Path | None) -> dict[str, object]:
    path = _where(spec, model_dir)
    return {
        "name": spec.name,
        "family": spec.family,
        "file": spec.file,
        "present": path.is_file() if _in_folder_or_embedded(spec) else None,
        "path": str(path),
        "embedded": spec.embedded,
        "sha256": spec.sha256 if is_pinned(spec) else None,
        "size_bytes": spec.size_bytes,
        "licence": spec.licence,
        "non_commercial": spec.non_commercial,
        "url": spec.url,
        "input_size": list(spec.contract.size),
        "template": spec.contract.template,
    }


@models_app.command("list")
def list_models(
    model_dir: ModelDirOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Every known model: family, file, whether it is present, licence (NC = non-commercial)."""
    rows = [_row(s, model_dir) for s in all_specs()]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    typer.echo(f"model folder: {store.model_dir(model_dir)}")
    for r in rows:
        state = {True: "present", False: "missing", None: "in package"}[r["present"]]  # type: ignore[index]
        flags = state + (", NC" if r["non_commercial"] else "")
        pin = "sha256 pinned" if r["sha256"] else "sha256 unpinned"
        typer.echo(f"{r['name']:<22} {r['family']:<10} {r['file']:<32} {flags:<16} {pin:<16} {r['licence']}")


@models_app.command("path")
def path_cmd(
    name: Annotated[str | None, typer.Argument(help="a model name; omit for the model folder")] = None,
    model_dir: ModelDirOption = None,
) -> None:
    """Print the model folder, or where NAME's file is expected."""
    typer.echo(str(_where(get_spec(name), model_dir) if name else store.model_dir(model_dir)))


@models_app.command("verify")
def verify_cmd(
    names: Annotated[list[str] | None, typer.Argument(help="model names; omit for every present file")] = None,
    model_dir: ModelDirOption = None,
) -> None:
    """Hash present files and compare with the pinned sha256 (unpinned ones: print the hash to compare by hand)."""
    specs = [get_spec(n) for n in names] if names else [s for s in all_specs() if _in_folder_or_embedded(s)]
    bad: list[str] = []
    for spec in specs:
        path = _where(spec, model_dir)
        if not path.is_file():
            if names:
                raise ModelMissing(f"model {spec.name!r}: {spec.file} is not in {path.parent}",
                                   hint=f"put it there or run `faceweave models fetch {spec.name}`")
            continue
        got = sha256_file(path)
        if not is_pinned(spec):
            typer.echo(f"{spec.name:<22} UNPINNED  {got}  {path}")
        elif got == spec.sha256:
            typer.echo(f"{spec.name:<22} OK        {got}  {path}")
        elif spec.accepts(got):
            typer.echo(f"{spec.name:<22} VARIANT   {got}  {path}  ({spec.variants[got]})")
        else:
            typer.echo(f"{spec.name:<22} MISMATCH  {got} (expected {spec.sha256})  {path}")
            bad.append(spec.name)
    if bad:
        raise ModelIntegrityError(f"sha256 mismatch for {', '.join(bad)}",
                                  hint="delete the file(s) and fetch them again")


@models_app.command("fetch")
def fetch_cmd(
    name: Annotated[str, typer.Argument(help="model name (see `faceweave models list`)")],
    model_dir: ModelDirOption = None,
    sha256: Annotated[str | None, typer.Option(help="expected sha256 (required for unpinned models)")] = None,
    url: Annotated[str | None, typer.Option(help="download from this mirror instead (same hash check)")] = None,
    retries: Annotated[int, typer.Option(min=0, help="resumes after a dropped connection")] = 3,
) -> None:
    """Download NAME into the model folder: resumes with HTTP Range, checks sha256, moves into place atomically."""
    from faceweave.models.fetch import fetch_model

    spec = get_spec(name)
    if spec.embedded:
        raise InvalidOption(f"model {name!r} is embedded in faceweave; nothing to fetch")
    last = [-1]

    def progress(done: int, total: int | None) -> None:
        step = done * 20 // total if total else done >> 24
        if step != last[0]:
            last[0] = step
            typer.echo(f"  {done / 1e6:8.1f} MB" + (f" / {total / 1e6:.1f} MB" if total else ""), err=True)

    path = fetch_model(spec, model_dir, sha256=sha256, url=url, retries=retries, progress=progress)
    typer.echo(str(path))
