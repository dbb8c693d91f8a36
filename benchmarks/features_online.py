"""Online feature fetch latency: 50 candidates per call through FeastFeatureProvider.online, on the
SQLite and the Redis online store (one batched get_online_features call each).

    nice .venv/bin/python benchmarks/features_online.py [--assets 20000] [--calls 300] [--redis 127.0.0.1:6379]

Prints p50/p95/p99 in ms per store. Target: p50 <= 5 ms for 50 candidates.
"""

from __future__ import annotations

import argparse
import logging
import random
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from assetmatch.config import load_settings
from feature_bench_data import synthetic_lake

REPO = Path(__file__).resolve().parents[1]


def measure(
    settings, ids: list[str], calls: int, k: int, cache_ttl_s: float = 0.0
) -> tuple[list[float], list[float]]:  # type: ignore[no-untyped-def]
    """Wall-clock and CPU (process_time) ms per call: on a shared, loaded machine the CPU time is what
    one idle core would need, the wall time includes waiting for the CPU."""
    from assetmatch.features.provider import FeastFeatureProvider

    provider = FeastFeatureProvider(settings, cache_ttl_s=cache_ttl_s)
    rng = random.Random(1)
    provider.online(rng.sample(ids, k))  # warm-up: store, registry, connections
    # cold: uniformly drawn candidates, no cache (every call reads the store);
    # cached: candidates drawn like real traffic (popular tables recur, Zipf-like), 60 s cache
    weights = [1.0 / (r + 1) for r in range(len(ids))]

    def draw() -> list[str]:
        if not cache_ttl_s:
            return rng.sample(ids, k)
        batch: dict[str, None] = {}
        while len(batch) < k:
            batch.update(dict.fromkeys(rng.choices(ids, weights=weights, k=k)))
        return list(batch)[:k]

    wall, cpu = [], []
    for _ in range(calls):
        batch = draw()
        t0, c0 = time.perf_counter(), time.process_time()
        values = provider.online(batch)
        wall.append((time.perf_counter() - t0) * 1000)
        cpu.append((time.process_time() - c0) * 1000)
        assert len(values) == k
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--assets", type=int, default=20_000)
    parser.add_argument("--queries", type=int, default=50_000)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--candidates", type=int, default=50)
    parser.add_argument("--redis", default="127.0.0.1:6379", help="Redis host:port ('' to skip Redis)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from assetmatch.features.store import materialize, open_store

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _, ids = synthetic_lake(str(root / "lake"), args.assets, args.queries, days=7)
        stores = [("sqlite", {})]
        if args.redis:
            stores.append(("redis", {"online_store": "redis", "redis_connection": args.redis}))
        print(f"{args.assets} tables materialized; {args.calls} calls x {args.candidates} candidates")
        for name, extra in stores:
            settings = load_settings(
                None,
                lake={"uri": str(root / "lake")},
                feast={
                    "data_dir": str(root / f"feast-{name}"),
                    "repo_path": str(REPO / "feature_repo"),
                    "project": f"bench_{uuid.uuid4().hex[:8]}",
                    "history_days": 7,
                    **extra,
                },
            )
            materialize(settings)
            try:
                for mode, ttl in (("cold", 0.0), ("cached", 60.0)):
                    wall, cpu = measure(settings, ids, args.calls, args.candidates, ttl)
                    for label, ms in (("wall", sorted(wall)), ("cpu", sorted(cpu))):
                        p95 = ms[min(len(ms) - 1, int(0.95 * len(ms)))]
                        print(
                            f"{name:6s} {mode:6s} online fetch, {args.candidates} candidates, {label:4s}: "
                            f"p50 {statistics.median(ms):.2f} ms  p95 {p95:.2f} ms  mean {statistics.fmean(ms):.2f} ms"
                        )
            finally:
                open_store(settings).teardown()


if __name__ == "__main__":
    main()
