"""The coarse answer asked with and without the requester's scope, on the Spider union with a history.

Every labelled Spider `train` question is the deployment's usage history, the coarse model and set
selection are fitted on `--fit-limit` sampled `train` requirements (`finerank_spider.py`'s production
path, no adapter), and the same seeded `test` (databases with a history) and `dev` (databases
without one) requirements are answered twice: unscoped, and each asked inside its gold database
(`databases` of the API). A `dev` request asked in scope is a database onboarded before its query
log: no candidate has a past request. Printed per split: set F1, set exact and all-gold@5, both ways.

`--on train-holdout` judges `train` alone, the split a change may be chosen on: a seeded fifth of
the `train` databases is held out of the history and the fit (the `dev` case: no past request), and
`--eval-limit` requirements of the other databases are held out of the fit, their queries out of the
history (the `test` case: a database with a history, a request it has not seen).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/coarse_scoped.py --fit-limit 1000 --eval-limit 300
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/coarse_scoped.py --on train-holdout
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import random
import tempfile
import time
from pathlib import Path

from assetmatch.evaluation.harness import fit_matching, gold_databases
from assetmatch.matching.matcher import Matcher
from assetmatch.models import Requirement, TableAsset
from assetmatch.ranking.candidates import CoarseCandidates
from assetmatch.text import same_query_key
from assetmatch.training import evaluate as ev
from finerank_spider import DEFAULT_DATA, build_index, evaluate, intervals, labelled, sample, union_library


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--fit-limit", type=int, default=1000, help="train requirements fitted on")
    parser.add_argument("--eval-limit", type=int, default=300, help="requirements judged per split")
    parser.add_argument(
        "--on",
        choices=["test-dev", "train-holdout"],
        default="test-dev",
        help="judge Spider's test and dev, or held-out parts of train (the one to choose a change on)",
    )
    parser.add_argument(
        "--ab",
        metavar="SETTING",
        help="a boolean `matching` setting (e.g. cold_history_in_scope): fit with it off, then on, on the "
        "same index, and print the paired set F1 difference (on - off) with its 95 %% interval",
    )
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()}", flush=True)
    started = time.perf_counter()
    assets, reqs = union_library(args.data)
    if args.on == "train-holdout":
        reqs = train_holdout([r for r in reqs if r.split == "train"], assets, args.eval_limit)
    train = sample([r for r in reqs if r.split == "train"], args.fit_limit, 0)
    history = [r for r in reqs if r.split == "train"]
    index, base = build_index(assets, Path(tempfile.mkdtemp(prefix="coarse-scoped-")), history)
    arms = [None] if args.ab is None else [False, True]
    if args.ab is not None and not isinstance(getattr(base.matching, args.ab, None), bool):
        parser.error(f"--ab {args.ab}: not a boolean setting of `matching`")
    judged = {
        split: sample([labelled(r) for r in reqs if r.split == split], args.eval_limit, 1)
        for split in ("test", "dev")
    }
    reports: dict[tuple[bool | None, str, str], ev.EvalReport] = {}
    for arm in arms:
        settings = base
        if arm is not None:
            settings = base.model_copy(update={"matching": base.matching.model_copy(update={args.ab: arm})})
        t0 = time.perf_counter()
        fit = fit_matching(index, settings, train, 0)
        candidates = CoarseCandidates(
            Matcher(index, settings, coarse=fit.coarse, selector=fit.selector()), fit.oof
        )
        copies = {k: v for k, v in fit.report.items() if k.startswith("n_cold")}
        print(
            f"{args.ab or 'defaults'}={arm}: fitted in {time.perf_counter() - t0:.0f} s, "
            f"{fit.report.get('cv_chosen')}, {copies}, selection {fit.selection.model_dump()}",
            flush=True,
        )
        for split, requirements in judged.items():
            scoped = [
                dataclasses.replace(r, databases=tuple(gold_databases(r.gold, candidates.assets)))
                for r in requirements
            ]
            for scope, asked in (("unscoped", requirements), ("in its gold database", scoped)):
                name = f"{split}/{scope}"
                reports[(arm, split, scope)] = evaluate(name, asked, candidates, None, "", None, 10)[
                    "coarse_only"
                ]
    print(
        "\n| split | asked | arm | set F1 / exact / all-gold@5 | set F1 − off [95 % CI] |\n|---|---|---|---|---|"
    )
    for split in judged:
        for scope in ("unscoped", "in its gold database"):
            for arm in arms:
                rep = reports[(arm, split, scope)]
                m = rep.means()
                diff = intervals(rep, reports[(False, split, scope)])[1] if arm else ""
                label = "defaults" if arm is None else f"{args.ab}={arm}"
                print(
                    f"| {split} ({len(judged[split])}) | {scope} | {label} "
                    f"| {m['set_f1']:.3f} / {m['set_exact']:.3f} / {m['all_gold_at_5']:.3f} | {diff} |",
                    flush=True,
                )
    print(f"{time.perf_counter() - started:.0f} s; load average at the end {os.getloadavg()}")


def train_holdout(
    train: list[Requirement], assets: list[TableAsset], n_seen: int, share: float = 0.2
) -> list[Requirement]:
    """`train` re-split as `test` and `dev` are: "dev", every requirement of a seeded `share` of the
    databases; "test", `n_seen` requirements of the others, with every requirement that shares one
    of their queries (`same_query_key`: its paraphrases) left out of "train" too."""
    by_id = {a.asset_id: a for a in assets}
    database = {r.id: gold_databases(r.gold_assets, by_id)[0] for r in train}  # Spider: one per question
    databases = sorted(set(database.values()))
    held = set(random.Random(7).sample(databases, round(len(databases) * share)))
    seen = sample([r for r in train if database[r.id] not in held], n_seen, 2)
    seen_keys = {same_query_key(r.sql, r.gold_assets) for r in seen} - {""}
    seen_ids = {r.id for r in seen}
    out = []
    for r in train:
        if database[r.id] in held:
            split = "dev"
        elif r.id in seen_ids:
            split = "test"
        elif same_query_key(r.sql, r.gold_assets) in seen_keys:
            continue
        else:
            split = "train"
        out.append(r.model_copy(update={"split": split}))
    return out


if __name__ == "__main__":
    main()
