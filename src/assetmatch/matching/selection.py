"""Set selection: decide how many of the ranked tables a requirement needs.

A Text2SQL model given one table too few invents columns; given one too many it may join it. So the
matcher returns a *selected set* next to the ranked list, chosen by a few transparent rules whose
parameters are calibrated on training requirements (grid search; `calibrate` maximises set F1 +
set exact-match by default, see `Objective`):

1. the top table is always selected (every requirement needs at least one table);
2. a further table is selected while its score is at least `min_score`, at least `rel_ratio` times the
   top score, and has not dropped by more than `max_gap` from the previous table (score gap rule),
   up to `max_tables`;
3. `same_group`: only tables of the top table's database (a requirement's tables live together);
4. `connected_only`: a further table must join (FK / co-usage neighbour) some already selected table;
5. `fk_closure`: if two selected tables do not join directly but a candidate bridge table joins both,
   the bridge is selected too (a many-to-many link table the query cannot do without);
6. `min_new_terms`: a further table must contain (in its name, comment or columns) at least this many
   of the request's terms that no table selected before it contains. Scores say how likely each table
   is to be needed on its own; two tables of one database that both match the request score alike
   even when the first already holds every column the request names, and the second would only be
   joined for nothing. (Bridges are exempt: a link table names nothing the request says.)

`top_k_selection` is the "always top-k" baseline the calibrated rules must beat.
"""

from __future__ import annotations

import functools
import itertools
import json
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from assetmatch.types import SELECTION_OBJECTIVES, SelectionObjective

Neighbors = Callable[[str], Collection[str]]

Objective = SelectionObjective
"""What selection calibration maximises. `f1_exact` (default): mean set F1 + mean set exact-match
(ties: set F1); `f1`: set F1 (ties: exact). A Text2SQL step needs the exact set, and F1 alone
prefers a rule that keeps a doubtful second table (half credit when it is wrong, full when it is
needed) over one that gets more sets exactly right: on out-of-fold lists of 1,992 Spider `train`
requirements (5 folds, calibrated on the other four) `f1_exact` answered with set F1 0.681 / exact
0.554 against 0.685 / 0.530."""


@dataclass(frozen=True)
class SetScores:
    """Selected set against the gold set, for one requirement."""

    precision: float
    recall: float
    f1: float
    exact: float


def set_scores(selected: Collection[str], gold: Collection[str]) -> SetScores:
    """Precision, recall, F1 and exact match of a selected set (an empty selection scores 0)."""
    gold_set = set(gold)
    if not gold_set:
        raise ValueError("a requirement with no gold tables cannot be scored")
    chosen = set(selected)
    hits = len(chosen & gold_set)
    precision = hits / len(chosen) if chosen else 0.0
    recall = hits / len(gold_set)
    f1 = 2 * precision * recall / (precision + recall) if hits else 0.0
    return SetScores(precision, recall, f1, float(chosen == gold_set))


class SelectionParams(BaseModel):
    """The selection rules' knobs (see the module docstring); fitted by `calibrate`."""

    model_config = ConfigDict(extra="forbid")

    min_score: float = Field(default=0.5, description="A table after the first needs at least this score.")
    rel_ratio: float = Field(
        default=0.0, ge=0, le=1, description="... and at least this share of the top score."
    )
    max_gap: float | None = Field(
        default=None, description="Stop at the first drop larger than this between consecutive scores."
    )
    max_tables: int = Field(default=4, gt=0, description="Most tables selected (before FK closure).")
    window: int = Field(default=10, gt=0, description="Only the first `window` ranked tables are considered.")
    same_group: bool = Field(default=True, description="Only tables of the top table's database/group.")
    connected_only: bool = Field(default=False, description="A further table must join a selected one.")
    fk_closure: bool = Field(default=True, description="Add a bridge table joining two selected tables.")
    min_new_terms: int = Field(
        default=0,
        ge=0,
        description="A further table must contain this many request terms no selected table contains (0: off).",
    )


@dataclass(frozen=True)
class ScoredTable:
    """What selection needs to know about one ranked table."""

    asset_id: str
    score: float
    group: str = ""
    terms: frozenset[str] = frozenset()  # the request's terms its name, comment or columns contain
    # (term, referenced asset id): request terms it contains only in a key to another table
    key_terms: frozenset[tuple[str, str]] = frozenset()


