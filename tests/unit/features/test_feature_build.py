"""Feature frames from a hand-built lake: exact values, point-in-time windows, incremental writes."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from deltalake import DeltaTable
from feature_lakedata import EXPECTED_AT_R, GONE, OLD, ORDERS, USERS, D, H, R, build_lake

from assetmatch.features import build
from assetmatch.lake.delta import Lake


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Lake:
    return build_lake(str(tmp_path_factory.mktemp("features") / "lake"))


@pytest.fixture(scope="module")
def inputs(lake: Lake) -> build.FeatureInputs:
    return build.load_inputs(lake)


def _row(frame: pd.DataFrame, asset_id: str) -> dict[str, float]:
    rows = frame[frame[build.ASSET_KEY] == asset_id].to_dict("records")
    assert len(rows) == 1, f"expected one row for {asset_id}, got {len(rows)}"
    return rows[0]


def test_snapshot_values_match_hand_counted_query_log(inputs: build.FeatureInputs) -> None:
    frame = build.asset_features_at(inputs, pd.Timestamp(R))
    assert sorted(frame[build.ASSET_KEY]) == sorted(EXPECTED_AT_R)
    for asset_id, expected in EXPECTED_AT_R.items():
        row = _row(frame, asset_id)
        for name, value in expected.items():
            assert row[name] == pytest.approx(value), f"{asset_id}.{name}"
    assert _row(frame, ORDERS)["metadata_age_days"] == pytest.approx(60.0)


def test_events_at_or_after_the_snapshot_are_excluded(inputs: build.FeatureInputs) -> None:
    # q7 happens at R+1h: invisible at R, counted at R+1d.
    at_r = _row(build.asset_features_at(inputs, pd.Timestamp(R)), ORDERS)
    next_day = _row(build.asset_features_at(inputs, pd.Timestamp(R + D)), ORDERS)
    assert at_r["queries_7d"] == 2
    assert next_day["queries_7d"] == 3
    assert next_day["days_since_last_use"] == pytest.approx(23 / 24)
    # a day earlier, q1 (R-23h) has not happened yet
    assert _row(build.asset_features_at(inputs, pd.Timestamp(R - D)), ORDERS)["queries_7d"] == 1


def test_soft_delete_only_counts_from_its_time(inputs: build.FeatureInputs) -> None:
    assert _row(build.asset_features_at(inputs, pd.Timestamp(R - 10 * D)), GONE)["deprecated"] == 0
    assert _row(build.asset_features_at(inputs, pd.Timestamp(R)), GONE)["deprecated"] == 1
    assert _row(build.asset_features_at(inputs, pd.Timestamp(R - 10 * D)), OLD)["deprecated"] == 1  # comment


def test_pair_co_usage(inputs: build.FeatureInputs) -> None:
    pairs = build.pair_uses(inputs.uses)
    frame = build.pair_features_at(pairs, pd.Timestamp(R))
    assert list(frame[build.PAIR_KEY]) == [build.pair_id(USERS, ORDERS)]
    assert build.pair_id(USERS, ORDERS) == build.pair_id(ORDERS, USERS) == "g.orders|g.users"
    row = frame.iloc[0]
    assert (row["co_queries_30d"], row["co_queries_90d"]) == (2, 2)


def test_snapshot_times_are_midnights_after_start() -> None:
    times = build.snapshot_times(R - 2 * D + 5 * H, R + 3 * H)
    assert times == [pd.Timestamp(R - D), pd.Timestamp(R)]
    assert build.snapshot_times(R + H, R + 2 * H) == []


def test_build_is_incremental_and_records_lake_versions(tmp_path: Path) -> None:
    lake = build_lake(str(tmp_path / "lake"))
    first = build.build_features(lake, now=R + 12 * H, history_days=30)
    # 30 days back from R+12h: snapshots R-29d .. R
    assert len(first.snapshots) == 30
    assert first.asset_rows == 30 * len(EXPECTED_AT_R)
    assert first.lake_versions == {"assets": 1, "query_log": 0, "feedback": 0}

    again = build.build_features(lake, now=R + 20 * H, history_days=30)
    assert again.snapshots == [] and again.asset_rows == 0  # nothing new that day

    later = build.build_features(lake, now=R + D + 2 * H, history_days=30)
    assert later.snapshots == [pd.Timestamp(R + D).isoformat()]
    tables = build.FeatureTables(lake)
    stored = tables.read_assets()
    assert len(stored) == 31 * len(EXPECTED_AT_R)
    assert int(stored[stored[build.ASSET_KEY] == ORDERS][build.EVENT_TS].max().day) == (R + D).day

    history = DeltaTable(tables.asset_path).history()
    assert json.loads(history[0]["assetmatch.lake_versions"]) == later.lake_versions

    full = build.build_features(lake, now=R + D + 2 * H, history_days=5, full=True)
    assert full.full and len(full.snapshots) == 5
    assert len(tables.read_assets()) == 5 * len(EXPECTED_AT_R)  # replaced, not appended


def test_empty_lake_builds_one_metadata_only_snapshot(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path / "lake"))
    result = build.build_features(lake, now=R + H)
    assert len(result.snapshots) == 1 and result.asset_rows == 0 and result.pair_rows == 0


def test_defaults_cover_every_feature() -> None:
    assert set(build.DEFAULTS) == set(build.ASSET_FEATURES) | set(build.PAIR_FEATURES)
    assert build.DEFAULTS["days_since_last_use"] == build.NEVER_USED_DAYS
    assert build.ASSET_SCHEMA.names[:3] == [build.ASSET_KEY, build.EVENT_TS, build.CREATED_TS]
