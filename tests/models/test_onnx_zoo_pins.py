"""The sha256 pins of the plug-in ONNX models (issue 7): every pinned entry is complete, the pins are the ones the
sources in docs/models.md agree on, and a file that is not the published one is refused (``ModelIntegrityError``)
when it is loaded, verified or fetched. These tests request ``pinned_plugins`` (tests/conftest.py): the registry as
shipped, not the unpinned stand-in view the contract tests use."""

from __future__ import annotations

import importlib.util
import json
import re
import socket
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from faceweave.errors import InvalidOption, ModelIntegrityError, ModelMissing
from faceweave.models.cli import models_app
from faceweave.models.fetch import fetch_model
from faceweave.models.onnx_zoo import (
    _PINS,
    FACEFUSION_ASSETS,
    UNPINNED,
    is_pinned,
    plugin_names,
    resolve_model_file,
)
from faceweave.models.registry import get_spec, sha256_file

# Name -> (first 12 hex digits, size) as listed in docs/models.md "Pinned hashes"; a second spelling of the table
# so that an edit of one without the other fails here.
DOCUMENTED = {
    "scrfd": ("2c07342347ce", 3_295_067),
    "retinaface_10g": ("808399c3d0b4", 16_926_877),
    "arcface": ("f1f79dc3b0b7", 174_388_474),
    "inswapper_128": ("a290273ed497", 555_303_150),
    "inswapper_128_fp16": ("c4eccca86ad1", 277_680_829),
    "simswap_256": ("5b6374b2ffab", 220_368_724),
    "simswap_512": ("fe805d1ce7d9", 239_249_034),
    "gfpgan_1.4": ("accc4757b26b", 340_299_087),
    "codeformer": ("21710e7ab61c", 376_951_650),
    "gpen_bfr_256": ("bad8bf042687", 75_792_988),
    "gpen_bfr_512": ("d5f066b9068a", 284_340_240),
    "bisenet_resnet_18": ("2218b6183c26", 53_205_356),
    "bisenet_resnet_34": ("4a0b8c958a3c", 93_632_546),
}
# No public agreement found (crossface_simswap) or no public file at all (retinaface_r50: the user's own export).
STILL_UNPINNED = {"crossface_simswap", "retinaface_r50"}


def _graphs():
    name = "faceweave_test_onnx_graphs"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, Path(__file__).parent / "test_onnx_graphs.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_pinned_entries_are_complete(pinned_plugins: None) -> None:
    assert set(_PINS) == set(DOCUMENTED)
    assert set(plugin_names()) == set(DOCUMENTED) | STILL_UNPINNED
    for name, (prefix, size) in DOCUMENTED.items():
        spec = get_spec(name)
        assert is_pinned(spec), name
        assert re.fullmatch(r"[0-9a-f]{64}", spec.sha256), name
        assert spec.sha256.startswith(prefix) and spec.size_bytes == size, name
        assert "sha256_status" not in spec.extra, name
        # The pin is of the file at the entry's URL: a FaceFusion release asset with the entry's file name.
        assert spec.url is not None and spec.url.startswith(FACEFUSION_ASSETS + "/models-3.")
        assert spec.url.rsplit("/", 1)[1] == spec.file, name
    assert len({get_spec(n).sha256 for n in DOCUMENTED}) == len(DOCUMENTED)  # distinct files, distinct hashes
    for name in STILL_UNPINNED:
        spec = get_spec(name)
        assert not is_pinned(spec) and spec.sha256 == "" and spec.extra["sha256_status"] == UNPINNED
        assert spec.size_bytes is None


def test_docs_table_matches_the_pins(pinned_plugins: None) -> None:
    rows = [line for line in (Path(__file__).parents[2] / "docs" / "models.md").read_text().splitlines()
            if line.startswith("| `")]
    for name, (prefix, size) in DOCUMENTED.items():
        row = next(r for r in rows if r.startswith(f"| `{name}` |") and "…" in r)
        assert f"`{prefix}…`" in row and f"| {size:,} |" in row and get_spec(name).file in row, name


