"""Latency of POST /v1/match: 3 businesses with LoRA adapters, ~1,000 synthetic tables each, the
fine ranker reranking the coarse top-20; p50 / p99 at concurrency 1 and 16, over loopback.

The adapters are freshly initialised (untrained, seeded) LoRA adapters: latency does not depend on
training. The response cache is off (every requirement is unique anyway). Run with `nice`:

    nice .venv/bin/python benchmarks/serve_latency.py --seconds 30
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tables", type=int, default=1000, help="synthetic tables per business")
    parser.add_argument("--seconds", type=float, default=30, help="load duration per concurrency level")
    parser.add_argument("--concurrency", default="1,16", help="comma-separated concurrency levels")
    parser.add_argument("--paths", default="lexical,dense,graph", help="recall paths")
    parser.add_argument("--batch-mode", default="mixed", choices=["mixed", "serial"])
    parser.add_argument("--max-length", type=int, default=128, help="token budget of one pair")
    parser.add_argument("--torch-threads", type=int, default=0, help="model intra-op threads (0: default)")
    parser.add_argument("--workdir", type=Path, default=None, help="reuse/keep the deployment here")
    args = parser.parse_args()

    from assetmatch.serving.auth import hash_key
    from assetmatch.serving.loadgen import ServerProcess, drive, free_port, percentiles, write_config
    from assetmatch.serving.synthetic import synthetic_deployment, synthetic_requirements

    root = args.workdir or Path(tempfile.mkdtemp(prefix="serve-latency-"))
    businesses = ("game_a", "game_b", "game_c")
    t0 = time.perf_counter()
    settings = synthetic_deployment(
        root / "deploy", businesses, tables=args.tables, paths=args.paths.split(",")
    )
    settings.ranker.max_length = args.max_length
    print(f"deployment: {len(businesses)} x {args.tables} tables, built in {time.perf_counter() - t0:.0f}s")
    config = write_config(
        settings,
        root / "assetmatch.yaml",
        {
            "api_keys": {hash_key("bench"): ["*"]},
            "cache_size": 0,
            "batch_mode": args.batch_mode,
            "reload_interval_s": 0,
            "torch_threads": args.torch_threads,
        },
    )
    server = ServerProcess(config, free_port(), root / "server.log")
    try:
        ready = server.wait_ready()
        print(f"server ready: adapters {ready['adapters_loaded']}, index {ready['index_version']}")
        requirements = synthetic_requirements(500, seed=1)
        asyncio.run(drive(server.url, "bench", businesses, requirements, 2, 5))  # warm-up
        results = {}
        for level in [int(c) for c in args.concurrency.split(",")]:
            samples = asyncio.run(drive(server.url, "bench", businesses, requirements, level, args.seconds))
            stats = percentiles(samples)
            stats["errors"] = sum(s.status != 200 for s in samples)
            stats["throughput_rps"] = stats.get("ok", 0) / args.seconds
            results[f"concurrency_{level}"] = stats
            print(f"concurrency {level:>3}: " + json.dumps({k: round(v, 1) for k, v in stats.items()}))
        metrics = server_metrics(server.url)
        print("mean rows per model batch:", metrics)
    finally:
        print("server exit code:", server.stop())
    print(
        json.dumps({"batch_mode": args.batch_mode, "tables_per_business": args.tables, **results}, indent=2)
    )


def server_metrics(url: str) -> dict[str, float]:
    import httpx

    text = httpx.get(f"{url}/metrics").text
    values = {}
    for line in text.splitlines():
        for name in (
            "assetmatch_batch_rows_sum",
            "assetmatch_batch_rows_count",
            "assetmatch_batch_requests_sum",
        ):
            if line.startswith(name + "{"):
                values[name] = float(line.rsplit(" ", 1)[1])
    count = values.get("assetmatch_batch_rows_count", 0) or 1
    return {
        "rows_per_batch": values.get("assetmatch_batch_rows_sum", 0) / count,
        "requests_per_batch": values.get("assetmatch_batch_requests_sum", 0) / count,
        "batches": values.get("assetmatch_batch_rows_count", 0),
    }


if __name__ == "__main__":
    main()
