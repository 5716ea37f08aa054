"""Fixtures for the service tests."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from serve_requirements import missing_serve_modules

if missing_serve_modules():
    # not collected here; test_extra_installed.py says why (and fails instead under .ci/run)
    collect_ignore_glob = ["test_serve_*.py"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def media_bytes() -> Callable[[str], bytes]:
    from faceweave.data import media_path

    return lambda name: media_path(name).read_bytes()
