"""Coarse ranking on the Spider union with a usage history, fitted with and without cold-history copies.

Every labelled Spider `train` question is written to the lake as a deployment's usage history, the
indexes are built once, and the coarse model + set selection are fitted on 1,000 sampled `train`
requirements once per `--shares` value of `matching.cold_history_share` (0: fitted on the lists as
recalled; 0.5: the default, half of the requirements the history voted for fitted again as a new
database's request, its database's past requests left out of the vote). Each fit then answers the
same seeded `test` (known databases, new questions) and `dev` (databases without a history)
questions as the Matcher does, coarse only. Printed per fit and split: all-gold@5, set F1, and how
many questions' top table belongs to another database — and of those, how many have the very name
of a gold table (a namesake in a database that has a history).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/coarse_history.py --shares 0,0.5
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from assetmatch.evaluation.metrics import ranking_metrics, set_metrics
from assetmatch.matching.fit import fit_matching
from assetmatch.matching.matcher import Matcher
from assetmatch.models import Requirement
from finerank_spider import DEFAULT_DATA, build_index, sample, union_library


def database(asset_id: str) -> str:
    return asset_id.split(".", 1)[0]


def judge(matcher: Matcher, questions: list[Requirement]) -> dict[str, float]:
    """Coarse-only metrics of `questions`, and how many top tables belong to another database (and
    of those, how many carry the name of a gold table)."""
    rankings, selections, golds = [], [], []
    foreign = namesake = 0
    for r in questions:
        result = matcher.match(r.business, r.text, k=10)
        ranked = [t.asset_id for t in result.ranked]
        rankings.append(ranked)
        selections.append(result.selected)
        golds.append(r.gold_assets)
        if ranked and database(ranked[0]) != database(r.gold_assets[0]):
            foreign += 1
            namesake += ranked[0].split(".", 1)[1] in {g.split(".", 1)[1] for g in r.gold_assets}
    return {
        **ranking_metrics(rankings, golds, ks=(5,)),
        **set_metrics(selections, golds),
        "foreign_top": foreign,
        "namesake_top": namesake,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument(
        "--shares", default="0,0.5", help="comma-separated matching.cold_history_share values"
    )
    parser.add_argument("--fit-limit", type=int, default=1000)
    parser.add_argument("--eval-limit", type=int, default=300)
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()}", flush=True)
    started = time.perf_counter()
    assets, reqs = union_library(args.data)
    history = [r for r in reqs if r.split == "train"]
    train = sample(history, args.fit_limit, 0)
    index, base = build_index(assets, Path(tempfile.mkdtemp(prefix="coarse-history-")), history)
    splits = {s: sample([r for r in reqs if r.split == s], args.eval_limit, 1) for s in ("test", "dev")}
    print(
        "| cold_history_share | copies | split | all-gold@5 | set F1 | top table another database's "
        "| … of which a namesake of a gold table |\n|---|---|---|---|---|---|---|",
        flush=True,
    )
    for share in (float(s) for s in args.shares.split(",")):
        matching = base.matching.model_copy(update={"cold_history_share": share})
        settings = base.model_copy(update={"matching": matching})
        fit = fit_matching(index, settings, train, seed=0)
        matcher = Matcher(index, settings, coarse=fit.coarse, selector=fit.selector())
        for split, questions in splits.items():
            m = judge(matcher, questions)
            print(
                f"| {share} | {fit.report['n_cold_history']} | {split} (n={len(questions)}) "
                f"| {m['all_gold_at_5']:.3f} | {m['set_f1']:.3f} | {m['foreign_top']:.0f} | {m['namesake_top']:.0f} |",
                flush=True,
            )
    print(f"\ntotal {time.perf_counter() - started:.0f} s, load average at the end {os.getloadavg()}")


if __name__ == "__main__":  # the index build's local Dask cluster starts worker processes
    main()
