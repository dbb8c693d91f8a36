"""Fitting the coarse model: the learned fusion of recall paths (CV-chosen) and the set-selection
parameters, on training requirements, and publishing them where `Matcher.from_settings` finds them.
The nightly pipeline, `assetmatch index build`, the demo and the benchmark harness all fit here."""

from __future__ import annotations

import logging
import random
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from assetmatch.config import Settings
from assetmatch.matching.fine import scored_tables
from assetmatch.matching.fusion import (
    Candidate,
    FeatureBuilder,
    LearnedFusion,
    TrainingGroup,
    collect_candidates,
    cv_groups_of,
    fit_learned_fusion,
    out_of_fold_by_request,
)
from assetmatch.matching.matcher import COARSE_FILE, OOF_FILE, SELECTION_FILE, Matcher, oof_key, write_oof
from assetmatch.matching.selection import (
    CalibrationExample,
    SelectionParams,
    SetSelector,
    calibrate,
    save_selection,
)
from assetmatch.matching.set_model import LearnedSetSelector, SetModel, fit_set_model
from assetmatch.matching.synthetic import SynthesisOptions, is_synthetic, synthesize_requirements
from assetmatch.models import GlossaryTerm, QueryLogEntry, Requirement
from assetmatch.recall.index import IndexSet
from assetmatch.text import same_query_key
from assetmatch.types import FeatureProvider, Hit

log = logging.getLogger(__name__)

CALIBRATION_MAX = 2000  # requirements used for the selection grid search (a sample keeps it under a minute)
COLD_SUFFIX = "#cold"  # a training requirement fitted again as if its tables had no usage history
COLD_IN_SCOPE_SUFFIX = "#cold-in-scope"  # ... and asked inside its gold tables' databases


@dataclass
class FitResult:
    coarse: LearnedFusion | None
    selection: SelectionParams
    report: dict[str, Any]
    oof: dict[str, tuple[list[str], list[float]]] = field(default_factory=dict)
    """Per training requirement (`ranking.candidates.text_key`), its coarse list ranked by the
    cross-validation model that did not see it: what fine rankers are trained and judged on."""
    set_model: SetModel | None = None  # the learned set selection, when CV kept it

    def selector(self) -> SetSelector:
        """What selects the coarse answer's set: the set model over the rules, or the rules alone."""
        if self.set_model is not None:
            return LearnedSetSelector(self.selection, self.set_model)
        return SetSelector(self.selection)


def point_in_time_features(
    provider: FeatureProvider | None, recalled: Sequence[tuple[Requirement, Sequence[Candidate]]]
) -> list[dict[str, dict[str, float]] | None]:
    """Per requirement, its candidates' stored features as of the requirement's time, in ONE
    point-in-time call (`FeatureProvider.historical`): a model trained on today's usage counts
    would learn from the future of its past requirements. None where there is no provider or the
    requirement has no timestamp (its features are then read online, as at match time)."""
    if provider is None:
        return [None] * len(recalled)
    rows = [(c.asset_id, req.ts) for req, cands in recalled if req.ts is not None for c in cands]
    values = iter(provider.historical(rows))
    out: list[dict[str, dict[str, float]] | None] = []
    for req, cands in recalled:
        out.append(None if req.ts is None else {c.asset_id: next(values) for c in cands})
    return out


def synthetic_requirements(
    index: IndexSet,
    settings: Settings,
    glossary: Sequence[GlossaryTerm] = (),
    query_log: Sequence[QueryLogEntry] = (),
    seed: int = 0,
) -> list[Requirement]:
    """Requirements synthesized from the indexed library's metadata (`matching.synthetic`); none when
    `matching.synthetic` is off."""
    if settings.matching.synthetic == "off":
        return []
    options = SynthesisOptions(per_table=settings.matching.synthetic_per_table, seed=seed)
    return synthesize_requirements(index.assets, glossary, query_log, options)


