"""deploy/Dockerfile: hadolint finds nothing (not even info level), and it installs what README.md installs."""

from __future__ import annotations

import re
from pathlib import Path

from deploy_tools import DEPLOY, ROOT, run, tool

DOCKERFILE = DEPLOY / "Dockerfile"


def test_hadolint_is_clean() -> None:
    out = run([tool("hadolint"), "--no-color", "--failure-threshold", "info", str(DOCKERFILE)])
    assert out.returncode == 0, out.stdout + out.stderr


def test_hadolint_would_catch_a_regression(tmp_path: Path) -> None:
    # The check above can fail: the same file running as root is flagged (DL3002: last USER should not be root).
    bad = tmp_path / "Dockerfile"
    bad.write_text(re.sub(r"(?m)^USER .*$", "USER root", DOCKERFILE.read_text()))
    out = run([tool("hadolint"), "--no-color", str(bad)])
    assert out.returncode != 0 and "DL3002" in out.stdout, out.stdout


def test_the_image_installs_readme_s_torch_pin_and_the_serve_extra() -> None:
    text = DOCKERFILE.read_text()
    readme_pin = re.search(r'pip install "torch==([\d.]+)"', (ROOT / "README.md").read_text())
    assert readme_pin is not None
    assert f"ARG TORCH_VERSION={readme_pin.group(1)}" in text
    assert re.search(r'pip install --index-url "\$TORCH_INDEX_URL" "torch==\$\{TORCH_VERSION\}"', text)
    assert 'pip install ".[${EXTRAS}]"' in text and re.search(r"(?m)^ARG EXTRAS=serve$", text)


def test_the_image_runs_as_a_non_root_user_with_volumes_and_a_healthcheck() -> None:
    text = DOCKERFILE.read_text()
    users = re.findall(r"(?m)^USER (\S+)", text)
    assert users and not users[-1].startswith(("root", "0")), users
    assert re.search(r'(?m)^VOLUME \["/models", "/data"\]', text)
    assert "FACEWEAVE_MODELS=/models" in text and "FACEWEAVE_DATA_DIR=/data" in text
    assert re.search(r"(?ms)^HEALTHCHECK .*?/healthz", text)
    assert re.search(r'(?m)^CMD \["faceweave", "serve"\]', text)
    assert re.search(r"(?m)^ARG VARIANT=gpu$", text) and "FROM ${CPU_BASE} AS base-cpu" in text
