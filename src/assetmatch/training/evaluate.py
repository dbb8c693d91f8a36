"""Evaluation of a ranker on labelled requirements: ranked-list and selected-set metrics.

Per requirement (kept as vectors, so the A/B gate can pair them): all-gold@k (1 when every gold
table is in the top k), set F1 and set exact-match of the selected set, reciprocal rank, and the
fine-ranking latency. Coarse-only ranking (the candidate order, no fine ranker) is evaluated the
same way and is the baseline the first adapter must beat.

Every arm answers a validation requirement the way the Matcher would (`Judged` holds what it
needs: the production coarse answer and the adapter's logits of its top candidates):
- coarse-only: the coarse order and the coarse selection (`coarse_ranked`);
- fine: the business's `FineCalibration` — cascade, fusion with the coarse scores, selection on
  fused probabilities (rules calibrated on them, or the coarse set model reading them:
  `fine_ranked`), fitted by `calibrate` on validation data.
(`calibrate_threshold` picks a threshold on fused scores for the validation curve's quick points.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, TypeVar

import numpy as np

from assetmatch.matching.fine import (
    Cascade,
    CoarseAnswer,
    FineCalibration,
    Fusion,
    coarse_margin,
    rerank,
    same_top,
    scored_tables,
)
from assetmatch.matching.selection import CalibrationExample, Objective, SelectionParams, SetSelector
from assetmatch.matching.selection import calibrate as calibrate_selection
from assetmatch.matching.set_model import LearnedSetSelector
from assetmatch.training.pairs import LabelledRequirement
from assetmatch.types import SELECTION_OBJECTIVES

KS = (1, 3, 5)
T = TypeVar("T")
Cost = TypeVar("Cost", float, tuple[float, ...])


def set_f1(selected: Iterable[str], gold: Iterable[str]) -> float:
    s, g = set(selected), set(gold)
    if not s or not g:
        return 0.0
    tp = len(s & g)
    return 0.0 if tp == 0 else 2 * tp / (len(s) + len(g))


def select_by_threshold(ranked: Sequence[str], probs: Sequence[float], threshold: float) -> list[str]:
    """Top-1 always, then every table whose probability reaches `threshold`, in rank order."""
    if not ranked:
        return []
    return [ranked[0]] + [a for a, p in zip(ranked[1:], probs[1:]) if p >= threshold]


@dataclass
class Ranked:
    """One requirement's ranked candidates (best first) with fine probabilities (None: coarse only)."""

    requirement: LabelledRequirement
    ranked: list[str]
    probs: list[float] | None
    latency_ms: float
    selected: list[str] | None = None  # the answer's set when the arm selected it itself
    fine_depth: int = 0  # tables the fine ranker scored (0: coarse answer)


@dataclass
class EvalReport:
    """Per-requirement vectors and their means; `to_dict` is what goes to MLflow."""

    name: str
    ids: list[str]
    f1: list[float]
    exact: list[float]
    all_gold: dict[int, list[float]]
    rr: list[float]
    latency_ms: list[float]
    threshold: float | None = None
    top_n: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def means(self) -> dict[str, float]:
        out = {
            "set_f1": float(np.mean(self.f1)) if self.f1 else 0.0,
            "set_exact": float(np.mean(self.exact)) if self.exact else 0.0,
            "mrr": float(np.mean(self.rr)) if self.rr else 0.0,
            "latency_ms_mean": float(np.mean(self.latency_ms)) if self.latency_ms else 0.0,
            "latency_ms_p95": float(np.percentile(self.latency_ms, 95)) if self.latency_ms else 0.0,
        }
        for k, v in self.all_gold.items():
            out[f"all_gold_at_{k}"] = float(np.mean(v)) if v else 0.0
        return out

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["all_gold"] = {str(k): v for k, v in self.all_gold.items()}
        data["means"] = self.means()
        return data


def _selected(r: Ranked, threshold: float | None, top_n: int | None) -> list[str]:
    if r.selected is not None:
        return r.selected
    if r.probs is not None and threshold is not None:
        return select_by_threshold(r.ranked, r.probs, threshold)
    return r.ranked[: top_n or 1]


