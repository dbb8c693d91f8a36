"""Fine ranking on the production path, Spider: coarse-only vs LoRA fine ranking, side by side.

What runs is what the product runs: the recall indexes are built over the library, the coarse
model and set selection are fitted on Spider `train` requirements (`fit_matching`), and the fine
ranker is trained and calibrated on the coarse lists of those requirements **out of fold**
(`ranking.candidates.CoarseCandidates`), then judged on `test` (training databases, unseen
requests) and `dev` (databases no adapter saw) exactly as the Matcher answers: cascade, fusion of
adapter logits with the coarse scores, selection on fused probabilities. Nothing is tuned on
`test` or `dev`. Beside the product's answer (`fine_cascade`) each split reports coarse-only,
always-fine, and always-fine with the selection mode calibration did not choose (the calibrated
rules, or the coarse set model on fused scores: `FineCalibration.set_model`) and the product's answer
with the other choice of who sets the set where the fine ranking keeps the top table
(`FineCalibration.keep_coarse_set`: `fine_cascade_fine_set` / `fine_cascade_coarse_set_kept`); the union also reports
the coarse answer on the out-of-fold lists the adapter trained on, to compare with `test`'s.

Settings:
- `union`: all 876 tables in one library (SpiderUnion); one adapter.
- `split`: Spider's 140 training databases sorted by db_id and cut into 4 businesses; a shared
  adapter on all four, then per-business adapters started from it; reports coarse vs shared vs
  per-business on each business's `test` requirements, and the three-way gate's choice.

    HF_HUB_OFFLINE=1 nice .venv/bin/python benchmarks/finerank_spider.py --setting union
    HF_HUB_OFFLINE=1 nice .venv/bin/python benchmarks/finerank_spider.py --setting split

Training is bounded (--max-steps, early stopping on the validation curve): it runs on CPUs.
Every row prints the arm's set F1 with its 95 % bootstrap interval and, beside coarse-only, its paired
set-F1 and all-gold@3 differences with theirs: on 300 requirements a set F1 is known to about
+-0.04. `--fit-limit 0 --eval-limit 0` (and `--eval-per-business 0`) fit on all of `train` and answer
every `test` / `dev` requirement, the figures' own terms (about an hour on 2 cores).
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import json
import os
import random
import shutil
import tempfile
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

from assetmatch.config import LakeConfig, RecallConfig, Settings
from assetmatch.evaluation.harness import asked_in, fit_matching, gold_databases, read_benchmark
from assetmatch.lake import tables as T
from assetmatch.lake.delta import Lake
from assetmatch.matching.fine import FineCalibration
from assetmatch.matching.matcher import Matcher
from assetmatch.models import Requirement, TableAsset, scope_of
from assetmatch.ranking.candidates import CoarseCandidates
from assetmatch.ranking.config import RankerConfig
from assetmatch.ranking.finerank import LoraFineRanker, read_calibration
from assetmatch.recall.index import IndexSet
from assetmatch.registry.promotion import GateConfig, choose_arm, paired_bootstrap
from assetmatch.text import same_query_key
from assetmatch.training import augment
from assetmatch.training import evaluate as ev
from assetmatch.training.pairs import LabelledRequirement, TrainingData, split_holdout
from assetmatch.training.starting import resolve_starting_adapter
from assetmatch.training.train import (
    TrainResult,
    calibrate_adapter,
    judge,
    loaded,
    selection_context,
    train_business,
)

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "benchmarks" / "spider"
METRICS = ("all_gold_at_3", "all_gold_at_5", "set_f1", "set_exact", "mrr")


def load_spider(data: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    with gzip.open(data / "assets.jsonl.gz", "rt", encoding="utf-8") as f:
        assets = [json.loads(line) for line in f]
    with gzip.open(data / "requirements.jsonl.gz", "rt", encoding="utf-8") as f:
        reqs = [json.loads(line) for line in f]
    return assets, reqs


def sample(items: Sequence[Any], n: int, seed: int) -> list[Any]:
    items = sorted(items, key=lambda r: r.id)
    return (
        items
        if not n or len(items) <= n
        else sorted(random.Random(seed).sample(items, n), key=lambda r: r.id)
    )


def union_library(data: Path) -> tuple[list[TableAsset], list[Requirement]]:
    """Spider's tables and labelled requirements as one business ("library", the union setting)."""
    assets, _ = read_benchmark(data, "union")  # the catalog source, as `assetmatch eval` reads them
    reqs = [
        Requirement(
            id=r["id"],
            business="library",
            text=r["text"],
            gold_assets=r["gold_assets"],
            split=r["split"],
            sql=r.get("sql"),  # paraphrases of one query are one request (`text.same_query_key`)
        )
        for r in load_spider(data)[1]
        if r["gold_assets"]
    ]
    return assets, reqs


