"""The learned set selection: candidate sets, their features, the keep rule, and the published file."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from assetmatch.matching.selection import (
    CalibrationExample,
    ScoredTable,
    SelectionParams,
    SetSelector,
    save_selection,
    set_scores,
)
from assetmatch.matching.set_model import (
    DEPTH,
    MAX_TABLES,
    SET_FEATURES,
    LearnedSetSelector,
    SetModel,
    candidate_sets,
    features_of,
    fit_set_model,
    load_selector,
)

# db.a -- db.bridge -- db.b ; db.c alone
EDGES = {"bridge": {"a", "b"}, "a": {"bridge"}, "b": {"bridge"}}


def neighbors(asset_id: str) -> set[str]:
    db, _, table = asset_id.partition(".")
    return {f"{db}.{t}" for t in EDGES.get(table, set())}


def databases(examples: list[CalibrationExample]) -> list[str]:
    """Each example's cross-validation group: its gold tables' database."""
    return [min(ex.gold).partition(".")[0] for ex in examples]


def table(db: str, name: str, score: float, terms: set[str] | None = None) -> ScoredTable:
    return ScoredTable(f"{db}.{name}", score, db, frozenset(terms or ()))


def test_candidate_sets_stay_in_one_group() -> None:
    top = [table("x", "a", 0.9), table("y", "b", 0.8), table("x", "c", 0.7)]
    combos = candidate_sets(top, max_tables=4)
    assert (0, 2) in combos and (0, 1) not in combos and (1, 2) not in combos
    assert {len(c) for c in combos} == {1, 2}
    assert candidate_sets(top, max_tables=1) == [(0,), (1,), (2,)]


def test_set_features_by_hand() -> None:
    top = [
        table("d", "a", 0.9, {"name", "age"}),
        table("d", "b", 0.6, {"pet"}),
        table("d", "bridge", 0.5, {"age"}),
        table("d", "c", 0.1),
    ]
    rows = features_of(top, [(0, 1), (0, 1, 2)], {"d.a"}, neighbors)
    row = dict(zip(SET_FEATURES, rows[0]))
    assert row["size"] == 2 and row["size_2"] and not row["size_1"]
    assert row["has_top"] and row["is_prefix"] and row["worst_rank"] == 1
    assert row["components"] == 2  # a and b join only through the bridge
    assert row["terms_covered"] == 3 and row["terms_uncovered"] == 0 and row["term_coverage"] == 1
    assert row["log_p_members"] == pytest.approx(np.log(0.9) + np.log(0.6))
    assert row["max_p_other"] == pytest.approx(0.5) and row["p_margin"] == pytest.approx(0.1)
    assert row["holds_rules_set"] and not row["is_rules_set"] and not row["within_rules_set"]
    assert row["addable_others"] == 0  # the bridge joins a but adds no term a and b lack
    bridged = dict(zip(SET_FEATURES, rows[1]))
    assert bridged["components"] == 1
    assert bridged["members_without_own_terms"] == 1  # the bridge's "age" is a's too
    assert bridged["bridges"] == 1 and bridged["no_new_terms_not_bridge"] == 0
    assert bridged["no_new_terms"] == 1 and bridged["max_p_no_new_terms"] == pytest.approx(0.5)


def test_a_term_held_only_in_a_key_asks_for_the_table_it_references() -> None:
    """ "各渠道付费" against a fact table whose only "渠道" is `channel_id`, a key to `dim_channel`: the
    fact table alone leaves the attribute behind a key; with the dimension table it is joined."""
    fact = ScoredTable(
        "g.dws_pay", 0.9, "g", frozenset({"pay", "channel"}), frozenset({("channel", "g.dim_channel")})
    )
    dim = ScoredTable("g.dim_channel", 0.4, "g", frozenset({"channel"}))
    other = ScoredTable("g.dim_item", 0.3, "g", frozenset({"pay"}), frozenset({("pay", "g.dim_nowhere")}))
    rows = features_of([fact, dim, other], [(0,), (0, 1), (1,), (0, 2)], {"g.dws_pay"}, neighbors)
    alone, joined, dim_alone, with_other = (dict(zip(SET_FEATURES, r)) for r in rows)
    assert alone["key_term_unjoined"] == 1 and alone["key_term_joined"] == 0
    assert joined["key_term_unjoined"] == 0 and joined["key_term_joined"] == 1
    assert dim_alone["key_term_unjoined"] == 0 and dim_alone["key_term_joined"] == 0
    # "pay" is the fact table's own word: a member's key to elsewhere leaves nothing behind for it
    assert with_other["key_term_unjoined"] == 1 and with_other["key_term_joined"] == 0


def test_the_set_models_reason_names_the_key_a_dimension_table_describes() -> None:
    """`--explain` beside a chosen dimension table: which request word the fact table holds only as
    a key to it (the Chinese word, not its English glosses)."""
    keys = frozenset({("渠道", "g.dim_channel"), ("channel", "g.dim_channel"), ("ditch", "g.dim_channel")})
    fact = ScoredTable("g.dws_pay", 0.9, "g", frozenset({"付费", "渠道", "channel", "ditch"}), keys)
    dim = ScoredTable("g.dim_channel", 0.8, "g", frozenset({"渠道", "channel", "ditch"}))
    model = SetModel(
        mean=[0.0] * len(SET_FEATURES),
        scale=[1.0] * len(SET_FEATURES),
        w_exact=[0.0] * len(SET_FEATURES),
        b_exact=0.0,
        w_f1=[float(name == "key_term_joined") for name in SET_FEATURES],
        b_f1=0.0,
    )
    selection = LearnedSetSelector(SelectionParams(min_score=0.99), model).select([fact, dim])
    assert selection.asset_ids == ["g.dws_pay", "g.dim_channel"]
    assert selection.reasons["g.dim_channel"].endswith("describes 渠道, which g.dws_pay holds only as a key")
    assert "describes" not in selection.reasons["g.dws_pay"]


def reference_row(top: list[ScoredTable], combo: tuple[int, ...], rules_set: set[str]) -> list[float]:
    """`SET_FEATURES` of one set, written plainly, set by set: the definition `features_of`'s array
    version must reproduce (it was the implementation until calibration spent a sixth of a demo
    build in it)."""
    eps = 1e-4
    p = np.clip(np.array([t.score for t in top], dtype=float), eps, 1 - eps)
    ids_all = [t.asset_id for t in top]
    linked = np.array([[other in neighbors_of(a) for other in ids_all] for a in ids_all], dtype=bool)
    request_terms = frozenset().union(*(t.terms for t in top))
    inside = np.zeros(len(top), dtype=bool)
    inside[list(combo)] = True
    members = [top[i] for i in combo]
    ids = {m.asset_id for m in members}
    covered = frozenset().union(*(m.terms for m in members))
    own, bridges = [], 0
    for i in combo:
        others = [j for j in combo if j != i]
        mine = top[i].terms - frozenset().union(*(top[j].terms for j in others))
        own.append(len(mine))
        if not mine and sum(bool(linked[i, j]) for j in others) >= 2:
            bridges += 1
    so_far: set[str] = set()
    no_new, p_no_new = 0, 0.0
    for m in members:
        if so_far and not m.terms - so_far:
            no_new += 1
            p_no_new = max(p_no_new, m.score)
        so_far |= m.terms
    group = members[0].group
    addable = sum(
        1
        for i, t in enumerate(top)
        if not inside[i] and t.group == group and t.terms - covered and linked[i, list(combo)].any()
    )
    seen: set[int] = set()
    components = 0
    for start in combo:
        if start in seen:
            continue
        components += 1
        stack = [start]
        seen.add(start)
        while stack:
            at = stack.pop()
            for other in combo:
                if other not in seen and (linked[at, other] or linked[other, at]):
                    seen.add(other)
                    stack.append(other)
    direct = frozenset().union(*(m.terms - {term for term, _ in m.key_terms} for m in members))
    unjoined = {term for m in members for term, ref in m.key_terms if ref not in ids} - direct
    joined = {term for m in members for term, ref in m.key_terms if ref in ids}
    best_other = float(p[~inside].max()) if (~inside).any() else 0.0
    size = len(combo)
    return [
        size,
        size == 1,
        size == 2,
        size == 3,
        float(np.log(p[inside]).sum()),
        float(np.log(1 - p[~inside]).sum()),
        float(p[inside].min()),
        best_other,
        float(p[inside].min()) - best_other,
        max(combo),
        0 in combo,
        tuple(combo) == tuple(range(size)),
        components,
        group == top[0].group,
        len(covered) / max(len(request_terms), 1),
        len(request_terms - covered),
        len(covered),
        sum(1 for n in own if n == 0),
        min(own),
        *(float(p[i]) if i < len(p) else 0.0 for i in range(3)),
        len(request_terms),
        *(i in combo for i in range(DEPTH)),
        ids == rules_set,
        ids <= rules_set,
        ids >= rules_set,
        len(rules_set),
        addable,
        no_new,
        no_new > 0,
        p_no_new,
        bridges,
        no_new - bridges,
        bool(unjoined),
        bool(joined),
    ]


RANDOM_LINKS: dict[str, set[str]] = {}


def neighbors_of(asset_id: str) -> set[str]:
    return RANDOM_LINKS.get(asset_id, set())


@pytest.mark.parametrize("seed", range(40))
def test_set_features_match_their_per_set_definition(seed: int) -> None:
    """Random lists: 1..6 tables over one to three groups, shared and missing terms, terms held in
    keys to tables of the list and beyond it, one-way and self links, scores outside (0, 1), rules
    sets inside and beyond the top."""
    rng = random.Random(seed)
    n = rng.randint(1, DEPTH)
    vocabulary = ["name", "age", "pet", "city", "amount"][: rng.randint(0, 5)]
    names = [f"t{i}" for i in range(n)]
    top = []
    for name in names:
        terms = frozenset(t for t in vocabulary if rng.random() < 0.4)
        keys = frozenset((t, rng.choice([*names, "dim.beyond"])) for t in terms if rng.random() < 0.4)
        score = rng.choice([rng.random(), 0.0, 1.0, 1.3, -0.2])
        top.append(ScoredTable(name, score, rng.choice("xyz"[: rng.randint(1, 3)]), terms, keys))
    RANDOM_LINKS.clear()
    for a in top:
        RANDOM_LINKS[a.asset_id] = {b.asset_id for b in top if rng.random() < 0.35}
    ids = [t.asset_id for t in top]
    rules_set = {a for a in ids if rng.random() < 0.4} | ({"beyond.top"} if rng.random() < 0.3 else set())
    combos = candidate_sets(top, MAX_TABLES) or [(0,)]
    got = features_of(top, combos, rules_set, neighbors_of)
    want = np.array([reference_row(top, tuple(c), rules_set) for c in combos], dtype=float)
    assert got.shape == (len(combos), len(SET_FEATURES))
    np.testing.assert_array_equal(got, want)


def top_is_a_decoy(n_databases: int = 12, per_database: int = 8, seed: int = 0) -> list[CalibrationExample]:
    """Half the requests need the top table alone; in the other half the top table matches none of
    the request's terms and the second one matches them all, and only the second is needed. Rules
    always keep the top table; a set model that reads the terms can do better."""
    rng = random.Random(seed)
    examples = []
    for d in range(n_databases):
        db = f"db{d}"
        for i in range(per_database):
            s1, s2 = rng.uniform(0.55, 0.7), rng.uniform(0.4, 0.5)
            if i % 2:
                ranked = [table(db, "a", s1), table(db, "b", s2, {"pet"}), table(db, "c", 0.05)]
                gold = {f"{db}.b"}
            else:
                ranked = [table(db, "a", s1, {"pet"}), table(db, "b", s2), table(db, "c", 0.05)]
                gold = {f"{db}.a"}
            examples.append(CalibrationExample(ranked, gold))
    return examples


def test_the_set_model_is_kept_when_it_beats_the_rules_and_round_trips(tmp_path: Path) -> None:
    examples = top_is_a_decoy()
    rules = SelectionParams(min_score=0.9, fk_closure=False)
    model, report = fit_set_model(examples, neighbors, rules, databases(examples))
    assert model is not None and report["kept"]
    assert report["rules_set_exact"] == pytest.approx(0.5)
    assert report["cv_set_exact"] > 0.9  # cross-validated by database: never judged on what it saw
    selector = LearnedSetSelector(rules, model)
    fresh = top_is_a_decoy(seed=1)
    exact = np.mean(
        [set_scores(selector.select(ex.ranked, neighbors).asset_ids, ex.gold).exact for ex in fresh]
    )
    assert exact > 0.9
    answer = selector.select(fresh[1].ranked, neighbors)
    assert answer.asset_ids == [f"{fresh[1].ranked[1].asset_id}"]
    assert "set model" in answer.reasons[answer.asset_ids[0]]
    # published beside the rules and read back by the Matcher's loader: the same answers
    path = save_selection(rules, None, tmp_path / "selection.json", model.to_dict())
    loaded = load_selector(path)
    assert isinstance(loaded, LearnedSetSelector) and loaded.params == rules
    for ex in fresh:
        assert (
            loaded.select(ex.ranked, neighbors).asset_ids == selector.select(ex.ranked, neighbors).asset_ids
        )


def test_the_rules_stay_when_the_set_model_adds_nothing(tmp_path: Path) -> None:
    rng = random.Random(2)
    examples = [
        CalibrationExample(
            [table(f"db{d}", "a", rng.uniform(0.6, 0.9)), table(f"db{d}", "b", rng.uniform(0.1, 0.3))],
            {f"db{d}.a"},
        )
        for d in range(10)
        for _ in range(4)
    ]
    rules = SelectionParams(min_score=0.5, fk_closure=False)
    model, report = fit_set_model(examples, neighbors, rules, databases(examples))
    assert model is None and not report["kept"] and "rules select as well" in report["why"]
    path = save_selection(rules, None, tmp_path / "selection.json")
    loaded = load_selector(path)
    assert type(loaded) is SetSelector and loaded.params == rules


def test_too_few_databases_to_cross_validate() -> None:
    examples = top_is_a_decoy(n_databases=1)
    model, report = fit_set_model(examples, neighbors, SelectionParams(), databases(examples))
    assert model is None and "too few" in report["why"]


def test_one_database_is_cross_validated_by_request() -> None:
    # what `fusion.cv_groups_of` gives when every requirement lives in one database: its text
    examples = top_is_a_decoy(n_databases=1, per_database=96)
    by_request = [f"request {i // 2}" for i in range(len(examples))]  # two copies of each request together
    model, report = fit_set_model(examples, neighbors, SelectionParams(min_score=0.9), by_request)
    assert model is not None and report["kept"] and report["folds"] == 5
    with pytest.raises(ValueError, match="cross-validation groups"):
        fit_set_model(examples, neighbors, SelectionParams(), by_request[:-1])


def test_a_set_model_of_other_features_is_refused(tmp_path: Path) -> None:
    model, _ = fit_set_model(
        decoys := top_is_a_decoy(), neighbors, SelectionParams(min_score=0.9), databases(decoys)
    )
    assert model is not None
    data = model.to_dict()
    data["features"] = [*SET_FEATURES[:-1], "something_else"]
    path = save_selection(SelectionParams(), None, tmp_path / "selection.json", data)
    with pytest.raises(ValueError, match="refit the coarse model"):
        load_selector(path)
    data = {**model.to_dict(), "unexpected": 1}
    path = save_selection(SelectionParams(), None, tmp_path / "selection.json", data)
    with pytest.raises(ValueError, match=r"selection\.json: the set model it holds cannot be read"):
        load_selector(path)
    data = json.loads(json.dumps(model.to_dict()))
    data["w_f1"] = data["w_f1"][:-1]
    data.pop("features")
    with pytest.raises(ValueError, match="SET_FEATURES"):
        SetModel.from_dict(data)


def test_a_one_table_list_is_answered_by_the_rules() -> None:
    model, _ = fit_set_model(
        decoys := top_is_a_decoy(), neighbors, SelectionParams(min_score=0.9), databases(decoys)
    )
    assert model is not None
    selector = LearnedSetSelector(SelectionParams(), model)
    assert selector.select([table("d", "a", 0.2)], neighbors).asset_ids == ["d.a"]
    assert selector.select([], neighbors).asset_ids == []


def test_a_fit_publishes_its_set_model_where_the_matcher_reads_it(tmp_path: Path) -> None:
    from assetmatch.matching.fit import FitResult, save_fit, selection_summary
    from assetmatch.matching.matcher import SELECTION_FILE

    rules = SelectionParams(min_score=0.9, fk_closure=False)
    decoys = top_is_a_decoy()
    model, report = fit_set_model(decoys, neighbors, rules, databases(decoys))
    assert model is not None
    fit = FitResult(None, rules, {"set_model": report}, {}, model)
    assert isinstance(fit.selector(), LearnedSetSelector)
    assert type(FitResult(None, rules, {}).selector()) is SetSelector
    save_fit(fit, tmp_path)
    loaded = load_selector(tmp_path / SELECTION_FILE)
    assert isinstance(loaded, LearnedSetSelector)
    for ex in decoys[:10]:
        assert (
            loaded.select(ex.ranked, neighbors).asset_ids
            == fit.selector().select(ex.ranked, neighbors).asset_ids
        )
    assert selection_summary(fit.report).startswith("set selection: learned set model (CV set F1 / exact")
    assert "not kept" in selection_summary({"set_model": {**report, "kept": False}})
    assert selection_summary({}) == "set selection: calibrated rules"