def blend(
    labelled: Sequence[Requirement], synthetic: Sequence[Requirement], settings: Settings, seed: int = 0
) -> tuple[list[Requirement], str]:
    """The requirements the coarse model is fitted on, and what they are ("labelled", "synthetic",
    "blended" or "none").

    The weighting, documented in README "The first day": with n labelled requirements, a share
    min(1, m / n) of the synthetic ones is kept (m = `matching.synthetic_full_weight_labels`, 500):
    every synthetic requirement while labels are fewer than m — the first labels are added to the
    label-free training set, never traded for part of it — then fewer as labels accumulate (a third
    at 1,500), never switched off abruptly. `matching.synthetic: only` keeps every synthetic one and
    no label. The same seed keeps a nested sample: what a larger n keeps, a smaller n kept too."""
    mode = settings.matching.synthetic
    if mode == "only":
        return list(synthetic), "synthetic" if synthetic else "none"
    if mode == "off" or not synthetic:
        return list(labelled), "labelled" if labelled else "none"
    m = settings.matching.synthetic_full_weight_labels
    keep = round(len(synthetic) * min(1.0, m / max(len(labelled), 1)))
    kept = random.Random(seed).sample(list(synthetic), len(synthetic))[:keep]  # nested in n
    if not labelled:
        return kept, "synthetic" if kept else "none"
    return [*labelled, *kept], "blended" if kept else "labelled"


def history_voted_for_gold(hits: Mapping[str, Sequence[Hit]], req: Requirement) -> bool:
    """Whether past requests (the usage path) recalled any of the requirement's gold tables."""
    gold = set(req.gold_assets)
    return any(hit.asset_id in gold for hit in hits.get("usage", ()))


def training_group(
    builder: FeatureBuilder,
    req: Requirement,
    cands: Sequence[Candidate],
    features: dict[str, dict[str, float]] | None,
    suffix: str = "",
) -> TrainingGroup:
    """One requirement's candidates as the fusion fits on them, in its database's CV group."""
    gold = set(req.gold_assets)
    labels = np.array([int(c.asset_id in gold) for c in cands], dtype=int)
    group = builder.group_of(req.gold_assets[0]) if req.gold_assets else req.business
    return TrainingGroup(
        req.id + suffix,
        group,
        builder.matrix(req.text, cands, features),
        labels,
        [c.asset_id for c in cands],
        len(gold),
        req.text,
        same_query_key(req.sql, req.gold_assets),
    )


