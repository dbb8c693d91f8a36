"""Why a deployment's adapters do or do not beat its coarse ranking: a diagnosis on the gate's data.

For every business of a deployment (its lake, published index and MLflow registry: `assetmatch
demo --dir D` leaves one in D), the held-out requirements the A/B gate judges on
(`training.pairs.split_holdout`) are answered by the coarse ranking and by each adapter, and the
script prints, side by side:

- ranking signal on the coarse top-k lists: ROC AUC of the coarse scores and of each adapter's
  logits (pooled over lists, and the mean within one list: how well it orders one list);
- set F1 / exact of the calibrated answer (cascade, fusion, selection) three ways: calibrated on
  the same requirements (in-sample), cross-fitted (what the gate judges and training reports:
  `training.evaluate.cross_fitted`) and cross-fitted with the other businesses' held-out lists of
  the same adapter added to every fold's calibration (`pooled`: more calibration data; honest,
  no requirement is answered by a calibration fitted on it);
- the gate's verdict against coarse-only on the cross-fitted answers (`registry.promotion.decide`,
  the deployment's `promotion` settings), with the paired bootstrap intervals.

Adapters are the registry's `challenger` and `challenger-shared` versions of each business (those
the gate has not promoted yet) and its `champion`, plus any `--adapter NAME=FOLDER` (an adapter
trained elsewhere, judged on every business). Nothing is written to the registry or the lake.

    HF_HUB_OFFLINE=1 nice .venv/bin/python benchmarks/finerank_demo.py --config D/assetmatch.yaml
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ALIASES = ("challenger", "challenger-shared", "champion")


def auc(flags: Sequence[bool], scores: Sequence[float]) -> float:
    """ROC AUC (nan when only one class is present)."""
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(flags, scores)) if 0 < sum(flags) < len(flags) else float("nan")


def signal(judged: Sequence[Any], scores_of: Any) -> tuple[float, float]:
    """(pooled AUC, mean within-list AUC) of `scores_of(j)` against the gold flags of each list."""
    import numpy as np

    flags: list[bool] = []
    scores: list[float] = []
    within = []
    for j in judged:
        s = list(scores_of(j))
        f = j.gold_flags(len(s))
        flags += f
        scores += s
        within.append(auc(f, s))
    finite = [w for w in within if np.isfinite(w)]
    return auc(flags, scores), float(np.mean(finite)) if finite else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", type=Path, required=True, help="the deployment's assetmatch.yaml")
    parser.add_argument(
        "--adapter", action="append", default=[], metavar="NAME=FOLDER", help="another adapter to judge"
    )
    args = parser.parse_args()

    from assetmatch.config import load_settings
    from assetmatch.lake.delta import Lake
    from assetmatch.matching.matcher import visible_businesses
    from assetmatch.ranking.candidates import production_candidates
    from assetmatch.ranking.config import RankerConfig
    from assetmatch.ranking.finerank import LoraFineRanker
    from assetmatch.registry.mlflow import Registry
    from assetmatch.registry.promotion import ArmResult, decide, evidence
    from assetmatch.training import evaluate as ev
    from assetmatch.training.pairs import labelled_from_lake, split_holdout
    from assetmatch.training.train import judge, selection_context

    started = time.perf_counter()
    settings = load_settings(args.config)
    registry = Registry.from_settings(settings)
    lake = Lake.from_settings(settings)
    extra = dict(a.split("=", 1) for a in args.adapter)
    businesses = settings.business_names()
    cache = Path(tempfile.mkdtemp(prefix="finerank-demo-"))

    # every business's adapters, one base model holding them all (as serving does)
    folders: dict[str, tuple[str, str]] = {}
    arms_of: dict[str, list[str]] = {}
    for business in businesses:
        arms_of[business] = []
        for alias in ALIASES:
            mv = registry.version_by_alias(business, alias)
            if mv is not None:
                key = f"{business}/{alias}"
                path = registry.download_adapter(
                    business, str(mv.version), cache / business / str(mv.version)
                )
                folders[key] = (str(path), f"{alias} v{mv.version}")
                arms_of[business].append(key)
        for name, path in extra.items():
            folders.setdefault(name, (path, name))
            arms_of[business].append(name)
    if not folders:
        raise SystemExit("no adapter to judge: train one (`assetmatch train`) or pass --adapter")
    config = RankerConfig.load(next(iter(folders.values()))[0])
    ranker = LoraFineRanker.from_folders(
        folders, config.base, settings.ranker.device, config.max_length, quantize=settings.ranker.quantize
    )

    # judge: the coarse answer and every adapter's logits on each business's held-out requirements
    judged: dict[str, dict[str, list[ev.Judged]]] = {}
    contexts: dict[str, ev.Context] = {}
    for business in businesses:
        own = {a.asset_id for a in lake.read_assets(businesses=[business])}
        library = {a.asset_id: a for a in lake.read_assets(businesses=visible_businesses(settings, business))}
        _, held_out = split_holdout(labelled_from_lake(lake, business, own), config.validation_fraction)
        candidates = production_candidates(settings, list(library.values()))
        contexts[business] = selection_context(candidates)
        judged[business] = {}
        for name in arms_of[business]:
            score = partial(ranker.logits, name)
            judged[business][name] = judge(score, library, held_out, candidates, config.candidate_k)
        if not arms_of[business]:
            judged[business]["coarse"] = judge(None, library, held_out, candidates, config.candidate_k)

    gate = settings.promotion

    def same_weights(other: str, name: str) -> str | None:
        """`name`'s adapter in business `other`: the shared adapter (every business's
        `challenger-shared` copy) or a --adapter; a business's own adapter has no other lists."""
        if name in extra:
            return name
        return f"{other}/challenger-shared" if name.endswith("/challenger-shared") else None

    head = (
        f"{'business':<9} {'arm':<34} {'n':>3} {'AUC':>6} {'in-list':>7} "
        f"{'F1 in-sample':>12} {'F1 cross-fit':>12} {'F1 pooled':>9} {'exact':>5}  gate (cross-fitted vs coarse)"
    )
    print(head)
    print("-" * len(head))
    for business in businesses:
        ctx = contexts[business]
        lists = judged[business]
        first = next(iter(lists.values()))
        coarse = ev.report("coarse_only", [ev.coarse_ranked(j) for j in first])
        pooled_auc, within_auc = signal(first, lambda j: j.coarse.scores[: config.candidate_k])
        m = coarse.means()
        print(
            f"{business:<9} {'coarse-only':<34} {len(first):>3} {pooled_auc:>6.3f} {within_auc:>7.3f} "
            f"{m['set_f1']:>12.3f} {m['set_f1']:>12.3f} {m['set_f1']:>9.3f} {m['set_exact']:>5.2f}"
        )
        for name in arms_of[business]:
            arm = lists[name]
            familiar = ranker.calibration(name).familiar
            pooled_auc, within_auc = signal(arm, lambda j: j.logits)
            in_sample_cal = ev.calibrate(arm, ctx, familiar)
            in_sample = ev.report(name, [ev.fine_ranked(j, in_sample_cal, ctx) for j in arm])
            crossed = ev.report(name, ev.cross_fitted(arm, ctx, familiar, seed=gate.seed))
            others: list[ev.Judged] = []
            for b in businesses:
                twin = same_weights(b, name)
                if b != business and twin is not None and twin in judged[b]:
                    others += judged[b][twin]
            pooled = (
                ev.report(name, ev.cross_fitted(arm, ctx, familiar, seed=gate.seed, extra=others))
                if others
                else None
            )
            decision = decide(
                ArmResult.from_report(coarse, gate.k), ArmResult.from_report(crossed, gate.k), gate, True
            )
            print(
                f"{'':<9} {folders[name][1]:<34} {len(arm):>3} {pooled_auc:>6.3f} {within_auc:>7.3f} "
                f"{in_sample.means()['set_f1']:>12.3f} {crossed.means()['set_f1']:>12.3f} "
                f"{pooled.means()['set_f1'] if pooled else float('nan'):>9.3f} {crossed.means()['set_exact']:>5.2f}  "
                f"{decision.verdict}: {evidence(decision.diffs)}"
            )
    print(
        f"\n{time.perf_counter() - started:.0f} s; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
        f"fine ranker on {settings.ranker.device}, quantize={settings.ranker.quantize}; "
        f"'pooled' = cross-fitted with the other businesses' held-out lists of the same adapter "
        f"added to every fold's calibration"
    )


if __name__ == "__main__":
    main()
