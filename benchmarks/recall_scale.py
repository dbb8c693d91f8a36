"""Recall at scale: synthetic warehouse of N tables (default 100,000) in a temporary lake.

Prints: full index build time (and its parts), rebuild time with 1% of the tables changed (and how many
rows were embedded, how many dense and lexical shards rewritten), query latency p50/p95 of
`IndexSet.recall` (lexical + dense + glossary + usage) and of `expand` (graph), for one business and for
the whole library, and the process's peak memory; with --index-types, flat vs HNSW vs IVF-PQ over all
the table vectors.

    HF_HUB_OFFLINE=1 nice -n 5 .venv/bin/python benchmarks/recall_scale.py --tables 100000
    HF_HUB_OFFLINE=1 nice .venv/bin/python benchmarks/recall_scale.py --tables 5000 --businesses 10 --queries 100

The lake is written (and the 1% edit made) in child processes, so the peak RSS printed is the driver's
own: two builds (full, then incremental) and the queries. Dense embedding runs on a LocalCluster of
`--dask-workers` processes (or `--dask-address`); their memory is not in the driver's figure.

Table texts are random compositions of a warehouse vocabulary (English identifiers, some Chinese
comments), with foreign keys inside each business and a query log per business, so every path has work.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import resource
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from assetmatch.config import Settings
from assetmatch.lake import Lake
from assetmatch.models import Column, ForeignKey, TableAsset

SUBJECTS = [
    "user",
    "order",
    "payment",
    "item",
    "device",
    "session",
    "channel",
    "campaign",
    "coupon",
    "refund",
    "shop",
    "region",
    "server",
    "guild",
    "match",
    "battle",
    "hero",
    "skin",
    "level",
    "quest",
    "mail",
    "friend",
    "chat",
    "login",
    "register",
    "recharge",
    "ad",
    "impression",
    "click",
]
MEASURES = [
    "active",
    "new",
    "retained",
    "paying",
    "churn",
    "amount",
    "count",
    "duration",
    "revenue",
    "price",
    "cost",
    "rate",
    "score",
    "rank",
]
GRAINS = ["1d", "7d", "30d", "hour", "day", "week", "month"]
LAYERS = ["ods", "dwd", "dws", "ads", "dim"]
SUFFIXES = ["di", "df", "hi"]
ZH = [
    "用户",
    "订单",
    "支付",
    "道具",
    "设备",
    "会话",
    "渠道",
    "活动",
    "优惠券",
    "退款",
    "商店",
    "地区",
    "服务器",
    "公会",
    "对局",
    "英雄",
    "皮肤",
    "等级",
    "任务",
    "充值",
    "广告",
    "点击",
]
ZH_MEASURE = ["活跃", "新增", "留存", "付费", "流失", "金额", "次数", "时长", "收入", "价格", "成本", "比率"]


def synthetic_assets(n: int, businesses: int, rng: random.Random) -> list[TableAsset]:
    per = max(1, n // businesses)
    assets: list[TableAsset] = []
    for b in range(businesses):
        business = f"biz{b:04d}"
        names: list[str] = []
        count = per if b < businesses - 1 else n - per * (businesses - 1)
        for i in range(count):
            subject, measure = rng.choice(SUBJECTS), rng.choice(MEASURES)
            name = f"{rng.choice(LAYERS)}_{subject}_{measure}_{rng.choice(GRAINS)}_{rng.choice(SUFFIXES)}_{i}"
            columns = [Column(name=f"{subject}_id", comment=f"{ZH[SUBJECTS.index(subject) % len(ZH)]}ID")]
            for _ in range(rng.randint(4, 12)):
                col_subject, col_measure = rng.choice(SUBJECTS), rng.choice(MEASURES)
                comment = rng.choice(["", f"{col_subject} {col_measure}", rng.choice(ZH_MEASURE)])
                columns.append(Column(name=f"{col_subject}_{col_measure}", type="bigint", comment=comment))
            fks = []
            if names and rng.random() < 0.5:
                ref = rng.choice(names)
                fks.append(ForeignKey(columns=[f"{subject}_id"], ref_asset_id=f"{business}.{ref}"))
            comment = f"{subject} {measure} by {rng.choice(GRAINS)}; {ZH[SUBJECTS.index(subject) % len(ZH)]}{rng.choice(ZH_MEASURE)}"
            assets.append(
                TableAsset(business=business, name=name, comment=comment, columns=columns, foreign_keys=fks)
            )
            names.append(name)
    return assets


def query_log_rows(assets: list[TableAsset], rng: random.Random, per_business: int) -> list[dict[str, Any]]:
    by_business: dict[str, list[str]] = {}
    for a in assets:
        by_business.setdefault(a.business, []).append(a.asset_id)
    rows = []
    now = datetime.now(UTC)
    for business, ids in by_business.items():
        for q in range(per_business):
            tables = rng.sample(ids, min(len(ids), rng.randint(1, 3)))
            text = f"{rng.choice(MEASURES)} {rng.choice(SUBJECTS)} per {rng.choice(SUBJECTS)}"
            rows.append(
                {
                    "query_id": f"{business}-{q}",
                    "ts": now - timedelta(minutes=q),
                    "user": "bench",
                    "business": business,
                    "sql": "select 1",
                    "requirement": text,
                    "tables": tables,
                    "source": "bench",
                    "run_id": "bench",
                }
            )
    return rows


def percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    return f"p50 {statistics.median(ordered):.2f} ms, p95 {p95:.2f} ms (n={len(ordered)})"


def _write_lake(workdir: Path, tables: int, businesses: int, seed: int) -> None:
    """The synthetic warehouse, written in a child process so its lists never count in the build's
    peak memory (the build reads the lake like `assetmatch index build` does)."""
    rng = random.Random(seed)
    lake = Lake.from_settings(_settings(workdir))
    assets = synthetic_assets(tables, businesses, rng)
    lake.merge_assets(assets, run_id="bench")
    lake.upsert("query_log", query_log_rows(assets, rng, per_business=20), run_id="bench")


def _edit_lake(workdir: Path, share: float, seed: int, business: str | None = None) -> None:
    """Change the comment of `share` of the tables, or of `business`'s tables (a child process too)."""
    lake = Lake.from_settings(_settings(workdir))
    assets = lake.read_assets()
    pool = [a for a in assets if business is None or a.business == business]
    changed = random.Random(seed).sample(
        pool, max(1, int(len(assets) * share)) if business is None else len(pool) // 10
    )
    lake.merge_assets(
        [a.model_copy(update={"comment": a.comment + " (revised)"}) for a in changed], run_id="bench-edit"
    )
    print(f"changed {len(changed)} tables in {len({a.business for a in changed})} businesses")


