"""Materialization at scale: compute feature snapshots for N tables from the lake and load the online
store (SQLite by default), timing each phase and the process's peak memory.

    nice .venv/bin/python benchmarks/features_materialize.py [--assets 100000] [--queries 200000] [--days 7]
        [--online-store sqlite|redis] [--redis 127.0.0.1:6379]

The synthetic lake is written by a child process first, so the peak RSS printed belongs to the
materialization alone (plus the Feast import, printed as the baseline).
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import tempfile
import time
import uuid
from pathlib import Path

import psutil

from feature_bench_data import synthetic_lake

REPO = Path(__file__).resolve().parents[1]


def _prepare(uri: str, assets: int, queries: int, days: int) -> None:
    synthetic_lake(uri, assets, queries, days)


def _peak_rss_mib() -> float:
    """This process's peak resident memory so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--assets", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200_000)
    parser.add_argument("--days", type=int, default=7, help="days of query log = daily snapshots computed")
    parser.add_argument("--online-store", choices=["sqlite", "redis"], default="sqlite")
    parser.add_argument("--redis", default="127.0.0.1:6379", help="Redis host:port for --online-store redis")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        child = multiprocessing.get_context("spawn").Process(
            target=_prepare, args=(str(root / "lake"), args.assets, args.queries, args.days)
        )
        child.start()
        child.join()
        if child.exitcode != 0:
            raise SystemExit(f"preparing the synthetic lake failed (exit {child.exitcode})")
        print(
            f"synthetic lake: {args.assets} tables, {args.queries} queries in {time.perf_counter() - t0:.1f} s"
        )

        from assetmatch.config import load_settings
        from assetmatch.features.build import build_features
        from assetmatch.features.store import apply_repo, open_store
        from assetmatch.lake.delta import Lake

        settings = load_settings(
            None,
            lake={"uri": str(root / "lake")},
            feast={
                "data_dir": str(root / "feast"),
                "repo_path": str(REPO / "feature_repo"),
                "project": f"bench_{uuid.uuid4().hex[:8]}",
                "history_days": args.days,
                "online_store": args.online_store,
                "redis_connection": args.redis,
            },
        )
        rss = psutil.Process().memory_info().rss / 2**20
        print(f"baseline RSS after imports: {rss:.0f} MiB")

        t0, c0 = time.perf_counter(), time.process_time()
        written = build_features(Lake(str(root / "lake")), history_days=args.days)
        build_s, build_cpu = time.perf_counter() - t0, time.process_time() - c0
        print(
            f"build snapshots: {len(written.snapshots)} days, {written.asset_rows} asset rows, "
            f"{written.pair_rows} pair rows in {build_s:.1f} s (cpu {build_cpu:.1f} s); "
            f"peak RSS so far {_peak_rss_mib():.0f} MiB"
        )

        store = open_store(settings)
        apply_repo(store, settings)
        from datetime import UTC, datetime

        t0, c0 = time.perf_counter(), time.process_time()
        store.materialize_incremental(end_date=datetime.now(UTC))
        online_s, online_cpu = time.perf_counter() - t0, time.process_time() - c0
        print(f"materialize_incremental to {args.online_store}: {online_s:.1f} s (cpu {online_cpu:.1f} s)")
        print(
            f"total {build_s + online_s:.1f} s wall, {build_cpu + online_cpu:.1f} s cpu; "
            f"peak RSS {_peak_rss_mib():.0f} MiB"
        )
        store.teardown()


if __name__ == "__main__":
    main()
