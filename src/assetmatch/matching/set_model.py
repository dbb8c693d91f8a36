"""Learned set selection: score whole candidate sets instead of walking the ranked list table by table.

The rules of `matching.selection` decide each table on its own as they walk the ranked list: its
score against a threshold, whether it joins a selected table, whether it adds a request term. Two
tables that both match ("Templates" and "Ref_Template_Types" for a question about templates) are
decided one after the other, never as the pair they would be. The set model looks at the sets:

1. **Candidates**: every subset of up to `max_tables` of the top `depth` ranked tables whose tables lie
   in one group (database: a requirement's tables live together).
2. **Features** (`SET_FEATURES`): the set's size; its members' scores and the best score left out (the
   likelihood of the set if the scores were independent); ranks; how many join-graph components it
   makes; the request terms it covers and leaves uncovered; members that add no term of their own and
   whether they bridge two others; whether a request term sits only in a member's foreign key to a
   table left out (a fact table's `channel_id` "渠道ID" for "各渠道…", `dim_channel` not in the set:
   the word is covered, the attribute is not); and what the calibrated rules answer (the set equals,
   holds or is held by the rules' set).
3. **Scoring**: two linear models over the standardised features, a logistic regression for P(set is the
   gold set) and a ridge regression for the set's F1; the answer is the set with the highest
   P(exact) + expected F1 (the two terms of the `f1_exact` objective). Linear, so `assetmatch match`
   applies it with numpy alone: the weights are stored in `selection.json` beside the rules.

`fit_set_model` fits both on the out-of-fold ranked lists the rules are calibrated on (the labelled
requirements' only: `matching.fit`), and keeps the model only when its score, cross-validated on the
coarse model's groups (the database; the request where all share one database), beats the rules'
*in-sample* score (which flatters the rules) by more than half a requirement. On 1,506 Spider
`train` lists (union of 876 tables, with usage history) it did: database-grouped CV set F1 / exact
0.728 / 0.614 against the rules' 0.711 / 0.566 calibrated out of fold the same way (0.713 / 0.576 in
sample). Without a usage history (`assetmatch eval`, the 4-business split) it was not kept at first;
fitted inside the requester's scope (`eval --scope database`) it was (CV 0.902 / 0.742 against the
rules' 0.893 / 0.725), and on a later unscoped `eval` fit too, by a hair (0.704 / 0.578 against 0.696 /
0.563).

Scores are clipped to (0, 1): the set model reads calibrated coarse probabilities (`LearnedFusion`);
an untrained matcher (RRF scores) has no set model.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from assetmatch.matching.selection import (
    CalibrationExample,
    Neighbors,
    ScoredTable,
    Selection,
    SelectionParams,
    SetSelector,
    load_selection,
    set_scores,
)
from assetmatch.recall.tokenize import has_cjk
from assetmatch.types import SELECTION_OBJECTIVES, SelectionObjective

DEPTH = 6  # candidate sets are drawn from the top DEPTH ranked tables (CV on Spider train: 5 / 6 / 8 tables)
MAX_TABLES = 4
_EPS = 1e-4

SET_FEATURES = (
    "size",
    "size_1",
    "size_2",
    "size_3",
    "log_p_members",  # sum of log(score) over the set
    "log_not_p_others",  # sum of log(1 - score) over the top tables left out
    "min_p_member",
    "max_p_other",
    "p_margin",  # min_p_member - max_p_other
    "worst_rank",
    "has_top",
    "is_prefix",
    "components",  # join-graph components among the members
    "in_top_group",
    "term_coverage",  # share of the request terms the top tables contain that the set contains
    "terms_uncovered",
    "terms_covered",
    "members_without_own_terms",  # members whose terms the others all contain
    "min_own_terms",
    "p_1",
    "p_2",
    "p_3",
    "request_terms",
    *(f"has_rank_{i}" for i in range(DEPTH)),
    "is_rules_set",
    "within_rules_set",
    "holds_rules_set",
    "rules_set_size",
    "addable_others",  # tables left out, of the set's group, that join it and add a term
    "no_new_terms",  # members (in rank order) adding no term the members before them contain
    "any_no_new_terms",
    "max_p_no_new_terms",
    "bridges",  # members without own terms that join two or more members
    "no_new_terms_not_bridge",
    "key_term_unjoined",  # a term members hold only in a key to a table outside the set, no member otherwise
    "key_term_joined",  # a term a member holds in a key to another member
)


def candidate_sets(top: Sequence[ScoredTable], max_tables: int = MAX_TABLES) -> list[tuple[int, ...]]:
    """Positions (in rank order) of every subset of `top` of 1..max_tables tables of one group."""
    found = []
    for size in range(1, min(max_tables, len(top)) + 1):
        for combo in itertools.combinations(range(len(top)), size):
            if all(top[i].group == top[combo[0]].group for i in combo):
                found.append(combo)
    return found


def features_of(
    top: Sequence[ScoredTable], combos: Sequence[Sequence[int]], rules_set: set[str], neighbors: Neighbors
) -> np.ndarray:
    """`SET_FEATURES` of every set of `combos` (positions in `top`, ascending), one row each.

    All sets of one list at once, as arrays over (set, table[, term]): `member[c, i]` says table i is
    in set c, `has[i, t]` that table i contains request term t. Written per set in Python this was a
    sixth of a demo build (calibration selects thousands of lists, ~56 sets each);
    `tests/unit/matching/test_set_model.py` keeps that per-set definition and checks every feature
    against it."""
    n, k = len(top), len(combos)
    member = np.zeros((k, n), dtype=bool)
    for c, combo in enumerate(combos):
        member[c, list(combo)] = True
    outside = ~member
    raw = np.array([t.score for t in top], dtype=float)
    p = np.clip(raw, _EPS, 1 - _EPS)
    ids = [t.asset_id for t in top]
    linked = np.zeros((n, n), dtype=bool)  # linked[i, j]: top[j] is a join-graph neighbour of top[i]
    for i, asset_id in enumerate(ids):
        near = neighbors(asset_id)
        linked[i] = [other in near for other in ids]
    vocabulary = sorted(frozenset().union(*(t.terms for t in top)))
    has = np.array([[term in t.terms for term in vocabulary] for t in top], dtype=bool).reshape(n, -1)
    groups = {g: i for i, g in enumerate(dict.fromkeys(t.group for t in top))}
    group = np.array([groups[t.group] for t in top])

    size = member.sum(axis=1)
    first = member.argmax(axis=1)
    last = n - 1 - member[:, ::-1].argmax(axis=1)
    set_group = group[first]
    # summed over members only, in rank order (the zeros added change no bit of the sum)
    log_p_members = np.where(member, np.log(p), 0.0).sum(axis=1)
    log_not_p_others = np.where(outside, np.log(1 - p), 0.0).sum(axis=1)
    min_p_member = np.where(member, p, np.inf).min(axis=1)
    best_other = np.where(outside.any(axis=1), np.where(outside, p, -np.inf).max(axis=1), 0.0)

    holders = member.astype(int) @ has.astype(int)  # [c, t]: members containing term t
    covered = holders > 0
    n_covered = covered.sum(axis=1)
    # own[c, i]: terms of table i no other member of set c contains (meaningful for members only)
    own = (holders == 1).astype(int) @ has.T.astype(int)
    no_link_to_self = linked & ~np.eye(n, dtype=bool)
    linked_members = member.astype(int) @ no_link_to_self.T.astype(int)  # [c, i]: members i links to
    own_of_members = np.where(member, own, np.iinfo(int).max)
    without_own = member & (own == 0)
    bridges = (without_own & (linked_members >= 2)).sum(axis=1)

    # terms of the members before table i, in rank order: [c, i, t]
    held = member[:, :, None] & has[None, :, :]
    so_far = np.cumsum(held, axis=1) - held > 0
    adds_nothing = member & so_far.any(axis=2) & ~(has[None, :, :] & ~so_far).any(axis=2)
    no_new = adds_nothing.sum(axis=1)
    p_no_new = np.where(adds_nothing, raw, -np.inf).max(axis=1, initial=-np.inf)
    p_no_new = np.where(no_new > 0, np.maximum(p_no_new, 0.0), 0.0)

    adds_a_term = (has[None, :, :] & ~covered[:, None, :]).any(axis=2)  # [c, i]
    joins_the_set = (member.astype(int) @ linked.T.astype(int)) > 0  # [c, i]: i links to a member
    addable = (outside & (group[None, :] == set_group[:, None]) & adds_a_term & joins_the_set).sum(axis=1)

    unjoined, joined = _key_terms(top, member)

    in_rules = np.array([a in rules_set for a in ids], dtype=bool)
    rules_inside_top = int(in_rules.sum()) == len(rules_set)
    within_rules = ~(member & ~in_rules).any(axis=1)
    holds_rules = ~(in_rules & outside).any(axis=1) & rules_inside_top
    n_terms = len(vocabulary)
    values: dict[str, Any] = {  # each feature: a value per set, or one for all the list's sets
        "size": size,
        "size_1": size == 1,
        "size_2": size == 2,
        "size_3": size == 3,
        "log_p_members": log_p_members,
        "log_not_p_others": log_not_p_others,
        "min_p_member": min_p_member,
        "max_p_other": best_other,
        "p_margin": min_p_member - best_other,
        "worst_rank": last,
        "has_top": member[:, 0],
        "is_prefix": last == size - 1,
        "components": _components(member, linked),
        "in_top_group": set_group == group[0],
        "term_coverage": n_covered / max(n_terms, 1),
        "terms_uncovered": n_terms - n_covered,
        "terms_covered": n_covered,
        "members_without_own_terms": without_own.sum(axis=1),
        "min_own_terms": own_of_members.min(axis=1),
        **{f"p_{i + 1}": p[i] if i < n else 0.0 for i in range(3)},
        "request_terms": n_terms,
        **{f"has_rank_{i}": member[:, i] if i < n else False for i in range(DEPTH)},
        "is_rules_set": within_rules & holds_rules,
        "within_rules_set": within_rules,
        "holds_rules_set": holds_rules,
        "rules_set_size": len(rules_set),
        "addable_others": addable,
        "no_new_terms": no_new,
        "any_no_new_terms": no_new > 0,
        "max_p_no_new_terms": p_no_new,
        "bridges": bridges,
        "no_new_terms_not_bridge": no_new - bridges,
        "key_term_unjoined": unjoined,
        "key_term_joined": joined,
    }
    out = np.empty((len(SET_FEATURES), k))
    for row, name in zip(out, SET_FEATURES, strict=True):
        row[:] = values[name]
    return out.T


def _key_terms(top: Sequence[ScoredTable], member: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per set (`member[c, i]`): does a request term sit only in a member's foreign key to a table
    outside the set, no member holding it otherwise ("渠道" in the fact table's `channel_id`,
    `dim_channel` left out); does a term sit in a member's key to another member (`dim_channel` in
    the set). Yes / no rather than counts: a Chinese word brings its English glosses along."""
    k = member.shape[0]
    vocabulary = sorted({term for t in top for term, _ in t.key_terms})
    if not vocabulary:
        return np.zeros(k, dtype=bool), np.zeros(k, dtype=bool)
    refs = sorted({ref for t in top for _, ref in t.key_terms})
    term_of = {term: i for i, term in enumerate(vocabulary)}
    ref_of = {ref: i for i, ref in enumerate(refs)}
    via = np.zeros((len(top), len(vocabulary), len(refs)), dtype=bool)  # [i, t, r]: i holds t in a key to r
    direct = np.zeros((len(top), len(vocabulary)), dtype=bool)  # [i, t]: i holds t elsewhere
    for i, t in enumerate(top):
        key_only = set()
        for term, ref in t.key_terms:
            via[i, term_of[term], ref_of[ref]] = True
            key_only.add(term)
        direct[i] = [term in t.terms and term not in key_only for term in vocabulary]
    position = {t.asset_id: i for i, t in enumerate(top)}
    ref_member = np.zeros((k, len(refs)), dtype=bool)  # [c, r]: r is a member of set c
    for r, ref in enumerate(refs):
        if ref in position:
            ref_member[:, r] = member[:, position[ref]]
    held: np.ndarray = member[:, :, None, None] & via[None, :, :, :]  # [c, i, t, r]
    to_outside = np.any(held & ~ref_member[:, None, None, :], axis=(1, 3))  # [c, t]
    to_member = np.any(held & ref_member[:, None, None, :], axis=(1, 2, 3))  # [c]
    covered = (member.astype(int) @ direct.astype(int)) > 0
    return np.any(to_outside & ~covered, axis=1), to_member