def _settings(workdir: Path, recall: dict[str, Any] | None = None) -> Settings:
    return Settings.model_validate(
        {
            "lake": {"uri": str(workdir / "lake")},
            "recall": {"index_root": str(workdir / "indexes"), **(recall or {})},
        }
    )


def _in_child(target: Any, *args: Any) -> None:
    import multiprocessing

    child = multiprocessing.get_context("spawn").Process(target=target, args=args)
    child.start()
    child.join()
    if child.exitcode != 0:
        raise SystemExit(f"{target.__name__} failed in its child process (exit {child.exitcode})")


def _timed_rebuild(
    lake: Lake, settings: Settings, full_s: float, label: str, workdir: Path, *edit: Any
) -> str:
    """Edit the lake in a child process (`_edit_lake(workdir, *edit)`), rebuild, print the figures;
    returns the first business of the rebuilt index."""
    from assetmatch.recall.index import IndexSet

    _in_child(_edit_lake, workdir, *edit)
    t0 = time.perf_counter()
    rebuilt = IndexSet.build(lake, settings)
    seconds = time.perf_counter() - t0
    counts = rebuilt.manifest["counts"]
    print(
        f"rebuild with {label} changed: {seconds:.1f} s wall, {full_s / seconds:.1f}x faster than the full "
        f"build; embedded {counts['embedded_assets']}, reused {counts['reused_assets']}; dense shards rebuilt "
        f"{counts['rebuilt_shards']}, reused {counts['reused_shards']}; lexical shards rebuilt "
        f"{counts['rebuilt_lexical_shards']}, reused {counts['reused_lexical_shards']}; {_load()}"
    )
    print(f"  parts {rebuilt.manifest['build_seconds']}")
    first = sorted(rebuilt.ranges)[0]
    del rebuilt
    gc.collect()
    return first


def _load() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg()) + f" on {os.cpu_count()} cores"


