"""The coarse answer asked with and without the requester's scope, on the Spider union with a history.

Every labelled Spider `train` question is the deployment's usage history, the coarse model and set
selection are fitted on `--fit-limit` sampled `train` requirements (`finerank_spider.py`'s production
path, no adapter), and the same seeded `test` (databases with a history) and `dev` (databases
without one) requirements are answered twice: unscoped, and each asked inside its gold database
(`databases` of the API). A `dev` request asked in scope is a database onboarded before its query
log: no candidate has a past request. Printed per split: set F1, set exact and all-gold@5, both ways.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/coarse_scoped.py --fit-limit 1000 --eval-limit 300
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time
from pathlib import Path

from assetmatch.evaluation.harness import gold_databases
from finerank_spider import DEFAULT_DATA, build_production_path, evaluate, labelled, sample, union_library


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--fit-limit", type=int, default=1000, help="train requirements fitted on")
    parser.add_argument("--eval-limit", type=int, default=300, help="requirements judged per split")
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()}", flush=True)
    started = time.perf_counter()
    assets, reqs = union_library(args.data)
    train = sample([r for r in reqs if r.split == "train"], args.fit_limit, 0)
    history = [r for r in reqs if r.split == "train"]
    candidates, info = build_production_path(assets, train, Path(tempfile.mkdtemp()), 0, history)
    print(f"coarse path built {info}", flush=True)
    print("| split | set F1 / exact / all-gold@5, unscoped | inside its gold database |\n|---|---|---|")
    for split in ("test", "dev"):
        judged = sample([labelled(r) for r in reqs if r.split == split], args.eval_limit, 1)
        scoped = [
            dataclasses.replace(r, databases=tuple(gold_databases(r.gold, candidates.assets))) for r in judged
        ]
        cells = []
        for requirements in (judged, scoped):
            m = evaluate(split, requirements, candidates, None, "library", None, 10)["coarse_only"].means()
            cells.append(f"{m['set_f1']:.3f} / {m['set_exact']:.3f} / {m['all_gold_at_5']:.3f}")
        print(f"| {split} ({len(judged)}) | {cells[0]} | {cells[1]} |", flush=True)
    print(f"{time.perf_counter() - started:.0f} s; load average at the end {os.getloadavg()}")


if __name__ == "__main__":
    main()
