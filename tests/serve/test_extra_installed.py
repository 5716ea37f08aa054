"""The service tests run only where the `serve` extra is installed; this says so when it is not."""

from __future__ import annotations

import os

import pytest
from serve_requirements import SERVE_TEST_MODULES, missing_serve_modules


def test_serve_extra_installed() -> None:
    missing = missing_serve_modules()
    if missing and not os.environ.get("FACEWEAVE_REQUIRE_SERVE_TESTS"):
        pytest.skip(f"service tests not collected: {', '.join(missing)} not installed (pip install -e \".[dev]\")")
    assert not missing, f"missing modules for the service tests: {missing} (of {SERVE_TEST_MODULES})"
