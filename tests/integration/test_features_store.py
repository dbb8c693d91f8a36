"""Feast end to end on a hand-built lake: apply + materialize + online reads on SQLite and the real
Redis, point-in-time historical features, graceful defaults when Redis is down, CLI and Prefect flow.

Feast is imported once for the whole module (it takes 6-8 s); each test uses its own Feast project
name so runs never collide in a shared Redis, and tears its project down afterwards.
"""

from __future__ import annotations

import importlib.util
import socket
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from feast_testing import REPO_ROOT, defaults_counter, feast_settings, lakedata, new_project

from assetmatch.config import Settings

pytestmark = pytest.mark.integration

data = lakedata()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def sqlite_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, Any]]:
    """A lake, its features materialized at R+12h into SQLite (one Feast project for the module)."""
    from assetmatch.features.store import materialize

    root = tmp_path_factory.mktemp("feast_sqlite")
    data.build_lake(str(root / "lake"))
    settings = feast_settings(root, new_project(), history_days=30)
    report = materialize(settings, now=data.R + 12 * data.H)
    yield settings, report


def _check_online(values: dict[str, dict[str, float]]) -> None:
    for asset_id in (data.ORDERS, data.USERS):
        for name, expected in data.EXPECTED_AT_R[asset_id].items():
            assert values[asset_id][name] == pytest.approx(expected, rel=1e-5), f"{asset_id}.{name}"


def test_feature_repo_matches_the_built_columns() -> None:
    from assetmatch.features import build
    from assetmatch.features.store import load_repo_objects

    objects = load_repo_objects(REPO_ROOT / "feature_repo")
    views = {v.name: [f.name for f in v.schema] for v in objects.feature_views}
    assert sorted(views["asset_usage"]) == sorted(build.USAGE_FEATURES)
    assert sorted(views["asset_metadata"]) == sorted(build.METADATA_FEATURES)
    assert sorted(views["asset_co_usage"]) == sorted(build.PAIR_FEATURES)
    assert {s.name for s in objects.feature_services} == {"coarse_ranker_v1", "set_selection_v1"}
    for obj in objects.all():
        assert obj.description and obj.owner and obj.tags, f"{obj.name} lacks description/owner/tags"


def test_sqlite_materialize_and_online_read(sqlite_store: tuple[Settings, Any]) -> None:
    from assetmatch.features.provider import FeastFeatureProvider

    settings, report = sqlite_store
    assert report.features.lake_versions == {"assets": 1, "query_log": 0, "feedback": 0}
    assert report.features.asset_rows == 30 * len(data.EXPECTED_AT_R)
    provider = FeastFeatureProvider(settings)
    before = defaults_counter("missing")
    values = provider.online([data.ORDERS, data.USERS, "g.brand_new", data.ORDERS])
    assert list(values) == [data.ORDERS, data.USERS, "g.brand_new"]
    _check_online(values)
    assert values["g.brand_new"] == {n: provider._defaults([n])[n] for n in provider.feature_names}
    assert defaults_counter("missing") == before + 1
    pairs = provider.co_usage([(data.USERS, data.ORDERS), (data.ORDERS, data.OLD)])
    assert pairs[(data.USERS, data.ORDERS)] == {"co_queries_30d": 2.0, "co_queries_90d": 2.0}
    assert pairs[(data.ORDERS, data.OLD)] == {"co_queries_30d": 0.0, "co_queries_90d": 0.0}


def test_historical_features_are_point_in_time(sqlite_store: tuple[Settings, Any]) -> None:
    from assetmatch.features.provider import FeastFeatureProvider

    settings, _ = sqlite_store
    provider = FeastFeatureProvider(settings)
    rows: list[tuple[str, datetime]] = [
        (data.ORDERS, data.R + 2 * data.H),  # q7 (R+1h) is in the future of the snapshot it sees (R)
        (data.ORDERS, data.R - 12 * data.H),  # sees R-1d: q1 (R-23h) had not happened yet
        (data.USERS, data.R + 2 * data.H),
        (data.ORDERS, data.R - 400 * data.D),  # before any snapshot: defaults
        (data.ORDERS, data.R + 2 * data.H),  # asked again (a requirement fitted twice): the same values
        (data.USERS, (data.R + 2 * data.H).replace(tzinfo=None)),  # naive means UTC: the same row again
    ]
    values = provider.historical(rows)
    assert [v["queries_7d"] for v in values] == [2.0, 1.0, 1.0, 0.0, 2.0, 1.0]
    assert values[0]["queries_30d"] == 3.0 and values[1]["queries_30d"] == 2.0
    assert values[3]["days_since_last_use"] == 365.0
    assert values[4] == values[0] and values[5] == values[2] and values[4] is not values[0]


