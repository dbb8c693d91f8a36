"""Change detection at the source, against real PostgreSQL and MariaDB.

Per engine: a first ingest reads every table and stores its fingerprints in the lake; an unchanged
re-ingest asks the server for no column at all; a changed column comment, column type or key is
picked up, and only those tables' columns are fetched (asserted on the SQL the source sent); a
lost fingerprint state means one full read that leaves the lake as it was; the lake always equals
what a full read gives; a dropped table is soft-deleted. A refused row is quarantined once across
identical ingests. MySQL/MariaDB ids name the database once, and a lake holding the old ids moves
to the new ones without tripping the shrink guard.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from assetmatch.config import BusinessConfig, Settings, SourceSpec
from assetmatch.ingest import IngestSummary, run_ingest
from assetmatch.lake import tables as T
from assetmatch.lake.delta import Lake

pytestmark = pytest.mark.integration

LONG = "x" * 60  # longer than validation.max_text_length below: that table is refused

ENGINES: dict[str, dict[str, Any]] = {
    "postgresql": {
        "url": "pg_url",
        "options": {"schemas": ["dw"]},
        "ddl": [
            "CREATE SCHEMA dw",
            "CREATE TABLE dw.t_a (id int PRIMARY KEY, v int)",
            "CREATE TABLE dw.t_b (id int PRIMARY KEY, v int)",
            "CREATE TABLE dw.t_c (id int, a_id int)",
            "CREATE TABLE dw.t_d (id int PRIMARY KEY)",
            "CREATE TABLE dw.t_e (id int PRIMARY KEY)",
            "CREATE TABLE dw.t_long (id int)",
            "COMMENT ON TABLE dw.t_a IS 'table a'",
            "COMMENT ON COLUMN dw.t_a.v IS 'old words'",
            f"COMMENT ON TABLE dw.t_long IS '{LONG}'",
        ],
        "comment": "COMMENT ON COLUMN dw.t_a.v IS 'new words'",
        "type": "ALTER TABLE dw.t_b ALTER COLUMN v TYPE bigint",
        "key": "ALTER TABLE dw.t_c ADD CONSTRAINT fk_c_a FOREIGN KEY (a_id) REFERENCES dw.t_a (id)",
        "drop": "DROP TABLE dw.t_e",
    },
    "mariadb": {
        "url": "mysql_url",
        "options": {},
        "ddl": [
            "CREATE TABLE t_a (id INT PRIMARY KEY, v INT COMMENT 'old words') COMMENT='table a'",
            "CREATE TABLE t_b (id INT PRIMARY KEY, v INT)",
            "CREATE TABLE t_c (id INT, a_id INT)",
            "CREATE TABLE t_d (id INT PRIMARY KEY)",
            "CREATE TABLE t_e (id INT PRIMARY KEY)",
            f"CREATE TABLE t_long (id INT) COMMENT='{LONG}'",
        ],
        "comment": "ALTER TABLE t_a MODIFY v INT COMMENT 'new words'",
        "type": "ALTER TABLE t_b MODIFY v BIGINT",
        "key": "ALTER TABLE t_c ADD CONSTRAINT fk_c_a FOREIGN KEY (a_id) REFERENCES t_a (id)",
        "drop": "DROP TABLE t_e",
    },
}
TABLES = {"t_a", "t_b", "t_c", "t_d", "t_e"}  # t_long is refused by validation every time


def execute(url: str, statements: list[str]) -> None:
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            for statement in statements:
                conn.execute(sa.text(statement))
    finally:
        engine.dispose()


class ColumnReads:
    """The SQL statements every engine sends, to count the tables whose columns were asked for."""

    def __init__(self) -> None:
        self.statements: list[tuple[str, Any]] = []

    def __call__(self, conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        self.statements.append((statement, parameters))

    def tables(self) -> int | None:
        """Tables whose columns were fetched; None when a whole schema's columns were."""
        count = 0
        for statement, params in self.statements:
            if "format_type(a.atttypid, a.atttypmod), NOT a.attnotnull" in statement:  # PostgreSQL
                count += len(params["oids"])
            elif "COLUMN_KEY, ORDINAL_POSITION FROM information_schema.COLUMNS" in statement:  # MariaDB
                if "TABLE_SCHEMA IN" in statement:  # the whole schema
                    return None
                count += sum(1 for k in params if k.startswith("t"))  # by name, one branch per table
        return count

    def clear(self) -> None:
        self.statements.clear()


