"""Response cache: in-process LRU by default, Redis when `settings.serving.redis_cache_url` is set.

The key holds business, normalized requirement, k, explain, arm, and the model and index versions
that would answer. A hot swap changes those versions, so entries of the old state are never hit
again: invalidation by construction, nothing to flush. Old entries age out (LRU / Redis TTL).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Collection
from typing import Any, Protocol

from assetmatch.serving.metrics import ServingMetrics
from assetmatch.text import normalize_text

log = logging.getLogger(__name__)


def cache_key(
    business: str,
    requirement: str,
    k: int,
    explain: bool,
    arm: str,
    model_version: str,
    index_version: str,
    databases: Collection[str] | None = None,
) -> str:
    """Stable key: sha256 over the fields that decide an answer (case and spacing of the text ignored;
    the scope's databases in any order)."""
    parts = [business, normalize_text(requirement).casefold(), k, explain, arm, model_version, index_version]
    if databases is not None:  # keys of unscoped answers stay as they were
        parts.append(sorted(set(databases)))
    blob = json.dumps(parts, ensure_ascii=False, separators=(",", ":"))
    return "assetmatch:match:" + hashlib.sha256(blob.encode("utf-8")).hexdigest()


class ResponseCache(Protocol):
    def get(self, key: str) -> dict[str, Any] | None: ...

    def put(self, key: str, value: dict[str, Any]) -> None: ...


class LruCache:
    """Thread-safe LRU of JSON-able answers.

    Hand-written (an OrderedDict and a lock, a dozen lines) because the project's dependencies hold
    no LRU for arbitrary keys with explicit get/put, and functools.lru_cache memoizes calls only.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._data: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def put(self, key: str, value: dict[str, Any]) -> None:
        if self.size <= 0:
            return
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.size:
                self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)


class RedisCache:
    """Shared cache for several replicas. A Redis outage degrades to misses, never to errors; every
    failed operation is counted in `assetmatch_cache_errors_total{op}` and logged (without the URL)."""

    def __init__(self, url: str, ttl_s: float, metrics: ServingMetrics | None = None) -> None:
        import redis

        if "://" not in url:
            url = f"redis://{url}"
        self._client = redis.Redis.from_url(url, socket_timeout=0.2, socket_connect_timeout=0.2)
        self.ttl_ms = int(ttl_s * 1000)
        self.metrics = metrics

    def _failed(self, op: str, exc: Exception) -> None:
        if self.metrics is not None:
            self.metrics.cache_errors.labels(op).inc()
        log.warning("redis cache %s failed: %s", op, type(exc).__name__)

    def get(self, key: str) -> dict[str, Any] | None:
        try:
            raw = self._client.get(key)
        except Exception as exc:  # redis down: answer without the cache
            self._failed("get", exc)
            return None
        if raw is None:
            return None
        try:
            value: dict[str, Any] = json.loads(raw)  # type: ignore[arg-type]
        except ValueError as exc:  # a corrupt entry is a miss, and counted
            self._failed("decode", exc)
            return None
        return value

    def put(self, key: str, value: dict[str, Any]) -> None:
        try:
            self._client.set(key, json.dumps(value, ensure_ascii=False), px=self.ttl_ms)
        except Exception as exc:
            self._failed("put", exc)

    def ping(self) -> bool:
        """Whether Redis answers now (a startup check: a wrong URL shows in the log and the metric)."""
        try:
            return bool(self._client.ping())
        except Exception as exc:
            self._failed("ping", exc)
            return False


def build_cache(
    size: int, redis_url: str | None, ttl_s: float, metrics: ServingMetrics | None = None
) -> ResponseCache:
    return RedisCache(redis_url, ttl_s, metrics) if redis_url else LruCache(size)
