"""Set selection on hand-built ranked lists: thresholds, gaps, groups, FK closure, calibration."""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable
from pathlib import Path

import pytest

from assetmatch.matching.selection import (
    CalibrationExample,
    ScoredTable,
    SelectionParams,
    SetSelector,
    _evaluate,
    calibrate,
    default_grid,
    fk_bridges,
    grid_scores,
    load_selection,
    save_selection,
    top_k_selection,
)
from assetmatch.training.evaluate import selection_grid

# student -- has_pet -- pets   (has_pet is the bridge); course is unrelated
EDGES = {
    "student": {"has_pet"},
    "has_pet": {"student", "pets"},
    "pets": {"has_pet"},
    "course": set(),
}


def neighbors(asset_id: str) -> set[str]:
    return EDGES.get(asset_id, set())


def ranked(*pairs: tuple[str, float], group: str = "school") -> list[ScoredTable]:
    return [ScoredTable(a, s, group) for a, s in pairs]


def test_threshold_and_ratio() -> None:
    lst = ranked(("student", 0.9), ("pets", 0.6), ("course", 0.3))
    assert SetSelector(SelectionParams(min_score=0.5, fk_closure=False)).select(lst).asset_ids == [
        "student",
        "pets",
    ]
    assert SetSelector(SelectionParams(min_score=0.2, fk_closure=False)).select(lst).asset_ids == [
        "student",
        "pets",
        "course",
    ]
    strict = SelectionParams(min_score=0.2, rel_ratio=0.8, fk_closure=False)
    assert SetSelector(strict).select(lst).asset_ids == ["student"]
    # the top table is always selected, even under the threshold
    assert SetSelector(SelectionParams(min_score=0.95)).select(lst).asset_ids == ["student"]
    assert SetSelector().select([]).asset_ids == []


def test_gap_rule_and_max_tables() -> None:
    lst = ranked(("student", 0.9), ("pets", 0.85), ("course", 0.3))
    gap = SelectionParams(min_score=0.1, max_gap=0.4, fk_closure=False)
    assert SetSelector(gap).select(lst).asset_ids == ["student", "pets"]
    cap = SelectionParams(min_score=0.1, max_tables=1)
    assert SetSelector(cap).select(lst).asset_ids == ["student"]


def test_same_group_and_connected_only() -> None:
    lst = [
        ScoredTable("student", 0.9, "school"),
        ScoredTable("orders", 0.8, "shop"),
        ScoredTable("course", 0.7, "school"),
    ]
    same = SelectionParams(min_score=0.5, same_group=True, fk_closure=False)
    assert SetSelector(same).select(lst).asset_ids == ["student", "course"]
    anywhere = SelectionParams(min_score=0.5, same_group=False, fk_closure=False)
    assert SetSelector(anywhere).select(lst).asset_ids == ["student", "orders", "course"]
    connected = SelectionParams(min_score=0.5, same_group=False, connected_only=True, fk_closure=False)
    assert SetSelector(connected).select(lst, neighbors).asset_ids == ["student"]


def test_fk_closure_adds_the_bridge() -> None:
    # student and pets are selected, has_pet (ranked low) joins them
    lst = ranked(("student", 0.9), ("pets", 0.8), ("course", 0.2), ("has_pet", 0.1))
    params = SelectionParams(min_score=0.5, fk_closure=True)
    sel = SetSelector(params).select(lst, neighbors)
    assert sel.asset_ids == ["student", "pets", "has_pet"]
    assert "bridge joining student and pets" in sel.reasons["has_pet"]
    assert SetSelector(params.model_copy(update={"fk_closure": False})).select(lst, neighbors).asset_ids == [
        "student",
        "pets",
    ]


