"""Ingest at scale through the `sql` source: 10,000 tables x 30 commented columns, on PostgreSQL and
on MariaDB, in one run.

Per engine: the full ingest (extract -> validate -> merge) into an empty lake, then a re-ingest after
1% of the tables changed (half of them a rewritten table comment, half a new commented column), then
a re-ingest with nothing changed; prints the times, their ratios to the full ingest, where the time
goes, peak memory and the load average. The re-ingests read only new or changed tables (change
detection at the source; `--full-read` measures them reading everything, as before).

    nice .venv/bin/python benchmarks/ingest_scale.py [--engines postgresql,mariadb] [--tables 10000]
        [--columns 30] [--keep | --reuse NAME] [--full-read]

Needs PostgreSQL on 127.0.0.1:5432 (user postgres, trust auth) and MariaDB on 127.0.0.1:3306 (root, no
password), or --pg-admin-url / --mysql-admin-url. A database `assetmatch_bench_<random>` is created on
each and dropped at the end (--keep leaves them, --reuse NAME uses kept ones without rebuilding).
Aims on a 2-core machine: full <= 30 s (PostgreSQL), 1%-changed re-ingest >= 5x faster than full,
unchanged >= 10x, peak RSS <= 2 GiB.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psutil
import sqlalchemy as sa

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

TYPES = ("bigint", "text", "numeric(12,2)", "date", "timestamp", "integer")
MYSQL_TYPES = ("bigint", "text", "decimal(12,2)", "date", "datetime", "int")
WORDS = ("用户", "订单", "支付", "登录", "活跃", "留存", "渠道", "设备", "充值", "道具")


class RssSampler:
    """Peak resident memory of this process, sampled every 20 ms in a background thread."""

    def __init__(self, interval: float = 0.02) -> None:
        self.process = psutil.Process()
        self.interval = interval
        self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)


def table_ddl(i: int, columns: int) -> str:
    """CREATE TABLE plus COMMENT ON for the table and every column, as one script."""
    name = f"dw.t_{i:05d}"
    cols = [f"c{j:02d} {TYPES[j % len(TYPES)]}" + (" PRIMARY KEY" if j == 0 else "") for j in range(columns)]
    parts = [f"CREATE TABLE {name} ({', '.join(cols)});"]
    word = WORDS[i % len(WORDS)]
    parts.append(f"COMMENT ON TABLE {name} IS '{word}明细表 {i}: daily {word} facts per user and channel';")
    for j in range(columns):
        parts.append(f"COMMENT ON COLUMN {name}.c{j:02d} IS '{WORDS[j % len(WORDS)]}字段 {j} of table {i}';")
    return "\n".join(parts)


@contextmanager
def bench_database(admin_url: str, keep: bool, reuse: str | None = None) -> Iterator[str]:
    """A fresh database (dropped afterwards unless `keep`), or the kept one named `reuse`."""
    name = reuse or f"assetmatch_bench_{uuid.uuid4().hex[:8]}"
    keep = keep or reuse is not None
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    mysql = admin.dialect.name in ("mysql", "mariadb")
    if reuse is None:
        with admin.connect() as conn:
            conn.execute(
                sa.text(
                    f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"
                    if mysql
                    else f'CREATE DATABASE "{name}"'
                )
            )
    url = admin.url.set(database=name)
    if mysql:
        url = url.update_query_dict({"charset": "utf8mb4"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        if keep:
            print(f"kept database {name} ({admin.dialect.name})")
        else:
            with admin.connect() as conn:
                conn.execute(
                    sa.text(
                        f"DROP DATABASE IF EXISTS `{name}`"
                        if mysql
                        else f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'
                    )
                )
        admin.dispose()


def build_schema(url: str, tables: int, columns: int, chunk: int = 250) -> float:
    """The whole schema in tables/chunk round trips, one transaction each (psycopg runs a
    parameterless multi-statement string as one simple query)."""
    started = time.perf_counter()
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE SCHEMA dw")
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute("SET synchronous_commit = off")
        for start in range(0, tables, chunk):
            cursor.execute("\n".join(table_ddl(i, columns) for i in range(start, min(start + chunk, tables))))
            raw.commit()
    finally:
        raw.close()
        engine.dispose()
    return time.perf_counter() - started


def change_one_percent(url: str, tables: int) -> int:
    """Rewrite the comment of half of 1% of the tables, add a commented column to the other half.
    Every call writes new text (a random token), so a reused database changes again."""
    step = 100
    token = uuid.uuid4().hex[:6]
    statements = []
    for n, i in enumerate(range(0, tables, step)):
        name = f"dw.t_{i:05d}"
        if n % 2 == 0:
            statements.append(f"COMMENT ON TABLE {name} IS 'rewritten comment for table {i} ({token})';")
        else:
            statements.append(f"ALTER TABLE {name} ADD COLUMN IF NOT EXISTS extra_flag boolean;")
            statements.append(f"COMMENT ON COLUMN {name}.extra_flag IS 'new flag on table {i} ({token})';")
    engine = sa.create_engine(url)
    raw = engine.raw_connection()
    try:
        raw.cursor().execute("\n".join(statements))
        raw.commit()
    finally:
        raw.close()
        engine.dispose()
    return len(range(0, tables, step))


def mysql_table_ddl(i: int, columns: int) -> str:
    word = WORDS[i % len(WORDS)]
    cols = ", ".join(
        f"c{j:02d} {MYSQL_TYPES[j % len(MYSQL_TYPES)]}"
        + (" PRIMARY KEY" if j == 0 else "")
        + f" COMMENT '{WORDS[j % len(WORDS)]}字段 {j} of table {i}'"
        for j in range(columns)
    )
    return (
        f"CREATE TABLE t_{i:05d} ({cols}) COMMENT='{word}明细表 {i}: daily {word} facts per user and channel'"
    )


def build_mysql_schema(url: str, tables: int, columns: int) -> float:
    """The same schema on MariaDB/MySQL (InnoDB), one CREATE TABLE per round trip."""
    started = time.perf_counter()
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            for i in range(tables):
                conn.exec_driver_sql(mysql_table_ddl(i, columns))
            conn.commit()
    finally:
        engine.dispose()
    return time.perf_counter() - started


def change_one_percent_mysql(url: str, tables: int) -> int:
    """`change_one_percent` on MariaDB/MySQL (the new column's comment is rewritten when it exists)."""
    token = uuid.uuid4().hex[:6]
    engine = sa.create_engine(url)
    changed = range(0, tables, 100)
    try:
        with engine.connect() as conn:
            for n, i in enumerate(changed):
                name = f"t_{i:05d}"
                if n % 2 == 0:
                    conn.exec_driver_sql(
                        f"ALTER TABLE {name} COMMENT = 'rewritten comment for table {i} ({token})'"
                    )
                else:
                    conn.exec_driver_sql(f"ALTER TABLE {name} ADD COLUMN IF NOT EXISTS extra_flag boolean")
                    conn.exec_driver_sql(
                        f"ALTER TABLE {name} MODIFY extra_flag boolean COMMENT 'new flag on table {i} ({token})'"
                    )
            conn.commit()
    finally:
        engine.dispose()
    return len(changed)


def run(
    label: str, settings: object, lake: object, full_read: bool = False
) -> tuple[float, int, dict[str, tuple[float, float]], dict[str, int]]:
    from assetmatch.ingest import run_ingest

    with RssSampler() as rss:
        started = time.perf_counter()
        summary = run_ingest(settings, lake=lake, run_id=label, full_read=full_read)  # type: ignore[arg-type]
        elapsed = time.perf_counter() - started
    if not summary.ok:
        raise SystemExit(f"{label}: ingest failed: {summary.failed[0].error}")
    source = summary.sources[0]
    counts = source.tables["assets"]
    return (
        elapsed,
        rss.peak,
        {phase: (wall, source.cpu_timings.get(phase, 0.0)) for phase, wall in source.timings.items()},
        {
            k: getattr(counts, k)
            for k in ("extracted", "inserted", "updated", "unchanged", "not_read", "quarantined")
        },
    )


def load() -> str:
    return f"{', '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cores"


def bench_engine(engine: str, admin_url: str, args: argparse.Namespace) -> dict[str, Any]:
    """Build (or reuse) the schema, then the full, 1%-changed and unchanged ingests into a fresh lake."""
    from assetmatch.config import BusinessConfig, LakeConfig, Settings, SourceSpec
    from assetmatch.lake.delta import Lake

    mysql = engine == "mariadb"
    with bench_database(admin_url, args.keep, args.reuse) as url, tempfile.TemporaryDirectory() as tmp:
        if args.reuse is None:
            build = build_mysql_schema if mysql else build_schema
            ddl_s = build(url, args.tables, args.columns)
            print(
                f"{engine}: {args.tables} tables x {args.columns} commented columns created in {ddl_s:.1f} s"
            )
        options: dict[str, Any] = {"url": url} if mysql else {"url": url, "schemas": ["dw"]}
        settings = Settings(
            lake=LakeConfig(uri=f"{tmp}/lake"),
            businesses=[BusinessConfig(name="bench")],
            sources=[SourceSpec(name=engine, type="sql", business="bench", options=options)],
        )
        lake = Lake(f"{tmp}/lake")
        out: dict[str, Any] = {"load_before": load()}
        out["full"] = run("full", settings, lake)
        out["changed_tables"] = (change_one_percent_mysql if mysql else change_one_percent)(url, args.tables)
        out["changed"] = run("one-percent", settings, lake, args.full_read)
        out["unchanged"] = run("unchanged", settings, lake, args.full_read)
        out["load_after"] = load()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--engines", default="postgresql,mariadb", help="Comma-separated: postgresql, mariadb."
    )
    parser.add_argument("--tables", type=int, default=10_000)
    parser.add_argument("--columns", type=int, default=30)
    parser.add_argument("--pg-admin-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--mysql-admin-url", default="mysql+pymysql://root@127.0.0.1:3306/")
    parser.add_argument("--keep", action="store_true", help="Keep the benchmark databases.")
    parser.add_argument(
        "--reuse",
        default=None,
        help="Reuse the databases of this name kept by an earlier --keep run (no rebuild).",
    )
    parser.add_argument(
        "--full-read",
        action="store_true",
        help="Re-ingests read every table (change detection off), for comparison.",
    )
    args = parser.parse_args()
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = set(engines) - {"postgresql", "mariadb"}
    if unknown:
        parser.error(f"unknown engine(s): {', '.join(sorted(unknown))}")

    mib = 1024 * 1024
    base_rss = psutil.Process().memory_info().rss
    print(f"load average at the start: {load()}")
    # Great Expectations is imported once per process; time it apart from the ingests themselves
    started = time.perf_counter()
    from assetmatch.quality.validate import gx_runtime

    gx_runtime()
    gx_s = time.perf_counter() - started
    results = {
        engine: bench_engine(engine, args.mysql_admin_url if engine == "mariadb" else args.pg_admin_url, args)
        for engine in engines
    }

    def phases(t: dict[str, tuple[float, float]]) -> str:
        return ", ".join(f"{k} {wall:.2f} s (cpu {cpu:.2f} s)" for k, (wall, cpu) in t.items())

    print(
        f"\n{args.tables} tables x {args.columns} columns; re-ingests {'read every table' if args.full_read else 'read only new or changed tables'}"
    )
    print(
        "wall time per phase, and this process's CPU time: wall >> cpu = waiting (database or CPU contention)"
    )
    print(f"great_expectations import + context (once per process): {gx_s:.2f} s")
    peak = 0
    verdicts = []
    for engine, r in results.items():
        full_s, full_rss, full_t, full_c = r["full"]
        re_s, re_rss, re_t, re_c = r["changed"]
        same_s, same_rss, same_t, same_c = r["unchanged"]
        peak = max(peak, full_rss, re_rss, same_rss)
        print(f"\n{engine} (load average {r['load_before']} before, {r['load_after']} after)")
        print(f"  full ingest:          {full_s:6.2f} s  ({phases(full_t)})  counts {full_c}")
        print(
            f"  1% changed re-ingest: {re_s:6.2f} s  ({phases(re_t)})  counts {re_c}  "
            f"[{r['changed_tables']} tables changed]"
        )
        print(f"  unchanged re-ingest:  {same_s:6.2f} s  ({phases(same_t)})  counts {same_c}")
        print(
            f"  speed-up over the full ingest: 1% changed {full_s / re_s:.1f}x, unchanged {full_s / same_s:.1f}x"
        )
        verdicts.append(
            f"{engine}: 1% >= 5x {'met' if full_s / re_s >= 5 else 'missed'}, "
            f"unchanged >= 10x {'met' if full_s / same_s >= 10 else 'missed'}"
            + (f", full <= 30 s {'met' if full_s <= 30 else 'missed'}" if engine == "postgresql" else "")
        )
    print(
        f"\npeak RSS: {peak / mib:.0f} MiB (process start {base_rss / mib:.0f} MiB); <= 2 GiB: {'met' if peak <= 2048 * mib else 'missed'}"
    )
    print("aims: " + "; ".join(verdicts))
    print(f"load average at the end: {load()}")


if __name__ == "__main__":
    main()