def fit_matching(
    index: IndexSet,
    settings: Settings,
    train: Sequence[Requirement],
    seed: int = 0,
    progress: Callable[[Iterator[Requirement], int, str], Iterator[Requirement]] | None = None,
    feature_provider: FeatureProvider | None = None,
    synthetic: Sequence[Requirement] = (),
) -> FitResult:
    """Fit the coarse fusion model (CV-chosen) and calibrate set selection on training requirements,
    blended with `synthetic` ones (`blend`; `synthetic_requirements` writes them).

    With a `feature_provider` the model also learns from stored features (usage, freshness ...),
    read point-in-time as of each requirement (`point_in_time_features`).

    A share (`matching.cold_history_share`) of the requirements whose gold tables past requests voted
    for is fitted twice: as recalled, and as if their database had never been used (the past requests
    that used any of its tables left out of the usage vote, and its co-usage edges out of the graph
    walk): the lists a new database's requests get. Fitted only on the first, the model learns that
    the usage path is nearly always right, and on a database without history it follows the usage
    path's votes for the nearest past requests' tables, which are other databases'.
    An unscoped copy is also asked inside its gold tables' databases (`matching.cold_history_in_scope`):
    a request asked in scope in a database without history, where no candidate has a past request.
    The copies count in the fit and the selection calibration, not in the out-of-fold lists.

    With nothing to fit on: RRF and top-1 selection with FK closure (the untrained defaults).
    """
    n_labelled = len(train)
    train, trained_on = blend(train, synthetic, settings, seed)
    counts = {"n_labelled": n_labelled, "n_synthetic": sum(is_synthetic(r) for r in train)}
    if not train:
        return FitResult(
            None,
            SelectionParams(min_score=1.1, fk_closure=True),
            {"trained": False, "trained_on": "none", **counts},
        )
    recall_matcher = Matcher(index, settings, feature_provider=feature_provider)
    builder: FeatureBuilder = recall_matcher.builder
    iterator: Iterator[Requirement] = iter(train)
    if progress is not None:
        iterator = progress(iterator, len(train), "fit: recall on train")
    recalled: list[tuple[Requirement, list[Candidate]]] = []
    cold: list[tuple[Requirement, list[Candidate], str]] = []
    scopes: list[tuple[str, ...] | None] = []  # the scope each recalled requirement was asked in
    pick = random.Random(seed)
    share = settings.matching.cold_history_share
    used_by_group: dict[str, list[str]] = defaultdict(list)  # the tables past requests used, by database
    for asset_id in index.used_tables() if share else ():
        used_by_group[builder.group_of(asset_id)].append(asset_id)
    for req in iterator:
        # asked where it was asked (in its scope, when it had one); its own entries in the usage
        # history would vote for its gold tables: a new request has none
        scope = recall_matcher.held_scope(req.business, req.databases)
        hits = recall_matcher.recall(req.business, req.text, leave_own_out=True, databases=scope)
        recalled.append((req, list(collect_candidates(hits).values())))
        scopes.append(scope)
        if history_voted_for_gold(hits, req) and pick.random() < share:
            databases = {builder.group_of(a) for a in req.gold_assets}
            unused = [a for g in sorted(databases) for a in used_by_group[g]]
            hits = recall_matcher.recall(
                req.business, req.text, leave_own_out=True, unused_tables=unused, databases=scope
            )
            cands = list(collect_candidates(hits).values())
            cold.append((req, cands, COLD_SUFFIX))
            # asked inside its own databases too: there no candidate has a past request at all, a
            # list the library-wide copy never shows (its other databases' tables keep theirs)
            in_scope = scope is None and settings.matching.cold_history_in_scope
            own = recall_matcher.held_scope(req.business, sorted(databases)) if in_scope else None
            if own is not None:
                hits = recall_matcher.recall(
                    req.business, req.text, leave_own_out=True, unused_tables=unused, databases=own
                )
                scoped = list(collect_candidates(hits).values())
                if {c.asset_id for c in scoped} != {c.asset_id for c in cands}:
                    cold.append((req, scoped, COLD_IN_SCOPE_SUFFIX))
    # the cold copies last: the first len(recalled) are as serving recalls
    lists = [*recalled, *((req, cands) for req, cands, _ in cold)]
    suffixes = [""] * len(recalled) + [suffix for _, _, suffix in cold]
    stored = point_in_time_features(builder.feature_provider, lists)
    groups = [
        training_group(builder, req, cands, features, suffix=suffix)
        for (req, cands), features, suffix in zip(lists, stored, suffixes)
    ]
    n_gold_recalled = sum(int(g.labels.sum()) for g in groups[: len(recalled)])
    t0 = time.perf_counter()
    context = builder.context if settings.matching.second_stage else None
    model, oof = fit_learned_fusion(groups, builder.feature_names, seed=seed, context=context)
    fit_s = time.perf_counter() - t0
    assert model.cv is not None
    log.info("coarse model chosen by CV: %s (%s) in %.1fs", model.cv.chosen, model.cv.scores, fit_s)
    if model.cv.second_scores:
        log.info(
            "second stage: %s (%s)",
            model.cv.second_chosen or "not kept (one stage ranks as well)",
            model.cv.second_scores,
        )

    # the fine rankers' lists: held out by request, as a learned database's requests are served
    t_fine = time.perf_counter()
    by_request = out_of_fold_by_request(groups, model, context)
    fine_oof_s = time.perf_counter() - t_fine
    examples = []
    synthetic_flags = []
    oof_lists: dict[str, tuple[list[str], list[float]]] = {}
    depth = settings.recall.candidates
    for i, (grp, scores, (req, _)) in enumerate(zip(groups, oof, lists)):
        order = np.argsort(-scores, kind="stable")
        ids = [grp.asset_ids[j] for j in order]
        ranked = scored_tables(
            ids, scores[order].tolist(), builder.group_of, builder.request_terms(req.text, ids)
        )
        examples.append(CalibrationExample(ranked, set(req.gold_assets)))
        synthetic_flags.append(is_synthetic(req))
        if is_synthetic(req) or i >= len(recalled):
            continue  # fine rankers train on labelled requirements only, as serving recalls them
        fine = scores if by_request is None else by_request[i]
        top = np.argsort(-fine, kind="stable")[:depth]
        oof_lists[oof_key(req.business, req.text, scopes[i])] = (
            [grp.asset_ids[j] for j in top],
            [float(fine[j]) for j in top],
        )
    picked = random.Random(seed).sample(range(len(examples)), min(len(examples), CALIBRATION_MAX))
    examples = [examples[i] for i in picked]
    t1 = time.perf_counter()
    params, calibration = calibrate(examples, builder.linked, objective=settings.matching.selection_objective)
    calibrate_s = time.perf_counter() - t1
    set_model, set_report = None, None
    if settings.matching.set_model:
        t2 = time.perf_counter()
        # what real requests need together is what it learns: a synthetic requirement's set is
        # whatever its template drew (one table, or a table and a neighbour)
        labelled = [j for j, i in enumerate(picked) if not synthetic_flags[i]]
        set_model, set_report = fit_set_model(
            [examples[j] for j in labelled],
            builder.linked,
            params,
            cv_groups_of([groups[picked[j]] for j in labelled]),
            settings.matching.selection_objective,
        )
        set_report["fit_s"] = round(time.perf_counter() - t2, 1)
        log.info("set model %s: %s", "kept" if set_model else "not kept", set_report)
    assert model.cv is not None
    model.trained_on = trained_on
    report = {
        "trained": True,
        "trained_on": trained_on,
        **counts,
        "n_train_requirements": len(train),
        "n_cold_history": sum(suffix == COLD_SUFFIX for _, _, suffix in cold),
        "n_cold_history_in_scope": sum(suffix == COLD_IN_SCOPE_SUFFIX for _, _, suffix in cold),
        "train_gold_recall": n_gold_recalled / max(sum(g.n_gold for g in groups[: len(recalled)]), 1),
        "cv_scores_all_gold_at_5": model.cv.scores,
        "cv_chosen": model.cv.chosen,
        "cv_second_stage": model.cv.second_chosen,
        "cv_second_stage_scores": model.cv.second_scores,
        "cv_folds": model.cv.folds,
        "fit_s": fit_s,
        "fine_lists_held_out_by": "request" if by_request is not None else "the coarse model's folds",
        "fine_lists_s": round(fine_oof_s, 1),
        "selection": calibration.__dict__,
        "calibrate_s": calibrate_s,
        "set_model": set_report,
    }
    return FitResult(model, params, report, oof_lists, set_model)