def _rss_mb() -> float:
    """Resident memory of this process now."""
    import psutil

    return float(psutil.Process().memory_info().rss) / 2**20


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tables", type=int, default=100_000)
    parser.add_argument("--businesses", type=int, default=200)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument(
        "--changed", type=float, default=0.01, help="share of tables changed before the rebuild"
    )
    parser.add_argument("--hnsw-threshold", type=int, default=50_000, help="per business shard")
    parser.add_argument("--ivfpq-threshold", type=int, default=500_000, help="per business shard")
    parser.add_argument(
        "--paths", default="lexical,dense,glossary,usage,graph", help="recall paths to build and query"
    )
    parser.add_argument("--dask-workers", type=int, default=2, help="LocalCluster workers for the embedding")
    parser.add_argument("--dask-address", default=None, help="an existing Dask scheduler instead")
    parser.add_argument(
        "--dask-min-tables", type=int, default=2000, help="texts to embed from which Dask is used"
    )
    parser.add_argument("--threads-per-worker", type=int, default=1, help="torch threads per Dask worker")
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temporary folder")
    parser.add_argument(
        "--index-types",
        action="store_true",
        help="also compare flat, HNSW and IVF-PQ over all the table vectors as one shard",
    )
    parser.add_argument(
        "--read-tables",
        action="store_true",
        help="after the queries, read every business's tables (as serving's start-up probes do) and print the time and memory",
    )
    parser.add_argument(
        "--queries-only",
        action="store_true",
        help="only load and query the index a previous run left in --workdir",
    )
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # figures appear as they come

    from assetmatch.recall.index import IndexSet

    rng = random.Random(7)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="recall-scale-"))
    settings = _settings(
        workdir,
        {
            "hnsw_threshold": args.hnsw_threshold,
            "ivfpq_threshold": args.ivfpq_threshold,
            "paths": args.paths.split(","),
            "dask_workers": args.dask_workers,
            "dask_address": args.dask_address,
            "dask_threads_per_worker": args.threads_per_worker,
            "dask_min_tables": args.dask_min_tables,
        },
    )
    print(f"start: {_load()}")
    if not args.queries_only:
        t0 = time.perf_counter()
        _in_child(_write_lake, workdir, args.tables, args.businesses, 7)
        lake = Lake.from_settings(settings)
        print(
            f"lake: {args.tables} tables in {args.businesses} businesses written in {time.perf_counter() - t0:.1f} s "
            f"(child process); driver RSS so far {_peak_mb():.0f} MB"
        )

        t0 = time.perf_counter()
        full = IndexSet.build(lake, settings, progress=sys.stderr.isatty())
        full_s = time.perf_counter() - t0
        print(f"full build: {full_s:.1f} s wall; peak RSS of the driver {_peak_mb():.0f} MB; {_load()}")
        print(f"  parts {full.manifest['build_seconds']}")
        print(f"  counts {full.manifest['counts']}, dense index {full.manifest['dense_index']}")
        del full
        gc.collect()

        one = _timed_rebuild(
            lake, settings, full_s, f"{args.changed:.0%} of the tables", workdir, args.changed, 8
        )
        _timed_rebuild(lake, settings, full_s, "10% of one business's tables", workdir, 0.0, 9, one)

    gc.collect()
    rss_before = _rss_mb()
    t0 = time.perf_counter()
    index = IndexSet.load_latest(settings.recall.index_root)
    loaded_s = time.perf_counter() - t0
    rss_loaded = _rss_mb()
    index.warmup()
    print(
        f"load: {loaded_s:.1f} s, RSS +{rss_loaded - rss_before:.0f} MB (tables and shards are read on "
        f"first use); load + warm-up {time.perf_counter() - t0:.1f} s"
    )
    businesses = sorted(index.ranges)
    texts = [
        f"{rng.choice(MEASURES)} {rng.choice(SUBJECTS)} by {rng.choice(GRAINS)} per {rng.choice(SUBJECTS)}"
        for _ in range(args.queries)
    ]
    texts[::4] = [f"每个{rng.choice(ZH)}的{rng.choice(ZH_MEASURE)}" for _ in texts[::4]]
    for label, scope in (("one business", None), ("whole library", businesses)):
        query_paths = [p for p in index.paths if p != "graph"]
        recall_ms: list[float] = []
        expand_ms: list[float] = []
        path_ms: dict[str, list[float]] = {p: [] for p in query_paths}
        encode_ms: list[float] = []
        search_ms: list[float] = []
        for text in texts:
            chosen = scope or [rng.choice(businesses)]
            start = time.perf_counter()
            hits = index.recall(text, chosen, k=50)
            recall_ms.append((time.perf_counter() - start) * 1000)
            seeds = {h.asset_id: 1.0 / (60 + h.rank) for p in hits.values() for h in p[:10]}
            start = time.perf_counter()
            index.expand(seeds, chosen, k=20)
            expand_ms.append((time.perf_counter() - start) * 1000)
            for path in path_ms:
                start = time.perf_counter()
                index.recall(text, chosen, k=50, paths=[path])
                path_ms[path].append((time.perf_counter() - start) * 1000)
            if index.dense is not None:  # the dense path's two halves: encoding the text, searching shards
                start = time.perf_counter()
                vectors, _ = index.query_vectors(text)
                encode_ms.append((time.perf_counter() - start) * 1000)
                start = time.perf_counter()
                index.dense.search(vectors, chosen, 50)
                search_ms.append((time.perf_counter() - start) * 1000)
        print(
            f"query, {label}: recall ({'+'.join(query_paths)}) {percentiles(recall_ms)}; expand {percentiles(expand_ms)}"
        )
        for path, samples in path_ms.items():
            print(f"  {path} alone: {percentiles(samples)}")
        if encode_ms:
            print(
                f"  query encoding alone: {percentiles(encode_ms)}; dense shard search alone: {percentiles(search_ms)}"
            )
    loaded = len(index.dense.loaded) if index.dense is not None else 0
    print(f"dense shards loaded after the queries: {loaded} of {len(businesses)}")
    if args.read_tables:  # what serving's start-up probes do: one table of every business asked for
        rss = _rss_mb()
        t0 = time.perf_counter()
        for business in businesses:
            index.assets[index.asset_ids[index.ranges[business][0]]]
        print(
            f"every business's tables read: {time.perf_counter() - t0:.1f} s, RSS +{_rss_mb() - rss:.0f} MB "
            f"({len(index.asset_ids)} tables); {_load()}"
        )
    print(f"peak memory (max RSS of the driver, builds + queries): {_peak_mb():.0f} MB; {_load()}")
    if args.index_types and index.dense is not None and index.usage_vectors is not None:
        compare_index_types(index, workdir / "index-types")
    print(f"workdir: {workdir}")


