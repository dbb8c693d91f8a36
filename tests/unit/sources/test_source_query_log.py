"""query_log source: table extraction with sqlglot (CTEs, joins, subqueries, qualified names) and bad rows."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlglot.errors import SqlglotError

from assetmatch.config import SourceSpec
from assetmatch.models import default_asset_id
from assetmatch.sources.query_log import QueryLogSource, tables_read

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "sources" / "query_log"


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT * FROM orders", {("", "", "orders")}),
        (
            "SELECT * FROM sales.orders o JOIN dim.users AS u ON o.uid = u.id",
            {("", "sales", "orders"), ("", "dim", "users")},
        ),
        ("SELECT * FROM dw.sales.orders", {("dw", "sales", "orders")}),
        # CTE names are not tables; the CTE body's table is
        (
            "WITH paid AS (SELECT uid FROM pay) SELECT * FROM paid JOIN users ON paid.uid = users.id",
            {("", "", "pay"), ("", "", "users")},
        ),
        # a CTE that shadows a real table: the body reads the real one, the outer query the CTE
        ("WITH orders AS (SELECT * FROM orders WHERE ok) SELECT count(*) FROM orders", {("", "", "orders")}),
        # derived-table aliases and IN / EXISTS subqueries
        (
            "SELECT t.a FROM (SELECT a FROM x) AS t WHERE t.a IN (SELECT a FROM y) AND EXISTS (SELECT 1 FROM z)",
            {("", "", "x"), ("", "", "y"), ("", "", "z")},
        ),
        ("SELECT a FROM x UNION ALL SELECT a FROM y", {("", "", "x"), ("", "", "y")}),
        ("INSERT INTO target SELECT * FROM src", {("", "", "src")}),
        ("SELECT * FROM generate_series(1, 3)", set()),
        ("SELECT 1; SELECT * FROM a", {("", "", "a")}),
    ],
)
def test_tables_read(sql: str, expected: set[tuple[str, str, str]]) -> None:
    assert set(tables_read(sql)) == expected


def test_dialect_specific_sql() -> None:
    assert tables_read("SELECT `a`.`b` FROM `db1`.`t` AS `a`", "mysql") == [("", "db1", "t")]
    assert tables_read('SELECT * FROM "Sales"."Orders"', "postgres") == [("", "Sales", "Orders")]


@pytest.mark.parametrize(
    "sql", ["SELEC * FRM nothing", "SELECT * FROM", "this is not sql", "EXPLAIN SELECT 1"]
)
def test_unparseable_sql_raises(sql: str) -> None:
    with pytest.raises((SqlglotError, ValueError)):
        tables_read(sql)


def test_csv_log_to_entries() -> None:
    spec = SourceSpec(
        name="log",
        type="query_log",
        business="game0",
        options={"path": str(FIXTURES / "log.csv"), "database": "dw", "default_schema": "dws"},
    )
    source = QueryLogSource.create(spec)
    entries = list(source.iter_query_log())

    assert [e.user for e in entries] == ["alice", "bob", "carol", "frank"]
    alice, bob, carol, frank = entries
    assert alice.ts == datetime(2026, 10, 1, 8, tzinfo=UTC)
    assert (alice.business, alice.requirement, alice.source) == ("game1", "每日付费金额", "log")
    assert alice.tables == ["game1.dw.dws.pay_user_daily"]
    assert alice.tables[0] == default_asset_id(
        "game1", "dw", "dws", "pay_user_daily"
    )  # as the sql source ids it
    assert bob.business == "game0"  # empty business cell -> the source's business
    assert bob.ts == datetime(2026, 10, 1, 9, 30, tzinfo=UTC)  # naive time read as UTC
    assert set(bob.tables) == {"game0.dw.dws.pay_user_daily", "game0.dw.dws.dim_user"}  # CTE `paid` excluded
    assert carol.tables == [] and carol.ts == datetime.fromtimestamp(1790000000, tz=UTC)  # unparsed SQL kept
    assert set(frank.tables) == {"game1.dw.dws.login_log", "game1.dw.dws.dim_user"}  # default_schema applied
    assert len({e.query_id for e in entries}) == 4

    counts = source.report.counts
    assert (counts["queries"], counts["unparsed_sql"], counts["bad_records"]) == (4, 1, 2)
    assert any("log.csv:4" in w and "SQL not parsed" in w for w in source.report.warnings)
    assert any("log.csv:5" in w and "'time'" in w for w in source.report.warnings)
    assert any("log.csv:6" in w and "no SQL" in w for w in source.report.warnings)


def test_jsonl_log_with_custom_column_names() -> None:
    spec = SourceSpec(
        name="log",
        type="query_log",
        options={
            "path": str(FIXTURES / "log.jsonl"),
            "database": "dw",
            "time_column": "ts",
            "user_column": "who",
            "sql_column": "query",
            "business_column": "game",
        },
    )
    (entry,) = QueryLogSource.create(spec).iter_query_log()
    assert (entry.user, entry.business) == ("alice", "game2")
    # a three-part name keeps its own database; an unqualified schema falls back to `database`
    assert set(entry.tables) == {"game2.other_db.dws.t1", "game2.dw.ods.t2"}


def test_gzipped_jsonl_log(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write(
            json.dumps({"time": "2026-10-05T12:00:00Z", "sql": "SELECT * FROM a.b", "business": "g"}) + "\n"
        )
        handle.write("{broken\n")
    source = QueryLogSource.create(SourceSpec(name="log", type="query_log", options={"path": str(path)}))
    (entry,) = source.iter_query_log()
    assert entry.tables == ["g.a.b"]
    assert source.report.counts["bad_records"] == 1
    assert "log.jsonl.gz:2" in source.report.warnings[0]
