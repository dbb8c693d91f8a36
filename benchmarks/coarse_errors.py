"""Where the coarse answer's set F1 and all-gold@3 are lost on Spider: error kinds by gold-set size.

The production coarse path of `finerank_spider.py` (`--setting union`: indexes over the 876
tables; `split`: the 4 businesses of 35 databases each; coarse model and selection fitted on
sampled `train` requirements, usage history as there), then each evaluated requirement's selected
set against its gold set:

- exact / superset (extra tables) / subset (missing tables) / mixed / disjoint (no gold table);
- missing gold tables inside vs outside the coarse top 10 (what a fine ranker could still reach);
- for one-table questions answered with a wrong table: same database, another database's table of
  the same name, or another database's other table; and whether the question's words match the
  gold table's name and column names more, less or as much as the chosen table's (a tie means
  the metadata alone cannot tell the two apart: the question is ambiguous across databases);
- requirements whose gold tables are not all in the coarse top 3, by whether the top table is from
  a gold table's database or another one;
- the calibrated rules' sets beside the answer's (the learned set model's, when the fit kept one:
  `matching.set_model`), on the same lists: set F1, exact, requirements each gets exactly right that
  the other does not, and the time one selection takes.

    HF_HUB_OFFLINE=1 nice .venv/bin/python benchmarks/coarse_errors.py --history train
    HF_HUB_OFFLINE=1 nice .venv/bin/python benchmarks/coarse_errors.py --setting split --history none
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import statistics
import tempfile
import time
from pathlib import Path

from assetmatch.matching.fine import scored_tables
from assetmatch.matching.selection import SetSelector, set_scores
from assetmatch.models import Requirement, TableAsset
from assetmatch.ranking.candidates import CoarseCandidates
from finerank_spider import (
    DEFAULT_DATA,
    build_production_path,
    sample,
    split_library,
    union_library,
)


def words(text: str) -> set[str]:
    return {w.lower() for w in re.findall(r"[A-Za-z]+", text)}


def metadata_words(asset: TableAsset) -> set[str]:
    """The words of a table's name and its columns' names."""
    found = words(asset.name)
    for column in asset.columns:
        found |= words(column.name)
    return found


def kind(gold: set[str], selected: set[str]) -> str:
    if gold == selected:
        return "exact"
    if not gold & selected:
        return "disjoint"
    if selected > gold:
        return "superset"
    return "subset" if selected < gold else "mixed"


def database(asset_id: str) -> str:
    return asset_id.rsplit(".", 1)[0]


def table(asset_id: str) -> str:
    return asset_id.rsplit(".", 1)[1]


def compare_selection(
    candidates: CoarseCandidates, evaluated: list[Requirement], selector: SetSelector, rules: SetSelector
) -> str:
    """The answer's selector against the calibrated rules alone, on the same coarse lists."""
    scores: dict[str, list[tuple[float, float]]] = {"answer": [], "rules": []}
    seconds: dict[str, list[float]] = {"answer": [], "rules": []}
    for r in evaluated:
        answer = candidates.coarse(r.business, r.text, 10)
        ranked = scored_tables(answer.ids, answer.scores, candidates.group_of, answer.terms)
        for name, sel in (("answer", selector), ("rules", rules)):
            t0 = time.perf_counter()
            chosen = sel.select(ranked, candidates.neighbors).asset_ids
            seconds[name].append(time.perf_counter() - t0)
            got = set_scores(chosen, r.gold_assets)
            scores[name].append((got.f1, got.exact))
    n = max(len(evaluated), 1)
    gained = sum(a[1] > b[1] for a, b in zip(scores["answer"], scores["rules"]))
    lost = sum(a[1] < b[1] for a, b in zip(scores["answer"], scores["rules"]))
    return (
        "\n".join(
            f"- selection, {name}: set F1 {sum(f for f, _ in got) / n:.3f}, exact {sum(e for _, e in got) / n:.3f}, "
            f"p50 {statistics.median(seconds[name]) * 1e6:.0f} us"
            for name, got in scores.items()
        )
        + f"\n- exactly right by the answer's selector only: {gained}; by the rules only: {lost}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--setting", choices=["union", "split"], default="union")
    parser.add_argument(
        "--fit-limit", type=int, default=0, help="train requirements fitted on (0: union 1,000, split 1,200)"
    )
    parser.add_argument(
        "--eval-limit",
        type=int,
        default=0,
        help="requirements per split (union; 0: 300) or business (split; 0: 100)",
    )
    parser.add_argument("--history", choices=["train", "none"], default="train")
    parser.add_argument("--splits", default="test,dev", help="the splits judged (union; split judges test)")
    args = parser.parse_args()

    started = time.perf_counter()
    print(f"load average at start: {os.getloadavg()}", flush=True)
    union = args.setting == "union"
    if union:
        assets, reqs = union_library(args.data)
        businesses: list[str] = []
    else:
        assets, reqs, businesses = split_library(args.data)
    train = sample([r for r in reqs if r.split == "train"], args.fit_limit or (1000 if union else 1200), 0)
    history = [r for r in reqs if r.split == "train"] if args.history == "train" else []
    candidates, info = build_production_path(assets, train, Path(tempfile.mkdtemp()), 0, history)
    print(f"coarse path built {info}", flush=True)

    limit = args.eval_limit or (300 if union else 100)
    if union:
        judged = {
            split: sample([r for r in reqs if r.split == split], limit, 1) for split in args.splits.split(",")
        }
    else:  # as finerank_spider.py --setting split samples each business's test requirements
        judged = {
            "test": [
                r
                for b in businesses
                for r in sample([r for r in reqs if r.business == b and r.split == "test"], limit, 1)
            ]
        }
    selector = candidates.matcher.selector
    rules = SetSelector(selector.params)
    print(f"set selection: {type(selector).__name__} ({info.get('set_model')})", flush=True)
    for split, evaluated in judged.items():
        compared = compare_selection(candidates, evaluated, selector, rules)
        by_kind: collections.Counter[tuple[int, str]] = collections.Counter()
        counts: collections.Counter[str] = collections.Counter()
        f1_lost: collections.defaultdict[str, float] = collections.defaultdict(float)
        for r in evaluated:
            answer = candidates.coarse(r.business, r.text, 10)
            gold, selected = set(r.gold_assets), set(answer.selected)
            hit = len(gold & selected)
            f1 = 2 * hit / (len(gold) + len(selected)) if selected else 0.0
            what = kind(gold, selected)
            if gold <= set(answer.ids[:3]):
                counts["all gold in the top 3"] += 1
            else:
                top = answer.ids[0] if answer.ids else ""
                where = "a gold table's" if database(top) in {database(a) for a in gold} else "another"
                counts[f"not all gold in the top 3, top table from {where} database"] += 1
            by_kind[(len(gold), what)] += 1
            f1_lost[what] += 1 - f1
            counts["extra tables"] += len(selected - gold)
            counts["missing, in the top 10"] += sum(1 for a in gold - selected if a in answer.ids)
            counts["missing, not in the top 10"] += sum(1 for a in gold - selected if a not in answer.ids)
            if len(gold) == 1 and what == "disjoint" and answer.selected:
                want, got = r.gold_assets[0], answer.selected[0]
                where = (
                    "same database"
                    if database(want) == database(got)
                    else "another database, same table name"
                    if table(want).lower() == table(got).lower()
                    else "another database, other table"
                )
                counts[f"one-table, wrong table: {where}"] += 1
                q = words(r.text)
                ours, theirs = (
                    len(q & metadata_words(candidates.assets[want])),
                    len(q & metadata_words(candidates.assets[got])),
                )
                side = "gold" if ours > theirs else "chosen" if theirs > ours else "neither (tie)"
                counts[f"one-table, wrong table: question's words favour {side}"] += 1
        n = len(evaluated)
        print(f"\n{split} (n={n}): set F1 {1 - sum(f1_lost.values()) / n:.3f}")
        print("| gold tables | exact | superset | subset | mixed | disjoint |")
        print("|---|---|---|---|---|---|")
        for size in sorted({s for s, _ in by_kind}):
            cells = [str(by_kind[(size, k)]) for k in ("exact", "superset", "subset", "mixed", "disjoint")]
            print(f"| {size} | " + " | ".join(cells) + " |")
        print(
            "set F1 lost, by kind: "
            + ", ".join(f"{k} {v / n:.3f}" for k, v in sorted(f1_lost.items(), key=lambda kv: -kv[1]))
        )
        for name, value in sorted(counts.items()):
            print(f"- {name}: {value}")
        print(compared)
    print(f"\ntotal {time.perf_counter() - started:.0f} s, load average at the end {os.getloadavg()}")


if __name__ == "__main__":
    main()