def build_index(
    assets: list[TableAsset], workdir: Path, history: Sequence[Requirement] = ()
) -> tuple[IndexSet, Settings]:
    """A lake under `workdir` holding `assets` (and `history` as labelled requirements), its recall
    indexes built and warm, and the settings that point at both."""
    settings = Settings(
        lake=LakeConfig(uri=str(workdir / "lake")),
        recall=RecallConfig(index_root=str(workdir / "indexes")),
    )
    lake = Lake.from_settings(settings)
    lake.merge_assets(assets, run_id="benchmark", snapshot_of="spider")
    if any(r.split != "train" for r in history):
        raise ValueError("only train requirements may be the usage history (dev/test are judged)")
    if history:
        lake.upsert(T.REQUIREMENTS, [{**r.model_dump(), "run_id": "benchmark"} for r in history], "benchmark")
    index = IndexSet.build(lake, settings)
    index.warmup()
    return index, settings


def build_production_path(
    assets: list[TableAsset],
    train: list[Requirement],
    workdir: Path,
    seed: int,
    history: Sequence[Requirement] = (),
) -> tuple[CoarseCandidates, dict[str, Any]]:
    """Lake -> indexes -> coarse model + selection fitted on `train` -> the production candidates.

    `history`: labelled `train` requirements written to the lake first, as a deployment's are: the
    usage path votes with them (and shows the fine ranker the nearest one beside each table); a
    requirement being fitted on or judged never votes for itself (`leave_own_out`)."""
    started = time.perf_counter()
    index, settings = build_index(assets, workdir, history)
    fit = fit_matching(index, settings, train, seed)
    matcher = Matcher(index, settings, coarse=fit.coarse, selector=fit.selector())
    info = {
        "coarse_fit_s": round(time.perf_counter() - started, 1),
        "cv_chosen": fit.report.get("cv_chosen"),
        "selection": fit.selection.model_dump(),
        "set_model": fit.report.get("set_model"),
    }
    return CoarseCandidates(matcher, fit.oof), info


def fit_summary(result: TrainResult, started: float) -> dict[str, Any]:
    return {
        "seconds": round(time.perf_counter() - started, 1),  # training + calibration
        "fit_seconds": round(result.fit.seconds, 1),  # the optimizer loop and its validation curve
        "steps": result.fit.steps,
        "best_step": result.fit.best_step,
        "stopped_early": result.fit.stopped_early,
        "curve": result.fit.curve,
    }


def labelled(r: Requirement) -> LabelledRequirement:
    return LabelledRequirement(
        r.id,
        r.business,
        r.text,
        tuple(r.gold_assets),
        query=same_query_key(r.sql, r.gold_assets),
        databases=scope_of(r.databases),
    )


