"""schemathesis over the app's own OpenAPI, in-process (ASGI), with every check it has (no 5xx, responses and
headers match the schema, negative data rejected, positive data accepted, 405 ``Allow``, …); bounded in time by
the example count (about a minute on a laptop CPU)."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import CHECKS
from schemathesis.config import SchemathesisConfig
from starlette.testclient import TestClient

from faceweave.serve.app import create_app
from faceweave.serve.auth import create_api_key
from faceweave.serve.settings import ServiceSettings

_tmp = tempfile.TemporaryDirectory(prefix="faceweave-schemathesis-")
APP = create_app(ServiceSettings(data_dir=Path(_tmp.name), warmup=False, rate_limit_per_minute=1e6,
                                 rate_limit_burst=100_000, max_concurrent_jobs=1000))  # fmt: skip
# A schema-valid upload can still be refused for its bytes (not an image: 415; truncated: 400; too many pixels: 413;
# a settings string that is not a SwapSettings object, no consent: 422): no JSON schema can say what a decodable
# photo is. Those statuses are documented answers to "valid" data; everything else must be accepted.
CONFIG = SchemathesisConfig.from_dict({"checks": {"positive_data_acceptance": {
    "expected-statuses": ["2xx", "3xx", "400", "401", "403", "404", "409", "413", "415", "422", "429"]}}})  # fmt: skip
schema = schemathesis.openapi.from_asgi("/openapi.json", APP, config=CONFIG)


@pytest.fixture(scope="module")
def auth_headers() -> Iterator[dict[str, str]]:
    # The lifespan (store, executor) runs for the whole module; schemathesis' own clients reuse the app's state.
    with TestClient(APP):
        yield {"Authorization": f"Bearer {create_api_key(APP.state.service.store, 'fuzz')}"}
    _tmp.cleanup()


@schema.parametrize()
@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_schema(case: schemathesis.Case, auth_headers: dict[str, str]) -> None:
    case.call_and_validate(headers=auth_headers, checks=CHECKS.get_all())


def test_form_schema_405_allow_and_consent(auth_headers: dict[str, str]) -> None:
    """The audit's findings: required form fields unmarked, ``Allow`` naming one route, consent offering "false"."""
    with TestClient(APP) as client:
        doc = client.get("/openapi.json").json()
        for path, required in (("/v1/swaps", {"consent"}), ("/v1/swaps:sync", {"sources", "target", "consent"})):
            form = doc["paths"][path]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
            assert set(form["required"]) == required, path
            assert form["properties"]["consent"]["enum"] == ["true"]
        r = client.put("/v1/swaps/abc", headers=auth_headers)
        assert r.status_code == 405 and set(r.headers["allow"].split(", ")) == {"GET", "DELETE"}, r.headers
        r = client.delete("/v1/swaps", headers=auth_headers)
        assert r.status_code == 405 and set(r.headers["allow"].split(", ")) == {"GET", "POST"}, r.headers
