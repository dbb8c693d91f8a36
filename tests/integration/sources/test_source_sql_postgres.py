"""sql source against a real PostgreSQL: every field, batching, filters, and password-free errors."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from assetmatch.config import ConfigError, SourceSpec
from assetmatch.models import TableAsset
from assetmatch.sources.sql import SourceConnectionError, SqlSource

pytestmark = pytest.mark.integration

DDL = """
CREATE SCHEMA dim;
CREATE SCHEMA sales;
CREATE TABLE dim.users (
    id integer PRIMARY KEY,
    name varchar(64) NOT NULL,
    country char(2)
);
COMMENT ON TABLE dim.users IS '用户维表 user dimension';
COMMENT ON COLUMN dim.users.name IS '用户名';
COMMENT ON COLUMN dim.users.country IS 'ISO country code';
CREATE TABLE sales.orders (
    id bigint,
    line integer,
    user_id integer REFERENCES dim.users (id),
    amount numeric(12, 2),
    PRIMARY KEY (id, line)
);
COMMENT ON TABLE sales.orders IS 'Order lines 订单明细';
COMMENT ON COLUMN sales.orders.amount IS '金额 (CNY)';
CREATE TABLE sales.refunds (
    order_id bigint,
    order_line integer,
    reason text,
    FOREIGN KEY (order_id, order_line) REFERENCES sales.orders (id, line)
);
CREATE VIEW sales.v_daily AS SELECT user_id, sum(amount) AS total FROM sales.orders GROUP BY user_id;
COMMENT ON VIEW sales.v_daily IS '每日汇总 daily totals';
INSERT INTO dim.users SELECT g, 'u' || g, 'CN' FROM generate_series(1, 500) g;
ANALYZE dim.users;
"""


def run_ddl(url: str, ddl: str) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(ddl)
    engine.dispose()


def make(url: str, **options: Any) -> SqlSource:
    spec = SourceSpec(
        name="pg",
        type="sql",
        business_map={r"\.dim$": "shared", r"\.sales$": "game1"},
        options={"url": url, **options},
    )
    source = SqlSource.create(spec)
    assert isinstance(source, SqlSource)
    return source


def extract(source: SqlSource) -> dict[str, TableAsset]:
    try:
        return {f"{a.schema_name}.{a.name}": a for a in source.iter_assets()}
    finally:
        source.close()


def test_every_field(pg_url: str) -> None:
    run_ddl(pg_url, DDL)
    database = sa.make_url(pg_url).database
    source = make(pg_url)
    assets = extract(source)
    assert set(assets) == {"dim.users", "sales.orders", "sales.refunds", "sales.v_daily"}

    users = assets["dim.users"]
    assert users.asset_id == f"shared.{database}.dim.users"
    assert (users.business, users.database, users.schema_name, users.kind) == (
        "shared",
        database,
        "dim",
        "table",
    )
    assert users.comment == "用户维表 user dimension"
    assert [(c.name, c.type, c.nullable, c.primary_key, c.comment) for c in users.columns] == [
        ("id", "integer", False, True, ""),
        ("name", "character varying(64)", False, False, "用户名"),
        ("country", "character(2)", True, False, "ISO country code"),
    ]
    assert users.row_count == 500  # pg_class.reltuples after ANALYZE

    orders = assets["sales.orders"]
    assert (orders.business, orders.comment, orders.row_count) == ("game1", "Order lines 订单明细", None)
    assert [c.name for c in orders.columns if c.primary_key] == ["id", "line"]
    assert orders.columns[3].model_dump() == {
        "name": "amount",
        "type": "numeric(12,2)",
        "comment": "金额 (CNY)",
        "nullable": True,
        "primary_key": False,
    }
    # a cross-schema FK: the referenced table's business comes from the same business_map
    assert [fk.model_dump() for fk in orders.foreign_keys] == [
        {"columns": ["user_id"], "ref_asset_id": f"shared.{database}.dim.users", "ref_columns": ["id"]}
    ]
    assert [fk.model_dump() for fk in assets["sales.refunds"].foreign_keys] == [
        {
            "columns": ["order_id", "order_line"],
            "ref_asset_id": f"game1.{database}.sales.orders",
            "ref_columns": ["id", "line"],
        }
    ]
    view = assets["sales.v_daily"]
    assert (view.kind, view.comment, view.row_count) == ("view", "每日汇总 daily totals", None)
    assert [c.name for c in view.columns] == ["user_id", "total"]
    assert source.report.counts == {"tables": 3, "views": 1, "columns": 12, "foreign_keys": 2}
    assert source.report.warnings == []


def test_inspector_reader_agrees(pg_url: str) -> None:
    run_ddl(pg_url, DDL)
    native = extract(make(pg_url))
    inspected = extract(make(pg_url, reader="inspector"))
    assert set(native) == set(inspected)
    for key, asset in native.items():
        other = inspected[key]
        assert (asset.asset_id, asset.kind, asset.comment) == (other.asset_id, other.kind, other.comment)
        assert [(c.name, c.comment, c.nullable, c.primary_key) for c in asset.columns] == [
            (c.name, c.comment, c.nullable, c.primary_key) for c in other.columns
        ]
        assert asset.foreign_keys == other.foreign_keys


def test_schemas_include_exclude_and_views(pg_url: str) -> None:
    run_ddl(pg_url, DDL)
    assert set(extract(make(pg_url, schemas=["sales"]))) == {"sales.orders", "sales.refunds", "sales.v_daily"}
    assert set(extract(make(pg_url, include=[r"\.(users|orders)$"]))) == {"dim.users", "sales.orders"}
    assert set(extract(make(pg_url, exclude=["^sales"], include_views=False))) == {"dim.users"}
    assert set(extract(make(pg_url, include_views=False))) == {"dim.users", "sales.orders", "sales.refunds"}


def many_tables(n: int) -> str:
    body = ["CREATE SCHEMA bulk;", "CREATE TABLE bulk.root (id integer PRIMARY KEY);"]
    for i in range(n - 1):
        body.append(
            f"CREATE TABLE bulk.t{i} (id integer PRIMARY KEY, root_id integer REFERENCES bulk.root (id), v text);"
        )
        body.append(f"COMMENT ON TABLE bulk.t{i} IS 'table {i}'; COMMENT ON COLUMN bulk.t{i}.v IS '值 {i}';")
    return "\n".join(body)


def statements_for(url: str, n_tables: int) -> int:
    source = make(url, schemas=["bulk"])
    statements: list[str] = []
    sa.event.listen(source.engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    assets = extract(source)
    assert len(assets) == n_tables
    assert sum(len(a.foreign_keys) for a in assets.values()) == n_tables - 1
    assert all(a.comment == f"table {a.name[1:]}" for a in assets.values() if a.name != "root")
    return len(statements)


def test_catalog_reads_do_not_grow_with_table_count(pg_url: str) -> None:
    run_ddl(pg_url, many_tables(5))
    small = statements_for(pg_url, 5)
    run_ddl(pg_url, "DROP SCHEMA bulk CASCADE;" + many_tables(60))
    large = statements_for(pg_url, 60)
    assert small == large
    assert large <= 8  # tables, keys, foreign keys, columns, plus the driver's connect-time queries


def test_unknown_role_and_host_errors_hide_the_password(pg_url: str) -> None:
    url = sa.make_url(pg_url).set(username="no_such_role", password="Sup3r-s3cret")
    source = make(url.render_as_string(hide_password=False), connect_retries=2, retry_wait_s=0)
    with pytest.raises(SourceConnectionError) as info:
        list(source.iter_assets())
    message = str(info.value)
    # a refused login is not retried: waiting cannot fix it
    assert "no_such_role" in message and "cannot connect" in message and "(1 attempt(s))" in message
    assert "Sup3r-s3cret" not in message and "***" in message
    assert "Sup3r-s3cret" not in repr(source.config) and "Sup3r-s3cret" not in str(source.report.as_dict())
    assert "connect_retries" not in source.report.counts
    assert isinstance(info.value, ConfigError)  # the CLI prints it as one line
    assert info.value.transient is False

    host = make(
        "postgresql+psycopg://u:Sup3r-s3cret@no-such-host.invalid:5432/db", connect_retries=2, retry_wait_s=0
    )
    with pytest.raises(SourceConnectionError, match=r"no-such-host\.invalid") as info:
        list(host.iter_assets())
    assert "Sup3r-s3cret" not in str(info.value) and "(2 attempt(s))" in str(info.value)  # retried
    assert host.report.counts["connect_retries"] == 1
    assert info.value.transient is True


def test_password_from_environment(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    run_ddl(pg_url, DDL)
    monkeypatch.setenv("AM_TEST_PG_PASSWORD", "any-password-trust-auth")
    url = sa.make_url(pg_url)
    source = make(
        f"postgresql+psycopg://{url.username}:${{AM_TEST_PG_PASSWORD}}@{url.host}:{url.port}/{url.database}",
        schemas=["dim"],
    )
    assert "any-password" not in source.safe_url
    assert set(extract(source)) == {"dim.users"}
