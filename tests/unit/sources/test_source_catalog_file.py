"""catalog_file source: the real Spider benchmark file, and small JSONL / YAML / CSV fixtures with bad lines."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from assetmatch.config import ConfigError, SourceSpec
from assetmatch.models import TableAsset
from assetmatch.sources.catalog_file import CatalogFileSource

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "sources" / "catalog"


def make(path: Path | str, business: str | None = None, **options: object) -> CatalogFileSource:
    spec = SourceSpec(
        name="catalog", type="catalog_file", business=business, options={"path": str(path), **options}
    )
    source = CatalogFileSource.create(spec)
    assert isinstance(source, CatalogFileSource)
    return source


def by_name(assets: list[TableAsset]) -> dict[str, TableAsset]:
    return {a.name: a for a in assets}


def test_spider_assets_file_is_read_exactly(shared_benchmarks: Path) -> None:
    path = shared_benchmarks / "spider" / "assets.jsonl.gz"
    source = make(path)
    assets = list(source.iter_assets())

    # counts stated in ../shared/benchmarks/spider/README.md
    assert len(assets) == 876
    assert sum(len(a.columns) for a in assets) == 4503
    assert sum(len(fk.columns) for a in assets for fk in a.foreign_keys) == 795
    assert len({a.business for a in assets}) == 166
    assert source.report.counts.get("bad_records", 0) == 0
    assert source.report.counts["tables"] == 876

    # every field matches the raw line, asset ids kept as given (mixed case included)
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        raw = [json.loads(line) for line in handle]
    ids = {a.asset_id for a in assets}
    for record, asset in zip(raw, assets, strict=True):
        assert asset.asset_id == record["asset_id"]
        assert (asset.business, asset.database, asset.name) == (
            record["business"],
            record["database"],
            record["table"],
        )
        assert asset.comment == record["table_comment"]
        assert [(c.name, c.type, c.comment, c.primary_key) for c in asset.columns] == [
            (c["name"], c["type"], c["comment"], c["primary_key"]) for c in record["columns"]
        ]
        assert [(fk.columns[0], fk.ref_columns[0]) for fk in asset.foreign_keys] == [
            (col, ref.split(".", 1)[1]) for col, ref in record["foreign_keys"]
        ]
        for fk, (_, ref) in zip(asset.foreign_keys, record["foreign_keys"], strict=True):
            assert fk.ref_asset_id == f"{record['business']}.{ref.split('.', 1)[0]}"
            assert fk.ref_asset_id in ids
    mixed = next(a for a in assets if a.asset_id == "icfp_1.Authors")
    assert mixed.name == "Authors"


def test_jsonl_aliases_foreign_keys_and_bad_lines() -> None:
    source = make(FIXTURES / "tables.jsonl")
    assets = by_name(list(source.iter_assets()))

    assert set(assets) == {"pay_user_daily", "dim_user", "v_daily", "orphan_fk"}
    pay = assets["pay_user_daily"]
    assert pay.asset_id == "game1.dw.dws.pay_user_daily"
    assert (pay.database, pay.schema_name, pay.comment, pay.row_count) == (
        "dw",
        "dws",
        "每日付费用户 daily paying users",
        120000,
    )
    assert [(c.name, c.type, c.comment, c.primary_key) for c in pay.columns] == [
        ("dt", "date", "日期", True),
        ("user_id", "bigint", "用户ID", True),
        ("amount", "decimal(12,2)", "付费金额", False),
    ]
    assert pay.foreign_keys[0].model_dump() == {
        "columns": ["user_id"],
        "ref_asset_id": "game1.dw.dws.dim_user",
        "ref_columns": ["user_id"],
    }
    dim = assets["dim_user"]  # aliases: name, comment, schema_name; a column given as a bare name
    assert (dim.schema_name, dim.comment) == ("dws", "用户维表")
    assert [(c.name, c.nullable) for c in dim.columns] == [("user_id", True), ("reg_date", False)]
    view = assets["v_daily"]  # asset_id kept; object-form FK to a schema-qualified table
    assert (view.asset_id, view.kind, view.comment) == ("custom.id.v_daily", "view", "daily view")
    assert view.foreign_keys[0].ref_asset_id == "game1.dw.dws.dim_user"
    assert assets["orphan_fk"].foreign_keys[0].ref_asset_id == "game1.dw.dws.nowhere"
    assert source.report.counts["unresolved_foreign_keys"] == 1

    # six bad lines, each reported with its line number; the good lines around them survive
    assert source.report.counts["bad_records"] == 6
    lines = sorted(int(w.split(":")[1]) for w in source.report.warnings if "skipped bad record" in w)
    assert lines == [3, 4, 5, 8, 9, 10]
    assert any("tables.jsonl:3" in w and "invalid JSON" in w for w in source.report.warnings)
    assert any("tables.jsonl:10" in w and "not a boolean: 'maybe'" in w for w in source.report.warnings)


def test_yaml_listing_with_bad_items() -> None:
    source = make(FIXTURES / "tables.yaml", business="game1")
    assets = by_name(list(source.iter_assets()))
    assert set(assets) == {"pay_user_daily", "dim_user"}
    assert assets["pay_user_daily"].asset_id == "game1.dw.dws.pay_user_daily"
    assert assets["pay_user_daily"].columns[0].model_dump() == {
        "name": "dt",
        "type": "date",
        "comment": "日期",
        "nullable": True,
        "primary_key": True,
    }
    assert assets["dim_user"].comment == "User dimension"
    assert source.report.counts["bad_records"] == 2
    assert any("tables.yaml:14" in w and "expected a mapping" in w for w in source.report.warnings)
    assert any("tables.yaml:15" in w and "no table name" in w for w in source.report.warnings)


def test_csv_one_row_per_column_grouped_into_tables() -> None:
    source = make(FIXTURES / "tables.csv", business="game1")
    assets = by_name(list(source.iter_assets()))
    assert set(assets) == {"dim_user", "pay_user_daily", "empty_table"}
    dim = assets["dim_user"]  # rows of one table need not be adjacent
    assert dim.comment == "用户维表"
    assert [(c.name, c.type, c.comment, c.primary_key) for c in dim.columns] == [
        ("user_id", "bigint", "用户ID", True),
        ("reg_date", "date", "注册日期", False),
    ]
    pay = assets["pay_user_daily"]
    assert [c.name for c in pay.columns] == ["dt", "user_id"]
    assert pay.columns[1].comment == "用户ID, payer"
    assert pay.foreign_keys[0].ref_asset_id == "game1.dw.dws.dim_user"
    assert assets["empty_table"].columns == []
    assert assets["empty_table"].schema_name == "ads"
    # bad rows cost only themselves: the table keeps its other columns
    assert source.report.counts["bad_records"] == 3
    assert any("tables.csv:6" in w and "no `table`" in w for w in source.report.warnings)
    assert any("tables.csv:7" in w and "'perhaps'" in w for w in source.report.warnings)
    assert any("tables.csv:8" in w and "cells" in w for w in source.report.warnings)


def test_business_option_overrides_and_glob(tmp_path: Path) -> None:
    for i in range(2):
        (tmp_path / f"part{i}.jsonl").write_text(
            json.dumps({"business": "file_value", "database": "dw", "table": f"t{i}"}) + "\n",
            encoding="utf-8",
        )
    source = make(tmp_path / "part*.jsonl", business="source_default")  # the record's own business wins
    assert [a.business for a in source.iter_assets()] == ["file_value", "file_value"]
    override = CatalogFileSource.create(
        SourceSpec(
            name="c",
            type="catalog_file",
            options={"path": str(tmp_path / "part*.jsonl"), "business": "game9"},
        )
    )
    assert [a.asset_id for a in override.iter_assets()] == ["game9.dw.t0", "game9.dw.t1"]
    assert override.report.counts["files"] == 2


def test_gzip_csv_and_explicit_format(tmp_path: Path) -> None:
    path = tmp_path / "export.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write("database,schema,table,column,type\ndw,s,t,c,int\n")
    with pytest.raises(ConfigError, match="cannot tell the format"):
        list(make(path, business="b").iter_assets())
    assets = list(make(path, business="b", format="csv").iter_assets())
    assert [(a.asset_id, [c.name for c in a.columns]) for a in assets] == [("b.dw.s.t", ["c"])]


def test_broken_encoding_is_kept_for_the_pipeline_to_quarantine(tmp_path: Path) -> None:
    path = tmp_path / "latin.jsonl"
    path.write_bytes(
        b'{"business": "b", "table": "t", "comment": "caf\xe9"}\n{"business": "b", "table": "u"}\n'
    )
    assets = list(make(path).iter_assets())
    assert [a.name for a in assets] == ["t", "u"]
    assert "\ufffd" in assets[0].comment


def test_missing_file_and_unknown_option_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        list(make(tmp_path / "nope.jsonl").iter_assets())
    with pytest.raises(ConfigError, match="no file matches"):
        list(make(tmp_path / "*.jsonl").iter_assets())
    with pytest.raises(ConfigError, match=r"options\.colour: unknown key"):
        CatalogFileSource.create(
            SourceSpec(name="c", type="catalog_file", options={"path": "x", "colour": 1})
        )


def test_json_document_with_tables_key(tmp_path: Path) -> None:
    path = tmp_path / "metastore.json"
    doc = {"tables": [{"database": "dw", "schema": "s", "table": "t", "columns": [{"name": "a"}]}, 42]}
    path.write_text(json.dumps(doc), encoding="utf-8")
    source = make(path, business="b")
    assert [a.asset_id for a in source.iter_assets()] == ["b.dw.s.t"]
    assert source.report.counts["bad_records"] == 1
    assert "metastore.json:item 2" in source.report.warnings[0]