def report(
    name: str, ranked: Sequence[Ranked], threshold: float | None = None, top_n: int | None = None
) -> EvalReport:
    rep = EvalReport(name, [], [], [], {k: [] for k in KS}, [], [], threshold, top_n)
    for r in ranked:
        gold = set(r.requirement.gold)
        sel = _selected(r, threshold, top_n)
        rep.ids.append(r.requirement.id)
        rep.f1.append(set_f1(sel, gold))
        rep.exact.append(1.0 if set(sel) == gold else 0.0)
        for k in KS:
            rep.all_gold[k].append(1.0 if gold <= set(r.ranked[:k]) else 0.0)
        first = next((i for i, a in enumerate(r.ranked) if a in gold), None)
        rep.rr.append(0.0 if first is None else 1.0 / (first + 1))
        rep.latency_ms.append(r.latency_ms)
    if ranked:
        rep.extra["fine_share"] = float(np.mean([r.fine_depth > 0 for r in ranked]))
        rep.extra["fine_pairs_mean"] = float(np.mean([r.fine_depth for r in ranked]))
    return rep


def calibrate_threshold(ranked: Sequence[Ranked]) -> float:
    """The probability threshold with the best mean set F1 (ties: the higher threshold)."""
    grid = np.round(np.linspace(0.05, 0.95, 19), 2)
    best, best_f1 = 0.5, -1.0
    for t in grid[::-1]:
        f1 = (
            float(np.mean([set_f1(_selected(r, float(t), None), r.requirement.gold) for r in ranked]))
            if ranked
            else 0
        )
        if f1 > best_f1 + 1e-12:
            best, best_f1 = float(t), f1
    return best


def plot_reports(reports: Sequence[EvalReport], path: str) -> str:
    """Bar chart of the main metrics of several reports (saved as PNG; logged with the run)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = ["all_gold_at_1", "all_gold_at_3", "all_gold_at_5", "set_f1", "set_exact", "mrr"]
    fig, ax = plt.subplots(figsize=(8, 3.5))
    width = 0.8 / max(1, len(reports))
    for i, rep in enumerate(reports):
        means = rep.means()
        ax.bar(
            [m + i * width for m in range(len(metrics))], [means[m] for m in metrics], width, label=rep.name
        )
    ax.set_xticks([m + width * (len(reports) - 1) / 2 for m in range(len(metrics))], metrics, fontsize=8)
    return _save(fig, ax, path)


def _save(fig: Any, ax: Any, path: str) -> str:
    """Metrics live in [0, 1]: one axis range, a small legend, a PNG written and the figure closed."""
    import matplotlib.pyplot as plt

    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# ---- the production path: coarse answer + adapter logits -> cascade, fusion, selection ---------


@dataclass
class Judged:
    """One validation requirement with everything any arm needs to answer it."""

    requirement: LabelledRequirement
    coarse: CoarseAnswer
    logits: list[float]  # the adapter's logits of coarse.ids[: len(logits)]
    latency_ms: float  # time to score those len(logits) pairs
    coarse_offset: float = 0.0  # the adapter's `RankerConfig.coarse_offset` (its fusion's)
    key: str = ""  # what the adapter read for these logits (`recorded.list_key`; "": coarse-only)

    def gold_flags(self, n: int | None = None) -> list[bool]:
        ids = self.coarse.ids[: len(self.logits) if n is None else n]
        return [a in self.requirement.gold for a in ids]


@dataclass
class Context:
    """What selection needs beyond scores: joins, table groups, and the coarse selection rules."""

    neighbors: Callable[[str], Any]
    group_of: Callable[[str], str]
    coarse_selector: SetSelector
    # what selection on fused scores maximises: the coarse selection's objective
    objective: Objective = SELECTION_OBJECTIVES[0]


def coarse_ranked(j: Judged) -> Ranked:
    return Ranked(j.requirement, list(j.coarse.ids), None, 0.0, selected=list(j.coarse.selected))


def fine_ranked(j: Judged, calibration: FineCalibration, ctx: Context, cap: int | None = None) -> Ranked:
    """The Matcher's answer with this calibration: coarse when the cascade skips, else fused."""
    return answer_at(j, calibration, ctx, fine_depth(j, calibration, cap))