def _components(member: np.ndarray, linked: np.ndarray) -> np.ndarray:
    """Join-graph components among each set's members (`member[c, i]`; either direction of `linked`
    joins): a member counts when no member of a lower rank is reachable from it."""
    n = member.shape[1]
    pair = member[:, :, None] & member[:, None, :]
    edges = ((linked | linked.T)[None, :, :] & pair).astype(np.float32)
    reach = np.minimum(edges + (np.eye(n, dtype=bool)[None, :, :] & pair), 1.0)
    for _ in range(max(int(member.sum(axis=1).max(initial=0)) - 2, 0)):  # paths of up to size - 1 steps
        reach = np.minimum(reach + reach @ edges, 1.0)
    lowest_reached = (reach > 0).argmax(axis=2)  # reach[c, i, i] holds for members: lowest <= i
    return (member & (lowest_reached == np.arange(n)[None, :])).sum(axis=1)


@dataclass
class SetModel:
    """P(exact) = sigmoid(w_exact . z + b_exact), expected F1 = w_f1 . z + b_f1, z the standardised
    `SET_FEATURES`. `cv` records how it was kept (see `fit_set_model`)."""

    mean: list[float]
    scale: list[float]
    w_exact: list[float]
    b_exact: float
    w_f1: list[float]
    b_f1: float
    depth: int = DEPTH
    max_tables: int = MAX_TABLES
    cv: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(SET_FEATURES)
        for name in ("mean", "scale", "w_exact", "w_f1"):
            if len(getattr(self, name)) != n:
                raise ValueError(
                    f"set model {name} has {len(getattr(self, name))} values; this version reads {n} "
                    "(SET_FEATURES): refit the coarse model (`assetmatch index build`)"
                )

    def scores(self, features: np.ndarray) -> np.ndarray:
        """P(exact) + expected F1 of each row of `features`."""
        z = (features - np.asarray(self.mean)) / np.asarray(self.scale)
        exact = 1.0 / (1.0 + np.exp(-np.clip(z @ np.asarray(self.w_exact) + self.b_exact, -60, 60)))
        return exact + z @ np.asarray(self.w_f1) + self.b_f1

    def to_dict(self) -> dict[str, Any]:
        return {"features": list(SET_FEATURES), **asdict(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SetModel:
        names = data.get("features")
        if names is not None and list(names) != list(SET_FEATURES):
            raise ValueError(
                "the set model was fitted on other features than this version computes: "
                "refit the coarse model (`assetmatch index build`)"
            )
        return cls(**{k: v for k, v in data.items() if k != "features"})


class LearnedSetSelector(SetSelector):
    """The set model's choice among the candidate sets; the rules (`params`) answer a list too short to
    choose from, and their set is one of the model's features."""

    def __init__(self, params: SelectionParams, model: SetModel) -> None:
        super().__init__(params)
        self.model = model

    def select(self, ranked: Sequence[ScoredTable], neighbors: Neighbors | None = None) -> Selection:
        rules = super().select(ranked, neighbors)
        if len(ranked) < 2:
            return rules
        neigh: Neighbors = neighbors or (lambda _a: ())
        top = list(ranked[: self.model.depth])
        combos = candidate_sets(top, self.model.max_tables)
        rules_set = set(rules.asset_ids)
        scores = self.model.scores(features_of(top, combos, rules_set, neigh))
        best = int(np.argmax(scores))  # ties: the first, i.e. the smaller set
        chosen = [top[i].asset_id for i in combos[best]]
        why = f"set model: best of {len(combos)} candidate sets (P(exact) + expected F1 {scores[best]:.2f})"
        reasons = {a: rules.reasons.get(a, why) for a in chosen}
        for table in (top[i] for i in combos[best]):  # say which member's key a table describes
            for ref, terms in _held_in_keys(table, chosen).items():
                reasons[ref] += f"; describes {', '.join(terms)}, which {table.asset_id} holds only as a key"
        return Selection(chosen, reasons)


def _held_in_keys(table: ScoredTable, chosen: Sequence[str]) -> dict[str, list[str]]:
    """Chosen tables that `table`'s foreign keys reference, with the request terms `table` holds only
    in those keys (what `--explain` shows beside a dimension table). A Chinese word's English glosses
    are terms too; where the request's own Chinese words are there, they are shown alone."""
    out: dict[str, list[str]] = {}
    for term, ref in sorted(table.key_terms):
        if ref in chosen:
            out.setdefault(ref, []).append(term)
    return {ref: [t for t in terms if has_cjk(t)] or terms for ref, terms in out.items()}


def _objective(f1: float, exact: float, objective: SelectionObjective) -> float:
    return f1 + exact if objective == "f1_exact" else f1 + 1e-6 * exact


def fit_set_model(
    examples: Sequence[CalibrationExample],
    neighbors: Neighbors,
    params: SelectionParams,
    cv_groups: Sequence[str],
    objective: SelectionObjective = SELECTION_OBJECTIVES[0],
    folds: int = 5,
) -> tuple[SetModel | None, dict[str, Any]]:
    """Fit the set model on `examples` (out-of-fold ranked lists with gold sets) and keep it when its
    cross-validated score beats the rules (`params`, calibrated on all of `examples`) by more than
    half a requirement. `cv_groups`: each example's cross-validation group, the coarse model's
    (`fusion.cv_groups_of`: the database, or the request's text where all share one database).
    Returns (model or None, report)."""
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.model_selection import GroupKFold

    if len(cv_groups) != len(examples):
        raise ValueError(f"{len(examples)} examples but {len(cv_groups)} cross-validation groups")
    kept = [i for i, ex in enumerate(examples) if len(ex.ranked) >= 2 and ex.gold]
    usable = [examples[i] for i in kept]
    groups = [cv_groups[i] for i in kept]
    n, n_groups = len(usable), len(set(groups))
    report: dict[str, Any] = {"n_requirements": n, "kept": False}
    if n < 2 * folds or n_groups < 2:
        report["why"] = f"too few requirements ({n}) or groups of them ({n_groups}) to cross-validate"
        return None, report
    rules = SetSelector(params)
    blocks: list[np.ndarray] = []
    f1s: list[float] = []
    exacts: list[float] = []
    spans: list[tuple[int, int]] = []  # each example's rows
    rules_f1 = rules_exact = 0.0
    for ex in usable:
        answer = set(rules.select(ex.ranked, neighbors).asset_ids)
        got = set_scores(answer, ex.gold)
        rules_f1 += got.f1
        rules_exact += got.exact
        top = ex.ranked[:DEPTH]
        combos = candidate_sets(top)
        blocks.append(features_of(top, combos, answer, neighbors))
        for combo in combos:
            scored = set_scores([top[i].asset_id for i in combo], ex.gold)
            f1s.append(scored.f1)
            exacts.append(scored.exact)
        spans.append((len(f1s) - len(combos), len(f1s)))
    x = np.vstack(blocks)
    f1 = np.asarray(f1s)
    exact = np.asarray(exacts)
    rows_of = np.repeat(np.arange(n), [end - start for start, end in spans])

    def fit(mask: np.ndarray) -> SetModel:
        mean = x[mask].mean(axis=0)
        scale = x[mask].std(axis=0)
        scale[scale == 0] = 1.0
        z = (x[mask] - mean) / scale
        w_f1 = Ridge(alpha=1.0).fit(z, f1[mask])
        if exact[mask].min() == exact[mask].max():  # no exact set anywhere: nothing to learn
            w_exact, b_exact = np.zeros(x.shape[1]), -60.0
        else:
            clf = LogisticRegression(C=1.0, max_iter=2000).fit(z, exact[mask])
            w_exact, b_exact = clf.coef_[0], float(clf.intercept_[0])
        return SetModel(
            mean.tolist(), scale.tolist(), list(map(float, w_exact)), b_exact,
            list(map(float, w_f1.coef_)), float(w_f1.intercept_),
        )  # fmt: skip

    cv_f1 = cv_exact = 0.0
    splits = GroupKFold(n_splits=min(folds, n_groups)).split(np.arange(n), groups=groups)
    for train_idx, held_idx in splits:
        model = fit(np.isin(rows_of, train_idx))
        for e in held_idx:
            start, end = spans[e]
            pick = start + int(np.argmax(model.scores(x[start:end])))
            cv_f1 += f1[pick]
            cv_exact += exact[pick]
    report.update(
        cv_set_f1=round(float(cv_f1) / n, 4),
        cv_set_exact=round(float(cv_exact) / n, 4),
        rules_set_f1=round(rules_f1 / n, 4),
        rules_set_exact=round(rules_exact / n, 4),
        folds=min(folds, n_groups),
    )
    gain = _objective(cv_f1, cv_exact, objective) - _objective(rules_f1, rules_exact, objective)
    if gain <= 0.5:
        report["why"] = "the rules select as well (cross-validated set model within half a requirement)"
        return None, report
    model = fit(np.ones(len(rows_of), dtype=bool))
    report["kept"] = True
    model.cv = dict(report)
    return model, report


def load_selector(path: str | Path) -> SetSelector:
    """The published selection (`selection.json`): the rules, and the set model when one was kept."""
    params = load_selection(path)
    data = json.loads(Path(path).read_text(encoding="utf-8")).get("set_model")
    if not data:
        return SetSelector(params)
    try:
        model = SetModel.from_dict(data)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: the set model it holds cannot be read: {exc}") from exc
    return LearnedSetSelector(params, model)