@dataclass(frozen=True)
class RequestTerms:
    """What selection reads of one request in each table (`FeatureBuilder.request_terms`), by asset
    id: the request's terms its name, comment or columns contain, and (term, referenced asset id) for
    those it contains only in a foreign-key column to another table."""

    contained: Mapping[str, frozenset[str]] = field(default_factory=dict)
    in_keys: Mapping[str, frozenset[tuple[str, str]]] = field(default_factory=dict)

    def of(self, asset_id: str) -> tuple[frozenset[str], frozenset[tuple[str, str]]]:
        return self.contained.get(asset_id, frozenset()), self.in_keys.get(asset_id, frozenset())

    def restricted(self, asset_ids: Collection[str]) -> RequestTerms:
        """The same, for `asset_ids` only."""
        return RequestTerms(
            {a: t for a, t in self.contained.items() if a in asset_ids},
            {a: t for a, t in self.in_keys.items() if a in asset_ids},
        )


@dataclass
class Selection:
    """The selected asset ids (in rank order; bridges after) and a reason for each."""

    asset_ids: list[str]
    reasons: dict[str, str]


class SetSelector:
    """Applies `SelectionParams` to a ranked list."""

    def __init__(
        self, params: SelectionParams | None = None, threshold_override: float | None = None
    ) -> None:
        self.params = params or SelectionParams()
        self.threshold_override = threshold_override

    def with_threshold(self, threshold: float | None) -> SetSelector:
        """The same rules with `min_score` replaced (a per-business fine-ranker threshold)."""
        return SetSelector(self.params, threshold)

    def select(self, ranked: Sequence[ScoredTable], neighbors: Neighbors | None = None) -> Selection:
        p = self.params
        min_score = self.threshold_override if self.threshold_override is not None else p.min_score
        neigh: Neighbors = neighbors or (lambda _a: ())
        if not ranked:
            return Selection([], {})
        window = list(ranked[: p.window])
        top = window[0]
        chosen = [top.asset_id]
        reasons = {top.asset_id: f"top-ranked (score {top.score:.3f})"}
        covered = set(top.terms)
        previous = top.score
        for table in window[1:]:
            if _stops(p, chosen, previous, table):
                break
            previous = table.score
            if table.score < min_score or table.score < p.rel_ratio * top.score:
                break  # scores are sorted: nothing further can pass
            new_terms = table.terms - covered
            if not _admits(p, table, top, chosen, new_terms, neigh):
                continue
            chosen.append(table.asset_id)
            covered |= table.terms
            reasons[table.asset_id] = (
                f"score {table.score:.3f} >= threshold {max(min_score, p.rel_ratio * top.score):.3f}"
            )
            if p.min_new_terms:
                reasons[table.asset_id] += f"; adds {', '.join(sorted(new_terms))}"
        if p.fk_closure and len(chosen) > 1:
            for bridge, (a, b) in fk_bridges(chosen, window, neigh):
                chosen.append(bridge)
                reasons[bridge] = f"bridge joining {a} and {b}"
        return Selection(chosen, reasons)


def _stops(p: SelectionParams, chosen: Sequence[str], previous: float, table: ScoredTable) -> bool:
    """The rules that end the walk at `table` whatever the threshold: enough tables, or a score gap."""
    return len(chosen) >= p.max_tables or (p.max_gap is not None and previous - table.score > p.max_gap)


def _admits(
    p: SelectionParams,
    table: ScoredTable,
    top: ScoredTable,
    chosen: Sequence[str],
    new_terms: frozenset[str],
    neigh: Neighbors,
) -> bool:
    """The rules that pass over `table` without ending the walk: another database, no join to the
    selected tables, too few request terms of its own (`new_terms`: those no selected table has)."""
    if p.same_group and table.group != top.group:
        return False
    if p.connected_only and not any(c in neigh(table.asset_id) for c in chosen):
        return False
    return len(new_terms) >= p.min_new_terms


def fk_bridges(
    selected: Sequence[str], candidates: Sequence[ScoredTable], neighbors: Neighbors
) -> list[tuple[str, tuple[str, str]]]:
    """Bridge tables to add: for each selected pair that does not join directly (nor through another
    selected table), the best-ranked candidate that is a neighbour of both."""
    chosen = list(selected)
    added: list[tuple[str, tuple[str, str]]] = []
    for a, b in itertools.combinations(list(selected), 2):
        na, nb = set(neighbors(a)), set(neighbors(b))
        if b in na or a in nb or any(c in na and c in nb for c in chosen if c not in (a, b)):
            continue
        for cand in candidates:
            if cand.asset_id not in chosen and cand.asset_id in na and cand.asset_id in nb:
                chosen.append(cand.asset_id)
                added.append((cand.asset_id, (a, b)))
                break
    return added