def fine_depth(j: Judged, calibration: FineCalibration, cap: int | None = None) -> int:
    """How many of the coarse top tables this calibration's cascade fine-ranks (0: none)."""
    cap = min(cap or len(j.logits), len(j.logits))
    return calibration.cascade.depth_for(
        j.coarse.ids, j.coarse.scores, j.coarse.selected, calibration.familiar, cap
    )


def answer_at(j: Judged, calibration: FineCalibration, ctx: Context, depth: int) -> Ranked:
    """`fine_ranked`'s answer once the cascade chose `depth`: from there on, the answer depends on
    the calibration's fusion and selection, not on its cascade (`calibrate` relies on that)."""
    if depth == 0:
        return coarse_ranked(j)
    ids, scores = j.coarse.ids, j.coarse.scores
    answer = rerank(ids, scores, j.logits[:depth], calibration.fusion)
    if calibration.keeps_coarse_set(ids, answer.ids):  # as the Matcher: the coarse set, not selected again
        selected = list(j.coarse.selected)
    else:
        selected = (
            calibration.selector(ctx.coarse_selector)
            .select(scored_tables(answer.ids, answer.scores, ctx.group_of, j.coarse.terms), ctx.neighbors)
            .asset_ids
        )
    latency = j.latency_ms * depth / max(len(j.logits), 1)
    return Ranked(j.requirement, answer.ids, answer.scores, latency, selected=selected, fine_depth=depth)


def coarse_set_kept(j: Judged, ranked: Ranked) -> Ranked:
    """A fine answer as `FineCalibration.keep_coarse_set` would have given it: the coarse selection's
    set where its fine ranking kept the coarse top table (the ranking stays the fine one). Derives
    the kept-set answer from a fused-set one (calibration tries both without answering twice)."""
    if ranked.fine_depth and same_top(j.coarse.ids, ranked.ranked):
        return replace(ranked, selected=list(j.coarse.selected))
    return ranked


def quality_per_requirement(ranked: Sequence[Ranked], k: int = 3) -> np.ndarray:
    """all-gold@k + set F1 of each requirement (the gate's two metrics), in the order given."""
    if not ranked:
        return np.zeros(0)
    rep = report("q", ranked)
    return np.asarray(rep.all_gold[k]) + np.asarray(rep.f1)


def quality(ranked: Sequence[Ranked], k: int = 3) -> float:
    """What calibration maximises: mean all-gold@k + mean set F1."""
    q = quality_per_requirement(ranked, k)
    return float(q.mean()) if q.size else 0.0


def cheapest_within_one_se(tried: Sequence[tuple[np.ndarray, Cost]], tolerance: float = 0.005) -> int:
    """Index of the cheapest of the `tried` (per-requirement quality, cost) whose mean quality is
    within one standard error of the best one's — the "one-standard-error rule" of model selection
    (Breiman et al., CART): on a few dozen validation requirements, a rule that looks better by less
    than its own noise is not evidence for paying its cost. The standard error is that of the paired
    per-requirement differences to the best; never below `tolerance`. A cost is a number or a tuple
    of numbers (compared in order: the first that differs decides). Ties: the better quality."""
    means = [float(q.mean()) if q.size else 0.0 for q, _ in tried]
    best = int(np.argmax(means))
    eligible = []
    for i, (q, cost) in enumerate(tried):
        diff = tried[best][0] - q
        se = float(diff.std(ddof=1) / np.sqrt(diff.size)) if diff.size > 1 else 0.0
        if means[best] - means[i] <= max(tolerance, se):
            eligible.append((cost, -means[i], i))
    return min(eligible)[2]