def coarse_model_name(report: Mapping[str, Any]) -> str:
    """What a fit report says was fitted, in one phrase ("hgb_lr0.05_leaves31 + second stage logreg_C1.0";
    "rrf" when nothing was)."""
    name = str(report.get("cv_chosen") or "rrf")
    second = report.get("cv_second_stage")
    return f"{name} + second stage {second}" if second else name


def selection_summary(report: Mapping[str, Any]) -> str:
    """What a fit report says selects the set, in one phrase (with the set model's CV against the rules)."""
    got = report.get("set_model")
    if not got:
        return "set selection: calibrated rules"
    if "cv_set_f1" not in got:
        return f"set selection: calibrated rules (set model not fitted: {got.get('why')})"
    scores = (
        f"CV set F1 / exact {got['cv_set_f1']:.3f} / {got['cv_set_exact']:.3f}, "
        f"rules {got['rules_set_f1']:.3f} / {got['rules_set_exact']:.3f}"
    )
    if got.get("kept"):
        return f"set selection: learned set model ({scores})"
    return f"set selection: calibrated rules (set model not kept: {scores})"


def save_fit(fit: FitResult, folder: Path) -> None:
    """Publish the fitted coarse model and selection parameters where `Matcher.from_settings` finds them."""
    folder.mkdir(parents=True, exist_ok=True)
    if fit.coarse is not None:
        fit.coarse.save(folder / COARSE_FILE)
    set_model = fit.set_model.to_dict() if fit.set_model is not None else None
    save_selection(fit.selection, None, folder / SELECTION_FILE, set_model)
    write_oof(fit.oof, folder / OOF_FILE)
