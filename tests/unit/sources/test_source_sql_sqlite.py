"""sql source on a SQLite file: every field, the Inspector path, filters, batching, bad URLs."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from assetmatch.config import ConfigError, SourceSpec
from assetmatch.models import TableAsset
from assetmatch.sources.sql import SqlSource

SCHEMA = """
CREATE TABLE users (id INTEGER PRIMARY KEY, name VARCHAR(64) NOT NULL, 昵称 TEXT);
CREATE TABLE orders (
    id INTEGER, line INTEGER, user_id INTEGER REFERENCES users, amount NUMERIC(10, 2),
    PRIMARY KEY (id, line)
);
CREATE TABLE items (
    order_id INTEGER, order_line INTEGER, sku TEXT,
    FOREIGN KEY (order_id, order_line) REFERENCES orders (id, line)
);
CREATE VIEW v_orders AS SELECT o.id, u.name FROM orders o JOIN users u ON u.id = o.user_id;
"""


def make_db(path: Path, script: str = SCHEMA) -> str:
    with sqlite3.connect(path) as conn:
        conn.executescript(script)
    return f"sqlite:///{path}"


def source(url: str, **options: Any) -> SqlSource:
    spec = SourceSpec(name="lite", type="sql", business="shop", options={"url": url, **options})
    src = SqlSource.create(spec)
    assert isinstance(src, SqlSource)
    return src


def extract(src: SqlSource) -> dict[str, TableAsset]:
    try:
        return {a.name: a for a in src.iter_assets()}
    finally:
        src.close()


def test_every_field(tmp_path: Path) -> None:
    src = source(make_db(tmp_path / "shop.db"))
    assets = extract(src)
    assert set(assets) == {"users", "orders", "items", "v_orders"}
    users = assets["users"]
    assert (users.asset_id, users.database, users.schema_name, users.kind) == (
        "shop.shop.users",
        "shop",
        "",
        "table",
    )
    assert [(c.name, c.type, c.nullable, c.primary_key, c.comment) for c in users.columns] == [
        ("id", "INTEGER", True, True, ""),
        ("name", "VARCHAR(64)", False, False, ""),
        ("昵称", "TEXT", True, False, ""),
    ]
    assert users.row_count is None and users.comment == ""
    orders = assets["orders"]
    assert [c.name for c in orders.columns if c.primary_key] == ["id", "line"]
    # `REFERENCES users` without columns points at the parent's primary key
    assert [fk.model_dump() for fk in orders.foreign_keys] == [
        {"columns": ["user_id"], "ref_asset_id": "shop.shop.users", "ref_columns": ["id"]}
    ]
    assert [fk.model_dump() for fk in assets["items"].foreign_keys] == [
        {
            "columns": ["order_id", "order_line"],
            "ref_asset_id": "shop.shop.orders",
            "ref_columns": ["id", "line"],
        }
    ]
    assert assets["v_orders"].kind == "view"
    assert [c.name for c in assets["v_orders"].columns] == ["id", "name"]
    assert src.report.counts == {"tables": 3, "views": 1, "columns": 12, "foreign_keys": 2}


def test_inspector_reader_agrees_with_native_reader(tmp_path: Path) -> None:
    url = make_db(tmp_path / "shop.db")
    native = extract(source(url))
    inspected = extract(source(url, reader="inspector"))
    assert set(native) == set(inspected)
    for name, asset in native.items():
        other = inspected[name]
        assert [(c.name, c.primary_key, c.nullable) for c in asset.columns] == [
            (c.name, c.primary_key, c.nullable) for c in other.columns
        ], name
        assert asset.foreign_keys == other.foreign_keys, name
        assert (asset.asset_id, asset.kind) == (other.asset_id, other.kind)


def test_filters_views_and_database_name(tmp_path: Path) -> None:
    url = make_db(tmp_path / "shop.db")
    only = extract(source(url, include=[r"^main\.(users|orders)$"]))
    assert set(only) == {"users", "orders"}
    assert set(extract(source(url, exclude=["items"], include_views=False))) == {"users", "orders"}
    renamed = extract(source(url, database="dw"))
    assert renamed["users"].asset_id == "shop.dw.users"


def count_statements(engine: sa.Engine) -> list[str]:
    statements: list[str] = []
    sa.event.listen(engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    return statements


@pytest.mark.parametrize("n_tables", [5, 60])
def test_catalog_reads_are_batched(tmp_path: Path, n_tables: int) -> None:
    script = "".join(
        f"CREATE TABLE t{i} (id INTEGER PRIMARY KEY, parent INTEGER REFERENCES t0 (id), v{i} TEXT);"
        for i in range(n_tables)
    )
    src = source(make_db(tmp_path / "many.db", script))
    statements = count_statements(src.engine)
    assets = extract(src)
    assert len(assets) == n_tables
    assert all(len(a.columns) == 3 and len(a.foreign_keys) == 1 for a in assets.values())
    # tables, primary keys, foreign keys, columns: the same few statements for 5 or 60 tables
    assert len(statements) == 4, statements


def test_bad_urls_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a valid SQLAlchemy URL") as info:
        list(source("not a url:s3cret@").iter_assets())
    assert "s3cret" not in str(info.value)
    with pytest.raises(ConfigError, match="no SQLAlchemy driver for 'nosuchdb'") as info:
        list(source("nosuchdb://u:s3cret@h/db").iter_assets())
    assert "s3cret" not in str(info.value)
    with pytest.raises(ConfigError, match="ASSETMATCH_TEST_UNSET_PASSWORD"):
        list(source("postgresql+psycopg://u:${ASSETMATCH_TEST_UNSET_PASSWORD}@h/db").iter_assets())
    with pytest.raises(ConfigError, match=r"options\.include: .*not a valid regex"):
        source("sqlite://", include=["("])


def test_unreachable_sqlite_file_is_a_connection_error(tmp_path: Path) -> None:
    src = source(f"sqlite:///{tmp_path}/no/such/dir/x.db", connect_retries=2, retry_wait_s=0)
    with pytest.raises(ConfigError, match="cannot connect to sqlite:///") as info:
        list(src.iter_assets())
    assert "(2 attempt(s))" in str(info.value)
    assert src.report.counts["connect_retries"] == 1