def fit_fusion(judged: Sequence[Judged]) -> Fusion:
    """The fusion of one adapter's logits with the coarse scores, fitted on its judged lists."""
    offsets = {j.coarse_offset for j in judged}
    if len(offsets) > 1:
        raise ValueError(f"judged lists of one adapter carry different coarse offsets: {sorted(offsets)}")
    lists = [(j.logits, j.coarse.scores[: len(j.logits)], j.gold_flags()) for j in judged]
    return Fusion.fit(lists, coarse_offset=offsets.pop() if offsets else 0.0)


def curve_point(judged: Sequence[Judged], ctx: Context) -> dict[str, float]:
    """One point of the validation curve: all-gold@3 and set F1 of the adapter's fused ranking, with
    a quickly fitted fusion and threshold (the full calibration runs once, after training)."""
    fusion = fit_fusion(judged)
    ranked = []
    for j in judged:
        answer = rerank(j.coarse.ids, j.coarse.scores, j.logits, fusion)
        ranked.append(Ranked(j.requirement, answer.ids, answer.scores, 0.0))
    rep = report("curve", ranked, threshold=calibrate_threshold(ranked))
    means = rep.means()
    return {"all_gold_at_3": means["all_gold_at_3"], "set_f1": means["set_f1"], "mrr": means["mrr"]}


def plot_curve(curve: Sequence[dict[str, float]], best_step: int, path: str) -> str:
    """The validation curve (metrics vs training steps) with the kept checkpoint marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2))
    steps = [p["step"] for p in curve]
    for name in ("all_gold_at_3", "set_f1", "mrr"):
        ax.plot(steps, [p.get(name, 0.0) for p in curve], marker="o", label=name)
    ax.axvline(best_step, color="grey", linestyle="--", label=f"kept (step {best_step})")
    ax.set_xlabel("training step")
    if any("loss" in p for p in curve):  # the validation loss is not in [0, 1]: an axis of its own
        right = ax.twinx()
        right.plot(steps, [p.get("loss", float("nan")) for p in curve], color="black", marker="x")
        right.set_ylabel("validation loss (x)", fontsize=8)
    return _save(fig, ax, path)


def selection_grid() -> dict[str, Sequence[object]]:
    """Selection rules searched on fused probabilities (smaller than the coarse grid: validation
    sets are a few hundred requirements at most)."""
    return {
        "min_score": [float(t) for t in np.round(np.linspace(0.05, 0.95, 19), 2)],
        "rel_ratio": [0.0, 0.4],
        "max_tables": [3, 4],
        "same_group": [True, False],
        "fk_closure": [True, False],
        "min_new_terms": [0, 1],
    }


def fold_assignment(n: int, folds: int, seed: int) -> np.ndarray:
    """Fold of each of `n` requirements: a seeded shuffle dealt into `folds` folds; with fewer than
    2 x `folds` requirements, one fold per requirement (leave-one-out)."""
    k = folds if n >= 2 * folds else n
    fold_of = np.empty(n, dtype=int)
    fold_of[np.random.default_rng(seed).permutation(n)] = np.arange(n) % k
    return fold_of


def _fit_per_fold(judged: Sequence[Judged], fold_of: np.ndarray, fit: Callable[[list[Judged]], T]) -> list[T]:
    """For each requirement, what `fit` gives on the requirements of the *other* folds (one fit per
    fold, shared by its requirements)."""
    fitted = {
        f: fit([j for j, g in zip(judged, fold_of.tolist()) if g != f]) for f in sorted(set(fold_of.tolist()))
    }
    return [fitted[f] for f in fold_of.tolist()]


def _fit_scores(judged: Sequence[Judged], ctx: Context) -> tuple[Fusion, SelectionParams | None]:
    """The fusion of logits with coarse scores, and the selection rules on the fused probabilities."""
    fusion = fit_fusion(judged)
    examples = []
    for j in judged:
        answer = rerank(j.coarse.ids, j.coarse.scores, j.logits, fusion)
        examples.append(
            CalibrationExample(
                scored_tables(answer.ids, answer.scores, ctx.group_of, j.coarse.terms),
                set(j.requirement.gold),
            )
        )
    usable = [ex for ex in examples if ex.ranked and ex.gold]
    params = (
        calibrate_selection(usable, ctx.neighbors, selection_grid(), ctx.objective)[0] if usable else None
    )
    return fusion, params


def cascade_rules(judged: Sequence[Judged]) -> list[Cascade]:
    """The cascades calibration chooses from: "never", and every (margin cut, depth); the cuts are
    quantiles of the coarse margins of `judged` (no labels read). Every rule defers on tables of
    databases the adapter did not learn (`familiar_only`): that is not a choice validation can
    make — its requirements all come from learned databases, so it never meets the lists the rule
    protects, only noise. (Left to validation, one Spider union run chose not to defer and its
    adapter answered 92 % of `dev`, databases it never saw: set F1 0.496 -> 0.337.)"""
    margins = sorted(
        {
            round(m, 4)
            for j in judged
            if np.isfinite(m := coarse_margin(j.coarse.scores, len(j.coarse.selected)))
        }
    )
    cut_points = (
        [None] + [float(m) for m in np.quantile(margins, [0.2, 0.4, 0.6, 0.8])] if margins else [None]
    )
    max_depth = max(len(j.logits) for j in judged)
    depths = sorted({d for d in (3, 5, 8, 10, 15, 20, max_depth) if d <= max_depth})
    return [Cascade.never()] + [Cascade(cut, depth, True) for depth in depths for cut in cut_points]


def selection_modes(ctx: Context) -> list[bool]:
    """How fused probabilities may decide the set (`FineCalibration.set_model`): the rules calibrated
    on them (False), and the coarse stage's set model reading them (True) when it has one."""
    return [False, True] if isinstance(ctx.coarse_selector, LearnedSetSelector) else [False]


