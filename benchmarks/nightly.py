"""The nightly pipeline's incremental cost on the demo warehouse (three games, 120 tables).

After a first full run (every stage), measures:
1. a run with nothing changed: ingest runs, every later stage skips itself (should be seconds);
2. a run after one table's comment changed in one game's catalog: ingest writes one row, indexes
   are rebuilt (one table re-embedded) and features re-materialized, and only that game's ranker
   retrains and goes through the A/B gate.

    nice .venv/bin/python benchmarks/nightly.py [--dir DIR] [--train-steps 60] [--game card] [--games card moba]

Runs `assetmatch.pipeline.run_nightly` in this process (the library the `nightly` flow wires), on a
fresh demo folder (default: a temporary one). Prints each run's stage table and wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import yaml

for name, value in {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "GX_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ.setdefault(name, value)


def change_one_comment(catalog: Path) -> str:
    """Rewrite the first table's comment in a catalog_file JSONL export; returns the table's name."""
    lines = catalog.read_text(encoding="utf-8").splitlines()
    first = json.loads(lines[0])
    first["table_comment"] = (first.get("table_comment") or "") + " (口径已更新 / definition revised)"
    lines[0] = json.dumps(first, ensure_ascii=False)
    catalog.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(first["table"])


def timed_run(label: str, config: Path) -> float:
    from assetmatch.config import load_settings
    from assetmatch.pipeline import run_nightly

    t0 = time.perf_counter()
    result = run_nightly(load_settings(config))
    wall = time.perf_counter() - t0
    print(f"\n## {label}: {wall:.1f} s wall\n")
    print(result.markdown())
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dir", type=Path, default=None, help="Demo folder (default: a temporary one).")
    parser.add_argument("--train-steps", type=int, default=None, help="Ranker steps (default: the demo's).")
    parser.add_argument("--game", default="card", help="Game whose table comment is changed.")
    parser.add_argument(
        "--games", nargs="+", default=None, help="Generate only these games (default: all three)."
    )
    args = parser.parse_args()

    from assetmatch.demo.warehouse import build_demo

    with tempfile.TemporaryDirectory(prefix="nightly-bench-") as tmp:
        paths = build_demo(args.dir or Path(tmp) / "demo", businesses=args.games, fresh=True)
        if args.train_steps is not None:
            config = yaml.safe_load(paths.config.read_text(encoding="utf-8"))
            config["training"]["ranker"]["max_steps"] = args.train_steps
            paths.config.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
        print(f"demo: {len(paths.businesses)} games under {paths.root}")
        first = timed_run("first run (everything)", paths.config)
        unchanged = timed_run("second run, nothing changed", paths.config)
        table = change_one_comment(paths.catalogs[args.game])
        changed = timed_run(f"third run, comment of {args.game}.{table} changed", paths.config)
        print(
            f"\nfirst {first:.1f} s | nothing changed {unchanged:.1f} s | one comment changed {changed:.1f} s"
        )


if __name__ == "__main__":
    main()
