"""Cold start: a lake fed by a catalog source only (no query log, no glossary, no requirements).

Every stage works on it: features materialize (usage features at their defaults, metadata features
from the catalog, no co-usage stored: its offline table holds no rows), the indexes build, training and
the A/B gate skip themselves with the reason, and the `nightly` flow run ends Completed; the next
night finds nothing changed. The same lake behind a real PostgreSQL schema loads Feast's Redis online
store. Online reads give every table its stored metadata and the documented usage defaults, without a
store error; before any table lands, materializing loads nothing and every read gives the defaults.
"""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml
from feast_testing import REPO_ROOT, defaults_counter, new_project
from test_ingest_flow import load_flow_module

from assetmatch import pipeline
from assetmatch.config import Settings, load_settings
from assetmatch.lake.delta import Lake

pytestmark = pytest.mark.integration

TABLES = {
    "dws_active_users_1d": ("daily active users", ["dt", "user_id", "active_minutes"]),
    "dws_paying_users_1d": ("daily paying users", ["dt", "user_id", "pay_amount"]),
    "dim_item": ("item catalogue", ["item_id", "item_name", "price"]),
}


def _write_catalog(path: Path, business: str) -> None:
    """The catalog file: three tables, every column but the first commented."""
    with path.open("w", encoding="utf-8") as f:
        for table, (comment, columns) in TABLES.items():
            cols = [
                {"name": c, "type": "string", "comment": f"the {c}" if i else ""}
                for i, c in enumerate(columns)
            ]
            f.write(json.dumps({"business": business, "database": "dw", "table": table,
                                "comment": comment, "columns": cols}) + "\n")  # fmt: skip


def _config(root: Path, sources: list[dict[str, Any]], **feast: Any) -> Path:
    config = {
        "lake": {"uri": str(root / "lake")},
        "businesses": [{"name": "game"}],
        "sources": sources,
        "recall": {"index_root": str(root / "indexes")},
        "feast": {"enabled": True, "data_dir": str(root / "feast"), "project": new_project(),
                  "repo_path": str(REPO_ROOT / "feature_repo"), **feast},
        "mlflow": {"tracking_uri": f"sqlite:///{root / 'mlflow.db'}",
                   "artifact_location": str(root / "mlartifacts")},
        "ranker": {"device": "cpu", "max_length": 16, "quantize": "none"},
        "training": {"adapters_dir": str(root / "adapters")},
    }  # fmt: skip
    path = root / "assetmatch.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def _statuses(stages: list[dict[str, Any]]) -> dict[str, tuple[str, str]]:
    return {s["stage"]: (s["status"], s["reason"]) for s in stages}


def _check_online(settings: Settings, columns: dict[str, tuple[int, float]]) -> None:
    """Every table: its catalog metadata stored, its usage at the documented defaults; every pair of
    tables: co-usage at the defaults. Nothing read falls back because of a missing value or an error."""
    from assetmatch.features.build import DEFAULTS, PAIR_FEATURES, USAGE_FEATURES
    from assetmatch.features.provider import FeastFeatureProvider

    provider = FeastFeatureProvider(settings, cache_ttl_s=0)
    missing, errors = defaults_counter("missing"), defaults_counter("store_error")
    values = provider.online(list(columns))
    for asset_id, (count, coverage) in columns.items():
        row = values[asset_id]
        assert {n: row[n] for n in USAGE_FEATURES} == {n: DEFAULTS[n] for n in USAGE_FEATURES}, asset_id
        assert (row["column_count"], row["deprecated"]) == (count, 0.0), asset_id
        assert row["comment_coverage"] == pytest.approx(coverage), asset_id
    assert defaults_counter("missing") == missing  # every table has stored features
    pairs = list(itertools.combinations(sorted(columns), 2))
    co_usage = provider.co_usage(pairs)
    assert co_usage == {p: {n: DEFAULTS[n] for n in PAIR_FEATURES} for p in pairs}
    assert defaults_counter("store_error") == errors  # defaults because nothing was used, not a failure


def _check_historical(settings: Settings, columns: dict[str, tuple[int, float]]) -> None:
    from assetmatch.features.build import DEFAULTS, USAGE_FEATURES
    from assetmatch.features.provider import FeastFeatureProvider

    now = datetime.now(UTC)
    rows = FeastFeatureProvider(settings).historical([(a, now) for a in columns])
    for (count, coverage), row in zip(columns.values(), rows):
        assert {n: row[n] for n in USAGE_FEATURES} == {n: DEFAULTS[n] for n in USAGE_FEATURES}
        assert (row["column_count"], row["comment_coverage"]) == (count, pytest.approx(coverage))