def calibrate(
    judged: Sequence[Judged],
    ctx: Context,
    familiar: frozenset[str] | None,
    tolerance: float = 0.005,
    folds: int = 5,
    seed: int = 0,
    share_answers: bool = True,
) -> FineCalibration:
    """Fit, on validation requirements: the fusion of logits with coarse scores, the selection rules
    on fused probabilities, then the cascade and how the set is selected. The cascade is the
    cheapest rule (fewest pairs scored) whose quality (all-gold@3 + set F1) is within one standard
    error of the best rule's (`cheapest_within_one_se`; never less than `tolerance`) — and "never"
    (the coarse answer) is one of the rules: an adapter that does not clearly beat the coarse
    ranking on validation is never asked, and one that does is asked no more often, nor about more
    tables, than its gain needs. Each rule is tried with each `selection_modes` (the calibrated
    rules, or the coarse set model on fused scores), and with the fused scores deciding the set
    everywhere or only where they change the top table (`FineCalibration.keep_coarse_set`: the
    coarse selection, fitted on every labelled requirement's list, keeps the set where the top table
    stays); at equal cost the better one is kept, and at equal depth the coarse set is kept unless
    the fused scores' set is more than a standard error better.

    Each rule is judged on cross-fitted answers: every requirement answered with the fusion and
    selection fitted on the other `folds` (as the A/B gate judges, `cross_fitted`). Judged on the
    fusion and selection fitted on the same requirements, the fine answer looks better than it
    serves (on Spider, by ~0.1 set F1), and the cascade chose to fine-rank where only that fit gained.

    `share_answers=False` answers every rule alone (the reference the sharing must agree with: tests
    and `benchmarks/fine_calibration.py`).
    """
    fusion, params = _fit_scores(judged, ctx)
    threshold = params.min_score if params else None
    if not judged:
        return FineCalibration(threshold, fusion, params, Cascade.always(), familiar)
    # one (fusion, selection) per fold, each requirement answered with its fold's
    fitted = _fit_per_fold(judged, fold_assignment(len(judged), folds, seed), lambda js: _fit_scores(js, ctx))
    rules = [c for c in cascade_rules(judged) if c != Cascade.never()]
    # "never" answers alike in every selection mode and set rule: tried once
    # cost: (mean depth, whether fused scores decide the set where the top table stays)
    options: list[tuple[Cascade, bool, bool]] = []
    tried: list[tuple[np.ndarray, tuple[float, ...]]] = []
    # Rules that differ only in their margin cut give a requirement the same answer wherever both
    # fine-rank it (`answer_at`): each (requirement, depth, selection mode) is answered once, not once
    # per rule. Fusing and selecting every rule's answers was most of a calibration's time, and an
    # adapter is calibrated 6 times in training (once, then once per fold of
    # `cross_fitted_calibrations`) and 5 more in the gate.
    answers: dict[tuple[int, int, bool], Ranked] = {}
    for cascade, mode in [
        (Cascade.never(), False),
        *((c, mode) for mode in selection_modes(ctx) for c in rules),
    ]:
        ranked = []
        for i, (j, (fu, p)) in enumerate(zip(judged, fitted)):
            calibration = FineCalibration(
                p.min_score if p else None, fu, p, cascade, familiar, set_model=mode
            )
            asked = fine_depth(j, calibration)
            key = (i, asked, mode and asked > 0)
            if key not in answers or not share_answers:
                answers[key] = answer_at(j, calibration, ctx, asked)
            ranked.append(answers[key])
        depth = float(np.mean([r.fine_depth for r in ranked]))
        options.append((cascade, mode, False))
        tried.append((quality_per_requirement(ranked), (depth, 1.0 if depth else 0.0)))
        if depth:  # the same answers with the coarse set kept where the top table stays
            # (derived, not answered again): at equal depth the simpler rule, kept unless the fused
            # scores' set everywhere is more than a standard error better
            options.append((cascade, mode, True))
            kept = [coarse_set_kept(j, r) for j, r in zip(judged, ranked)]
            tried.append((quality_per_requirement(kept), (depth, 0.0)))
    cascade, mode, keep = options[cheapest_within_one_se(tried, tolerance)]
    return FineCalibration(threshold, fusion, params, cascade, familiar, set_model=mode, keep_coarse_set=keep)


