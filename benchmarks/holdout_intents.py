"""How new the gate's held-out requirements are: per business of a deployment, how many of the
validation requirements (`training.pairs.split_holdout`, what calibration and the A/B gate judge)
share their *intent* with a requirement training learned from, against the `test` split's.

An intent is the query with its literals stripped, over the same tables (sqlglot: every literal
becomes a placeholder): "DAU of the last 7 days" and "DAU of the last 30 days" are one intent asked
twice. Validation is held out by query (`text.same_query_key`), so a paraphrase that asks for
another date window is another query, and may sit on the other side of the split from its twin.
Requirements without SQL (feedback rows) count as their own intent.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/holdout_intents.py --config D/assetmatch.yaml
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def intent(sql: str | None, tables: tuple[str, ...]) -> str:
    """The query with every literal replaced by a placeholder, over the same tables ("" without SQL)."""
    import sqlglot
    from sqlglot import exp
    from sqlglot.errors import SqlglotError

    if not sql:
        return ""
    try:
        tree = sqlglot.parse_one(sql)
    except SqlglotError:
        return f"{sorted(tables)}:{sql}"
    stripped = tree.transform(lambda node: exp.Placeholder() if isinstance(node, exp.Literal) else node)
    return f"{sorted(tables)}:{stripped.sql()}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", type=Path, required=True, help="the deployment's assetmatch.yaml")
    parser.add_argument(
        "--fraction", type=float, default=None, help="held-out share (default: training.ranker's)"
    )
    args = parser.parse_args()

    from assetmatch.config import load_settings
    from assetmatch.lake.delta import Lake
    from assetmatch.training.pairs import labelled_from_lake, split_holdout
    from assetmatch.training.train import ranker_config

    settings = load_settings(args.config)
    lake = Lake.from_settings(settings)
    fraction = args.fraction if args.fraction is not None else ranker_config(settings).validation_fraction
    print(f"held-out share {fraction}")
    print(
        f"{'business':<10} {'train':>5} {'intents':>7} {'validation':>10} {'of known intent':>15} "
        f"{'test':>5} {'of known intent':>15}"
    )
    for business in settings.business_names():
        own = {a.asset_id for a in lake.read_assets(businesses=[business])}
        sql_of = {r.id: r.sql for r in lake.read_requirements(business=business, split="train")}
        sql_of |= {f"q:{e.query_id}": e.sql for e in lake.read_query_log(business=business)}
        train, validation = split_holdout(labelled_from_lake(lake, business, own), fraction)
        known = {intent(sql_of.get(r.id), r.gold) for r in train} - {""}
        shared = sum(1 for r in validation if intent(sql_of.get(r.id), r.gold) in known)
        test = lake.read_requirements(business=business, split="test")
        test_shared = sum(1 for r in test if intent(r.sql, tuple(r.gold_assets)) in known)
        print(
            f"{business:<10} {len(train):>5} {len(known):>7} {len(validation):>10} {shared:>15} "
            f"{len(test):>5} {test_shared:>15}"
        )


if __name__ == "__main__":
    main()
