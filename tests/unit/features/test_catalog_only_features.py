"""A lake with assets only (no query log, no feedback): the co-usage table is written without a row,
so it must be left out of the online load until pairs appear; usage features are the defaults."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from deltalake import DeltaTable
from feature_lakedata import ORDERS, USERS, D, H, R, assets

from assetmatch.features import build
from assetmatch.lake import tables as T
from assetmatch.lake.delta import Lake
from assetmatch.models import QueryLogEntry

REPO_ROOT = Path(__file__).resolve().parents[3]


def _catalog_only(uri: str) -> Lake:
    lake = Lake(uri)
    lake.merge_assets(assets(), run_id="r1", now=R - 60 * D)
    return lake


def test_catalog_only_lake_writes_usage_defaults_and_an_empty_pair_table(tmp_path: Path) -> None:
    lake = _catalog_only(str(tmp_path / "lake"))
    written = build.build_features(lake, now=R + H, history_days=30)
    tables = build.FeatureTables(lake)
    n = len(assets())
    # no events: one metadata-only snapshot (the day before `now`), every table in it
    assert written.snapshots == [pd.Timestamp(R).isoformat()]
    assert (written.asset_rows, written.pair_rows) == (n, 0)
    assert written.lake_versions == {T.ASSETS: 0, T.QUERY_LOG: None, T.FEEDBACK: None}
    stored = tables.read_assets()
    for name in build.USAGE_FEATURES:
        assert stored[name].tolist() == [build.DEFAULTS[name]] * n, name
    assert sorted(stored.loc[stored[build.ASSET_KEY] == ORDERS, "column_count"]) == [3]

    # the pair table exists (its commit records the lake versions read) but holds no data file:
    # this is what Feast's file offline store cannot read
    pair_table = DeltaTable(tables.pair_path)
    assert pair_table.version() == written.pair_table_version == 0
    assert pair_table.file_uris() == []
    assert tables.rows(tables.pair_path) == 0
    assert tables.rows(tables.asset_path) == n
    assert tables.rows(tables.path("features/never_written")) == 0


def test_views_of_empty_tables_are_not_loaded_until_they_get_rows(tmp_path: Path) -> None:
    from assetmatch.features.store import load_repo_objects, loadable_views

    lake = _catalog_only(str(tmp_path / "lake"))
    tables = build.FeatureTables(lake)
    views = load_repo_objects(REPO_ROOT / "feature_repo").feature_views

    # before any build: no table at all, nothing to load
    loadable, skipped = loadable_views(views, tables)
    assert loadable == [] and sorted(skipped) == ["asset_co_usage", "asset_metadata", "asset_usage"]

    build.build_features(lake, now=R + H, history_days=30)
    loadable, skipped = loadable_views(views, tables)
    assert loadable == ["asset_metadata", "asset_usage"]
    assert list(skipped) == ["asset_co_usage"]
    assert build.PAIR_FEATURES_PATH in skipped["asset_co_usage"]

    # the first query reading two tables together: the next day's snapshot has a pair, all views load
    query = QueryLogEntry(query_id="q1", ts=R + 2 * H, user="a", business="g", sql="select 1",
                          tables=[ORDERS, USERS])  # fmt: skip
    lake.upsert(T.QUERY_LOG, [{**query.model_dump(), "run_id": "r2"}], "r2")
    later = build.build_features(lake, now=R + D + H, history_days=30)
    assert later.pair_rows == 1 and tables.rows(tables.pair_path) == 1
    assert loadable_views(views, tables) == (["asset_co_usage", "asset_metadata", "asset_usage"], {})


@pytest.mark.parametrize("full", [False, True])
def test_a_build_without_rows_keeps_the_pair_table_empty(tmp_path: Path, full: bool) -> None:
    lake = _catalog_only(str(tmp_path / "lake"))
    build.build_features(lake, now=R + H, history_days=30)
    again = build.build_features(lake, now=R + D + H, history_days=30, full=full)
    tables = build.FeatureTables(lake)
    assert again.pair_rows == 0 and tables.rows(tables.pair_path) == 0
    assert tables.rows(tables.asset_path) == (1 if full else 2) * len(assets())