def top_k_selection(ranked: Sequence[ScoredTable], k: int = 2) -> list[str]:
    """Baseline: always the first k tables."""
    return [t.asset_id for t in ranked[:k]]


# ---- calibration ------------------------------------------------------------------------------


@dataclass
class CalibrationExample:
    """One training requirement: its ranked tables (out-of-fold scores) and its gold set."""

    ranked: list[ScoredTable]
    gold: set[str]


@dataclass
class CalibrationReport:
    params: dict[str, object]
    set_f1: float
    set_exact_match: float
    top2_set_f1: float
    top2_set_exact_match: float
    n_requirements: int
    n_configs: int


def _evaluate(
    params: SelectionParams, examples: Sequence[CalibrationExample], neighbors: Neighbors
) -> tuple[float, float]:
    """Mean set F1 and exact match of one rule: the reference `grid_scores` must agree with."""
    selector = SetSelector(params)
    f1 = exact = 0.0
    for ex in examples:
        scores = set_scores(selector.select(ex.ranked, neighbors).asset_ids, ex.gold)
        f1 += scores.f1
        exact += scores.exact
    n = max(len(examples), 1)
    return f1 / n, exact / n


THRESHOLD_KEYS = ("min_score", "rel_ratio")


def _prefix_states(window: Sequence[ScoredTable], p: SelectionParams, neigh: Neighbors) -> list[list[str]]:
    """`SetSelector.select` for every place the score threshold could stop it, in one walk.

    The threshold is the only rule that depends on `min_score` / `rel_ratio`, and it stops the walk
    at the first table scoring below `max(min_score, rel_ratio * top)`; every other rule is decided
    the same whatever the threshold. Entry `s - 1` is the selection (before bridges) when the
    threshold stops the walk at position `s` (`len(window)`: it never does)."""
    top = window[0]
    chosen = [top.asset_id]
    covered = set(top.terms)
    previous = top.score
    states = [list(chosen)]
    for table in window[1:]:
        if _stops(p, chosen, previous, table):
            break  # the same stop as the threshold's, wherever that is
        previous = table.score
        if _admits(p, table, top, chosen, table.terms - covered, neigh):
            chosen.append(table.asset_id)
            covered |= table.terms
        states.append(list(chosen))
    return states + [states[-1]] * (len(window) - len(states))


def grid_scores(
    examples: Sequence[CalibrationExample], neighbors: Neighbors, grid: Mapping[str, Sequence[object]]
) -> dict[tuple[object, ...], tuple[float, float]]:
    """Mean set F1 and exact match of every rule of `grid` (keyed by its values in `grid`'s key
    order): what `_evaluate` gives each, computed without running `select` once per rule.

    The thresholds (`THRESHOLD_KEYS`) only decide where the walk over the ranked tables stops, so
    each example is walked once per combination of the other rules (`_prefix_states`) and every
    threshold reads its stop off that walk. The coarse grid is 2,048 rules over ~1,700 requirements
    on the demo: 3.4 M `select` calls and a minute of the index build, now 64 walks each."""
    keys = list(grid)
    rule_keys = [k for k in keys if k not in THRESHOLD_KEYS]
    threshold_keys = [k for k in keys if k in THRESHOLD_KEYS]
    thresholds = list(itertools.product(*(grid[k] for k in threshold_keys)))
    cut = [SelectionParams.model_validate(dict(zip(threshold_keys, v))) for v in thresholds]
    n = len(examples)
    widest = max(int(w) for w in grid.get("window", [SelectionParams().window]))  # type: ignore[call-overload]
    # where each threshold stops each example's walk over its widest window (the top table never)
    stops = np.empty((n, len(thresholds)), dtype=np.int64)
    for e, ex in enumerate(examples):
        scores = [t.score for t in ex.ranked[:widest]]
        for c, params in enumerate(cut):
            limit = max(params.min_score, params.rel_ratio * scores[0])
            stops[e, c] = next((i for i in range(1, len(scores)) if scores[i] < limit), len(scores))
    # every rule asks for the same tables' joins again: each is read once
    neigh = functools.cache(lambda asset_id: set(neighbors(asset_id)))
    out: dict[tuple[object, ...], tuple[float, float]] = {}
    for values in itertools.product(*(grid[k] for k in rule_keys)):
        p = SelectionParams.model_validate(dict(zip(rule_keys, values)))
        f1 = np.zeros((n, widest + 1))
        exact = np.zeros((n, widest + 1))
        size = np.empty(n, dtype=np.int64)
        for e, ex in enumerate(examples):
            window = list(ex.ranked[: p.window])
            size[e] = len(window)
            seen: dict[tuple[str, ...], SetScores] = {}
            for s, chosen in enumerate(_prefix_states(window, p, neigh), start=1):
                key = tuple(chosen)
                if key not in seen:
                    final = list(chosen)
                    if p.fk_closure and len(final) > 1:
                        final += [bridge for bridge, _ in fk_bridges(final, window, neigh)]
                    seen[key] = set_scores(final, ex.gold)
                f1[e, s], exact[e, s] = seen[key].f1, seen[key].exact
        at = np.minimum(stops, size[:, None])
        # summed in example order, as `_evaluate` sums: equal rules tie exactly, and ties go the same way
        f1_sums = [sum(column) for column in np.take_along_axis(f1, at, axis=1).T.tolist()]
        exact_sums = [sum(column) for column in np.take_along_axis(exact, at, axis=1).T.tolist()]
        rule = dict(zip(rule_keys, values))
        for c, threshold in enumerate(thresholds):
            combined = {**rule, **dict(zip(threshold_keys, threshold))}
            out[tuple(combined[k] for k in keys)] = (f1_sums[c] / max(n, 1), exact_sums[c] / max(n, 1))
    return out


