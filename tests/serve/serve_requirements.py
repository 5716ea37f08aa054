"""Which modules the service tests need.

They come with the `serve` extra and the service test tools (`pip install -e ".[dev]"`). Where they are missing (the
lent GPU box, which carries only the core wheels to run `pytest -m gpu`), the service test files are not collected
and `test_serve_extra_installed` says so; `.ci/run` sets FACEWEAVE_REQUIRE_SERVE_TESTS=1, so there a missing module
fails that test instead of skipping.
"""

from __future__ import annotations

import importlib.util

SERVE_TEST_MODULES = ("fastapi", "uvicorn", "sqlalchemy", "jwt", "cryptography", "httpx", "asgi_lifespan",
                      "schemathesis", "prometheus_client", "multipart")


def missing_serve_modules() -> list[str]:
    return [m for m in SERVE_TEST_MODULES if importlib.util.find_spec(m) is None]