@pytest.fixture
def column_reads() -> Iterator[ColumnReads]:
    reads = ColumnReads()
    sa.event.listen(sa.engine.Engine, "before_cursor_execute", reads)
    try:
        yield reads
    finally:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", reads)


def settings_for(url: str, lake_uri: str, options: dict[str, Any]) -> Settings:
    return Settings(
        lake={"uri": lake_uri},
        businesses=[BusinessConfig(name="shop")],
        validation={"max_text_length": 40, "max_bad_fraction": 1.0},
        sources=[SourceSpec(name="dw", type="sql", business="shop", options={"url": url, **options})],
    )


def asset_rows(lake: Lake) -> dict[str, dict[str, Any]]:
    """Asset rows without run ids and timestamps (what two equal lakes share)."""
    skip = {"run_id", "first_seen_at", "updated_at", "deleted_at"}
    return {
        r["asset_id"]: {k: v for k, v in r.items() if k not in skip}
        for r in lake.read_arrow(T.ASSETS).to_pylist()
    }


def counts(summary: IngestSummary) -> dict[str, int]:
    assert summary.ok, summary.failed
    c = summary.sources[0].tables[T.ASSETS]
    return {
        "extracted": c.extracted,
        "inserted": c.inserted,
        "updated": c.updated,
        "unchanged": c.unchanged,
        "not_read": c.not_read,
        "soft_deleted": c.soft_deleted,
        "quarantined": c.quarantined,
    }


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_only_new_or_changed_tables_are_read(
    engine: str, request: pytest.FixtureRequest, tmp_path: Path, column_reads: ColumnReads
) -> None:
    case = ENGINES[engine]
    url: str = request.getfixturevalue(case["url"])
    execute(url, case["ddl"])
    lake_uri = str(tmp_path / "lake")
    settings = settings_for(url, lake_uri, case["options"])
    lake = Lake(lake_uri)

    # 1. first ingest: every table read, fingerprints stored for the 5 merged ones (not the refused one)
    first = run_ingest(settings, run_id="run-1")
    assert counts(first) == {
        "extracted": 6,
        "inserted": 5,
        "updated": 0,
        "unchanged": 0,
        "not_read": 0,
        "soft_deleted": 0,
        "quarantined": 1,
    }
    assert first.sources[0].quarantine_stored == 1
    state = lake.read_arrow(T.SOURCE_STATE).to_pylist()
    assert {r["asset_id"].rsplit(".", 1)[-1] for r in state} == TABLES
    ids = {a.name: a.asset_id for a in lake.read_assets()}
    versions = {t: lake.version(t) for t in (T.ASSETS, T.QUARANTINE, T.SOURCE_STATE)}

    # 2. unchanged: no column read but the refused table's, nothing written anywhere
    column_reads.clear()
    same = run_ingest(settings, run_id="run-2")
    assert counts(same) == {
        "extracted": 1,
        "inserted": 0,
        "updated": 0,
        "unchanged": 5,
        "not_read": 5,
        "soft_deleted": 0,
        "quarantined": 1,
    }
    assert column_reads.tables() == 1
    assert same.sources[0].read_mode == "changed" and same.sources[0].quarantine_stored == 0
    assert {t: lake.version(t) for t in versions} == versions
    assert len(lake.read_quarantine(source="dw")) == 1  # the same refused row, stored once

    # 3. a column comment, a column type and a foreign key change: those 3 tables are read
    execute(url, [case["comment"], case["type"], case["key"]])
    column_reads.clear()
    changed = run_ingest(settings, run_id="run-3")
    assert counts(changed) == {
        "extracted": 4,
        "inserted": 0,
        "updated": 3,
        "unchanged": 2,
        "not_read": 2,
        "soft_deleted": 0,
        "quarantined": 1,
    }
    assert column_reads.tables() == 4
    assets = {a.name: a for a in lake.read_assets()}
    assert {c.name: c.comment for c in assets["t_a"].columns}["v"] == "new words"
    assert {c.name: c.type for c in assets["t_b"].columns}["v"] in ("bigint", "bigint(20)")
    assert [(fk.columns, fk.ref_asset_id) for fk in assets["t_c"].foreign_keys] == [(["a_id"], ids["t_a"])]
    assert lake.version(T.QUARANTINE) == versions[T.QUARANTINE]

    # 4. the lake equals what a full read of the same catalog gives
    full_lake = Lake(str(tmp_path / "full"))
    full = run_ingest(settings, run_id="full", lake=full_lake, full_read=True)
    assert counts(full)["extracted"] == 6
    assert asset_rows(full_lake) == asset_rows(lake)

    # 5. a lost state: one full read, the lake unchanged; then incremental again
    shutil.rmtree(Path(lake_uri) / T.SOURCE_STATE)
    before, version = asset_rows(lake), lake.version(T.ASSETS)
    column_reads.clear()
    lost = run_ingest(settings, run_id="run-5")
    assert counts(lost)["extracted"] == 6 and counts(lost)["not_read"] == 0 and counts(lost)["unchanged"] == 5
    assert column_reads.tables() in (6, None)  # every table (MariaDB: one scan of the schema)
    assert lake.version(T.ASSETS) == version and asset_rows(lake) == before
    assert counts(run_ingest(settings, run_id="run-6"))["not_read"] == 5

    # 6. a dropped table is soft-deleted; the others are kept as they are
    execute(url, [case["drop"]])
    dropped = run_ingest(settings, run_id="run-7")
    assert counts(dropped)["soft_deleted"] == 1 and counts(dropped)["not_read"] == 4
    row = asset_rows(lake)[ids["t_e"]]
    assert row["deleted"] is True
    assert {a.name for a in lake.read_assets()} == TABLES - {"t_e"}
    assert len(lake.read_quarantine(source="dw")) == 1


