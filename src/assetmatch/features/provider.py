"""FeatureProvider over Feast (assetmatch.matching.types.FeatureProvider).

`online` reads the `coarse_ranker_v1` service for all candidates in one batched read per feature
view; `historical` runs Feast's point-in-time join for training rows. A table without features (new,
not materialized yet) or an unreachable online store never fails a match: its features take
`build.DEFAULTS`, the `assetmatch_feature_defaults_total` counter goes up and one log line says why.

Online reads go through the provider's `online_read` (Feast's public online store interface), with
the feature service resolved once into an `_OnlinePlan`. `FeatureStore.get_online_features` gives the
same values but re-resolves the service, builds a response proto and converts it back on every call,
which costs more than the read itself for 50 candidates; it stays selectable (`reader=`) as the
reference the tests and the benchmark compare against.

Feast is imported on first use, so constructing a provider is cheap.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import pandas as pd
from prometheus_client import Counter

from assetmatch.config import Settings
from assetmatch.features.build import (
    ASSET_FEATURES,
    ASSET_KEY,
    DEFAULTS,
    PAIR_FEATURES,
    PAIR_KEY,
    FeatureTables,
    pair_id,
)
from assetmatch.lake.delta import Lake

log = logging.getLogger(__name__)

FEATURE_DEFAULTS = Counter(
    "assetmatch_feature_defaults_total",
    "Feature lookups answered with default values instead of stored features.",
    ["reason"],  # store_error: the store failed; missing: no stored value for that table
)

Reader = Literal["online_read", "get_online_features"]
_MAX_CACHED = 500_000  # bound on cached values / entity keys: start over rather than track recency


# Value kinds whose proto field already is the Python value; everything else goes through Feast's
# converter. Checking the kind first halves the conversion cost of a 50-candidate read.
_PLAIN_KINDS = frozenset({"int32_val", "int64_val", "float_val", "double_val", "bool_val"})


def _python(proto: Any) -> Any:
    """A stored Value proto as Feast's `OnlineResponse.to_dict` would give it (None when unset)."""
    kind = proto.WhichOneof("val")
    if kind in _PLAIN_KINDS:
        return getattr(proto, kind)
    from feast.type_map import feast_value_type_to_python_type

    return feast_value_type_to_python_type(proto)


def _value(raw: Any, name: str) -> float:
    if raw is None or (isinstance(raw, float) and math.isnan(raw)):
        return DEFAULTS[name]
    return float(raw)


@dataclass
class _ViewRead:
    """One feature view of a service and the features the service takes from it."""

    view: Any  # feast.FeatureView
    features: list[str]


