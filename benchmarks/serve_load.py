"""Bounded load at concurrency 16 with a hot reload in the middle.

Half-way through, a new champion version is registered for one business; the server's watcher
(interval 2 s) loads it beside the old one and swaps. Reported: errors, requests sent vs answered
(none may be dropped), p50/p99 before, during (registration until the first answer from the new
version, plus 2 s) and after the swap, and when the new version first answered. Adapters are
freshly initialised (untrained, seeded) LoRA adapters: latency does not depend on training.

    nice .venv/bin/python benchmarks/serve_load.py --seconds 300
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import threading
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=300, help="total load duration")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--tables", type=int, default=1000, help="synthetic tables per business")
    parser.add_argument("--paths", default="lexical,dense,graph", help="recall paths")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--torch-threads", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()

    from assetmatch.registry.mlflow import Registry
    from assetmatch.serving.auth import hash_key
    from assetmatch.serving.loadgen import ServerProcess, drive, free_port, percentiles, write_config
    from assetmatch.serving.synthetic import (
        register_adapter,
        synthetic_deployment,
        synthetic_requirements,
        untrained_adapter,
    )

    root = args.workdir or Path(tempfile.mkdtemp(prefix="serve-load-"))
    businesses = ("game_a", "game_b", "game_c")
    settings = synthetic_deployment(
        root / "deploy", businesses, tables=args.tables, paths=args.paths.split(",")
    )
    settings.ranker.max_length = args.max_length
    # the new version is prepared up front; registering it is the only thing done mid-run
    new_adapter = untrained_adapter(root / "adapters" / "game_a-v2", seed=777)
    config = write_config(
        settings,
        root / "assetmatch.yaml",
        {
            "api_keys": {hash_key("bench"): ["*"]},
            "cache_size": 0,
            "reload_interval_s": 2,
            "torch_threads": args.torch_threads,
        },
    )
    server = ServerProcess(config, free_port(), root / "server.log")
    swap_at: dict[str, float] = {}

    def register_new_champion() -> None:
        registry = Registry.from_settings(settings)
        swap_at["version"] = float(register_adapter(registry, "game_a", new_adapter, alias="champion"))

    def on_tick(elapsed: float) -> None:
        # the first answer starts a timer, so the registration happens half-way even when answers are slow
        if "timer" not in swap_at:
            swap_at["timer"] = elapsed
            delay = max(0.0, args.seconds / 2 - elapsed)
            swap_at["registered"] = elapsed + delay
            threading.Timer(delay, register_new_champion).start()

    try:
        server.wait_ready()
        requirements = synthetic_requirements(500, seed=2)
        asyncio.run(drive(server.url, "bench", businesses, requirements, 2, 5))  # warm-up
        samples = asyncio.run(
            drive(
                server.url, "bench", businesses, requirements, args.concurrency, args.seconds, on_tick=on_tick
            )
        )
    finally:
        exit_code = server.stop()
    new_version = str(int(swap_at.get("version", -1)))
    first_new = min(
        (s.start for s in samples if s.business == "game_a" and s.model_version == new_version), default=None
    )
    registered = swap_at.get("registered", args.seconds / 2)
    swap_end = (first_new if first_new is not None else registered) + 2.0
    windows = {
        "before": [s for s in samples if s.start < registered],
        "during": [s for s in samples if registered <= s.start < swap_end],
        "after": [s for s in samples if s.start >= swap_end],
    }
    report = {
        "concurrency": args.concurrency,
        "seconds": args.seconds,
        "requests": len(samples),
        "answered_200": sum(s.status == 200 for s in samples),
        "errors": sum(s.status != 200 for s in samples),
        "new_version": new_version,
        "registered_at_s": round(registered, 1),
        "new_version_first_answer_at_s": round(first_new, 1) if first_new is not None else None,
        "windows": {k: {m: round(v, 1) for m, v in percentiles(w).items()} for k, w in windows.items()},
        "server_exit_code": exit_code,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