def test_change_detection_off_reads_everything(
    pg_url: str, tmp_path: Path, column_reads: ColumnReads
) -> None:
    case = ENGINES["postgresql"]
    execute(pg_url, case["ddl"])
    settings = settings_for(pg_url, str(tmp_path / "lake"), {**case["options"], "change_detection": False})
    assert counts(run_ingest(settings, run_id="run-1"))["extracted"] == 6
    column_reads.clear()
    again = run_ingest(settings, run_id="run-2")
    assert counts(again)["extracted"] == 6 and counts(again)["not_read"] == 0
    assert column_reads.tables() == 6
    assert not Lake(str(tmp_path / "lake")).exists(T.SOURCE_STATE)


def test_mysql_ids_name_the_database_once_and_old_ids_move(mysql_url: str, tmp_path: Path) -> None:
    execute(mysql_url, ENGINES["mariadb"]["ddl"])
    db = sa.make_url(mysql_url).database
    settings = settings_for(mysql_url, str(tmp_path / "lake"), {})
    summary = run_ingest(settings, run_id="run-1")
    assert summary.ok, summary.failed
    lake = Lake(str(tmp_path / "lake"))
    assets = lake.read_assets()
    assert {a.asset_id for a in assets} == {f"shop.{db}.{t}" for t in TABLES}
    assert {(a.database, a.schema_name) for a in assets} == {(db, "")}

    # a lake written before: the same tables under biz.db.db.table
    old_lake = Lake(str(tmp_path / "old"))
    legacy = [
        a.model_copy(update={"asset_id": f"shop.{db}.{db}.{a.name}", "schema_name": db}) for a in assets
    ]
    old_lake.merge_assets(legacy, "before", snapshot_of="dw")
    moved = run_ingest(settings, run_id="run-2", lake=old_lake)
    assert moved.ok, moved.failed  # not a 100% shrink: the tables are the same
    c = moved.sources[0].tables[T.ASSETS]
    assert (c.inserted, c.soft_deleted) == (5, 5)
    assert {a.asset_id for a in old_lake.read_assets()} == {f"shop.{db}.{t}" for t in TABLES}

    # the `database` option names the server: the MySQL database then comes second
    named = settings_for(mysql_url, str(tmp_path / "named"), {"database": "crm"})
    assert run_ingest(named, run_id="run-3").ok
    assert {a.asset_id for a in Lake(str(tmp_path / "named")).read_assets()} == {
        f"shop.crm.{db}.{t}" for t in TABLES
    }