def evaluate(
    name: str,
    requirements: list[LabelledRequirement],
    candidates: CoarseCandidates,
    ranker: LoraFineRanker | None,
    adapter: str,
    calibration: FineCalibration | None,
    k: int,
) -> dict[str, ev.EvalReport]:
    """coarse-only, and (with an adapter) the product's answer and always-fine, on the same lists."""
    library = candidates.assets
    ctx = selection_context(candidates)
    if ranker is None or calibration is None:
        judged = judge(None, library, requirements, candidates, k)
        return {"coarse_only": ev.report(f"{name}/coarse_only", [ev.coarse_ranked(j) for j in judged])}
    judged = judge(loaded(partial(ranker.logits, adapter)), library, requirements, candidates, k)
    always = dataclasses.replace(
        calibration, cascade=dataclasses.replace(calibration.cascade, max_margin=None, familiar_only=False)
    )
    reports = {
        "coarse_only": ev.report(f"{name}/coarse_only", [ev.coarse_ranked(j) for j in judged]),
        "fine_cascade": ev.report(
            f"{name}/fine_cascade", [ev.fine_ranked(j, calibration, ctx) for j in judged]
        ),
        "always_fine": ev.report(f"{name}/always_fine", [ev.fine_ranked(j, always, ctx) for j in judged]),
    }
    # the other answer to "do fused scores decide the set where the top table stays?", with the
    # calibrated cascade: what calibration's choice was worth (`FineCalibration.keep_coarse_set`)
    other_keep = dataclasses.replace(calibration, keep_coarse_set=not calibration.keep_coarse_set)
    other = "fine_cascade_" + ("fine_set" if calibration.keep_coarse_set else "coarse_set_kept")
    reports[other] = ev.report(f"{name}/{other}", [ev.fine_ranked(j, other_keep, ctx) for j in judged])
    # the selection mode calibration did not choose, always fine-ranked: what the choice was worth
    for mode in ev.selection_modes(ctx):
        if mode != calibration.set_model:
            other = f"always_fine_{'set_model' if mode else 'rules'}"
            answered = [ev.fine_ranked(j, dataclasses.replace(always, set_model=mode), ctx) for j in judged]
            reports[other] = ev.report(f"{name}/{other}", answered)
    return reports


def row(label: str, rep: ev.EvalReport, baseline: ev.EvalReport | None = None) -> str:
    """One arm's figures; with `baseline` (coarse-only on the same requirements), the 95 % intervals
    of its set F1 and of its paired differences to the baseline (`intervals`)."""
    m = rep.means()
    share = rep.extra.get("fine_share", 0.0)
    return (
        f"| {label} | {rep.name.split('/')[-1]} | "
        + " | ".join(f"{m[k]:.3f}" for k in METRICS)
        + f" | {share:.2f} | {m['latency_ms_mean']:.0f} | "
        + " | ".join(intervals(rep, baseline))
        + " |"
    )


def intervals(rep: ev.EvalReport, baseline: ev.EvalReport | None) -> list[str]:
    """Percentile-bootstrap 95 % intervals over requirements, seeded (the gate's `paired_bootstrap`):
    the arm's set F1, then its set F1 and all-gold@3 minus the baseline's on the same requirements
    (paired; blank for the baseline itself). On a few hundred requirements a set F1 is known to
    about +-0.03 to 0.04: a figure's distance to an aim, or between two arms, reads against it."""

    def show(values: Sequence[float], sign: str = "+") -> str:
        i = paired_bootstrap(values, 2000, 0.95, 0)
        return f"{i.mean:{sign}.3f} [{i.low:{sign}.3f}, {i.high:{sign}.3f}]"

    if not rep.f1:
        return ["", "", ""]
    if baseline is None or baseline is rep or baseline.ids != rep.ids:
        return [show(rep.f1, ""), "", ""]
    return [
        show(rep.f1, ""),
        show([a - b for a, b in zip(rep.f1, baseline.f1, strict=True)]),
        show([a - b for a, b in zip(rep.all_gold[3], baseline.all_gold[3], strict=True)]),
    ]


HEADER = [
    "| split | method | all-gold@3 | all-gold@5 | set F1 | set exact | MRR | share fine-ranked | fine ms/req "
    "| set F1 [95 % CI] | set F1 − coarse [95 % CI] | all-gold@3 − coarse [95 % CI] |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|",
]


def pooled_report(reports: Sequence[ev.EvalReport], name: str) -> ev.EvalReport:
    """Several reports' requirements as one report (the split's businesses, for the mean row)."""
    out = ev.EvalReport(name, [], [], [], {k: [] for k in reports[0].all_gold}, [], [])
    for r in reports:
        out.ids += r.ids
        out.f1 += r.f1
        out.exact += r.exact
        out.rr += r.rr
        out.latency_ms += r.latency_ms
        for k, v in r.all_gold.items():
            out.all_gold[k] += v
    return out