def default_grid() -> dict[str, Sequence[object]]:
    return {
        "min_score": [0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7],
        "rel_ratio": [0.0, 0.2, 0.4, 0.6],
        "max_gap": [None, 0.5],
        "max_tables": [3, 4],
        "same_group": [True, False],
        "connected_only": [False, True],
        "fk_closure": [True, False],
        "min_new_terms": [0, 1],
    }


def calibrate(
    examples: Sequence[CalibrationExample],
    neighbors: Neighbors,
    grid: Mapping[str, Sequence[object]] | None = None,
    objective: Objective = SELECTION_OBJECTIVES[0],
) -> tuple[SelectionParams, CalibrationReport]:
    """Grid search over `SelectionParams` on training requirements, maximising `objective`."""
    if objective not in SELECTION_OBJECTIVES:
        raise ValueError(
            f"unknown selection objective {objective!r} (one of {', '.join(SELECTION_OBJECTIVES)})"
        )
    examples = [ex for ex in examples if ex.ranked and ex.gold]
    if not examples:
        raise ValueError(
            "no training requirements with candidates and gold tables: cannot calibrate selection"
        )
    grid = grid or default_grid()
    keys = list(grid)
    best: tuple[float, float] | None = None  # (set F1, exact) of the best rule
    best_key: tuple[float, float] | None = None
    best_params = SelectionParams()
    n_configs = 0
    scored = grid_scores(examples, neighbors, grid)
    for values in itertools.product(*(grid[k] for k in keys)):  # grid order: ties go to the first
        params = SelectionParams.model_validate(dict(zip(keys, values)))
        n_configs += 1
        f1, exact = scored[values]
        key = (f1 + exact, f1) if objective == "f1_exact" else (f1, exact)
        if best_key is None or key > best_key:
            best_key, best, best_params = key, (f1, exact), params
    assert best is not None
    top2 = [set_scores(top_k_selection(ex.ranked, 2), ex.gold) for ex in examples]
    report = CalibrationReport(
        params=best_params.model_dump(),
        set_f1=best[0],
        set_exact_match=best[1],
        top2_set_f1=sum(s.f1 for s in top2) / len(top2),
        top2_set_exact_match=sum(s.exact for s in top2) / len(top2),
        n_requirements=len(examples),
        n_configs=n_configs,
    )
    return best_params, report


def save_selection(
    params: SelectionParams,
    report: CalibrationReport | None,
    path: str | Path,
    set_model: Mapping[str, object] | None = None,
) -> Path:
    """Write the rules (and the learned set model's weights, `matching.set_model`, when one was kept)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "params": params.model_dump(),
        "calibration": asdict(report) if report else None,
        "set_model": dict(set_model) if set_model else None,
    }
    tmp = target.with_suffix(target.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2), encoding="utf-8")
    tmp.replace(target)
    return target


def load_selection(path: str | Path) -> SelectionParams:
    payload = json.loads(Path(path).read_text(encoding="utf-8"))
    return SelectionParams.model_validate(payload["params"])