def test_incremental_run_appends_and_updates_online(tmp_path: Path) -> None:
    from assetmatch.features.provider import FeastFeatureProvider
    from assetmatch.features.store import materialize, open_store

    data.build_lake(str(tmp_path / "lake"))
    settings = feast_settings(tmp_path, new_project(), history_days=10)
    first = materialize(settings, now=data.R + 12 * data.H)
    second = materialize(settings, now=data.R + data.D + 12 * data.H)
    assert len(first.features.snapshots) == 10 and second.features.snapshots == [
        (data.R + data.D).isoformat()
    ]
    assert FeastFeatureProvider(settings).online([data.ORDERS])[data.ORDERS]["queries_7d"] == 3.0  # q7 now in
    journal = (tmp_path / "feast" / "materializations.jsonl").read_text().splitlines()
    assert len(journal) == 2
    open_store(settings).teardown()


def test_redis_online_store_is_a_config_change(tmp_path: Path, redis_url: str) -> None:
    import redis

    from assetmatch.features.provider import FeastFeatureProvider
    from assetmatch.features.store import materialize, open_store

    data.build_lake(str(tmp_path / "lake"))
    project = new_project()
    settings = feast_settings(
        tmp_path, project, history_days=30, online_store="redis", redis_connection=redis_url
    )
    try:
        report = materialize(settings, now=data.R + 12 * data.H)
        assert report.online_store == "redis"
        _check_online(FeastFeatureProvider(settings).online([data.ORDERS, data.USERS]))
        assert not (tmp_path / "feast" / "online_store.db").exists()
        host, port = redis_url.split(":")
        client = redis.Redis(host=host, port=int(port))
        assert any(True for _ in client.scan_iter(match=f"*{project}*", count=1000))  # keys carry the project

        # Redis down (a closed port): defaults, the counter goes up, no exception.
        down = feast_settings(
            tmp_path,
            project,
            online_store="redis",
            redis_connection=f"127.0.0.1:{_closed_port()},socket_timeout=1",
        )
        before = defaults_counter("store_error")
        values = FeastFeatureProvider(down).online([data.ORDERS, data.USERS])
        assert (
            values[data.ORDERS]["queries_30d"] == 0.0 and values[data.ORDERS]["days_since_last_use"] == 365.0
        )
        assert defaults_counter("store_error") == before + 2
    finally:
        open_store(settings).teardown()
    assert not any(True for _ in client.scan_iter(match=f"*{project}*", count=1000))


def test_cli_materialize_and_show(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from assetmatch.cli import app

    data.build_lake(str(tmp_path / "lake"))
    config = tmp_path / "assetmatch.yaml"
    project = new_project()
    config.write_text(
        f"lake:\n  uri: {tmp_path / 'lake'}\nfeast:\n  data_dir: {tmp_path / 'feast'}\n"
        f"  repo_path: {REPO_ROOT / 'feature_repo'}\n  project: {project}\n  history_days: 5\n"
    )
    runner = CliRunner()
    result = runner.invoke(app, ["-c", str(config), "features", "materialize", "--json"])
    assert result.exit_code == 0, result.output
    assert '"snapshots": 5' in result.output
    result = runner.invoke(app, ["-c", str(config), "features", "show", data.ORDERS, "--json"])
    assert result.exit_code == 0, result.output
    assert '"column_count": 3.0' in result.output

    config.write_text(config.read_text() + "  online_store: memcached\n")
    result = runner.invoke(app, ["-c", str(config), "features", "materialize"])
    assert result.exit_code == 2 and "online_store" in result.output


def test_prefect_flow_materializes(tmp_path: Path, prefect_harness: None) -> None:
    spec = importlib.util.spec_from_file_location(
        "materialize_features_flow", REPO_ROOT / "flows" / "materialize_features.py"
    )
    assert spec and spec.loader
    flow_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(flow_module)

    data.build_lake(str(tmp_path / "lake"))
    config = tmp_path / "assetmatch.yaml"
    config.write_text(
        f"lake:\n  uri: {tmp_path / 'lake'}\nfeast:\n  data_dir: {tmp_path / 'feast'}\n"
        f"  repo_path: {REPO_ROOT / 'feature_repo'}\n  project: {new_project()}\n  history_days: 3\n"
    )
    report = flow_module.materialize_features(config_path=str(config))
    assert report["snapshots"] == 3 and report["lake_versions"]["query_log"] == 0