def test_no_bridge_when_tables_already_join() -> None:
    lst = ranked(("student", 0.9), ("has_pet", 0.8), ("pets", 0.1))
    assert fk_bridges(["student", "has_pet"], lst, neighbors) == []
    # a bridge outside the candidates cannot be added
    assert fk_bridges(["student", "pets"], ranked(("student", 0.9), ("pets", 0.8)), neighbors) == []


def test_threshold_override_for_fine_scores() -> None:
    lst = ranked(("student", 3.0), ("pets", 1.5), ("course", -2.0))
    selector = SetSelector(SelectionParams(min_score=0.5, fk_closure=False)).with_threshold(1.0)
    assert selector.select(lst).asset_ids == ["student", "pets"]


def test_top_k_baseline() -> None:
    assert top_k_selection(ranked(("a", 1.0), ("b", 0.5), ("c", 0.1)), 2) == ["a", "b"]


def test_calibration_beats_top2_and_round_trips(tmp_path: Path) -> None:
    # single-table requirements with a clear winner, and two-table ones with two high scores
    examples = []
    for i in range(10):
        examples.append(
            CalibrationExample(ranked(("student", 0.9), ("course", 0.2), ("pets", 0.1)), {"student"})
        )
        if i % 2:
            examples.append(
                CalibrationExample(
                    ranked(("student", 0.8), ("has_pet", 0.7), ("course", 0.1)), {"student", "has_pet"}
                )
            )
    grid = {"min_score": [0.1, 0.5, 0.95], "fk_closure": [False]}
    params, report = calibrate(examples, neighbors, grid)
    assert params.min_score == 0.5
    assert report.set_f1 == 1.0 and report.set_exact_match == 1.0
    assert report.top2_set_f1 < report.set_f1
    assert report.n_configs == 3
    path = save_selection(params, report, tmp_path / "selection.json")
    assert load_selection(path) == params


def with_terms(*rows: tuple[str, float, set[str]]) -> list[ScoredTable]:
    return [ScoredTable(a, s, "school", frozenset(t)) for a, s, t in rows]


def test_a_further_table_must_add_a_request_term() -> None:
    # "names of students with pets": student holds "name" and "student", pets adds "pet";
    # course matches only "name", which student already holds: joining it would add nothing
    lst = with_terms(
        ("student", 0.9, {"name", "student"}),
        ("course", 0.8, {"name"}),
        ("pets", 0.7, {"name", "pet"}),
    )
    params = SelectionParams(min_score=0.5, fk_closure=False, min_new_terms=1)
    sel = SetSelector(params).select(lst, neighbors)
    assert sel.asset_ids == ["student", "pets"]
    assert "adds pet" in sel.reasons["pets"]
    # off (the default) the scores alone decide
    off = params.model_copy(update={"min_new_terms": 0})
    assert SetSelector(off).select(lst, neighbors).asset_ids == ["student", "course", "pets"]
    # what a table adds is counted against the tables selected before it, not the top one alone
    twice = with_terms(("student", 0.9, {"student"}), ("pets", 0.8, {"pet"}), ("has_pet", 0.7, {"pet"}))
    assert SetSelector(params).select(twice, neighbors).asset_ids == ["student", "pets"]


def test_a_bridge_needs_no_request_term() -> None:
    lst = with_terms(
        ("student", 0.9, {"student"}), ("pets", 0.8, {"pet"}), ("course", 0.2, set()), ("has_pet", 0.1, set())
    )
    params = SelectionParams(min_score=0.5, fk_closure=True, min_new_terms=1)
    assert SetSelector(params).select(lst, neighbors).asset_ids == ["student", "pets", "has_pet"]


def test_calibration_turns_the_coverage_rule_on_where_it_pays() -> None:
    # the second table scores high in both kinds of requirement; only its terms tell them apart
    extra = with_terms(("student", 0.9, {"name", "student"}), ("course", 0.8, {"name"}))
    needed = with_terms(("student", 0.9, {"student"}), ("course", 0.8, {"course"}))
    examples = [CalibrationExample(extra, {"student"}) for _ in range(5)]
    examples += [CalibrationExample(needed, {"student", "course"}) for _ in range(5)]
    grid = {"min_score": [0.5], "fk_closure": [False], "min_new_terms": [0, 1]}
    params, report = calibrate(examples, neighbors, grid)
    assert params.min_new_terms == 1
    assert report.set_exact_match == 1.0