def test_urls_name_the_release_that_publishes_the_file(pinned_plugins: None) -> None:
    assert get_spec("bisenet_resnet_18").url == f"{FACEFUSION_ASSETS}/models-3.1.0/bisenet_resnet_18.onnx"
    assert get_spec("bisenet_resnet_34").url == f"{FACEFUSION_ASSETS}/models-3.0.0/bisenet_resnet_34.onnx"
    assert get_spec("crossface_simswap").url == f"{FACEFUSION_ASSETS}/models-3.4.0/crossface_simswap.onnx"
    assert get_spec("inswapper_128").url == f"{FACEFUSION_ASSETS}/models-3.0.0/inswapper_128.onnx"


def test_missing_pinned_file_names_the_pin(pinned_plugins: None, tmp_path: Path) -> None:
    spec = get_spec("codeformer")
    with pytest.raises(ModelMissing) as info:
        resolve_model_file(spec, tmp_path)
    msg = info.value.one_line()
    assert all(s in msg for s in ("codeformer.onnx", spec.sha256, str(spec.url), str(tmp_path)))


def test_stand_in_under_a_pinned_name_is_refused(pinned_plugins: None, tmp_path: Path) -> None:
    """A test-built graph with inswapper's exact signature is still not the published file."""
    from faceweave.settings import SwapSettings
    from faceweave.swapper.onnx import load_swapper

    path = _graphs().build_swapper(tmp_path / "inswapper_128.onnx")
    got = sha256_file(path)
    spec = get_spec("inswapper_128")
    with pytest.raises(ModelIntegrityError) as info:
        resolve_model_file(spec, tmp_path)
    assert got in info.value.one_line() and spec.sha256 in info.value.one_line()
    assert resolve_model_file(spec, tmp_path, verify=False) == path  # the check is the only thing refusing it
    settings = SwapSettings.build(swapper="inswapper_128", model_dir=str(tmp_path))
    with pytest.raises(ModelIntegrityError):
        load_swapper("inswapper_128", device=torch.device("cpu"), dtype=torch.float32, settings=settings)


def test_cli_verify_and_list_report_the_pins(pinned_plugins: None, tmp_path: Path) -> None:
    _graphs().build_restorer(tmp_path / "gfpgan_1.4.onnx", 512)
    runner = CliRunner()
    result = runner.invoke(models_app, ["verify", "gfpgan_1.4", "--model-dir", str(tmp_path)])
    assert isinstance(result.exception, ModelIntegrityError)  # the main CLI maps it to exit code 51
    assert "MISMATCH" in result.output and get_spec("gfpgan_1.4").sha256 in result.output
    result = runner.invoke(models_app, ["list", "--json", "--model-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.output)}
    for name, (prefix, size) in DOCUMENTED.items():
        assert str(rows[name]["sha256"]).startswith(prefix) and rows[name]["size_bytes"] == size
    assert rows["crossface_simswap"]["sha256"] is None


def test_fetch_of_a_pinned_model_refuses_another_hash(pinned_plugins: None, tmp_path: Path, monkeypatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    with pytest.raises(InvalidOption, match="differs from the one pinned"):
        fetch_model(get_spec("arcface"), tmp_path, sha256="0" * 64)
    assert not any(tmp_path.iterdir())


def test_contract_tests_see_unpinned_stand_ins() -> None:
    """Without ``pinned_plugins`` the plug-in specs are unpinned, so test-built graphs load under the real names."""
    for name in DOCUMENTED:
        assert not is_pinned(get_spec(name))
    assert is_pinned(get_spec("retinaface"))  # the embedded detector stays pinned: its file is the real one


def test_listed_variants_are_accepted_and_reported(pinned_plugins: None, tmp_path: Path) -> None:
    """Other published builds of a model (roop's inswapper_128, InsightFace's w600k_r50 …) load; anything else not."""
    import dataclasses

    for name in ("inswapper_128", "inswapper_128_fp16", "arcface", "retinaface_10g"):
        spec = get_spec(name)
        assert spec.variants and all(re.fullmatch(r"[0-9a-f]{64}", h) for h in spec.variants)
        assert spec.sha256 not in spec.variants and spec.accepts(spec.sha256)
    path = _graphs().build_swapper(tmp_path / "inswapper_128.onnx")
    got = sha256_file(path)
    spec = get_spec("inswapper_128")
    assert not spec.accepts(got)
    as_variant = dataclasses.replace(spec, variants={**spec.variants, got: "a test build"})
    assert resolve_model_file(as_variant, tmp_path) == path
    with pytest.raises(ModelIntegrityError):
        resolve_model_file(spec, tmp_path)
