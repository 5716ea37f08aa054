"""API keys (hashed at rest, CLI), JWT with RS256 public keys and JWKS files."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from serve_helpers import running_app
from typer.testing import CliRunner

from faceweave.serve.cli import serve_app

pytestmark = pytest.mark.anyio


def _rsa_pair() -> tuple[rsa.RSAPrivateKey, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return key, pem


async def test_rs256_pem_and_jwks(tmp_path: Path) -> None:
    key_a, pem_a = _rsa_pair()
    key_b, _ = _rsa_pair()
    (tmp_path / "a.pem").write_bytes(pem_a)
    jwk_b = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key_b.public_key()))
    jwk_b.update(kid="key-b", alg="RS256", use="sig")
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [jwk_b]}))
    claims = {"tenant": "acme", "aud": "faceweave", "exp": int(time.time()) + 600}
    async with running_app(tmp_path, jwt_public_key_file=tmp_path / "a.pem", jwks_file=tmp_path / "jwks.json") as h:
        for token in (
            jwt.encode(claims, key_a, algorithm="RS256"),
            jwt.encode(claims, key_b, algorithm="RS256", headers={"kid": "key-b"}),
        ):
            r = await h.client.get("/v1/swaps", headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 200, r.text
        unknown, _ = _rsa_pair()
        for token in (
            jwt.encode(claims, unknown, algorithm="RS256", headers={"kid": "key-b"}),
            jwt.encode({**claims, "exp": int(time.time()) - 60}, key_a, algorithm="RS256"),
            # HS256 signed with the public key: the classic algorithm-confusion forgery.
            jwt.encode(claims, "x" * 64, algorithm="HS256"),
        ):
            r = await h.client.get("/v1/swaps", headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"


def test_keys_create_cli_prints_once_and_stores_only_a_hash(tmp_path: Path) -> None:
    result = CliRunner().invoke(serve_app, ["keys", "create", "--tenant", "acme", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    key = result.output.strip()
    assert key.startswith("fw_") and len(key) > 40
    db = sqlite3.connect(tmp_path / "faceweave.db")
    rows = db.execute("SELECT tenant, key_hash, prefix FROM api_keys").fetchall()
    dump = "\n".join(db.iterdump())
    db.close()
    assert len(rows) == 1 and rows[0][0] == "acme" and rows[0][1] != key
    assert key not in dump and key[8:] not in dump  # only the hash (and an 8-char display prefix) is stored


async def test_api_key_from_cli_authenticates(tmp_path: Path) -> None:
    result = CliRunner().invoke(serve_app, ["keys", "create", "--tenant", "acme", "--data-dir", str(tmp_path / "data")])
    key = result.output.strip()
    async with running_app(tmp_path) as h:
        for headers in ({"Authorization": f"Bearer {key}"}, {"X-API-Key": key}):
            r = await h.client.get("/v1/swaps", headers=headers)
            assert r.status_code == 200
        wrong = key[:-1] + ("B" if key.endswith("A") else "A")  # one character off (never the key itself)
        assert (await h.client.get("/v1/swaps", headers={"X-API-Key": wrong})).status_code == 401
