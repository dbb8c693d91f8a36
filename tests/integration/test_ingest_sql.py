"""The ingest pipeline against real PostgreSQL and MariaDB through the `sql` source.

Scenario per engine: a schema with comments, keys and a view is ingested; one comment changes
and a re-ingest writes exactly one new Delta version touching only that row; a dropped table is
soft-deleted (flagged and dated, still readable); an unchanged re-ingest writes nothing.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from assetmatch.config import BusinessConfig, Settings, SourceSpec
from assetmatch.ingest import run_ingest
from assetmatch.lake import tables as T
from assetmatch.lake.delta import Lake

pytestmark = pytest.mark.integration

POSTGRES_DDL = [
    "CREATE SCHEMA dw",
    "CREATE TABLE dw.dim_user (user_id bigint PRIMARY KEY, region text, vip_level int)",
    "CREATE TABLE dw.fact_order (order_id bigint PRIMARY KEY, user_id bigint REFERENCES dw.dim_user(user_id), "
    "amount numeric(12,2), dt date)",
    "CREATE TABLE dw.fact_login (user_id bigint REFERENCES dw.dim_user(user_id), dt date, device text)",
    "CREATE TABLE dw.tmp_scratch (id int)",
    "CREATE VIEW dw.v_daily_revenue AS SELECT dt, sum(amount) AS revenue FROM dw.fact_order GROUP BY dt",
    "COMMENT ON TABLE dw.dim_user IS '用户维度表'",
    "COMMENT ON COLUMN dw.dim_user.region IS '注册地区'",
    "COMMENT ON TABLE dw.fact_order IS 'Orders, one row per paid order'",
    "COMMENT ON COLUMN dw.fact_order.amount IS '订单金额 (CNY)'",
    "COMMENT ON TABLE dw.fact_login IS 'Daily logins'",
    "COMMENT ON VIEW dw.v_daily_revenue IS 'Revenue per day'",
]
MARIADB_DDL = [
    "CREATE TABLE dim_user (user_id BIGINT PRIMARY KEY, region VARCHAR(32) COMMENT '注册地区', vip_level INT) "
    "COMMENT='用户维度表'",
    "CREATE TABLE fact_order (order_id BIGINT PRIMARY KEY, user_id BIGINT, amount DECIMAL(12,2) COMMENT "
    "'订单金额 (CNY)', dt DATE, FOREIGN KEY (user_id) REFERENCES dim_user(user_id)) "
    "COMMENT='Orders, one row per paid order'",
    "CREATE TABLE fact_login (user_id BIGINT, dt DATE, device VARCHAR(16), "
    "FOREIGN KEY (user_id) REFERENCES dim_user(user_id)) COMMENT='Daily logins'",
    "CREATE TABLE tmp_scratch (id INT)",
    "CREATE VIEW v_daily_revenue AS SELECT dt, SUM(amount) AS revenue FROM fact_order GROUP BY dt",
]
ENGINES = {
    "postgresql": {
        "url": "pg_url",
        "ddl": POSTGRES_DDL,
        "options": {"schemas": ["dw"]},
        "change": "COMMENT ON TABLE dw.fact_login IS 'Daily logins per device'",
        "drop": "DROP TABLE dw.tmp_scratch",
    },
    "mariadb": {
        "url": "mysql_url",
        "ddl": MARIADB_DDL,
        "options": {},
        "change": "ALTER TABLE fact_login COMMENT = 'Daily logins per device'",
        "drop": "DROP TABLE tmp_scratch",
    },
}


def execute(url: str, statements: list[str]) -> None:
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            for statement in statements:
                conn.execute(sa.text(statement))
    finally:
        engine.dispose()


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_sql_ingest_change_one_comment_then_drop_a_table(
    engine: str, request: pytest.FixtureRequest, lake_uri: str
) -> None:
    case = ENGINES[engine]
    url: str = request.getfixturevalue(case["url"])  # type: ignore[arg-type]
    execute(url, case["ddl"])  # type: ignore[arg-type]
    settings = Settings(
        lake={"uri": lake_uri},
        businesses=[BusinessConfig(name="shop")],
        sources=[
            SourceSpec(name="dw", type="sql", business="shop", options={"url": url, **case["options"]})  # type: ignore[dict-item]
        ],
    )
    lake = Lake(lake_uri)

    # 1. first ingest: 4 tables + 1 view, comments (zh + en) and keys kept
    first = run_ingest(settings, run_id="run-1")
    assert first.ok, first.failed
    counts = first.sources[0].tables[T.ASSETS]
    assert (counts.extracted, counts.inserted, counts.quarantined) == (5, 5, 0)
    assets = {a.name: a for a in lake.read_assets()}
    assert set(assets) == {"dim_user", "fact_order", "fact_login", "tmp_scratch", "v_daily_revenue"}
    assert assets["dim_user"].comment == "用户维度表"
    assert assets["v_daily_revenue"].kind == "view"
    order = assets["fact_order"]
    assert {c.name: c.comment for c in order.columns}["amount"] == "订单金额 (CNY)"
    assert [c.name for c in order.columns if c.primary_key] == ["order_id"]
    assert [fk.ref_asset_id for fk in order.foreign_keys] == [assets["dim_user"].asset_id]
    before = {r["asset_id"]: r for r in lake.read_arrow(T.ASSETS).to_pylist()}
    version = lake.version(T.ASSETS)

    # 2. unchanged re-ingest writes nothing
    same = run_ingest(settings, run_id="run-2")
    assert same.ok and same.sources[0].tables[T.ASSETS].unchanged == 5
    assert lake.version(T.ASSETS) == version

    # 3. one comment changes: one new version, only that row differs
    execute(url, [case["change"]])  # type: ignore[list-item]
    changed = run_ingest(settings, run_id="run-3")
    assert changed.ok and changed.sources[0].tables[T.ASSETS].updated == 1
    assert lake.version(T.ASSETS) == version + 1
    after = {r["asset_id"]: r for r in lake.read_arrow(T.ASSETS).to_pylist()}
    login_id = assets["fact_login"].asset_id
    assert after[login_id]["comment"] == "Daily logins per device" and after[login_id]["run_id"] == "run-3"
    assert {k: v for k, v in after.items() if k != login_id} == {
        k: v for k, v in before.items() if k != login_id
    }

    # 4. a dropped table is soft-deleted: flagged, dated, still in the table and in history
    execute(url, [case["drop"]])  # type: ignore[list-item]
    dropped = run_ingest(settings, run_id="run-4")
    assert dropped.ok and dropped.sources[0].tables[T.ASSETS].soft_deleted == 1
    scratch_id = assets["tmp_scratch"].asset_id
    row = {r["asset_id"]: r for r in lake.read_arrow(T.ASSETS).to_pylist()}[scratch_id]
    assert row["deleted"] is True and row["deleted_at"] is not None
    assert scratch_id not in {a.asset_id for a in lake.read_assets()}
    assert [h["change"] for h in lake.asset_history(scratch_id)] == ["soft_deleted", "inserted"]
    assert lake.version(T.ASSETS) == version + 2
