"""schemathesis over the app's own OpenAPI, in-process (ASGI): no 5xx, responses match the schema."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.testclient import TestClient

from faceweave.serve.app import create_app
from faceweave.serve.auth import create_api_key
from faceweave.serve.settings import ServiceSettings

_tmp = tempfile.TemporaryDirectory(prefix="faceweave-schemathesis-")
APP = create_app(ServiceSettings(data_dir=Path(_tmp.name), warmup=False, rate_limit_per_minute=1e6,
                                 rate_limit_burst=100_000, max_concurrent_jobs=1000))  # fmt: skip
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@pytest.fixture(scope="module")
def auth_headers() -> Iterator[dict[str, str]]:
    # The lifespan (store, executor) runs for the whole module; schemathesis' own clients reuse the app's state.
    with TestClient(APP):
        yield {"Authorization": f"Bearer {create_api_key(APP.state.service.store, 'fuzz')}"}
    _tmp.cleanup()


@schema.parametrize()
@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_schema(case: schemathesis.Case, auth_headers: dict[str, str]) -> None:
    case.call_and_validate(
        headers=auth_headers,
        checks=[not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance],
    )
