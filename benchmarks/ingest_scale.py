"""Ingest at scale: 10,000 PostgreSQL tables x 30 commented columns through the `sql` source.

Measures the full ingest (extract -> validate -> merge) into an empty lake, its peak memory, then a
re-ingest after 1% of the tables changed (50 table comments rewritten, 50 tables with a new
commented column) and a re-ingest with nothing changed; prints where the time goes.

    nice .venv/bin/python benchmarks/ingest_scale.py [--tables 10000] [--columns 30] [--keep]

Needs PostgreSQL on 127.0.0.1:5432 (user postgres, trust auth) or --admin-url. A dedicated database
`assetmatch_bench_<random>` is created and dropped at the end (--keep leaves it).
Aims on a 2-core machine: full <= 30 s, 1%-changed re-ingest >= 5x faster than full, peak RSS <= 2 GiB.
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

import psutil
import sqlalchemy as sa

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

TYPES = ("bigint", "text", "numeric(12,2)", "date", "timestamp", "integer")
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
    if reuse is None:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = admin.url.set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        if keep:
            print(f"kept database {name}")
        else:
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
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


def run(
    label: str, settings: object, lake: object
) -> tuple[float, int, dict[str, tuple[float, float]], dict[str, int]]:
    from assetmatch.ingest import run_ingest

    with RssSampler() as rss:
        started = time.perf_counter()
        summary = run_ingest(settings, lake=lake, run_id=label)  # type: ignore[arg-type]
        elapsed = time.perf_counter() - started
    if not summary.ok:
        raise SystemExit(f"{label}: ingest failed: {summary.failed[0].error}")
    source = summary.sources[0]
    counts = source.tables["assets"]
    return (
        elapsed,
        rss.peak,
        {phase: (wall, source.cpu_timings.get(phase, 0.0)) for phase, wall in source.timings.items()},
        {k: getattr(counts, k) for k in ("extracted", "inserted", "updated", "unchanged", "quarantined")},
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tables", type=int, default=10_000)
    parser.add_argument("--columns", type=int, default=30)
    parser.add_argument("--admin-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--keep", action="store_true", help="Keep the benchmark database.")
    parser.add_argument(
        "--reuse", default=None, help="Reuse a database kept by an earlier --keep run (no rebuild)."
    )
    parser.add_argument(
        "--url-query",
        default="",
        help="Query string appended to the source URL, e.g. 'options=-c%%20cursor_tuple_fraction%%3D1' "
        "(libpq options: the planner then plans the streamed catalog cursor for all rows, not the first 10%%).",
    )
    args = parser.parse_args()

    from assetmatch.config import BusinessConfig, Settings, SourceSpec
    from assetmatch.lake.delta import Lake

    mib = 1024 * 1024
    base_rss = psutil.Process().memory_info().rss
    with bench_database(args.admin_url, args.keep, args.reuse) as url, tempfile.TemporaryDirectory() as tmp:
        if args.reuse is None:
            ddl_s = build_schema(url, args.tables, args.columns)
            print(f"schema: {args.tables} tables x {args.columns} commented columns created in {ddl_s:.1f} s")

        # Great Expectations is imported once per process; time it apart from the ingest itself
        started = time.perf_counter()
        from assetmatch.quality.validate import gx_runtime

        gx_runtime()
        gx_s = time.perf_counter() - started
        settings = Settings(
            lake={"uri": f"{tmp}/lake"},
            businesses=[BusinessConfig(name="bench")],
            sources=[
                SourceSpec(
                    name="pg",
                    type="sql",
                    business="bench",
                    options={"url": f"{url}?{args.url_query}" if args.url_query else url, "schemas": ["dw"]},
                )
            ],
        )
        lake = Lake(f"{tmp}/lake")

        full_s, full_rss, full_t, full_c = run("full", settings, lake)
        changed = change_one_percent(url, args.tables)
        re_s, re_rss, re_t, re_c = run("one-percent", settings, lake)
        same_s, same_rss, same_t, same_c = run("unchanged", settings, lake)

    def phases(t: dict[str, tuple[float, float]]) -> str:
        return ", ".join(f"{k} {wall:.2f} s (cpu {cpu:.2f} s)" for k, (wall, cpu) in t.items())

    print(
        f"load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cores"
    )
    print(
        "wall time per phase, and this process's CPU time: wall >> cpu = waiting (database or CPU contention)"
    )
    print(f"great_expectations import + context (once per process): {gx_s:.2f} s")
    print(f"full ingest:          {full_s:6.2f} s  ({phases(full_t)})  counts {full_c}")
    print(f"1% changed re-ingest: {re_s:6.2f} s  ({phases(re_t)})  counts {re_c}  [{changed} tables changed]")
    print(f"unchanged re-ingest:  {same_s:6.2f} s  ({phases(same_t)})  counts {same_c}")
    print(f"speed-up of the 1% re-ingest over the full one: {full_s / re_s:.1f}x")
    peak = max(full_rss, re_rss, same_rss)
    print(f"peak RSS: {peak / mib:.0f} MiB (process start {base_rss / mib:.0f} MiB)")
    print(
        "aims: full <= 30 s: {}; re-ingest >= 5x: {}; memory <= 2 GiB: {}".format(
            "met" if full_s <= 30 else "missed",
            "met" if full_s / re_s >= 5 else "missed",
            "met" if peak <= 2048 * mib else "missed",
        )
    )


if __name__ == "__main__":
    main()
