"""The provider's online read path (one `online_read` per feature view, service resolved once) gives
exactly what Feast's `get_online_features` gives, on SQLite and on the real Redis, and recovers when
the online tables disappear and come back.

Same hand-built lake as test_features_store.py; each test uses its own Feast project and tears it down.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from feast_testing import defaults_counter, feast_settings, lakedata

from assetmatch.config import Settings

pytestmark = pytest.mark.integration

data = lakedata()
ALL_TABLES = [data.ORDERS, data.USERS, data.OLD, data.GONE, data.HX]


def _settings(root: Path, **feast: Any) -> Settings:
    return feast_settings(root, history_days=30, **feast)


@pytest.fixture(params=["sqlite", "redis"])
def materialized(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Settings]:
    """The hand-built lake's features materialized at R+12h into the requested online store."""
    from assetmatch.features.store import materialize, open_store

    extra: dict[str, Any] = {}
    if request.param == "redis":
        extra = {"online_store": "redis", "redis_connection": request.getfixturevalue("redis_url")}
    data.build_lake(str(tmp_path / "lake"))
    settings = _settings(tmp_path, **extra)
    materialize(settings, now=data.R + 12 * data.H)
    try:
        yield settings
    finally:
        open_store(settings).teardown()


def test_online_read_matches_get_online_features(materialized: Settings) -> None:
    from assetmatch.features.provider import FeastFeatureProvider

    fast = FeastFeatureProvider(materialized, cache_ttl_s=0)
    reference = FeastFeatureProvider(materialized, cache_ttl_s=0, reader="get_online_features")
    assert fast.reader == "online_read"
    asked = [*ALL_TABLES, "g.brand_new", data.USERS]

    before = defaults_counter("missing")
    expected = reference.online(asked)
    missing_per_call = defaults_counter("missing") - before
    got = fast.online(asked)
    assert got == expected
    assert defaults_counter("missing") - before == 2 * missing_per_call == 2.0  # only g.brand_new, both paths
    assert list(got) == list(dict.fromkeys(asked))
    for asset_id, values in data.EXPECTED_AT_R.items():  # real stored values, not defaults on both sides
        for name, value in values.items():
            assert got[asset_id][name] == pytest.approx(value, rel=1e-5), f"{asset_id}.{name}"

    pairs = [(data.USERS, data.ORDERS), (data.ORDERS, data.OLD), (data.HX, "g.brand_new")]
    assert fast.co_usage(pairs) == reference.co_usage(pairs)
    assert fast.co_usage(pairs)[(data.USERS, data.ORDERS)]["co_queries_30d"] == 2.0


def test_online_plan_follows_a_registry_change(materialized: Settings) -> None:
    """A warm provider keeps its resolved service until the registry reloads; then it reads what the
    new service definition asks for, as `get_online_features` does."""
    from feast import FeatureService

    from assetmatch.features.provider import FeastFeatureProvider
    from assetmatch.features.store import feature_repo_path, load_repo_objects, open_store

    fast = FeastFeatureProvider(materialized, cache_ttl_s=0)
    reference = FeastFeatureProvider(materialized, cache_ttl_s=0, reader="get_online_features")
    assert fast.online([data.ORDERS])[data.ORDERS]["column_count"] == 3.0

    views = {v.name: v for v in load_repo_objects(feature_repo_path(materialized)).feature_views}
    narrowed = FeatureService(name="coarse_ranker_v1", features=[views["asset_usage"]], owner="tests")
    open_store(materialized).apply([narrowed])
    assert fast.online([data.ORDERS])[data.ORDERS]["column_count"] == 3.0  # resolved plan kept...
    fast.refresh_registry()  # ...until the registry reloads (here at once, else within its cache TTL)
    reference.refresh_registry()

    got = fast.online([data.ORDERS, data.USERS])
    assert got == reference.online([data.ORDERS, data.USERS])
    assert got[data.ORDERS]["column_count"] == 0.0  # metadata no longer in the service: default
    assert got[data.ORDERS]["queries_30d"] == 3.0