def test_the_objective_decides_between_half_credit_and_exact_sets() -> None:
    # a low threshold keeps a doubtful second table: half credit on the 3-table requirements
    # (2 of 3 right either way), an extra table on the 1-table one; a high threshold keeps the top
    # table only: exact on the 1-table requirement, less F1 on the others
    one = CalibrationExample(ranked(("student", 0.9), ("course", 0.5)), {"student"})
    three = CalibrationExample(
        ranked(("student", 0.9), ("pets", 0.5), ("course", 0.5), ("has_pet", 0.1)),
        {"student", "pets", "has_pet"},
    )
    examples = [one, three, three, three]
    grid = {"min_score": [0.3, 0.6], "fk_closure": [False]}
    # F1: low 2/3 on every requirement (0.667); high (1 + 3 x 0.5) / 4 = 0.625, exact 0.25
    by_f1, f1_report = calibrate(examples, neighbors, grid, objective="f1")
    assert by_f1.min_score == 0.3 and f1_report.set_exact_match == 0.0
    by_sum, sum_report = calibrate(examples, neighbors, grid, objective="f1_exact")
    assert by_sum.min_score == 0.6
    assert (sum_report.set_f1, sum_report.set_exact_match) == (0.625, 0.25)
    assert calibrate(examples, neighbors, grid)[0] == by_sum  # f1_exact is the default


def random_examples(seed: int, n: int = 60) -> tuple[list[CalibrationExample], Callable[[str], set[str]]]:
    """Lists of up to 12 tables over 3 databases with random scores (ties, steep and flat drops),
    request terms, a random join graph and 1-4 gold tables: every rule of the grid has work to do."""
    rng = random.Random(seed)
    tables = [f"t{i}" for i in range(20)]
    group = {t: f"db{i % 3}" for i, t in enumerate(tables)}
    edges: dict[str, set[str]] = {t: set() for t in tables}
    for _ in range(30):
        a, b = rng.sample(tables, 2)
        edges[a].add(b)
        edges[b].add(a)
    examples = []
    for _ in range(n):
        ids = rng.sample(tables, rng.randint(1, 12))
        scores = sorted(
            (round(rng.choice([rng.random(), rng.random() ** 4, 0.5]), 2) for _ in ids), reverse=True
        )
        terms = ["name", "pet", "course", "age"]
        ranked_tables = [
            ScoredTable(a, s, group[a], frozenset(rng.sample(terms, rng.randint(0, 2))))
            for a, s in zip(ids, scores)
        ]
        gold = set(rng.sample(ids, min(len(ids), rng.randint(1, 4))))
        examples.append(CalibrationExample(ranked_tables, gold))
    return examples, lambda a: edges.get(a, set())


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("grid_name", ["coarse", "fine"])
def test_grid_scores_equal_running_every_rule(seed: int, grid_name: str) -> None:
    """The one-walk-per-rule evaluation gives every rule exactly what selecting with it gives."""
    examples, graph = random_examples(seed)
    grid = dict(default_grid()) if grid_name == "coarse" else selection_grid()
    if grid_name == "coarse":
        grid["window"] = [3, 10]  # a rule whose window cuts the list before the threshold does
    scored = grid_scores(examples, graph, grid)
    keys = list(grid)
    assert len(scored) == math.prod(len(v) for v in grid.values())
    for values in itertools.product(*(grid[k] for k in keys)):
        params = SelectionParams.model_validate(dict(zip(keys, values)))
        assert scored[values] == _evaluate(params, examples, graph), params