@pytest.mark.timeout(900)  # a few minutes on a busy 2-core machine
def test_nightly_flow_on_a_catalog_only_lake(tmp_path: Path, prefect_harness: None) -> None:
    from assetmatch.features.store import open_store
    from assetmatch.matching.matcher import Matcher

    _write_catalog(tmp_path / "game.jsonl", "game")
    source = {"name": "catalog-game", "type": "catalog_file", "business": "game",
              "options": {"path": str(tmp_path / "game.jsonl")}}  # fmt: skip
    config = _config(tmp_path, [source])
    settings = load_settings(config)
    flow = load_flow_module("nightly")
    try:
        # first night: every stage works; training and the gate have nothing to work on
        state = flow.nightly(config_path=str(config), return_state=True)
        assert state.is_completed(), state.message
        stages = _statuses(state.result()["stages"])
        assert stages["ingest"] == ("ran", "rows written: assets 3")
        assert stages["indexes"][0] == "ran", stages
        assert stages["features"] == ("ran", "never materialized"), stages
        assert stages["train"] == ("skipped", "nothing to do: game: no labelled requirements")
        assert stages["promote"] == ("skipped", "nothing to do: game: no challenger")
        assert stages["serve"][0] == "skipped"

        manifest = pipeline.published_manifest(settings)
        assert manifest is not None and manifest["counts"]["assets"] == 3
        journal = pipeline.last_materialization(settings)
        assert journal is not None and journal["pair_rows"] == 0 and journal["asset_rows"] == 3
        assert journal["materialized_views"] == ["asset_metadata", "asset_usage"]
        assert set(journal["skipped_views"]) == {"asset_co_usage"}
        ids = {f"game.dw.{t}": (len(cols), (len(cols) - 1) / len(cols)) for t, (_, cols) in TABLES.items()}
        _check_online(settings, ids)
        # and the published index answers a requirement
        answer = Matcher.from_settings(settings).match("game", "daily paying users")
        assert answer.ranked[0].asset_id == "game.dw.dws_paying_users_1d", answer.ranked
        assert answer.selected and len(answer.ranked) == 3

        # a day later the next snapshot is loaded the same way (incremental)
        later = pipeline.run_features(settings, now=datetime.now(UTC) + timedelta(days=1))
        assert later.status == "ran" and later.counts["snapshots"] == 1, later
        _check_online(settings, ids)

        # second night: nothing changed, everything after ingest skips itself, the run is Completed
        again = flow.nightly(config_path=str(config), return_state=True)
        assert again.is_completed(), again.message
        stages = _statuses(again.result()["stages"])
        assert stages["ingest"] == ("ran", "no source changed (no new lake version)")
        assert {s: stages[s][0] for s in ("indexes", "features", "train", "promote")} == dict.fromkeys(
            ("indexes", "features", "train", "promote"), "skipped"
        )
    finally:
        open_store(settings).teardown()


def test_postgres_catalog_only_lake_loads_redis(tmp_path: Path, pg_url: str, redis_url: str) -> None:
    import redis

    from assetmatch.features.store import open_store

    engine = sa.create_engine(pg_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE SCHEMA dw"))
            for table, (comment, columns) in TABLES.items():
                conn.execute(sa.text(f"CREATE TABLE dw.{table} ({', '.join(f'{c} text' for c in columns)})"))
                conn.execute(sa.text(f"COMMENT ON TABLE dw.{table} IS '{comment}'"))
                conn.execute(sa.text(f"COMMENT ON COLUMN dw.{table}.{columns[-1]} IS 'the {columns[-1]}'"))
    finally:
        engine.dispose()
    source = {
        "name": "warehouse",
        "type": "sql",
        "business": "game",
        "options": {"url": pg_url, "schemas": ["dw"]},
    }
    config = _config(tmp_path, [source], online_store="redis", redis_connection=redis_url)
    settings = load_settings(config)
    project = settings.feast.project
    host, port = redis_url.split(":")
    client = redis.Redis(host=host, port=int(port))
    try:
        assert pipeline.ingest_stage(settings).status == "ran"
        features = pipeline.run_features(settings)
        assert features.status == "ran" and features.counts["pair_rows"] == 0, features
        ids = {a.asset_id: (3, 1 / 3) for a in Lake.from_settings(settings).read_assets()}
        assert len(ids) == 3
        _check_online(settings, ids)
        assert any(True for _ in client.scan_iter(match=f"*{project}*", count=1000))
        # what the coarse fit reads on the next night: the same values, point in time
        _check_historical(settings, ids)
        # a full rebuild replaces both tables (the pair table again without a row) and reloads
        full = pipeline.run_features(settings, full=True)
        assert full.status == "ran" and full.counts["pair_rows"] == 0, full
        _check_online(settings, ids)
    finally:
        open_store(settings).teardown()
    assert not any(True for _ in client.scan_iter(match=f"*{project}*", count=1000))


def test_a_lake_without_tables_loads_nothing_and_reads_defaults(tmp_path: Path) -> None:
    """Before the first catalog lands: materializing succeeds, loads no view, and every read (online,
    co-usage, point in time) gives the defaults instead of failing on the empty offline tables."""
    from assetmatch.features.build import DEFAULTS, PAIR_FEATURES
    from assetmatch.features.provider import FeastFeatureProvider
    from assetmatch.features.store import materialize, open_store

    settings = load_settings(_config(tmp_path, []))
    try:
        report = materialize(settings)
        assert report.features.asset_rows == report.features.pair_rows == 0
        assert report.views == [] and sorted(report.skipped_views) == [
            "asset_co_usage", "asset_metadata", "asset_usage"
        ]  # fmt: skip
        provider = FeastFeatureProvider(settings)
        errors = defaults_counter("store_error")
        defaults = {n: DEFAULTS[n] for n in provider.feature_names}
        assert provider.online(["game.dw.new"]) == {"game.dw.new": defaults}
        assert provider.historical([("game.dw.new", datetime.now(UTC))]) == [defaults]
        pair = ("game.dw.a", "game.dw.b")
        assert provider.co_usage([pair]) == {pair: {n: DEFAULTS[n] for n in PAIR_FEATURES}}
        assert defaults_counter("store_error") == errors
    finally:
        open_store(settings).teardown()
