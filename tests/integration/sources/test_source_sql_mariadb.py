"""sql source against a real MariaDB: every field from information_schema, batching, password-free errors."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from assetmatch.config import SourceSpec
from assetmatch.models import TableAsset
from assetmatch.sources.sql import SourceConnectionError, SqlSource

pytestmark = pytest.mark.integration

DDL = [
    """CREATE TABLE users (
        id INT PRIMARY KEY,
        name VARCHAR(64) NOT NULL COMMENT '用户名',
        country CHAR(2) COMMENT 'ISO country code'
    ) ENGINE=InnoDB COMMENT='用户维表 user dimension'""",
    """CREATE TABLE orders (
        id BIGINT,
        line INT,
        user_id INT,
        amount DECIMAL(12, 2) COMMENT '金额 (CNY)',
        PRIMARY KEY (id, line),
        CONSTRAINT fk_orders_user FOREIGN KEY (user_id) REFERENCES users (id)
    ) ENGINE=InnoDB COMMENT='Order lines 订单明细'""",
    """CREATE TABLE refunds (
        order_id BIGINT,
        order_line INT,
        reason TEXT,
        CONSTRAINT fk_refunds_order FOREIGN KEY (order_id, order_line) REFERENCES orders (id, line)
    ) ENGINE=InnoDB""",
    "CREATE VIEW v_totals AS SELECT user_id, SUM(amount) AS total FROM orders GROUP BY user_id",
    "INSERT INTO users VALUES (1, 'a', 'CN'), (2, 'b', 'US'), (3, 'c', 'FR')",
    "ANALYZE TABLE users",
]


def run(url: str, statements: list[str]) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for statement in statements:
            conn.exec_driver_sql(statement)
    engine.dispose()


def make(url: str, **options: Any) -> SqlSource:
    source = SqlSource.create(
        SourceSpec(name="my", type="sql", business="game2", options={"url": url, **options})
    )
    assert isinstance(source, SqlSource)
    return source


def extract(source: SqlSource) -> dict[str, TableAsset]:
    try:
        return {a.name: a for a in source.iter_assets()}
    finally:
        source.close()


def test_every_field(mysql_url: str) -> None:
    run(mysql_url, DDL)
    db = sa.make_url(mysql_url).database
    source = make(mysql_url)
    assets = extract(source)
    assert set(assets) == {"users", "orders", "refunds", "v_totals"}

    users = assets["users"]
    # a MySQL database is a schema: named once (not biz.db.db.table)
    assert users.asset_id == f"game2.{db}.users"
    assert (users.database, users.schema_name, users.kind) == (db, "", "table")
    assert users.comment == "用户维表 user dimension"
    assert [(c.name, c.type, c.nullable, c.primary_key, c.comment) for c in users.columns] == [
        ("id", "int(11)", False, True, ""),
        ("name", "varchar(64)", False, False, "用户名"),
        ("country", "char(2)", True, False, "ISO country code"),
    ]
    assert users.row_count == 3  # information_schema.TABLES.TABLE_ROWS after ANALYZE

    orders = assets["orders"]
    assert orders.comment == "Order lines 订单明细"
    assert [c.name for c in orders.columns if c.primary_key] == ["id", "line"]
    assert (orders.columns[3].type, orders.columns[3].comment) == ("decimal(12,2)", "金额 (CNY)")
    assert [fk.model_dump() for fk in orders.foreign_keys] == [
        {"columns": ["user_id"], "ref_asset_id": f"game2.{db}.users", "ref_columns": ["id"]}
    ]
    assert [fk.model_dump() for fk in assets["refunds"].foreign_keys] == [
        {
            "columns": ["order_id", "order_line"],
            "ref_asset_id": f"game2.{db}.orders",
            "ref_columns": ["id", "line"],
        }
    ]
    view = assets["v_totals"]
    assert (view.kind, view.comment, view.row_count) == (
        "view",
        "",
        None,
    )  # MySQL's 'VIEW' placeholder dropped
    assert [c.name for c in view.columns] == ["user_id", "total"]
    assert source.report.counts == {"tables": 3, "views": 1, "columns": 12, "foreign_keys": 2}


def test_catalog_reads_do_not_grow_with_table_count(mysql_url: str) -> None:
    def statements_for(n: int) -> int:
        source = make(mysql_url, include=[r"\.(root|t\d+)$"])
        statements: list[str] = []
        sa.event.listen(source.engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
        assets = extract(source)
        assert len(assets) == n
        assert sum(len(a.foreign_keys) for a in assets.values()) == n - 1
        return len(statements)

    def tables(start: int, stop: int) -> list[str]:
        return [
            f"CREATE TABLE t{i} (id INT PRIMARY KEY, root_id INT COMMENT '根 {i}', "
            f"FOREIGN KEY (root_id) REFERENCES root (id)) COMMENT='table {i}'"
            for i in range(start, stop)
        ]

    run(mysql_url, ["CREATE TABLE root (id INT PRIMARY KEY)", *tables(0, 4)])
    small = statements_for(5)
    run(mysql_url, tables(4, 59))
    large = statements_for(60)
    assert small == large


def test_wrong_password_error_hides_it(mysql_url: str) -> None:
    url = sa.make_url(mysql_url).set(password="Sup3r-s3cret").render_as_string(hide_password=False)
    source = make(url, connect_retries=2, retry_wait_s=0)
    with pytest.raises(SourceConnectionError) as info:
        list(source.iter_assets())
    message = str(info.value)
    assert "Access denied" in message and "(1 attempt(s))" in message  # refused logins are not retried
    assert info.value.transient is False
    assert "Sup3r-s3cret" not in message and "root:***@" in message
    assert "Sup3r-s3cret" not in str(source.report.as_dict())