def config_from(args: argparse.Namespace) -> RankerConfig:
    return RankerConfig(
        max_steps=args.max_steps,
        epochs=args.epochs,
        batch_size=args.batch_size,
        max_length=args.max_length,
        learning_rate=args.learning_rate,
        coarse_offset=args.coarse_offset,
        candidate_k=args.candidate_k,
        hard_negatives=4,
        random_negatives=1,
        synthetic_per_table=args.synthetic_per_table,
        max_validation=args.max_validation,
        eval_every=args.eval_every,
        patience=args.patience,
        device=args.device,
    )


def run_union(args: argparse.Namespace, root: Path, results: dict[str, Any], table: list[str]) -> None:
    assets, reqs = union_library(args.data)
    train = sample([r for r in reqs if r.split == "train"], args.fit_limit, 0)
    if args.train_scope == "database":  # asked, fitted on, trained on and judged in its gold database
        train = asked_in(train, "database", {a.asset_id: a for a in assets})
    history = [r for r in reqs if r.split == "train"] if args.history == "train" else []
    candidates, info = build_production_path(assets, train, root / "union", args.seed, history)
    print(f"union: coarse path built {info}", flush=True)
    config = config_from(args)
    train_l, validation = split_holdout([labelled(r) for r in train], config.validation_fraction)
    synthetic = augment.synthesize(assets, [], config.synthetic_per_table, config.seed)
    data = TrainingData("library", train_l, validation, synthetic)
    started = time.perf_counter()
    res = train_business(
        "library",
        data,
        assets,
        candidates,
        config,
        root / "union-adapter",
        init_from=starting_from(args, config),
    )
    results["union_train"] = {
        **fit_summary(res, started),
        "stopped_early": res.fit.stopped_early,
        "oof_hits": candidates.oof_hits,
        "cascade": dataclasses.asdict(res.calibration.cascade),
        "validation": {k: r.means() for k, r in res.reports.items()},
        **info,
    }
    print(
        f"union: trained {json.dumps({k: v for k, v in results['union_train'].items() if k != 'curve'})}",
        flush=True,
    )
    ranker = LoraFineRanker.from_folders(
        {"library": (res.adapter_dir, "1")}, config.base, args.device, config.max_length
    )
    calibration = read_calibration(res.adapter_dir)
    # the lists the adapter trained on (out of fold): as hard as the lists `test` meets, or harder?
    oof = ev.report(
        "train_oof/coarse_only",
        [
            ev.coarse_ranked(j)
            for j in judge(None, candidates.assets, train_l, candidates, config.candidate_k)
        ],
    )
    results["union_train_oof"] = {"coarse_only": oof.means()}
    table.append(row(f"union train, out-of-fold lists (n={len(train_l)})", oof))
    print(table[-1], flush=True)
    for split in ("test", "dev"):
        evaluated = sample([labelled(r) for r in reqs if r.split == split], args.eval_limit, 1)
        reports = evaluate(split, evaluated, candidates, ranker, "library", calibration, config.candidate_k)
        results[f"union_{split}"] = {k: {**r.means(), **r.extra} for k, r in reports.items()}
        results[f"union_{split}_per_requirement"] = {k: r.to_dict() for k, r in reports.items()}
        table += [
            row(f"union {split} (n={len(evaluated)})", r, reports["coarse_only"]) for r in reports.values()
        ]
        print("\n".join(table[-len(reports) :]), flush=True)
        if args.scope == "database":  # the same requirements, each asked inside its gold database
            scoped = [
                dataclasses.replace(r, databases=tuple(gold_databases(r.gold, candidates.assets)))
                for r in evaluated
            ]
            reports = evaluate(split, scoped, candidates, ranker, "library", calibration, config.candidate_k)
            results[f"union_{split}_scoped"] = {k: {**r.means(), **r.extra} for k, r in reports.items()}
            results[f"union_{split}_scoped_per_requirement"] = {k: r.to_dict() for k, r in reports.items()}
            table += [
                row(f"union {split}, scoped to its database (n={len(evaluated)})", r, reports["coarse_only"])
                for r in reports.values()
            ]
            print("\n".join(table[-len(reports) :]), flush=True)