def test_mariadb_reader_without_privileges_on_innodb_dictionary(mysql_url: str, tmp_path: Path) -> None:
    """A reader granted SELECT on its database only (no PROCESS, no mysql.innodb_table_stats):
    foreign keys and row estimates come from information_schema, changes are still seen."""
    case = ENGINES["mariadb"]
    execute(mysql_url, [*case["ddl"], "INSERT INTO t_d VALUES (1), (2), (3)", "ANALYZE TABLE t_d"])
    url = sa.make_url(mysql_url)
    user = f"reader_{url.database[-8:]}"
    admin = sa.create_engine(url.set(database=""), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE USER '{user}'@'%%' IDENTIFIED BY 'pw-{user}'")
        conn.exec_driver_sql(f"GRANT SELECT ON `{url.database}`.* TO '{user}'@'%%'")
    try:
        reader = url.set(username=user, password=f"pw-{user}").render_as_string(hide_password=False)
        settings = settings_for(reader, str(tmp_path / "lake"), {})
        first = run_ingest(settings, run_id="run-1")
        assert counts(first)["inserted"] == 5
        report = first.sources[0].report["counts"]
        assert report["foreign_keys_read_for_all"] == 1 and report["row_estimates_by_name"] == 1
        lake = Lake(str(tmp_path / "lake"))
        assert {a.name: a.row_count for a in lake.read_assets()}["t_d"] == 3
        assert counts(run_ingest(settings, run_id="run-2"))["not_read"] == 5
        execute(mysql_url, [case["key"]])
        changed = run_ingest(settings, run_id="run-3")
        assert counts(changed)["updated"] == 1 and counts(changed)["not_read"] == 4
        t_c = {a.name: a for a in lake.read_assets()}["t_c"]
        assert [fk.columns for fk in t_c.foreign_keys] == [["a_id"]]
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP USER IF EXISTS '{user}'@'%%'")
        admin.dispose()


def test_postgresql_key_changes_are_detected(pg_url: str, tmp_path: Path) -> None:
    """A primary key moved to another column (same name, same columns otherwise), and a renamed
    column that another table's foreign key references: the tables involved are read again, and
    the lake equals a full read."""
    execute(
        pg_url,
        [
            "CREATE SCHEMA dw",
            "CREATE TABLE dw.k (a int NOT NULL, b int NOT NULL, CONSTRAINT k_pkey PRIMARY KEY (a))",
            "CREATE TABLE dw.p (id int PRIMARY KEY)",
            "CREATE TABLE dw.f (id int PRIMARY KEY, p_id int REFERENCES dw.p (id))",
            "CREATE TABLE dw.q (id int PRIMARY KEY)",
        ],
    )
    settings = settings_for(pg_url, str(tmp_path / "lake"), {"schemas": ["dw"]})
    lake = Lake(str(tmp_path / "lake"))
    assert counts(run_ingest(settings, run_id="run-1"))["inserted"] == 4
    assert counts(run_ingest(settings, run_id="run-2"))["not_read"] == 4

    execute(
        pg_url,
        [
            "ALTER TABLE dw.k DROP CONSTRAINT k_pkey, ADD CONSTRAINT k_pkey PRIMARY KEY (b)",
            "ALTER TABLE dw.p RENAME COLUMN id TO pid",
        ],
    )
    changed = run_ingest(settings, run_id="run-3")
    assert counts(changed)["extracted"] == 3 and counts(changed)["not_read"] == 1
    assets = {a.name: a for a in lake.read_assets()}
    assert [c.name for c in assets["k"].columns if c.primary_key] == ["b"]
    assert [fk.ref_columns for fk in assets["f"].foreign_keys] == [["pid"]]
    full_lake = Lake(str(tmp_path / "full"))
    run_ingest(settings, run_id="full", lake=full_lake, full_read=True)
    assert asset_rows(full_lake) == asset_rows(lake)


MARIADB_WIDE = 40  # columns of t_wide, each with a 60-character comment: over GROUP_CONCAT's 1 KiB default
MARIADB_DEFINITIONS = [
    "CREATE TABLE t_keep (id INT PRIMARY KEY) COMMENT='never changes'",
    "CREATE TABLE t_comment (id INT PRIMARY KEY) COMMENT='old table words'",
    "CREATE TABLE t_rename (id INT PRIMARY KEY, a INT)",
    "CREATE TABLE t_null (id INT PRIMARY KEY, a INT NULL)",
    "CREATE TABLE t_pk (a INT NOT NULL, b INT NOT NULL, PRIMARY KEY (a))",
    "CREATE TABLE t_order (id INT PRIMARY KEY, a INT, b INT)",
    "CREATE TABLE t_enum (id INT PRIMARY KEY, e ENUM('x', 'y'))",
    "CREATE TABLE t_add (id INT PRIMARY KEY)",
    "CREATE TABLE t_wide ("
    + ", ".join(f"c{j:02d} INT COMMENT '{'w' * 56}{j:04d}'" for j in range(MARIADB_WIDE))
    + ")",
    "CREATE VIEW v_keep AS SELECT id FROM t_keep",
    "CREATE VIEW v_null AS SELECT id, a FROM t_null",  # its column `a` becomes NOT NULL with the table's
]
MARIADB_CHANGES = [
    "ALTER TABLE t_comment COMMENT = 'new table words'",
    "ALTER TABLE t_rename CHANGE a b INT",
    "ALTER TABLE t_null MODIFY a INT NOT NULL",
    "ALTER TABLE t_pk DROP PRIMARY KEY, ADD PRIMARY KEY (b)",
    "ALTER TABLE t_order MODIFY b INT AFTER id",
    "ALTER TABLE t_enum MODIFY e ENUM('x', 'z')",
    "ALTER TABLE t_add ADD COLUMN flag BOOLEAN COMMENT 'new flag'",
    f"ALTER TABLE t_wide MODIFY c{MARIADB_WIDE - 1:02d} INT COMMENT '{'w' * 56}last'",
]


@pytest.mark.parametrize("digest", ["sums", "md5"])
def test_mariadb_definition_changes_are_detected(
    digest: str,
    mysql_url: str,
    tmp_path: Path,
    column_reads: ColumnReads,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every kind of definition change MariaDB can make in place (table comment, column name,
    nullability, primary key, column order, enum values, a new column, the comment of the last of
    many long-commented columns) re-reads exactly the changed tables (and a view whose column
    changed with its table), with either column digest: the CRC sums of MariaDB 10.8+ or the
    ordered MD5 that MySQL and older MariaDB get."""
    from assetmatch.sources.sql import SqlSource

    url = mysql_url
    if digest == "md5":  # this server as if it were MySQL: no CRC32C, GROUP_CONCAT cut at 1 KiB
        monkeypatch.setattr(SqlSource, "_MARIADB_CRC32C", (10**6, 0))
        url = (
            sa.make_url(mysql_url)
            .update_query_dict({"init_command": "SET SESSION group_concat_max_len = 1024"})
            .render_as_string(hide_password=False)
        )
    execute(mysql_url, MARIADB_DEFINITIONS)
    settings = settings_for(url, str(tmp_path / "lake"), {})
    settings.validation.max_text_length = 1_000
    lake = Lake(str(tmp_path / "lake"))
    tables = len(MARIADB_DEFINITIONS)
    column_reads.clear()
    assert counts(run_ingest(settings, run_id="run-1"))["inserted"] == tables
    sent = " ".join(statement for statement, _ in column_reads.statements)
    assert ("CRC32C(" in sent) == (digest == "sums") and ("GROUP_CONCAT(" in sent) == (digest == "md5")
    assert counts(run_ingest(settings, run_id="run-2"))["not_read"] == tables

    execute(mysql_url, MARIADB_CHANGES)
    column_reads.clear()
    changed = counts(run_ingest(settings, run_id="run-3"))
    assert (changed["extracted"], changed["updated"], changed["not_read"]) == (tables - 2, tables - 2, 2)
    assert column_reads.tables() == tables - 2
    assets = {a.name: a for a in lake.read_assets()}
    assert {c.name: c.nullable for c in assets["v_null"].columns}["a"] is False
    assert assets["t_comment"].comment == "new table words"
    assert [c.name for c in assets["t_rename"].columns] == ["id", "b"]
    assert [c.name for c in assets["t_pk"].columns if c.primary_key] == ["b"]
    assert [c.name for c in assets["t_order"].columns] == ["id", "b", "a"]
    assert assets["t_wide"].columns[-1].comment.endswith("last")

    full_lake = Lake(str(tmp_path / "full"))
    run_ingest(settings, run_id="full", lake=full_lake, full_read=True)
    assert asset_rows(full_lake) == asset_rows(lake)
    assert counts(run_ingest(settings, run_id="run-4"))["not_read"] == tables
