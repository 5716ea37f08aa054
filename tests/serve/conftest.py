"""Fixtures for the service tests."""

from __future__ import annotations

from collections.abc import Callable

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def media_bytes() -> Callable[[str], bytes]:
    from faceweave.data import media_path

    return lambda name: media_path(name).read_bytes()