def compare_index_types(index: Any, folder: Path) -> None:
    """Every table vector of the library as one shard, indexed flat, HNSW and IVF-PQ (the kinds a
    business's shard gets by its size), searched with the past requirements' vectors: each kind's
    build time, file size, recall@10 against the exact top 10, and latency (k=50)."""
    import faiss
    import numpy as np

    from assetmatch.recall.dense import VECTORS_FILE, DenseIndex, ShardInfo, write_shard

    faiss.omp_set_num_threads(1)  # OpenMP threads spin on a shared machine; one per process here
    vectors = np.vstack([np.asarray(index.dense.row(r)) for r in range(len(index.asset_ids))])
    queries = np.asarray(index.usage_vectors, dtype=np.float32)
    n = len(vectors)
    exact: list[set[int]] = []
    print(
        f"index types over all {n} table vectors as one shard, {len(queries)} past requirements as queries:"
    )
    for kind in ("flat", "hnsw", "ivfpq"):
        t0 = time.perf_counter()
        params = write_shard(folder / kind / "shards" / "all", vectors, kind)
        built_s = time.perf_counter() - t0
        dense = DenseIndex(folder / kind, {"all": ShardInfo("all", kind, n, kind, params)}, {"all": (0, n)})
        dense.search(queries[0], ["all"], 50)  # reads the FAISS file
        top, ms = [], []
        for q in queries:
            start = time.perf_counter()
            found = dense.search(q, ["all"], 50)
            ms.append((time.perf_counter() - start) * 1000)
            top.append({row for row, _ in found[:10]})
        exact = exact or top
        recall = float(np.mean([len(a & b) / 10 for a, b in zip(exact, top)]))
        files = folder / kind / "shards" / "all"
        size = sum(p.stat().st_size for p in files.iterdir() if p.name != VECTORS_FILE)
        print(
            f"  {kind}: build {built_s:.1f} s, index file {size / 2**20:.1f} MB (vectors "
            f"{(files / VECTORS_FILE).stat().st_size / 2**20:.1f} MB), recall@10 vs exact {recall:.3f}, "
            f"search {percentiles(ms)}; {params}; {_load()}"
        )


if __name__ == "__main__":
    main()