def cross_fitted_calibrations(
    judged: Sequence[Judged],
    ctx: Context,
    familiar: frozenset[str] | None,
    folds: int = 5,
    seed: int = 0,
    extra: Sequence[Judged] = (),
) -> list[FineCalibration]:
    """For each requirement, the calibration fitted on the *other* folds (cross-fitting).

    `calibrate` fits fusion, selection and cascade on validation requirements; answering those same
    requirements with it measures the fit, not the model (an adapter judged on what it was
    calibrated on looks better than it will serve). The A/B gate answers with these instead: the
    estimate is of a calibration fitted on requirements like these, applied to requirements it never
    saw — which is what the calibration fitted on all of them will meet in serving. Folds are a
    seeded shuffle; with fewer than 2 × `folds` requirements, one fold per requirement
    (leave-one-out; a lone requirement gets the calibration of no data, never its own). `extra`:
    more lists every fold's calibration is fitted on and that are never answered (another
    business's validation lists of the same adapter, say).
    """
    fold_of = fold_assignment(len(judged), folds, seed)
    return _fit_per_fold(judged, fold_of, lambda js: calibrate([*js, *extra], ctx, familiar))


def cross_fitted(
    judged: Sequence[Judged],
    ctx: Context,
    familiar: frozenset[str] | None,
    folds: int = 5,
    seed: int = 0,
    extra: Sequence[Judged] = (),
) -> list[Ranked]:
    """Every requirement answered with the calibration fitted on the other folds
    (`cross_fitted_calibrations`): what the A/B gate judges."""
    return answered(judged, cross_fitted_calibrations(judged, ctx, familiar, folds, seed, extra), ctx)


def answered(judged: Sequence[Judged], calibrations: Sequence[FineCalibration], ctx: Context) -> list[Ranked]:
    """Each requirement answered with its own calibration (the one at the same position)."""
    return [fine_ranked(j, c, ctx) for j, c in zip(judged, calibrations, strict=True)]