def starting_from(args: argparse.Namespace, config: RankerConfig) -> Path | None:
    """--init-from: the adapter training starts from (`packaged`: the one shipped with assetmatch,
    trained on every Spider `train` question — so the validation requirements it is calibrated on
    are not new to it; `test` and `dev` are; `holdout`: `holdout_starting_adapter`)."""
    if args.init_from in (None, "none"):
        return None
    if args.init_from == "holdout":
        return holdout_starting_adapter(args, config)
    return resolve_starting_adapter(args.init_from, config.base)


def holdout_starting_adapter(args: argparse.Namespace, config: RankerConfig) -> Path:
    """A starting adapter pre-trained as the packaged one was (`assetmatch models pretrain`, 1,200
    steps on Spider `train`), but without the questions this benchmark holds out for calibration and
    the gate (`config.validation_fraction`, by query or text: `training.pairs.split_holdout`) and without
    LoRA dropout: the honest start for a benchmark (~12 min on 2 cores). Built once in
    `--cache`, reused while its provenance says it was built that way for this base."""
    from assetmatch.training.starting import HOLDOUT_KEY, PACKAGED_DIR, PROVENANCE_FILE, pretrain

    folder = args.cache / f"starting-holdout-{config.validation_fraction}"
    provenance = folder / PROVENANCE_FILE
    if provenance.exists():
        built = json.loads(provenance.read_text(encoding="utf-8"))
        same = (built.get("held_out"), built.get("held_out_by"), built.get("base"))
        if same == (config.validation_fraction, HOLDOUT_KEY, config.base):
            print(f"starting adapter: {folder} (held out {config.validation_fraction})", flush=True)
            return folder
    # the packaged adapter's own settings and step count: pre-trained as it was, less the held-out
    packaged = json.loads((PACKAGED_DIR / PROVENANCE_FILE).read_text(encoding="utf-8"))
    pre = dataclasses.replace(
        RankerConfig.load(PACKAGED_DIR),
        base=config.base,
        device=args.device,
        max_steps=packaged["steps"],
        eval_every=0,
        lora_dropout=0.0,
    )
    print(f"starting adapter: pre-training {folder} (held out {config.validation_fraction})", flush=True)
    if folder.exists():
        shutil.rmtree(folder)
    pretrain([args.data], folder, pre, hold_out=config.validation_fraction)
    return folder


