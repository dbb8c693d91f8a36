"""The defects issue 14 found in the dbt and file sources, one test each (each failed before the fix).

dbt fixtures: tests/fixtures/sources/dbt_versions/{v3,v8,v12} (manifest + catalog of three schema
versions). The whole output of each is pinned by the golden tests; these name the defects.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from assetmatch.cli import app
from assetmatch.config import BusinessConfig, Settings, SourceSpec
from assetmatch.ingest import run_ingest
from assetmatch.lake.delta import Lake
from assetmatch.models import TableAsset
from assetmatch.sources import registry
from assetmatch.sources._files import SourceFileError
from assetmatch.sources.base import Source

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "sources"
DBT = FIXTURES / "dbt_versions"


def dbt(version: str, business: str, catalog: bool = True) -> tuple[dict[str, TableAsset], Source[Any]]:
    options = {"manifest_path": str(DBT / version / "manifest.json")}
    if catalog:
        options["catalog_path"] = str(DBT / version / "catalog.json")
    source = registry.create(SourceSpec(name="dbt", type="dbt", business=business, options=options))
    return {a.asset_id: a for a in source.iter_assets()}, source


def col(asset: TableAsset, name: str) -> Any:
    return next(c for c in asset.columns if c.name.lower() == name)


# ---- dbt ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("version,business", [("v3", "shop"), ("v8", "erp")])
def test_pre_v9_tests_attach_through_depends_on(version: str, business: str) -> None:
    assets, _ = dbt(version, business)
    if version == "v3":
        customers = assets["shop.analytics.marts.customers"]
        assert not col(customers, "customer_id").nullable and col(customers, "customer_id").primary_key
        assert not col(assets["shop.analytics.marts.orders"], "order_id").nullable
        assert [fk.ref_asset_id for fk in assets["shop.analytics.marts.orders"].foreign_keys] == [
            "shop.analytics.marts.customers"
        ]
    else:
        product = assets["erp.sales.dbo.dim_product"]
        assert col(product, "product_id").primary_key and not col(product, "product_id").nullable
        daily = assets["erp.sales.dbo.fct_sales_daily"]
        assert not col(daily, "sale_date").nullable  # column only in test_metadata.kwargs
        assert [(fk.columns, fk.ref_asset_id) for fk in daily.foreign_keys] == [
            (["product_id"], "erp.sales.dbo.dim_product")
        ]


def test_yaml_only_source_is_kept_flagged_not_in_catalog() -> None:
    assets, source = dbt("v3", "shop")
    events = assets["shop.raw.public.events"]
    assert (events.in_catalog, events.columns) == (False, [])
    assert assets["shop.raw.public.users"].in_catalog
    assert source.report.counts["not_in_catalog"] == 1


def test_stale_documented_columns_are_a_note_not_columns() -> None:
    assets, source = dbt("v12", "game")
    sessions = assets["game.game-prod.marts.fct_sessions"]
    assert "ab_bucket" not in [c.name for c in sessions.columns]
    assert sessions.properties["dbt_stale_columns"] == "ab_bucket"
    assert source.report.counts["stale_columns"] == 1
    # without a catalog there is nothing to be stale against: the documentation is kept, flagged
    no_catalog, _ = dbt("v12", "game", catalog=False)
    unverified = no_catalog["game.game-prod.marts.fct_sessions"]
    assert "ab_bucket" in [c.name for c in unverified.columns] and not unverified.in_catalog


def test_names_take_the_catalog_case_in_one_spelling_per_database() -> None:
    assets, _ = dbt("v3", "shop")
    spellings = {(a.database, a.schema_name, a.name) for a in assets.values()}
    assert spellings == {
        ("ANALYTICS", "MARTS", "CUSTOMERS"),
        ("ANALYTICS", "MARTS", "ORDERS"),
        ("RAW", "PUBLIC", "USERS"),
        ("RAW", "PUBLIC", "EVENTS"),  # not in the catalog: the catalog's spelling of its database
    }
    v8, _ = dbt("v8", "erp")
    assert {a.database for a in v8.values()} == {"Sales"}  # manifest said sales and SALES


def test_nested_fields_stay_with_their_parent() -> None:
    assets, _ = dbt("v12", "game")
    sessions = assets["game.game-prod.marts.fct_sessions"]
    assert [c.name for c in sessions.columns] == ["session_id", "device", "user_id"]
    device = col(sessions, "device")
    assert device.type == "RECORD<os STRING, model STRING>"
    assert device.comment == "设备 Device the session ran on; os: 操作系统 Operating system"
    profile = col(assets["game.game-prod.marts.dim_player"], "profile")
    assert profile.type == "STRUCT<level INT64, vip BOOL>"  # already spelled: left as is


def test_malformed_nodes_are_refused_with_a_reason_not_a_keyerror() -> None:
    assets, source = dbt("v12", "game")
    assert len(assets) == 3
    assert [(r.table, r.key, r.reason) for r in source.report.rejected] == [
        ("assets", "model.game.broken", "malformed dbt node: column 'a' is a str, expected an object"),
        (
            "assets",
            "source.game.ingest.bad_source",
            "malformed dbt node: `columns` is a list, expected an object of columns",
        ),
    ]
    _, v3 = dbt("v3", "shop")
    assert [(r.key, r.reason) for r in v3.report.rejected] == [
        ("model.shop.nameless", "malformed dbt node: no `name`")
    ]


# ---- file sources ------------------------------------------------------------------------------
def test_truncated_json_catalog_fails_the_source(tmp_path: Path) -> None:
    path = tmp_path / "tables.json"
    path.write_text('[{"table": "a", "columns": ["x"]}, {"table": "b", "col', encoding="utf-8")
    source = registry.create(
        SourceSpec(name="c", type="catalog_file", business="g", options={"path": str(path)})
    )
    with pytest.raises(SourceFileError, match=r"tables.json:1: invalid JSON .* truncated or not JSON"):
        list(source.iter_assets())


def test_unparseable_glossary_yaml_fails_the_source(tmp_path: Path) -> None:
    path = tmp_path / "terms.yaml"
    path.write_text("g1:\n  - term: 付费用户\n    synonyms: [paying users\n  - term: x\n", encoding="utf-8")
    source = registry.create(SourceSpec(name="gl", type="glossary", options={"path": str(path)}))
    with pytest.raises(SourceFileError, match=r"terms.yaml:\d+: invalid YAML"):
        list(source.iter_glossary())


def test_wrong_top_level_shape_fails_the_source(tmp_path: Path) -> None:
    path = tmp_path / "reqs.json"
    path.write_text(json.dumps({"id": "r1", "text": "a requirement"}), encoding="utf-8")
    source = registry.create(SourceSpec(name="r", type="requirements", options={"path": str(path)}))
    with pytest.raises(
        SourceFileError, match="expected a list of objects, or an object with a `requirements` list"
    ):
        list(source.iter_requirements())


def test_columns_as_a_string_is_refused_not_split_into_letters() -> None:
    source = registry.create(
        SourceSpec(
            name="c", type="catalog_file", options={"path": str(FIXTURES / "catalog" / "defects.jsonl")}
        )
    )
    assert [a.name for a in source.iter_assets()] == ["ok_table"]
    reasons = {r.key.rsplit(":", 1)[1]: r.reason for r in source.report.rejected}
    assert reasons["2"] == "`columns` is a string ('user_id'), expected a list"
    assert reasons["3"].startswith("invalid JSON")
    assert source.report.rejected[1].record.startswith('{"business": "game1"')  # the line as read


# ---- through the pipeline: quarantine rows and the exit code -----------------------------------
def settings(tmp_path: Path, *specs: SourceSpec) -> Settings:
    return Settings(
        lake={"uri": str(tmp_path / "lake")},
        businesses=[BusinessConfig(name=b) for b in ("game", "game1", "shop")],
        sources=list(specs),
    )


def test_ingest_keeps_yaml_only_sources_and_quarantines_what_sources_refused(tmp_path: Path) -> None:
    dbt_spec = SourceSpec(
        name="dbt",
        type="dbt",
        business="game",
        options={
            "manifest_path": str(DBT / "v12" / "manifest.json"),
            "catalog_path": str(DBT / "v12" / "catalog.json"),
        },
    )
    file_spec = SourceSpec(
        name="files", type="catalog_file", options={"path": str(FIXTURES / "catalog" / "defects.jsonl")}
    )
    config = settings(tmp_path, dbt_spec, file_spec)
    config.validation.max_bad_fraction = 0.9
    summary = run_ingest(config, run_id="r1")
    assert summary.ok, [s.error for s in summary.failed]
    lake = Lake.from_settings(config)
    stored = {a.asset_id: a for a in lake.read_assets()}
    assert not stored["game.game-prod.ingest.raw_events"].in_catalog  # was quarantined as "no columns"
    quarantine = {(q["source"], q["record_key"]): q for q in lake.read_quarantine(run_id="r1")}
    assert quarantine[("dbt", "model.game.broken")]["reason"].startswith("malformed dbt node")
    assert json.loads(quarantine[("dbt", "model.game.broken")]["payload"])["name"] == "broken"
    file_rows = {k[1].rsplit(":", 1)[1]: q for k, q in quarantine.items() if k[0] == "files"}
    assert sorted(file_rows) == ["2", "3", "4", "5"]
    assert json.loads(file_rows["3"]["payload"]).startswith('{"business"')  # the unparseable line itself
    counts = {s.source: s.tables["assets"].quarantined for s in summary.sources}
    assert counts == {"dbt": 2, "files": 4}


def test_cli_ingest_exits_non_zero_on_an_unreadable_file(tmp_path: Path) -> None:
    broken = tmp_path / "terms.yaml"
    broken.write_text("g1: [\n", encoding="utf-8")
    config = tmp_path / "assetmatch.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "lake": {"uri": str(tmp_path / "lake")},
                "sources": [
                    {"name": "gl", "type": "glossary", "business": "g1", "options": {"path": str(broken)}}
                ],
            }
        ),
        encoding="utf-8",
    )
    result = CliRunner().invoke(app, ["-c", str(config), "ingest", "--json"])
    assert result.exit_code == 1, result.output
    assert "source gl failed" in result.output and "invalid YAML" in result.output
