"""Per-business LoRA fine rankers on Spider: coarse-only vs fine, per-business vs pooled, union, A/B gate.

Setup (deterministic): Spider's 140 databases that have train questions, sorted by db_id, cut
into 4 contiguous buckets = 4 businesses; a business's library is its databases' tables. Train
on split `train` (a stable 15% of it held out for calibration), evaluate on split `test` (a
seeded sample per business when --eval-per-business is set). Candidates come from a per-business
BM25 (`assetmatch.ranking.candidates.Bm25Candidates`), the fine ranker reranks the top
--candidate-k. Nothing is tuned on `test`.

    HF_HUB_OFFLINE=1 nice .venv/bin/python benchmarks/lora_spider.py --json out.json

Training is bounded (--max-steps, --max-length, --batch-size): this runs on shared CPUs.
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import json
import random
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from assetmatch.models import Column, TableAsset
from assetmatch.ranking.candidates import Bm25Candidates
from assetmatch.ranking.config import RankerConfig
from assetmatch.ranking.finerank import LoraFineRanker
from assetmatch.ranking.model import adapter_size_bytes
from assetmatch.registry.promotion import ArmResult, GateConfig, decide, decision_markdown
from assetmatch.training import augment
from assetmatch.training import evaluate as ev
from assetmatch.training.pairs import Candidates, LabelledRequirement, TrainingData, split_holdout
from assetmatch.training.train import train_business

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "benchmarks" / "spider"


def load_spider(data: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    with gzip.open(data / "assets.jsonl.gz", "rt", encoding="utf-8") as f:
        assets = [json.loads(line) for line in f]
    with gzip.open(data / "requirements.jsonl.gz", "rt", encoding="utf-8") as f:
        reqs = [json.loads(line) for line in f]
    return assets, reqs


def to_asset(row: dict[str, Any], business: str) -> TableAsset:
    return TableAsset(
        asset_id=row["asset_id"],
        business=business,
        database=row["database"],
        name=row["table"],
        comment=row["table_comment"],
        columns=[
            Column(name=c["name"], type=c["type"], comment=c["comment"], primary_key=c["primary_key"])
            for c in row["columns"]
        ],
    )


def sample(items: Sequence[LabelledRequirement], n: int, seed: int) -> list[LabelledRequirement]:
    items = sorted(items, key=lambda r: r.id)
    return (
        items
        if not n or len(items) <= n
        else sorted(random.Random(seed).sample(items, n), key=lambda r: r.id)
    )


def scorer_for(ranker: LoraFineRanker, adapter: str, assets: dict[str, TableAsset]) -> ev.Scorer:
    return lambda business, text, ids: ranker.score(adapter, text, [assets[i] for i in ids])


def evaluate_pair(
    name: str,
    test: list[LabelledRequirement],
    validation: list[LabelledRequirement],
    candidates: Candidates,
    k: int,
    scorer: ev.Scorer | None,
    threshold: float | None,
) -> ev.EvalReport:
    """Coarse-only (scorer None: top-n calibrated on validation) or fine (threshold from training)."""
    ranked = ev.rank_requirements(test, candidates, k, scorer)
    if scorer is None:
        top_n = ev.calibrate_top_n(ev.rank_requirements(validation, candidates, k, None))
        return ev.report(name, ranked, top_n=top_n)
    return ev.report(name, ranked, threshold=threshold)


def row(business: str, rep: ev.EvalReport) -> str:
    m = rep.means()
    return (
        f"| {business} | {rep.name} | {m['all_gold_at_3']:.3f} | {m['all_gold_at_5']:.3f} | {m['set_exact']:.3f} | "
        f"{m['set_f1']:.3f} | {m['mrr']:.3f} | {m['latency_ms_mean']:.0f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--max-steps", type=int, default=60, help="optimizer steps per business adapter")
    parser.add_argument(
        "--pooled-steps", type=int, default=0, help="steps of the pooled adapter (0: 4 x --max-steps)"
    )
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--candidate-k", type=int, default=8, help="BM25 candidates reranked (and mined).")
    parser.add_argument(
        "--eval-per-business", type=int, default=60, help="test requirements per business (0: all)"
    )
    parser.add_argument(
        "--union-eval", type=int, default=120, help="test requirements in the union setting (0: all)"
    )
    parser.add_argument("--max-validation", type=int, default=40)
    parser.add_argument("--skip-pooled", action="store_true")
    parser.add_argument("--skip-union", action="store_true")
    parser.add_argument("--skip-gate", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    t_start = time.perf_counter()

    raw_assets, raw_reqs = load_spider(args.data)
    train_dbs = sorted({r["business"] for r in raw_reqs if r["split"] == "train"})
    buckets = [train_dbs[i * len(train_dbs) // 4 : (i + 1) * len(train_dbs) // 4] for i in range(4)]
    business_of = {db: f"biz{i + 1}" for i, bucket in enumerate(buckets) for db in bucket}
    assets = [to_asset(a, business_of[a["database"]]) for a in raw_assets if a["database"] in business_of]
    by_id = {a.asset_id: a for a in assets}
    reqs: dict[tuple[str, str], list[LabelledRequirement]] = {}
    for r in raw_reqs:
        if r["business"] in business_of and r["gold_assets"]:
            b = business_of[r["business"]]
            reqs.setdefault((b, r["split"]), []).append(
                LabelledRequirement(r["id"], b, r["text"], tuple(r["gold_assets"]))
            )
    businesses = [f"biz{i + 1}" for i in range(4)]
    candidates = Bm25Candidates(assets)
    config = RankerConfig(
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        max_length=args.max_length,
        learning_rate=args.learning_rate,
        candidate_k=args.candidate_k,
        hard_negatives=3,
        random_negatives=1,
        synthetic_per_table=1,
        max_validation=args.max_validation,
        device="cpu",
    )
    print(f"businesses: {[len(b) for b in buckets]} databases; RankerConfig: {json.dumps(config.to_dict())}")
    root = Path(tempfile.mkdtemp(prefix="lora-spider-"))
    results: dict[str, Any] = {"config": config.to_dict(), "args": {k: str(v) for k, v in vars(args).items()}}
    data: dict[str, TrainingData] = {}
    tests: dict[str, list[LabelledRequirement]] = {}
    folders: dict[str, tuple[Path, str]] = {}
    thresholds: dict[str, float] = {}

    # per-business adapters
    for b in businesses:
        train, validation = split_holdout(reqs[(b, "train")], config.validation_fraction)
        own = [a for a in assets if a.business == b]
        data[b] = TrainingData(
            b, train, validation, augment.synthesize(own, [], config.synthetic_per_table, config.seed)
        )
        tests[b] = sample(reqs[(b, "test")], args.eval_per_business, 1)
        started = time.perf_counter()
        res = train_business(b, data[b], assets, candidates, config, root / b)
        seconds = time.perf_counter() - started
        folders[b], thresholds[b] = (res.adapter_dir, b), res.threshold
        results.setdefault("train", {})[b] = {
            "train_requirements": len(train),
            "pairs": res.fit.pairs,
            "steps": res.fit.steps,
            "fit_seconds": round(res.fit.seconds, 1),
            "total_seconds": round(seconds, 1),
            "adapter_bytes": adapter_size_bytes(res.adapter_dir),
            "threshold": res.threshold,
            "validation": {k: r.means() for k, r in res.reports.items()},
        }
        print(f"trained {b}: {results['train'][b]}", flush=True)

    pooled_threshold = None
    if not args.skip_pooled:
        pooled_assets = [a.model_copy(update={"business": "pooled"}) for a in assets]
        pooled = TrainingData(
            "pooled",
            [r for b in businesses for r in data[b].train],
            [r for b in businesses for r in data[b].validation],
        )
        started = time.perf_counter()
        pooled_config = dataclasses.replace(config, max_steps=args.pooled_steps or 4 * config.max_steps)
        res = train_business("pooled", pooled, pooled_assets, candidates, pooled_config, root / "pooled")
        folders["pooled"], pooled_threshold = (res.adapter_dir, "pooled"), res.threshold
        results.setdefault("train", {})["pooled"] = {
            "steps": res.fit.steps,
            "fit_seconds": round(res.fit.seconds, 1),
            "total_seconds": round(time.perf_counter() - started, 1),
            "threshold": res.threshold,
        }
        print(f"trained pooled: {results['train']['pooled']}", flush=True)

    # one base, every adapter loaded side by side
    ranker = LoraFineRanker.from_folders(folders, config.base, "cpu", config.max_length)
    table = [
        "| business | method | all-gold@3 | all-gold@5 | exact | F1 | MRR | fine ms/req |",
        "|---|---|---|---|---|---|---|---|",
    ]
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for b in businesses:
        reports = [
            evaluate_pair(
                "coarse_only", tests[b], data[b].validation, candidates, args.candidate_k, None, None
            ),
            evaluate_pair(
                "lora_business",
                tests[b],
                [],
                candidates,
                args.candidate_k,
                scorer_for(ranker, b, by_id),
                thresholds[b],
            ),
        ]
        if "pooled" in folders:
            reports.append(
                evaluate_pair(
                    "lora_pooled",
                    tests[b],
                    [],
                    candidates,
                    args.candidate_k,
                    scorer_for(ranker, "pooled", by_id),
                    pooled_threshold,
                )
            )
        for rep in reports:
            table.append(row(b, rep))
            summary.setdefault(rep.name, {})[b] = rep.means()
        print(table[-len(reports) :], flush=True)
    for name, per in summary.items():
        mean = {
            m: sum(v[m] for v in per.values()) / len(per)
            for m in ("all_gold_at_3", "all_gold_at_5", "set_exact", "set_f1", "mrr", "latency_ms_mean")
        }
        table.append(
            f"| mean of 4 | {name} | {mean['all_gold_at_3']:.3f} | {mean['all_gold_at_5']:.3f} | {mean['set_exact']:.3f} | "
            f"{mean['set_f1']:.3f} | {mean['mrr']:.3f} | {mean['latency_ms_mean']:.0f} |"
        )
    results["within_business"] = summary

    if not args.skip_union and "pooled" in folders:
        union_assets = [to_asset(a, "union") for a in raw_assets]  # all 876 tables, dev databases included
        union_by_id = {a.asset_id: a for a in union_assets}
        union_candidates = Bm25Candidates(union_assets)
        union_test = sample(
            [
                LabelledRequirement(r.id, "union", r.text, r.gold)
                for b in businesses
                for r in reqs[(b, "test")]
            ],
            args.union_eval,
            2,
        )
        k_union = max(10, args.candidate_k)
        coarse = ev.report(
            "union_coarse_only", ev.rank_requirements(union_test, union_candidates, k_union, None), top_n=1
        )
        fine = ev.report(
            "union_lora_pooled",
            ev.rank_requirements(
                union_test, union_candidates, k_union, scorer_for(ranker, "pooled", union_by_id)
            ),
            threshold=pooled_threshold,
        )
        table += [row("union (876 tables)", coarse), row("union (876 tables)", fine)]
        results["union"] = {"coarse_only": coarse.means(), "lora_pooled": fine.means(), "n": len(union_test)}

    if not args.skip_gate:
        b = businesses[0]
        small = TrainingData(
            b, sample(data[b].train, max(1, len(data[b].train) // 10), 3), data[b].validation
        )
        # 10% of the data, so 10% of the steps: the same number of passes over its (smaller) data
        small_config = dataclasses.replace(config, max_steps=max(1, config.max_steps // 10))
        res = train_business(b, small, assets, candidates, small_config, root / "challenger10")
        ranker.add("challenger10", res.adapter_dir, "challenger10")
        gate_reqs = sample(data[b].validation, args.max_validation, 4)  # held out of train, never `test`
        champ = ev.report(
            "champion",
            ev.rank_requirements(gate_reqs, candidates, args.candidate_k, scorer_for(ranker, b, by_id)),
            threshold=thresholds[b],
        )
        chall = ev.report(
            "challenger",
            ev.rank_requirements(
                gate_reqs, candidates, args.candidate_k, scorer_for(ranker, "challenger10", by_id)
            ),
            threshold=res.threshold,
        )
        gate = GateConfig(
            latency_budget_ms=10_000
        )  # CPU shared by many jobs: latency is reported, not gated here
        decision = decide(ArmResult.from_report(champ, 3), ArmResult.from_report(chall, 3), gate)
        results["gate"] = decision.to_dict()
        table.append("")
        table.append(decision_markdown(decision, b, "champion (100% data)", "challenger (10% data)"))

    results["seconds_total"] = round(time.perf_counter() - t_start, 1)
    print("\n".join(table))
    print(f"\ntotal {results['seconds_total']} s; training: {json.dumps(results.get('train', {}), indent=1)}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str), encoding="utf-8")


if __name__ == "__main__":
    main()