@dataclass
class _OnlinePlan:
    """A feature service resolved for online reads: its views, their entity, cached entity keys.

    Resolving a service through the registry costs milliseconds (protos to objects), more than the
    read itself, so it is done once and reused until the registry reloads (`stamp`, the time Feast's
    registry cache was filled) or the registry's own cache lifetime has passed (`expires`), whichever
    comes first; re-resolving then lets the registry pick up changes the way `get_online_features` does.
    """

    views: list[_ViewRead]
    join_key: str
    value_type: Any  # feast.ValueType of the join key
    stamp: Any
    expires: float
    entity_keys: dict[str, Any] = field(default_factory=dict)

    def valid(self, stamp: Any, now: float) -> bool:
        return stamp == self.stamp and now < self.expires

    def keys(self, ids: list[str]) -> list[Any]:
        """EntityKey protos of `ids` (built once per id: they are the same on every call)."""
        found = {i: self.entity_keys.get(i) for i in ids}
        new = [i for i, key in found.items() if key is None]
        if new:
            from feast.protos.feast.types.EntityKey_pb2 import EntityKey
            from feast.type_map import python_values_to_proto_values

            if len(self.entity_keys) > _MAX_CACHED:
                self.entity_keys.clear()
            for i, value in zip(new, python_values_to_proto_values(new, self.value_type)):
                found[i] = self.entity_keys[i] = EntityKey(join_keys=[self.join_key], entity_values=[value])
        return [found[i] for i in ids]


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
        reader: Reader = "online_read",
    ) -> None:
        self.settings = settings
        self.project = project
        self.service_name = service or "coarse_ranker_v1"
        self.pair_service_name = pair_service or "set_selection_v1"
        self.reader = reader
        self._store: Any = None
        self._services: dict[str, Any] = {}
        self._plans: dict[str, _OnlinePlan] = {}
        self._lock = threading.Lock()
        self.feature_names = list(ASSET_FEATURES)
        # Snapshots change once a day, so a short in-process cache of stored values loses nothing and
        # saves the store round trip for tables that recur across requests. 0 turns it off.
        self.cache_ttl_s = cache_ttl_s
        self._cache: dict[str, tuple[float, dict[str, float]]] = {}

    # ---- store access --------------------------------------------------------------------
    def _open(self) -> Any:
        """The FeatureStore, created once (thread-safe)."""
        with self._lock:
            if self._store is None:
                from assetmatch.features.store import open_store

                self._store = open_store(self.settings, self.project)
            return self._store

    def _service(self, name: str) -> Any:
        """The FeatureStore and the named FeatureService, created once (thread-safe)."""
        store = self._open()
        with self._lock:
            if name not in self._services:
                self._services[name] = store.get_feature_service(name)
            return store, self._services[name]

    def refresh_registry(self) -> None:
        """Reload the registry now (say after `feast apply`) rather than within its cache lifetime;
        the next reads resolve their feature services again."""
        store = self._open()
        store.refresh_registry()
        with self._lock:
            self._services.clear()
            self._plans.clear()

    def _plan(self, name: str) -> tuple[Any, _OnlinePlan]:
        """The store and the online plan of service `name`, resolved again when the registry changed."""
        store = self._open()
        registry = store.registry
        now = time.monotonic()
        stamp = getattr(registry, "cached_registry_proto_created", None)
        plan = self._plans.get(name)
        if plan is None or not plan.valid(stamp, now):
            with self._lock:
                plan = self._resolve(store, name, now)
                self._plans[name] = plan
        return store, plan

    def _resolve(self, store: Any, name: str, now: float) -> _OnlinePlan:
        service = store.get_feature_service(name, allow_cache=True)
        views = [
            _ViewRead(
                view=store.get_feature_view(projection.name, allow_registry_cache=True),
                features=[f.name for f in projection.features],
            )
            for projection in service.feature_view_projections
        ]
        entities = {(c.name, c.dtype.to_value_type()) for v in views for c in v.view.entity_columns}
        if len(entities) != 1:
            raise ValueError(f"feature service {name!r}: expected one entity key, got {sorted(entities)}")
        (join_key, value_type), ttl = entities.pop(), store.config.registry.cache_ttl_seconds
        return _OnlinePlan(
            views=views,
            join_key=join_key,
            value_type=value_type,
            # read after resolving: resolving may itself have reloaded the registry
            stamp=getattr(store.registry, "cached_registry_proto_created", None),
            expires=now + ttl if ttl > 0 else math.inf,
        )

    def _read(self, name: str, key: str, ids: list[str]) -> list[dict[str, Any]]:
        """Stored values of service `name` for each id of entity key `key`, in `ids` order; a feature
        with nothing stored is None or absent."""
        if self.reader == "get_online_features":
            return self._read_via_service(name, key, ids)
        try:
            store, plan = self._plan(name)
            keys = plan.keys(ids)
            rows: list[dict[str, Any]] = [{} for _ in ids]
            for part in plan.views:
                # a copy of the feature list: the Redis store appends its timestamp field to it
                read = store.provider.online_read(store.config, part.view, keys, list(part.features))
                for row, (_, stored) in zip(rows, read):
                    if stored:  # else nothing stored for this id: its features stay absent (None)
                        row.update((f, _python(stored[f])) for f in part.features if f in stored)
            return rows
        except Exception:
            self._plans.pop(name, None)  # a dropped view or a new registry: resolve again next time
            raise

    def _read_via_service(self, name: str, key: str, ids: list[str]) -> list[dict[str, Any]]:
        """The same values through `get_online_features` (the reference the fast path must match)."""
        store, service = self._service(name)
        data = store.get_online_features(features=service, entity_rows=[{key: i} for i in ids]).to_dict()
        names = [n for n in data if n != key]
        return [{n: data[n][i] for n in names} for i in range(len(ids))]

    def _defaults(self, names: list[str]) -> dict[str, float]:
        return {n: DEFAULTS[n] for n in names}

    # ---- FeatureProvider -----------------------------------------------------------------
    def online(self, asset_ids: Sequence[str]) -> dict[str, dict[str, float]]:
        """Latest features of each table, one batched read per feature view; defaults where missing."""
        wanted = list(dict.fromkeys(asset_ids))
        if not wanted:
            return {}
        now = time.monotonic()
        cached = {a: hit[1] for a in wanted if (hit := self._cache.get(a)) is not None and hit[0] > now}
        ids = [a for a in wanted if a not in cached]
        if not ids:
            return {a: dict(cached[a]) for a in wanted}
        try:
            rows = self._read(self.service_name, ASSET_KEY, ids)
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
        for asset_id, row in zip(ids, rows):
            values = [row.get(name) for name in self.feature_names]
            if all(v is None for v in values):
                missing.append(asset_id)
            out[asset_id] = {name: _value(v, name) for name, v in zip(self.feature_names, values)}
        if self.cache_ttl_s > 0:
            if len(self._cache) > _MAX_CACHED:
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

        Unlike `online`, a store failure raises: silently training on defaults would be worse. A view
        whose offline table holds no rows yet (a lake without any table) is not asked: its features are
        the defaults, as for a table without a snapshot.
        """
        if not rows:
            return []
        # Feast answers one entity row per (key, timestamp): of a row asked twice (a requirement fitted
        # twice, as the cold-history copies are) one place got the values and the other the defaults,
        # and which one changed from build to build of identical tables. Each distinct row is asked once.
        wanted = [(a, _aware(t)) for a, t in rows]
        place = {row: i for i, row in enumerate(dict.fromkeys(wanted))}  # distinct rows, first-asked order
        unique = list(place)
        store, service = self._service(self.service_name)
        entity_df = pd.DataFrame(
            {
                ASSET_KEY: [a for a, _ in unique],
                "event_timestamp": pd.to_datetime([t for _, t in unique], utc=True),
                "_row": range(len(unique)),
            }
        )
        refs, every = self._stored_refs(store, service)
        names = [n for n in self.feature_names if n in {r.split(":", 1)[1] for r in refs}]
        frame = entity_df[["_row"]].reindex(columns=["_row", *self.feature_names])
        if refs:
            features = service if every else refs
            joined = store.get_historical_features(entity_df=entity_df, features=features).to_df()
            # The file offline store drops entity rows without a snapshot within the TTL: join back on _row.
            frame = entity_df[["_row"]].merge(joined[["_row", *names]], on="_row", how="left")
            frame = frame.reindex(columns=["_row", *self.feature_names])
        missing = int(frame[self.feature_names].isna().all(axis=1).sum())
        if missing:
            FEATURE_DEFAULTS.labels(reason="missing").inc(missing)
            log.info(
                "no snapshot at or before the requested time for %d of %d distinct (table, time) rows: defaults used",
                missing,
                len(unique),
            )
        records = frame[self.feature_names].to_dict("records")
        values = [{n: _value(r[n], n) for n in self.feature_names} for r in records]
        return [dict(values[place[row]]) for row in wanted]  # a dict per place: callers may edit one

    def _stored_refs(self, store: Any, service: Any) -> tuple[list[str], bool]:
        """`view:feature` references of the service whose offline table holds rows, and whether that is
        every view of it. Feast's file offline store fails reading a table without a data file
        (`features.store.loadable_views`)."""
        from assetmatch.features.store import loadable_views

        projections = service.feature_view_projections
        views = [store.get_feature_view(p.name) for p in projections]
        loadable, skipped = loadable_views(views, FeatureTables(Lake.from_settings(self.settings)))
        for name, why in skipped.items():
            log.info("feature view %s: %s", name, why)
        refs = [f"{p.name}:{f.name}" for p in projections if p.name in loadable for f in p.features]
        return refs, not skipped

    # ---- set selection -------------------------------------------------------------------
    def co_usage(self, pairs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], dict[str, float]]:
        """Co-usage counts of table pairs (order-free), one batched call; zeros where unknown or on failure."""
        keys = list(dict.fromkeys(pairs))
        if not keys:
            return {}
        ids = [pair_id(a, b) for a, b in keys]
        try:
            rows = self._read(self.pair_service_name, PAIR_KEY, ids)
        except Exception as exc:  # same contract as `online`
            FEATURE_DEFAULTS.labels(reason="store_error").inc(len(keys))
            log.warning("feature store unavailable (%s: %s); co-usage defaults used", type(exc).__name__, exc)
            return {k: self._defaults(PAIR_FEATURES) for k in keys}
        return {
            key: {name: _value(row.get(name), name) for name in PAIR_FEATURES} for key, row in zip(keys, rows)
        }


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)
