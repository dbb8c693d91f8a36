"""API keys: stored only as sha256 hex digests, each mapped to the businesses it may query.

`settings.serving.api_keys` is `{sha256(key): [business, ...]}` ('*' = every business). The key
travels in the `X-API-Key` header (or `Authorization: Bearer <key>`). Missing or unknown key: 401;
known key asking for a business it does not cover: 403. `hash_key` is what an operator runs to
produce the config entry (`assetmatch serve hash-key`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

ALL = "*"


def hash_key(key: str) -> str:
    """sha256 hex digest of an API key: the only form in which keys are stored."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class AuthError(Exception):
    """Raised for a missing/unknown key (status 401) or a business the key may not query (403)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's digest (never the key) and the businesses it covers."""

    key_hash: str
    businesses: frozenset[str]

    def may_query(self, business: str) -> bool:
        return ALL in self.businesses or business in self.businesses

    def visible(self, businesses: Iterable[str]) -> list[str]:
        return [b for b in businesses if self.may_query(b)]


ANONYMOUS = Principal(key_hash="", businesses=frozenset({ALL}))


class KeyStore:
    """Looks a presented key up by its digest."""

    def __init__(self, hashed: Mapping[str, Iterable[str]], required: bool = True) -> None:
        self._keys = {h.strip().lower(): frozenset(bs) for h, bs in hashed.items()}
        for digest in self._keys:
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise ValueError(
                    f"serving.api_keys: {digest[:8]}... is not a sha256 hex digest (64 hex chars)"
                )
        self.required = required

    def authenticate(self, key: str | None) -> Principal:
        if not key:
            if not self.required:
                return ANONYMOUS
            raise AuthError(401, "missing API key (send it in the X-API-Key header)")
        digest = hash_key(key)
        businesses = self._keys.get(digest)
        if businesses is None:
            raise AuthError(401, "unknown API key")
        return Principal(key_hash=digest, businesses=businesses)

    def authorize(self, key: str | None, business: str) -> Principal:
        principal = self.authenticate(key)
        if not principal.may_query(business):
            raise AuthError(403, f"this API key may not query business {business!r}")
        return principal


def key_from_headers(x_api_key: str | None, authorization: str | None) -> str | None:
    """The presented key: X-API-Key first, then `Authorization: Bearer <key>`."""
    if x_api_key:
        return x_api_key.strip()
    if authorization and authorization.lower().startswith("bearer "):
        return authorization[7:].strip() or None
    return None
