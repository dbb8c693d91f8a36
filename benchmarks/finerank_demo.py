"""Why a deployment's adapters do or do not beat its coarse ranking: a diagnosis on the gate's data.

For every business of a deployment (its lake, published index and MLflow registry: `assetmatch
demo --dir D` leaves one in D), the held-out requirements the A/B gate judges on
(`training.pairs.split_holdout`) are answered by the coarse ranking and by each adapter, and the
script prints, side by side:

- ranking signal on the coarse top-k lists: ROC AUC of the coarse scores and of each adapter's
  logits (pooled over lists, and the mean within one list: how well it orders one list); for an
  adapter that learned on top of the coarse ranking (`coarse_offset`), of what it was trained to
  score: its logit plus that weight x the coarse log-odds;
- set F1 / exact of the calibrated answer (cascade, fusion, selection) three ways: calibrated on
  the same requirements (in-sample), cross-fitted (what the gate judges and training reports:
  `training.evaluate.cross_fitted`) and cross-fitted with the other businesses' held-out lists of
  the same adapter added to every fold's calibration (`pooled`: more calibration data; honest,
  no requirement is answered by a calibration fitted on it);
- where the cross-fitted answer's set F1 differs from coarse-only's, split by whether the fine
  ranking changed the top table or kept it (`top changed` / `top kept`: lists, and the sum of
  their set F1 differences): an adapter that fixes the ranking but loses the gain in the set it
  selects around an unchanged top table shows it here;
- the training loss on the held-out lists (`training.train.validation_loss`, what `stop_on: loss`
  stops on), the adapter's beside the coarse prior's alone (every logit 0): an adapter can lower it,
  widening its margins, and still change no answer;
- the gate's verdict against coarse-only on the cross-fitted answers (`registry.promotion.decide`,
  the deployment's `promotion` settings), with the paired bootstrap intervals and how many answers
  changed (`Decision.brief`); the adapters are timed here beside each other, on a CPU that also
  judges, so a latency here is an upper bound of what `assetmatch promote` measures;
- on the coarse selection's own set decisions, below its top table, whose side the adapter's
  evidence is on (`set calls c/a`): ROC AUC, pooled over lists, of the coarse scores and of the
  adapter's logits alone (centred per list; for an adapter learned on top of the coarse ranking,
  what it adds to it) for telling gold from not, among the tables the coarse selection left out of
  the set (does any belong?) and among those it kept beside its top one (is each needed?). Most
  remaining coarse errors are such calls, so an adapter whose own evidence is weaker than the coarse
  scores there has little to add that a fusion could find;
- where the adapter and the coarse ranking disagree: the lists whose top table only the coarse
  ranking gets right, and those only the adapter gets right; and the set F1 of the better of the
  two answers for each requirement (coarse, or the adapter asked on every list: `best of both`),
  an upper bound on what any cascade could make of this adapter.

With `--simulate`, the same gate judges simulated adapters of known strength on the same lists:
each list's logits drawn independently of the coarse scores, gold tables ~ N(d, 1) and the others
~ N(0, 1), so the in-list ROC AUC is Phi(d / sqrt 2) (0.76 at d = 1, 0.92 at d = 2). It says how
strong an adapter the gate needs where its mistakes are not the coarse ranking's — next to the real
adapters, whose mistakes mostly are.

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
from dataclasses import replace
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


def trained_scores(j: Any) -> list[float]:
    """What an adapter was trained to score a list with: its logits, plus its `coarse_offset` x the
    coarse log-odds when it learned on top of the coarse ranking (the fusion's first feature)."""
    from assetmatch.matching.fine import Fusion

    return [float(x) for x in Fusion.features(j.logits, j.coarse.scores, j.coarse_offset)[:, 0]]


def set_calls(judged: Sequence[Any]) -> dict[str, tuple[float, float, int]]:
    """The coarse selection's set decisions below each list's top table, and how well the coarse
    scores and the adapter's own logits (centred per list) tell gold from not in them: for the tables
    it left out ("left out") and those it kept beside the top one ("kept"), (coarse AUC, adapter AUC,
    gold tables among them). Only tables the adapter scored count."""
    import numpy as np

    rows: dict[str, list[tuple[bool, float, float]]] = {"left out": [], "kept": []}
    for j in judged:
        if not j.logits:
            continue
        kept, flags = set(j.coarse.selected), j.gold_flags()
        own = np.asarray(j.logits, dtype=float)
        own = own - own.mean()
        for i in range(1, len(own)):
            rows["kept" if j.coarse.ids[i] in kept else "left out"].append(
                (flags[i], float(j.coarse.scores[i]), float(own[i]))
            )
    return {
        name: (
            auc([g for g, _, _ in r], [c for _, c, _ in r]),
            auc([g for g, _, _ in r], [a for _, _, a in r]),
            sum(g for g, _, _ in r),
        )
        for name, r in rows.items()
    }


def set_calls_text(calls: dict[str, tuple[float, float, int]]) -> str:
    """`set_calls` as "left out 0.90/0.76 (18) · kept 0.65/0.43 (26)": coarse / adapter AUC, and how
    many gold tables the AUC rests on."""
    return " · ".join(f"{name} {c:.2f}/{a:.2f} ({gold})" for name, (c, a, gold) in calls.items())


def top1_disagreements(judged: Sequence[Any]) -> tuple[int, int]:
    """(lists whose top table only the coarse ranking gets right, lists only the adapter's best
    score, `trained_scores`, gets right): where the two disagree, and who is right."""
    coarse_only = adapter_only = 0
    for j in judged:
        if not j.logits:
            continue
        gold = set(j.requirement.gold)
        scores = trained_scores(j)
        coarse_right = j.coarse.ids[0] in gold
        adapter_right = j.coarse.ids[max(range(len(scores)), key=scores.__getitem__)] in gold
        coarse_only += coarse_right and not adapter_right
        adapter_only += adapter_right and not coarse_right
    return coarse_only, adapter_only


def where_it_differs(
    judged: Sequence[Any], fine: Sequence[Any], coarse_f1: Sequence[float], fine_f1: Sequence[float]
) -> str:
    """Lists whose set F1 the fine answer changed, split by whether its top table is still the
    coarse ranking's: "N: +sum / M: +sum" (top changed / top kept; sums of set F1 differences)."""
    from assetmatch.matching.fine import same_top

    changed, kept = [0, 0.0], [0, 0.0]
    for j, ranked, c, f in zip(judged, fine, coarse_f1, fine_f1, strict=True):
        if abs(f - c) < 1e-9:
            continue
        bucket = kept if same_top(j.coarse.ids, ranked.ranked) else changed
        bucket[0] += 1
        bucket[1] += f - c
    return f"{changed[0]}: {changed[1]:+.2f} / {kept[0]}: {kept[1]:+.2f}"


def prior_loss(judged: Sequence[Any], loss: str) -> float:
    """The training loss of the same lists with every logit 0: the coarse prior alone (what an
    adapter that learned nothing on top of the coarse ranking would score)."""
    from assetmatch.training.train import validation_loss

    return validation_loss([replace(j, logits=[0.0] * len(j.logits)) for j in judged], loss)


def simulated(judged: Sequence[Any], k: int, separation: float, seed: int) -> list[Any]:
    """The same lists with an imaginary adapter's logits: gold tables ~ N(separation, 1), the others
    ~ N(0, 1), drawn independently of the coarse scores (in-list ROC AUC Phi(separation / sqrt 2));
    no latency."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out = []
    for j in judged:
        flags = j.gold_flags(min(k, len(j.coarse.ids)))
        logits = [float(rng.normal(separation if gold else 0.0, 1.0)) for gold in flags]
        out.append(replace(j, logits=logits, latency_ms=0.0, coarse_offset=0.0))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", type=Path, required=True, help="the deployment's assetmatch.yaml")
    parser.add_argument(
        "--adapter", action="append", default=[], metavar="NAME=FOLDER", help="another adapter to judge"
    )
    parser.add_argument(
        "--simulate",
        type=float,
        nargs="*",
        metavar="D",
        help="also judge simulated adapters whose gold logits sit D above the others (no D: 1 2 3)",
    )
    parser.add_argument("--draws", type=int, default=5, help="simulated adapters per D (5)")
    args = parser.parse_args()
    separations = [1.0, 2.0, 3.0] if args.simulate == [] else (args.simulate or [])

    import numpy as np

    from assetmatch.config import load_settings
    from assetmatch.lake.delta import Lake
    from assetmatch.matching.fine import Cascade
    from assetmatch.matching.matcher import visible_businesses
    from assetmatch.ranking.candidates import production_candidates
    from assetmatch.ranking.config import RankerConfig
    from assetmatch.ranking.finerank import LoraFineRanker
    from assetmatch.registry.mlflow import Registry
    from assetmatch.registry.promotion import ArmResult, decide
    from assetmatch.training import evaluate as ev
    from assetmatch.training.pairs import labelled_from_lake, split_holdout
    from assetmatch.training.train import judge, loaded, selection_context, validation_loss

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
    offsets = {name: RankerConfig.load(path).coarse_offset for name, (path, _) in folders.items()}
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
            judged[business][name] = judge(
                loaded(partial(ranker.logits, name)),
                library,
                held_out,
                candidates,
                config.candidate_k,
                offsets[name],
            )
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
        f"{'F1 in-sample':>12} {'F1 cross-fit':>12} {'F1 pooled':>9} {'exact':>5} "
        f"{'top-1 c/a':>9} {'best of both':>12} {'top changed / kept':>18} {'loss / prior':>13} "
        f"{'set calls c/a (gold)':>37}  "
        f"gate (cross-fitted vs coarse)"
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
            pooled_auc, within_auc = signal(arm, trained_scores)
            in_sample_cal = ev.calibrate(arm, ctx, familiar)
            in_sample = ev.report(name, [ev.fine_ranked(j, in_sample_cal, ctx) for j in arm])
            calibrations = ev.cross_fitted_calibrations(arm, ctx, familiar, seed=gate.seed)
            answers = ev.answered(arm, calibrations, ctx)
            crossed = ev.report(name, answers)
            always = ev.report(
                name, ev.answered(arm, [replace(c, cascade=Cascade.always()) for c in calibrations], ctx)
            )
            best_of_both = float(np.maximum(coarse.f1, always.f1).mean())
            coarse_right, adapter_right = top1_disagreements(arm)
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
                f"{pooled.means()['set_f1'] if pooled else float('nan'):>9.3f} {crossed.means()['set_exact']:>5.2f} "
                f"{f'{coarse_right}/{adapter_right}':>9} {best_of_both:>12.3f} "
                f"{where_it_differs(arm, answers, coarse.f1, crossed.f1):>18} "
                f"{f'{validation_loss(arm, config.loss):.3f} / {prior_loss(arm, config.loss):.3f}':>13} "
                f"{set_calls_text(set_calls(arm)):>37}  "
                f"{decision.brief()}"
            )
        familiar = ranker.calibration(arms_of[business][0]).familiar if arms_of[business] else None
        for d in separations:
            aucs, f1s, exacts, gains, verdicts = [], [], [], [], []
            for draw in range(args.draws):
                arm = simulated(first, config.candidate_k, d, gate.seed + draw)
                crossed = ev.report("simulated", ev.cross_fitted(arm, ctx, familiar, seed=gate.seed))
                decision = decide(
                    ArmResult.from_report(coarse, gate.k), ArmResult.from_report(crossed, gate.k), gate, True
                )
                aucs.append(signal(arm, lambda j: j.logits))
                f1s.append(crossed.means()["set_f1"])
                exacts.append(crossed.means()["set_exact"])
                gains.append(decision.diffs["set_f1"].mean)
                verdicts.append(decision.verdict == "promote")
            pooled_auc, within_auc = (float(np.mean(v)) for v in zip(*aucs))
            print(
                f"{'':<9} {f'simulated, d = {d:g} ({args.draws} draws)':<34} {len(first):>3} {pooled_auc:>6.3f} "
                f"{within_auc:>7.3f} {'':>12} {np.mean(f1s):>12.3f} {'':>9} {np.mean(exacts):>5.2f} {'':>9} {'':>12}  "
                f"promoted {sum(verdicts)}/{args.draws}; set_f1 {np.mean(gains):+.3f} "
                f"(draws {min(gains):+.3f} .. {max(gains):+.3f})"
            )
    print(
        f"\n{time.perf_counter() - started:.0f} s; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
        f"fine ranker on {settings.ranker.device}, quantize={settings.ranker.quantize}; "
        f"'pooled' = cross-fitted with the other businesses' held-out lists of the same adapter "
        f"added to every fold's calibration; 'top-1 c/a' = lists whose top table only the coarse ranking / "
        f"only the adapter gets right; 'best of both' = set F1 of the better of the coarse answer and the "
        f"adapter asked on every list, per requirement; 'top changed / kept' = lists whose cross-fitted set "
        f"F1 differs from coarse-only's where the fine ranking changed / kept the top table: count, and "
        f"the sum of the differences; 'loss / prior' = the training loss on the held-out lists "
        f"(`training.train.validation_loss`) of the adapter and of the coarse prior alone (every logit 0); "
        f"'set calls c/a' = ROC AUC of the coarse scores / the adapter's own logits (centred per list) for "
        f"gold among the tables below the top one that the coarse selection left out, and among those it kept "
        f"(the gold tables among them); "
        f"'simulated': logits drawn independently of the "
        f"coarse scores, gold ~ N(d, 1), others ~ N(0, 1), judged by the same gate"
    )


if __name__ == "__main__":
    main()
