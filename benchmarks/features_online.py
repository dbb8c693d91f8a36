"""Online feature fetch latency: 50 candidates per call through FeastFeatureProvider.online, on the
SQLite and the Redis online store.

    nice .venv/bin/python benchmarks/features_online.py [--assets 20000] [--calls 300] [--redis 127.0.0.1:6379]
        [--readers online_read,get_online_features]

Readers: `online_read` (the provider's default: one batched online_read per feature view, service
resolved once) and `get_online_features` (Feast's full request path, the previous implementation).
Both run on the same candidate lists, alternating call by call, so load on a shared machine hits them
alike. Prints p50/p95/p99 of wall and CPU ms per store, mode and reader, and the p50 ratio.
Target: p50 <= 5 ms for 50 candidates.
"""

from __future__ import annotations

import argparse
import logging
import random
import statistics
import tempfile
import time
import typing
import uuid
from pathlib import Path

from assetmatch.config import load_settings
from assetmatch.features.provider import Reader
from feature_bench_data import synthetic_lake

REPO = Path(__file__).resolve().parents[1]
READERS: tuple[Reader, ...] = typing.get_args(Reader)


def measure(
    settings, ids: list[str], calls: int, k: int, readers: list[Reader], cache_ttl_s: float = 0.0
) -> dict[str, tuple[list[float], list[float]]]:  # type: ignore[no-untyped-def]
    """Wall-clock and CPU (process_time) ms per call and reader: on a shared, loaded machine the CPU
    time is what one idle core would need, the wall time includes waiting for the CPU."""
    from assetmatch.features.provider import FeastFeatureProvider

    providers = {r: FeastFeatureProvider(settings, cache_ttl_s=cache_ttl_s, reader=r) for r in readers}
    rng = random.Random(1)
    for provider in providers.values():
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

    times: dict[str, tuple[list[float], list[float]]] = {r: ([], []) for r in readers}
    for call in range(calls):
        batch = draw()
        order = readers if call % 2 == 0 else readers[::-1]
        for reader in order:
            t0, c0 = time.perf_counter(), time.process_time()
            values = providers[reader].online(batch)
            times[reader][0].append((time.perf_counter() - t0) * 1000)
            times[reader][1].append((time.process_time() - c0) * 1000)
            assert len(values) == k
    return times


def _percentile(sorted_ms: list[float], q: float) -> float:
    return sorted_ms[min(len(sorted_ms) - 1, int(q * len(sorted_ms)))]


def report(store: str, mode: str, k: int, times: dict[str, tuple[list[float], list[float]]]) -> None:
    """One line per reader and clock, then the p50 ratio of the previous path over the default."""
    p50: dict[tuple[str, str], float] = {}
    for reader, (wall, cpu) in times.items():
        for label, ms in (("wall", sorted(wall)), ("cpu", sorted(cpu))):
            p50[(reader, label)] = statistics.median(ms)
            print(
                f"{store:6s} {mode:6s} {reader:19s} {k} candidates, {label:4s}: "
                f"p50 {p50[(reader, label)]:6.2f} ms  p95 {_percentile(ms, 0.95):6.2f} ms  "
                f"p99 {_percentile(ms, 0.99):6.2f} ms  mean {statistics.fmean(ms):6.2f} ms"
            )
    if set(READERS) <= set(times):
        ratios = "  ".join(
            f"{label} {p50[('get_online_features', label)] / max(p50[('online_read', label)], 1e-9):.2f}x"
            for label in ("wall", "cpu")
        )
        print(f"{store:6s} {mode:6s} p50 get_online_features / online_read: {ratios}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--assets", type=int, default=20_000)
    parser.add_argument("--queries", type=int, default=50_000)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--candidates", type=int, default=50)
    parser.add_argument("--redis", default="127.0.0.1:6379", help="Redis host:port ('' to skip Redis)")
    parser.add_argument(
        "--readers",
        default=",".join(READERS),
        help=f"comma-separated provider readers to compare (of {', '.join(READERS)})",
    )
    args = parser.parse_args()
    readers = [r for r in READERS if r in args.readers.split(",")]
    if not readers or set(args.readers.split(",")) - set(READERS) - {""}:
        parser.error(f"--readers: choose from {', '.join(READERS)}")
    logging.basicConfig(level=logging.WARNING)

    from assetmatch.features.store import materialize, open_store

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _, ids = synthetic_lake(str(root / "lake"), args.assets, args.queries, days=7)
        stores: list[tuple[str, dict[str, str]]] = [("sqlite", {})]
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
                    times = measure(settings, ids, args.calls, args.candidates, readers, ttl)
                    report(name, mode, args.candidates, times)
            finally:
                open_store(settings).teardown()


if __name__ == "__main__":
    main()
