"""FeatureProvider over Feast (assetmatch.matching.types.FeatureProvider).

`online` reads the `coarse_ranker_v1` service for all candidates in one batched call; `historical`
runs Feast's point-in-time join for training rows. A table without features (new, not materialized
yet) or an unreachable online store never fails a match: its features take `build.DEFAULTS`, the
`assetmatch_feature_defaults_total` counter goes up and one log line says why.

Feast is imported on first use, so constructing a provider is cheap.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pandas as pd
from prometheus_client import Counter

from assetmatch.config import Settings
from assetmatch.features.build import ASSET_FEATURES, ASSET_KEY, DEFAULTS, PAIR_FEATURES, PAIR_KEY, pair_id

log = logging.getLogger(__name__)

FEATURE_DEFAULTS = Counter(
    "assetmatch_feature_defaults_total",
    "Feature lookups answered with default values instead of stored features.",
    ["reason"],  # store_error: the store failed; missing: no stored value for that table
)


def _value(raw: Any, name: str) -> float:
    if raw is None or (isinstance(raw, float) and math.isnan(raw)):
        return DEFAULTS[name]
    return float(raw)


class FeastFeatureProvider:
    """Per-table features from the Feast store configured in `settings` (online and point-in-time)."""

    feature_names: list[str]

    def __init__(
        self,
        settings: Settings,
        *,
        project: str | None = None,
        service: str | None = None,
        pair_service: str | None = None,
        cache_ttl_s: float = 60.0,
    ) -> None:
        self.settings = settings
        self.project = project
        self.service_name = service or "coarse_ranker_v1"
        self.pair_service_name = pair_service or "set_selection_v1"
        self._store: Any = None
        self._services: dict[str, Any] = {}
        self._lock = threading.Lock()
        self.feature_names = list(ASSET_FEATURES)
        # Snapshots change once a day, so a short in-process cache of stored values loses nothing and
        # saves the store round trip for tables that recur across requests. 0 turns it off.
        self.cache_ttl_s = cache_ttl_s
        self._cache: dict[str, tuple[float, dict[str, float]]] = {}

    # ---- store access --------------------------------------------------------------------
    def _service(self, name: str) -> Any:
        """The FeatureStore and the named FeatureService, created once (thread-safe)."""
        with self._lock:
            if self._store is None:
                from assetmatch.features.store import open_store

                self._store = open_store(self.settings, self.project)
            if name not in self._services:
                self._services[name] = self._store.get_feature_service(name)
            return self._store, self._services[name]

    def _defaults(self, names: list[str]) -> dict[str, float]:
        return {n: DEFAULTS[n] for n in names}

    # ---- FeatureProvider -----------------------------------------------------------------
    def online(self, asset_ids: Sequence[str]) -> dict[str, dict[str, float]]:
        """Latest features of each table, in one `get_online_features` call; defaults where missing."""
        wanted = list(dict.fromkeys(asset_ids))
        if not wanted:
            return {}
        now = time.monotonic()
        cached = {a: hit[1] for a in wanted if (hit := self._cache.get(a)) is not None and hit[0] > now}
        ids = [a for a in wanted if a not in cached]
        if not ids:
            return {a: dict(cached[a]) for a in wanted}
        try:
            store, service = self._service(self.service_name)
            data = store.get_online_features(
                features=service, entity_rows=[{ASSET_KEY: a} for a in ids]
            ).to_dict()
        except Exception as exc:  # any store failure degrades to defaults: features must never fail a match
            FEATURE_DEFAULTS.labels(reason="store_error").inc(len(ids))
            log.warning(
                "feature store unavailable (%s: %s); %d tables get default features",
                type(exc).__name__,
                exc,
                len(ids),
            )
            fetched = {a: self._defaults(self.feature_names) for a in ids}
            return {a: dict(cached[a]) if a in cached else fetched[a] for a in wanted}
        out: dict[str, dict[str, float]] = {}
        missing: list[str] = []
        for i, asset_id in enumerate(data[ASSET_KEY]):
            values = [data[name][i] for name in self.feature_names]
            if all(v is None for v in values):
                missing.append(asset_id)
            out[asset_id] = {name: _value(v, name) for name, v in zip(self.feature_names, values)}
        if self.cache_ttl_s > 0:
            if len(self._cache) > 500_000:  # bound memory: start over rather than track recency
                self._cache.clear()
            expires = now + self.cache_ttl_s
            self._cache.update((a, (expires, dict(v))) for a, v in out.items())
        out = {a: dict(cached[a]) if a in cached else out[a] for a in wanted}
        if missing:
            FEATURE_DEFAULTS.labels(reason="missing").inc(len(missing))
            log.info(
                "no stored features for %d of %d tables (e.g. %s): defaults used",
                len(missing),
                len(ids),
                missing[0],
            )
        return out

    def historical(self, rows: Sequence[tuple[str, datetime]]) -> list[dict[str, float]]:
        """Point-in-time features for (asset_id, as_of): each row sees the latest daily snapshot taken at
        or before `as_of`, so nothing that happened later leaks in. Rows without one get defaults.

        Unlike `online`, a store failure raises: silently training on defaults would be worse.
        """
        if not rows:
            return []
        store, service = self._service(self.service_name)
        entity_df = pd.DataFrame(
            {
                ASSET_KEY: [a for a, _ in rows],
                "event_timestamp": pd.to_datetime([_aware(t) for _, t in rows], utc=True),
                "_row": range(len(rows)),
            }
        )
        joined = store.get_historical_features(entity_df=entity_df, features=service).to_df()
        # The file offline store drops entity rows that have no snapshot within the TTL: join back on _row.
        frame = entity_df[["_row"]].merge(joined[["_row", *self.feature_names]], on="_row", how="left")
        missing = int(frame[self.feature_names].isna().all(axis=1).sum())
        if missing:
            FEATURE_DEFAULTS.labels(reason="missing").inc(missing)
            log.info(
                "no snapshot at or before the requested time for %d of %d rows: defaults used",
                missing,
                len(rows),
            )
        records = frame[self.feature_names].to_dict("records")
        return [{n: _value(r[n], n) for n in self.feature_names} for r in records]

    # ---- set selection -------------------------------------------------------------------
    def co_usage(self, pairs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], dict[str, float]]:
        """Co-usage counts of table pairs (order-free), one batched call; zeros where unknown or on failure."""
        keys = list(dict.fromkeys(pairs))
        if not keys:
            return {}
        ids = [pair_id(a, b) for a, b in keys]
        try:
            store, service = self._service(self.pair_service_name)
            data = store.get_online_features(
                features=service, entity_rows=[{PAIR_KEY: p} for p in ids]
            ).to_dict()
        except Exception as exc:  # same contract as `online`
            FEATURE_DEFAULTS.labels(reason="store_error").inc(len(keys))
            log.warning("feature store unavailable (%s: %s); co-usage defaults used", type(exc).__name__, exc)
            return {k: self._defaults(PAIR_FEATURES) for k in keys}
        return {
            key: {name: _value(data[name][i], name) for name in PAIR_FEATURES} for i, key in enumerate(keys)
        }


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)
