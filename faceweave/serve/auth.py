"""Authentication: API keys (stored hashed) and JWT bearer tokens (PyJWT: HS256 secret, RS256 PEM or JWKS file).

Every request resolves to a :class:`Principal` whose ``tenant`` owns the jobs it creates; another tenant's job
answers 404 (never 403, which would confirm that the id exists). API keys look like ``fw_<43 url-safe chars>``
(256 random bits); only their SHA-256 is stored, which is enough for keys of that entropy (no salt needed to
defeat dictionaries) and allows a constant-time indexed lookup.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from faceweave.serve.errors import Unauthorized
from faceweave.serve.settings import ServiceSettings
from faceweave.serve.store import JobStore

API_KEY_PREFIX = "fw_"


@dataclass(frozen=True)
class Principal:
    """Who is calling: the tenant, and a stable id of the credential (rate limits are per credential)."""

    tenant: str
    credential_id: str
    kind: str  # "api_key" | "jwt" | "anonymous"


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_api_key(store: JobStore, tenant: str) -> str:
    """Create a key for ``tenant``, store its hash and return the key (shown once, never stored)."""
    if not tenant or len(tenant) > 128:
        raise ValueError("tenant must be 1-128 characters")
    key = API_KEY_PREFIX + secrets.token_urlsafe(32)
    store.add_api_key(tenant, hash_api_key(key), key[:8])
    return key


class Authenticator:
    """Checks ``Authorization: Bearer <API key | JWT>`` (or ``X-API-Key``) against the configured methods."""

    def __init__(self, settings: ServiceSettings, store: JobStore) -> None:
        self.settings, self.store = settings, store
        self._keys: list[tuple[Any, list[str]]] = []
        if settings.jwt_secret:
            self._keys.append((settings.jwt_secret, ["HS256"]))
        if settings.jwt_public_key_file:
            self._keys.append((Path(settings.jwt_public_key_file).read_text(), ["RS256"]))
        self._jwks: jwt.PyJWKSet | None = None
        if settings.jwks_file:
            self._jwks = jwt.PyJWKSet.from_dict(json.loads(Path(settings.jwks_file).read_text()))

    def authenticate(self, authorization: str | None, api_key_header: str | None) -> Principal:
        if self.settings.auth == "disabled":
            return Principal(tenant="default", credential_id="anonymous", kind="anonymous")
        token = api_key_header
        if authorization:
            scheme, _, value = authorization.partition(" ")
            if scheme.lower() != "bearer" or not value.strip():
                raise Unauthorized("the Authorization header must be 'Bearer <token>'", hint="send an API key or JWT")
            token = value.strip()
        if not token:
            raise Unauthorized(
                "authentication required", hint="send 'Authorization: Bearer <API key or JWT>' (faceweave keys create)"
            )
        if token.startswith(API_KEY_PREFIX):
            return self._api_key(token)
        return self._jwt(token)

    def _api_key(self, key: str) -> Principal:
        record = self.store.find_api_key(hash_api_key(key))
        if record is None or record.revoked:
            raise Unauthorized("invalid API key", hint="create one with `faceweave keys create --tenant T`")
        return Principal(tenant=record.tenant, credential_id=f"key:{record.id}", kind="api_key")

    def _jwt(self, token: str) -> Principal:
        candidates = list(self._keys)
        if self._jwks is not None:
            try:
                kid = jwt.get_unverified_header(token).get("kid")
            except jwt.PyJWTError:
                raise Unauthorized("malformed bearer token", hint="send a valid JWT or API key") from None
            for jwk in self._jwks.keys:
                if kid is None or jwk.key_id == kid:
                    candidates.append((jwk.key, [jwk.algorithm_name or "RS256"]))
        if not candidates:
            raise Unauthorized("JWT authentication is not configured", hint="use an API key")
        for key, algorithms in candidates:
            try:
                claims = jwt.decode(
                    token, key, algorithms=algorithms, audience=self.settings.jwt_audience,
                    options={"require": ["exp", "aud"]}, leeway=5,
                )  # fmt: skip
            except jwt.ExpiredSignatureError:
                raise Unauthorized("the token has expired", hint="get a new token") from None
            except jwt.InvalidAudienceError:
                raise Unauthorized("the token is for another audience", hint="check its 'aud' claim") from None
            except jwt.MissingRequiredClaimError as exc:
                raise Unauthorized(f"the token lacks the {exc.claim!r} claim", hint="add it") from None
            except jwt.PyJWTError:
                continue  # the next configured key may verify it
            tenant = claims.get(self.settings.jwt_tenant_claim) or claims.get("sub")
            if not isinstance(tenant, str) or not tenant:
                claim = self.settings.jwt_tenant_claim
                raise Unauthorized(f"the token has no {claim!r} or 'sub' claim", hint="add one")
            return Principal(tenant=tenant, credential_id=f"jwt:{tenant}:{claims.get('sub', '')}", kind="jwt")
        # One message for every other failure (bad signature, wrong algorithm, malformed): no library internals.
        raise Unauthorized("the token was rejected", hint="check its signature, algorithm and format")