def split_library(data: Path) -> tuple[list[TableAsset], list[Requirement], list[str]]:
    """Spider's 140 training databases sorted by db_id and cut into 4 businesses (the split setting):
    their tables, their labelled requirements (every split), the business names."""
    raw_reqs = load_spider(data)[1]
    train_dbs = sorted({r["business"] for r in raw_reqs if r["split"] == "train"})
    buckets = [train_dbs[i * len(train_dbs) // 4 : (i + 1) * len(train_dbs) // 4] for i in range(4)]
    business_of = {db: f"biz{i + 1}" for i, bucket in enumerate(buckets) for db in bucket}
    assets = [
        a.model_copy(update={"business": business_of[a.database]})
        for a in read_benchmark(data, "union")[0]
        if a.database in business_of
    ]
    reqs = [
        Requirement(
            id=r["id"],
            business=business_of[r["business"]],
            text=r["text"],
            gold_assets=r["gold_assets"],
            split=r["split"],
            sql=r.get("sql"),
        )
        for r in raw_reqs
        if r["business"] in business_of and r["gold_assets"]
    ]
    return assets, reqs, sorted(set(business_of.values()))


def run_split(args: argparse.Namespace, root: Path, results: dict[str, Any], table: list[str]) -> None:
    assets, reqs, businesses = split_library(args.data)
    train = sample([r for r in reqs if r.split == "train"], args.fit_limit, 0)
    history = [r for r in reqs if r.split == "train"] if args.history == "train" else []
    candidates, info = build_production_path(assets, train, root / "split", args.seed, history)
    print(f"split: coarse path built {info}", flush=True)
    config = config_from(args)
    data: dict[str, TrainingData] = {}
    for b in businesses:
        train_l, validation = split_holdout(
            [labelled(r) for r in train if r.business == b], config.validation_fraction
        )
        own = [a for a in assets if a.business == b]
        data[b] = TrainingData(
            b, train_l, validation, augment.synthesize(own, [], config.synthetic_per_table, config.seed)
        )
    # the shared adapter: every business's data in one adapter
    pooled = TrainingData(
        "shared",
        [r for b in businesses for r in data[b].train],
        [r for b in businesses for r in data[b].validation],
        [r for b in businesses for r in data[b].synthetic],
    )
    started = time.perf_counter()  # requirements keep their business: each sees its own coarse lists
    shared = train_business(
        "shared", pooled, assets, candidates, config, root / "shared", init_from=starting_from(args, config)
    )
    results["split_shared_train"] = fit_summary(shared, started)
    print(
        f"split: shared adapter {shared.fit.steps} steps (best {shared.fit.best_step}), "
        f"fit {shared.fit.seconds:.0f} s, with calibration {time.perf_counter() - started:.0f} s",
        flush=True,
    )
    gate = GateConfig(latency_budget_ms=1e9)  # latency is reported here, not gated (shared CPU)
    per_config = dataclasses.replace(config, max_steps=args.business_steps or config.max_steps)
    per_arm: dict[str, dict[str, ev.EvalReport]] = {}  # arm -> business -> its `test` report
    for b in businesses:
        own_assets = [a for a in assets if a.business == b]
        # the shared adapter with this business's calibration (fusion, selection, cascade)
        shared_b = calibrate_adapter(
            b, shared.adapter_dir, data[b], own_assets, candidates, root / f"shared-{b}"
        ).adapter_dir
        started = time.perf_counter()
        own_result = train_business(
            b, data[b], own_assets, candidates, per_config, root / b, init_from=shared.adapter_dir
        )
        results.setdefault("split_business_train", {})[b] = fit_summary(own_result, started)
        print(
            f"split: {b} adapter {own_result.fit.steps} steps (best {own_result.fit.best_step}), "
            f"fit {own_result.fit.seconds:.0f} s, with calibration {time.perf_counter() - started:.0f} s",
            flush=True,
        )
        ranker = LoraFineRanker.from_folders(
            {"shared": (shared_b, "s"), "own": (own_result.adapter_dir, "b")},
            config.base,
            args.device,
            config.max_length,
        )
        tests = sample(
            [labelled(r) for r in reqs if r.business == b and r.split == "test"], args.eval_per_business, 1
        )
        arms = evaluate(
            f"{b}", tests, candidates, ranker, "shared", read_calibration(shared_b), config.candidate_k
        )
        reports = {
            "coarse_only": arms["coarse_only"],
            "shared": dataclasses.replace(arms["fine_cascade"], name=f"{b}/shared"),
            "per_business": dataclasses.replace(
                evaluate(
                    f"{b}",
                    tests,
                    candidates,
                    ranker,
                    "own",
                    read_calibration(own_result.adapter_dir),
                    config.candidate_k,
                )["fine_cascade"],
                name=f"{b}/per_business",
            ),
        }
        for name, rep in reports.items():
            per_arm.setdefault(name, {})[b] = rep
            table.append(row(b, rep, reports["coarse_only"]))
        # the gate's three-way choice on held-out train requirements (never test)
        val = {
            "coarse_only": ev.report(
                "coarse_only",
                [
                    ev.coarse_ranked(j)
                    for j in judge(
                        None,
                        candidates.assets,
                        data[b].validation,
                        candidates,
                        config.candidate_k,
                    )
                ],
            ),
            "shared": shared_b_report(
                ranker, "shared", shared_b, data[b].validation, candidates, config.candidate_k
            ),
            "per_business": shared_b_report(
                ranker, "own", own_result.adapter_dir, data[b].validation, candidates, config.candidate_k
            ),
        }
        choice = choose_arm(val["coarse_only"], val["shared"], val["per_business"], gate, first_adapter=True)
        results.setdefault("split_gate", {})[b] = {"chosen": choice.chosen, "reason": choice.reason}
        print("\n".join(table[-3:]) + f"\n{b}: gate chooses {choice.chosen} ({choice.reason})", flush=True)
    summary = {name: {b: r.means() for b, r in per.items()} for name, per in per_arm.items()}
    coarse = pooled_report(list(per_arm["coarse_only"].values()), "coarse_only")
    for name, per in summary.items():
        mean = {m: sum(v[m] for v in per.values()) / len(per) for m in METRICS}
        requirements = pooled_report(list(per_arm[name].values()), name)
        cis = intervals(requirements, None if name == "coarse_only" else coarse)
        table.append(
            f"| mean of 4 (intervals: their requirements pooled) | {name} | "
            + " | ".join(f"{mean[m]:.3f}" for m in METRICS)
            + " | | | "
            + " | ".join(cis)
            + " |"
        )
    results["split"] = summary
    results["split_per_requirement"] = {
        name: {b: r.to_dict() for b, r in per.items()} for name, per in per_arm.items()
    }


def shared_b_report(
    ranker: LoraFineRanker,
    adapter: str,
    folder: Path,
    requirements: list[LabelledRequirement],
    candidates: CoarseCandidates,
    k: int,
) -> ev.EvalReport:
    judged = judge(loaded(partial(ranker.logits, adapter)), candidates.assets, requirements, candidates, k)
    calibration = read_calibration(folder)
    return ev.report(adapter, [ev.fine_ranked(j, calibration, selection_context(candidates)) for j in judged])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--setting", choices=["union", "split", "both"], default="union")
    parser.add_argument(
        "--fit-limit", type=int, default=1500, help="train requirements (coarse fit and ranker)"
    )
    parser.add_argument(
        "--max-steps", type=int, default=600, help="cap on optimizer steps (early stopping may stop sooner)"
    )
    parser.add_argument(
        "--business-steps", type=int, default=0, help="cap for per-business adapters (split; 0: --max-steps)"
    )
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=96)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument(
        "--coarse-offset",
        type=float,
        default=0.0,
        help="train on top of the coarse ranking: its log-odds x this weight added to each pair's logit "
        "in the loss (RankerConfig.coarse_offset; 0: off)",
    )
    parser.add_argument("--candidate-k", type=int, default=10, help="coarse candidates fine-ranked at most")
    parser.add_argument("--synthetic-per-table", type=int, default=1)
    parser.add_argument("--max-validation", type=int, default=150)
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--patience", type=int, default=3)
    parser.add_argument(
        "--eval-limit", type=int, default=500, help="union: requirements evaluated per split (0: all)"
    )
    parser.add_argument("--eval-per-business", type=int, default=100)
    parser.add_argument(
        "--init-from",
        default="none",
        help="what the first adapter (union: the adapter; split: the shared one) starts from: none | "
        "packaged (learned every `train` question, the ones held out for calibration included) | holdout "
        "(pre-trained like it without them, once, into --cache) | a folder",
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path(".assetmatch/cache/finerank-spider"),
        help="where --init-from holdout keeps its starting adapter",
    )
    parser.add_argument(
        "--history",
        choices=["train", "none"],
        default="none",
        help="usage history in the lake: none (metadata paths only; the default, the figures in docs/measured.md) "
        "or every labelled train requirement, as a deployment has (docs/measured.md: it lifts "
        "test and costs dev, whose databases have no history, a little)",
    )
    parser.add_argument(
        "--scope",
        choices=["none", "database"],
        default="none",
        help="union: database also answers each test / dev requirement inside its gold tables' database, as "
        "a request that names its scope is served (`databases` of the API), with the same coarse model "
        "and adapter, and prints those rows below the unscoped ones",
    )
    parser.add_argument(
        "--train-scope",
        choices=["none", "database"],
        default="none",
        help="union: database asks each train requirement inside its gold tables' database "
        "(`Requirement.databases`), so the coarse model is fitted, the adapter trained and its calibration "
        "and the gate's lists judged on scoped lists: a deployment whose requests all name their scope "
        "(read its rows with --scope database)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    started = time.perf_counter()
    print(f"load average at start: {os.getloadavg()}", flush=True)
    root = Path(tempfile.mkdtemp(prefix="finerank-spider-"))
    results: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}}
    table = list(HEADER)
    if args.setting in ("union", "both"):
        run_union(args, root, results, table)
    if args.setting in ("split", "both"):
        run_split(args, root, results, table)
    results["seconds_total"] = round(time.perf_counter() - started, 1)
    results["load_average_end"] = os.getloadavg()
    print("\n".join(table))
    print(f"\ntotal {results['seconds_total']} s, load average at the end {results['load_average_end']}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str), encoding="utf-8")


if __name__ == "__main__":
    main()
