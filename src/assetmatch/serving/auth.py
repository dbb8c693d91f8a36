"""API keys: stored only as sha256 hex digests, each mapped to the businesses it may query.

`settings.serving.api_keys` is `{sha256(key): [business, ...]}` ('*' = every business). The key
travels in the `X-API-Key` header (or `Authorization: Bearer <key>`). Missing or unknown key: 401;
known key asking for a business it does not cover: 403. `hash_key` is what an operator runs to
produce the config entry (`assetmatch serve hash-key`).

Keys can be added and revoked without a restart: `KeyWatcher` re-reads the config file and
`serving.api_keys_file` every `serving.reload_interval_s` and swaps the key table in one assignment;
a revoked key gets 401 from the next request after that. A file that no longer parses keeps the
keys in force (logged, counted in `assetmatch_key_reloads_total{outcome="failed"}`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from assetmatch.config import ConfigError, Settings, expand_env, load_settings, scrub
from assetmatch.serving.metrics import ServingMetrics
from assetmatch.serving.periodic import Periodic

log = logging.getLogger(__name__)

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


def _checked(
    hashed: Mapping[str, Iterable[str]], where: str = "serving.api_keys"
) -> dict[str, frozenset[str]]:
    keys = {h.strip().lower(): frozenset(bs) for h, bs in hashed.items()}
    for digest in keys:
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ValueError(f"{where}: {digest[:8]}... is not a sha256 hex digest (64 hex chars)")
    return keys


class KeyStore:
    """Looks a presented key up by its digest; `replace` swaps the whole table (revocation)."""

    def __init__(self, hashed: Mapping[str, Iterable[str]], required: bool = True) -> None:
        self._keys = _checked(hashed)
        self.required = required

    def replace(self, hashed: Mapping[str, Iterable[str]]) -> bool:
        """Serve `hashed` from now on (validated first: a bad table changes nothing). True if it differs."""
        keys = _checked(hashed)
        changed = keys != self._keys
        self._keys = keys  # one assignment: a request sees the old table or the new one, never a mix
        return changed

    def __len__(self) -> int:
        return len(self._keys)

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


def read_keys_file(path: Path) -> dict[str, list[str]]:
    """`sha256: [business, ...]` entries of a YAML or JSON keys file (digests may be ${ENV})."""
    data: Any = yaml.safe_load(path.read_text(encoding="utf-8")) if path.suffix != ".json" else None
    if path.suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
    data = data or {}
    if not isinstance(data, dict) or not all(
        isinstance(v, list) and all(isinstance(b, str) for b in v) for v in data.values()
    ):
        raise ConfigError(f"{path}: expected a mapping of sha256 digest -> list of businesses")
    return {expand_env(str(k)): list(v) for k, v in data.items()}


def configured_keys(settings: Settings) -> dict[str, list[str]]:
    """`serving.api_keys` plus the entries of `serving.api_keys_file` (a digest in both: businesses merged)."""
    keys = {k: list(v) for k, v in settings.serving.api_keys.items()}
    if settings.serving.api_keys_file:
        for digest, businesses in read_keys_file(
            settings.resolve_path(settings.serving.api_keys_file)
        ).items():
            keys[digest] = sorted(set(keys.get(digest, [])) | set(businesses))
    return keys


class KeyWatcher:
    """Re-reads the keys every `interval_s`: the config file the settings came from (when they came
    from one) and `serving.api_keys_file`."""

    def __init__(
        self, store: KeyStore, settings: Settings, metrics: ServingMetrics, interval_s: float
    ) -> None:
        self.store = store
        self.settings = settings
        self.metrics = metrics
        self.interval_s = interval_s
        self._periodic = Periodic(self.refresh, interval_s, "assetmatch-key-watcher")

    def current_settings(self) -> Settings:
        """The settings as the files say now (blocking I/O: call it in a thread)."""
        if self.settings.config_file is None:
            return self.settings
        return load_settings(self.settings.config_file)

    async def refresh(self) -> bool:
        """One re-read; True if the key table changed. A failure keeps the keys in force."""
        try:
            keys = await asyncio.to_thread(lambda: configured_keys(self.current_settings()))
            changed = self.store.replace(keys)
        except (OSError, ValueError, yaml.YAMLError) as exc:
            self.metrics.key_reloads.labels("failed").inc()
            log.error("API keys not reloaded (the keys in force stay): %s", scrub(str(exc)))
            return False
        self.metrics.key_reloads.labels("changed" if changed else "unchanged").inc()
        if changed:
            log.info("API keys reloaded: %d keys", len(self.store))
        return changed

    def start(self) -> None:
        self._periodic.start()

    async def stop(self) -> None:
        await self._periodic.stop()
