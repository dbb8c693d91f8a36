"""`training.evaluate.calibrate` on constructed validation lists: an adapter that helps is used where
the coarse answer is unsure; one that does not is never asked (the coarse answer stands)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from assetmatch.matching.fine import Cascade, CoarseAnswer, FineCalibration
from assetmatch.matching.selection import RequestTerms, SelectionParams, SetSelector
from assetmatch.training import evaluate as ev
from assetmatch.training.pairs import LabelledRequirement

IDS = [f"t{i}" for i in range(6)]
CTX = ev.Context(
    lambda _a: set(), lambda _a: "db", SetSelector(SelectionParams(min_score=0.5, fk_closure=False))
)


def judged(adapter_right: bool, n: int = 60, seed: int = 0) -> list[ev.Judged]:
    """The gold table is coarse #1 or #2 (a coin flip: the coarse ranking is unsure); the adapter's
    logit singles out the gold table (right) or is noise (wrong)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        gold = IDS[int(rng.integers(2))]
        noise = [float(v) for v in rng.normal(0, 1, len(IDS))]
        logits = [4.0 if a == gold else -4.0 for a in IDS] if adapter_right else noise
        req = LabelledRequirement(f"r{i}", "b", f"question {i}", (gold,))
        out.append(
            ev.Judged(
                req, CoarseAnswer(list(IDS), [0.6, 0.55, 0.2, 0.1, 0.05, 0.01], ["t0", "t1"]), logits, 10.0
            )
        )
    return out


def test_a_helpful_adapter_is_used_and_beats_coarse_only() -> None:
    lists = judged(adapter_right=True)
    calibration = ev.calibrate(lists, CTX, familiar=None)
    assert calibration.cascade != Cascade.never()
    fine = ev.quality([ev.fine_ranked(j, calibration, CTX) for j in lists])
    coarse = ev.quality([ev.coarse_ranked(j) for j in lists])
    assert fine > coarse + 0.3


def test_an_adapter_that_does_not_help_is_never_asked() -> None:
    lists = judged(adapter_right=False)
    calibration = ev.calibrate(lists, CTX, familiar=None)
    assert calibration.cascade == Cascade.never()
    answers = [ev.fine_ranked(j, calibration, CTX) for j in lists]
    assert all(r.fine_depth == 0 for r in answers)
    assert ev.quality(answers) == ev.quality([ev.coarse_ranked(j) for j in lists])


def test_cross_fitted_answers_never_use_a_calibration_fitted_on_the_same_requirement(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    lists = judged(adapter_right=True, n=23)
    fitted_on: dict[int, set[str]] = {}
    kept: list[object] = []  # alive, so that no temporary object gets a recorded id
    real_calibrate, real_fine_ranked = ev.calibrate, ev.fine_ranked

    def recording_calibrate(js, ctx, familiar):  # type: ignore[no-untyped-def]
        calibration = real_calibrate(js, ctx, familiar)
        fitted_on[id(calibration)] = {j.requirement.id for j in js}
        kept.append(calibration)
        return calibration

    answered: list[str] = []

    def checking_fine_ranked(j, calibration, ctx, cap=None):  # type: ignore[no-untyped-def]
        if id(calibration) in fitted_on:  # an answer (calibrate also calls it while it searches)
            assert j.requirement.id not in fitted_on[id(calibration)]
            answered.append(j.requirement.id)
        return real_fine_ranked(j, calibration, ctx, cap)

    monkeypatch.setattr(ev, "calibrate", recording_calibrate)
    monkeypatch.setattr(ev, "fine_ranked", checking_fine_ranked)
    answers = ev.cross_fitted(lists, CTX, familiar=None, folds=5)
    assert [a.requirement.id for a in answers] == [j.requirement.id for j in lists]  # each once, in order
    assert sorted(answered) == sorted(j.requirement.id for j in lists)
    assert len(fitted_on) == 5  # 23 requirements: five folds, each calibration fitted on the other four
    assert all(18 <= len(ids) <= 19 for ids in fitted_on.values())

    # another business's lists (`extra`) join every fold's calibration and are never answered
    fitted_on.clear()
    answered.clear()
    kept.clear()
    others = [
        replace(j, requirement=replace(j.requirement, id=f"x{i}", business="other"))
        for i, j in enumerate(judged(adapter_right=True, n=7, seed=1))
    ]
    answers = ev.cross_fitted(lists, CTX, familiar=None, folds=5, extra=others)
    assert [a.requirement.id for a in answers] == [j.requirement.id for j in lists]
    assert sorted(answered) == sorted(j.requirement.id for j in lists)
    assert len(fitted_on) == 5
    assert all({f"x{i}" for i in range(7)} <= ids and 25 <= len(ids) <= 26 for ids in fitted_on.values())


def test_the_cascade_is_chosen_on_answers_fitted_without_the_requirement(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """While `calibrate` tries its cascade rules, no requirement is answered by a fusion and
    selection fitted on it: each rule is judged as the gate judges, cross-fitted."""
    lists = judged(adapter_right=True, n=23)
    fitted_on: dict[int, set[str]] = {}
    real_fit, real_answer_at = ev._fit_scores, ev.answer_at

    def recording_fit(js, ctx):  # type: ignore[no-untyped-def]
        fusion, params = real_fit(js, ctx)
        fitted_on[id(fusion)] = {j.requirement.id for j in js}
        return fusion, params

    answered: list[tuple[str, int]] = []

    def checking_answer_at(j, calibration, ctx, depth):  # type: ignore[no-untyped-def]
        assert j.requirement.id not in fitted_on[id(calibration.fusion)]
        answered.append((j.requirement.id, depth))
        return real_answer_at(j, calibration, ctx, depth)

    monkeypatch.setattr(ev, "_fit_scores", recording_fit)
    monkeypatch.setattr(ev, "answer_at", checking_answer_at)
    calibration = ev.calibrate(lists, CTX, familiar=None, folds=5)
    # one fit on all 23 (what is stored) and one per fold on the other four folds
    assert sorted(len(ids) for ids in fitted_on.values()) == [18, 18, 18, 19, 19, 23]
    assert fitted_on[id(calibration.fusion)] == {j.requirement.id for j in lists}
    # every requirement answered once per depth the rules ask of it: the coarse answer ("never"),
    # then each depth once, whichever rules fine-rank it that deep (answers with the coarse set kept
    # are derived from them)
    depths = {0} | {r.depth for r in ev.cascade_rules(lists) if r != Cascade.never()}
    assert sorted(answered) == sorted((j.requirement.id, d) for j in lists for d in depths)
    assert calibration.cascade != Cascade.never()  # the helpful adapter still earns its cascade


def test_cross_fitting_still_sees_a_helpful_adapter_and_not_a_useless_one() -> None:
    helpful = judged(adapter_right=True)
    useless = judged(adapter_right=False)
    coarse = ev.quality([ev.coarse_ranked(j) for j in helpful])
    assert ev.quality(ev.cross_fitted(helpful, CTX, familiar=None)) > coarse + 0.3
    # noise logits: refitted per fold the calibration may ask it now and then, but never to gain
    assert (
        ev.quality(ev.cross_fitted(useless, CTX, familiar=None))
        <= ev.quality([ev.coarse_ranked(j) for j in useless]) + 0.02
    )


def test_the_cheapest_rule_within_one_standard_error_of_the_best_is_chosen() -> None:
    n = 40
    coarse = np.ones(n)  # "never": costs nothing
    # gains 1.0 on 2 of 40 requirements: mean +0.05, standard error of the paired difference ~0.035
    noisy_gain = coarse.copy()
    noisy_gain[:2] += 1.0
    # gains 1.0 on 10 of 40: mean +0.25, standard error ~0.07 -- clearly better
    clear_gain = coarse.copy()
    clear_gain[:10] += 1.0
    assert ev.cheapest_within_one_se([(coarse, 0.0), (noisy_gain, 4.0)]) == 1  # 0.05 > one SE
    one = coarse.copy()
    one[:2] += 1.0
    one[2] -= 1.0  # mean +0.025, standard error ~0.044: within one SE, the cost is not worth it
    assert ev.cheapest_within_one_se([(coarse, 0.0), (one, 4.0)]) == 0
    # the deeper rule is only a little better than a shallow one: the shallow one is enough
    shallow = clear_gain.copy()
    shallow[-1] -= 0.5
    shallow[-2] += 0.25
    assert ev.cheapest_within_one_se([(coarse, 0.0), (clear_gain, 10.0), (shallow, 3.0)]) == 2
    # equal cost: the better quality
    assert ev.cheapest_within_one_se([(shallow, 3.0), (clear_gain, 3.0)]) == 1
    # identical rules (no spread in the difference): the tolerance decides
    assert ev.cheapest_within_one_se([(coarse - 0.004, 0.0), (coarse, 5.0)], tolerance=0.005) == 0
    assert ev.cheapest_within_one_se([(coarse - 0.006, 0.0), (coarse, 5.0)], tolerance=0.005) == 1
    # tuple costs compare in order: the second part decides only at an equal first (depth), however
    # small a difference in depth is
    assert ev.cheapest_within_one_se([(shallow, (3.0, 1.0)), (shallow, (3.0, 0.0))]) == 1
    assert ev.cheapest_within_one_se([(shallow, (3.0, 1.0)), (shallow, (3.0001, 0.0))]) == 0


def test_fine_selection_reads_which_request_terms_each_table_adds() -> None:
    """The adapter scores t0 and t1 alike in every list; only the request terms tell a requirement
    that needs both (t1 adds a term) from one that needs t0 alone (t1 repeats t0's)."""
    lists = []
    for i in range(40):
        both = i % 2 == 0
        terms = {"t0": frozenset({"player"}), "t1": frozenset({"channel"} if both else {"player"})}
        gold = ("t0", "t1") if both else ("t0",)
        coarse = CoarseAnswer(
            list(IDS), [0.6, 0.55, 0.2, 0.1, 0.05, 0.01], ["t0", "t1"], terms=RequestTerms(terms)
        )
        logits = [4.0, 3.9, -4.0, -4.0, -4.0, -4.0]
        lists.append(
            ev.Judged(LabelledRequirement(f"r{i}", "b", f"question {i}", gold), coarse, logits, 10.0)
        )
    calibration = ev.calibrate(lists, CTX, familiar=None)
    assert calibration.selection is not None and calibration.selection.min_new_terms == 1
    answers = [ev.fine_ranked(j, calibration, CTX) for j in lists]
    assert all(set(r.selected or ()) == set(j.requirement.gold) for r, j in zip(answers, lists))
    assert ev.quality(answers) > ev.quality([ev.coarse_ranked(j) for j in lists])


def test_the_familiar_tables_are_those_of_the_databases_the_adapter_learned() -> None:
    """A table never gold in training but in a learned database is familiar (the adapter read it as
    a neighbour and a hard negative); a database with no real training requirement is not, and
    synthetic requirements teach no database."""
    from assetmatch.models import TableAsset
    from assetmatch.training.train import familiar_tables

    library = {
        a.asset_id: a
        for a in (
            TableAsset(business="b", database=db, name=name)
            for db, name in [("shop", "orders"), ("shop", "customers"), ("hr", "staff"), ("crm", "leads")]
        )
    }
    ids = {a.name: a.asset_id for a in library.values()}
    learned = [LabelledRequirement("r1", "b", "orders last week", (ids["orders"],))]
    synthetic = [LabelledRequirement("s1", "b", "staff list", (ids["staff"],), origin="synthetic")]
    assert familiar_tables(learned + synthetic, library) == {ids["orders"], ids["customers"]}
    assert familiar_tables(synthetic, library) == frozenset()
    # a gold table the library no longer holds teaches nothing about the tables it holds
    assert familiar_tables([LabelledRequirement("r2", "b", "gone", ("b.old.t",))], library) == frozenset()


def decoy_lists(n: int, seed: int) -> list[ev.Judged]:
    """The adapter scores t0 and t1 alike and the coarse selection keeps both; the gold table is the
    one of the two that holds the request's term ("pet"), the other holds none."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        gold = IDS[int(rng.integers(2))]
        terms = {gold: frozenset({"pet"})}
        coarse = CoarseAnswer(
            list(IDS), [0.6, 0.55, 0.2, 0.1, 0.05, 0.01], ["t0", "t1"], terms=RequestTerms(terms)
        )
        logits = [4.0, 3.9, -4.0, -4.0, -4.0, -4.0]
        out.append(
            ev.Judged(LabelledRequirement(f"r{i}", "b", f"question {i}", (gold,)), coarse, logits, 10.0)
        )
    return out


def learned_context() -> ev.Context:
    """CTX with a coarse set model, fitted on coarse lists where the table holding the request's
    term ("pet") is the answer."""
    from assetmatch.matching.selection import CalibrationExample, ScoredTable
    from assetmatch.matching.set_model import LearnedSetSelector, fit_set_model

    rng = np.random.default_rng(1)
    examples = []
    for i in range(120):
        gold = f"t{i % 2}"
        ranked = [
            ScoredTable(t, s, "db", frozenset({"pet"}) if t == gold else frozenset())
            for t, s in zip(IDS, [rng.uniform(0.55, 0.7), rng.uniform(0.4, 0.5), 0.1, 0.05, 0.02, 0.01])
        ]
        examples.append(CalibrationExample(ranked, {gold}))
    rules = SelectionParams(min_score=0.3, fk_closure=False)
    model, _ = fit_set_model(examples, lambda _a: set(), rules, [f"q{i}" for i in range(120)])
    assert model is not None
    return replace(CTX, coarse_selector=LearnedSetSelector(rules, model))


def test_fused_scores_select_with_the_coarse_set_model_where_it_answers_better() -> None:
    """A set model fitted on coarse lists where the table holding the request's term is the answer
    reads the fused scores the same way: calibration keeps it for the fine answer (the rules keep
    t0, or both, whatever their threshold), and an adapter calibrated where the coarse stage has no
    set model selects with the rules."""
    from assetmatch.matching.set_model import LearnedSetSelector

    learned = learned_context()
    assert ev.selection_modes(learned) == [False, True] and ev.selection_modes(CTX) == [False]

    lists = decoy_lists(60, seed=0)
    calibration = ev.calibrate(lists, learned, familiar=None)
    assert calibration.set_model and calibration.cascade != Cascade.never()
    assert isinstance(calibration.selector(learned.coarse_selector), LearnedSetSelector)
    fresh = decoy_lists(40, seed=1)
    answers = [ev.fine_ranked(j, calibration, learned) for j in fresh]
    assert all(r.selected == list(j.requirement.gold) for r, j in zip(answers, fresh))
    rules_only = [ev.fine_ranked(j, replace(calibration, set_model=False), learned) for j in fresh]
    assert ev.quality(answers) > ev.quality(rules_only) + 0.1
    # where the coarse stage selects with rules only, so does the fine answer
    assert not ev.calibrate(lists, CTX, familiar=None).set_model


def test_the_coarse_set_stands_where_the_top_table_stays_unless_the_fused_set_is_clearly_better() -> None:
    """An adapter that only fixes the top table (the gold one of two coarse favourites; the coarse
    selection keeps its top table alone): where it keeps the top, the fused scores' set is no better
    than the coarse selection's, and calibration leaves the set to the coarse selection there
    (`keep_coarse_set`); where it changes the top, the fused scores decide."""
    rng = np.random.default_rng(3)
    lists = []
    for i in range(60):
        gold = IDS[int(rng.integers(2))]
        logits = [4.0 if a == gold else float(rng.normal(-1.0, 1.0)) for a in IDS]
        coarse = CoarseAnswer(list(IDS), [0.6, 0.55, 0.2, 0.1, 0.05, 0.01], ["t0"])
        lists.append(ev.Judged(LabelledRequirement(f"r{i}", "b", f"q {i}", (gold,)), coarse, logits, 10.0))
    calibration = ev.calibrate(lists, CTX, familiar=None)
    assert calibration.keep_coarse_set and calibration.cascade != Cascade.never()
    answers = [ev.fine_ranked(j, calibration, CTX) for j in lists]
    assert all(r.selected == list(j.requirement.gold) for r, j in zip(answers, lists))
    kept = [r for r, j in zip(answers, lists) if r.fine_depth and r.ranked[0] == j.coarse.ids[0]]
    assert kept and all(r.selected == ["t0"] for r in kept)  # the coarse selection's set
    # calibration derives these answers from the fused ones: the same as answering with the flag
    fused = [ev.fine_ranked(j, replace(calibration, keep_coarse_set=False), CTX) for j in lists]
    assert [ev.coarse_set_kept(j, r) for j, r in zip(lists, fused)] == answers


def test_the_fused_scores_decide_the_set_where_they_keep_the_top_table_but_choose_better() -> None:
    """The top table is always right (t0), the coarse selection always keeps t0 and t1, and the
    adapter knows whether t1 belongs: its fused scores' set is clearly better, so calibration lets
    them decide the set although the top table stays."""
    rng = np.random.default_rng(4)
    lists = []
    for i in range(60):
        gold = ("t0", "t1") if rng.integers(2) else ("t0",)
        logits = [6.0, 4.0 if "t1" in gold else -4.0, -4.0, -4.0, -4.0, -4.0]
        coarse = CoarseAnswer(list(IDS), [0.6, 0.55, 0.2, 0.1, 0.05, 0.01], ["t0", "t1"])
        lists.append(ev.Judged(LabelledRequirement(f"r{i}", "b", f"q {i}", gold), coarse, logits, 10.0))
    calibration = ev.calibrate(lists, CTX, familiar=None)
    assert not calibration.keep_coarse_set and calibration.cascade != Cascade.never()
    answers = [ev.fine_ranked(j, calibration, CTX) for j in lists]
    assert all(sorted(r.selected) == sorted(j.requirement.gold) for r, j in zip(answers, lists))


def varied_lists(n: int, seed: int) -> list[ev.Judged]:
    """Lists whose coarse margins, depths and familiarity differ (so the rules' margin cuts and depths
    answer differently), with an adapter that is right more often than not and the request's term
    in the gold tables."""
    rng = np.random.default_rng(seed)
    ids = [f"t{i}" for i in range(12)]
    out = []
    for i in range(n):
        gold = tuple(
            sorted({ids[int(rng.integers(3))], *([ids[int(rng.integers(6))]] if rng.random() < 0.3 else [])})
        )
        coarse_scores = sorted((float(v) for v in rng.uniform(0, 1, len(ids))), reverse=True)
        logits = [float(rng.normal(2.0 if a in gold else 0.0, 1.5)) for a in ids[: int(rng.integers(6, 13))]]
        terms = RequestTerms({a: frozenset({"pet"}) for a in gold})
        coarse = CoarseAnswer(list(ids), coarse_scores, [ids[0]], terms=terms)
        out.append(ev.Judged(LabelledRequirement(f"r{i}", "b", f"q {i}", gold), coarse, logits, 10.0))
    return out


def test_calibration_sharing_answers_between_rules_chooses_what_answering_each_rule_alone_chooses() -> None:
    """`calibrate` answers each (requirement, depth, selection mode) once and reuses the answer for
    every rule that fine-ranks that deep: it must choose exactly what answering every rule alone
    chooses, with the rules and with a coarse set model, where some tables are unfamiliar."""
    lists = varied_lists(70, seed=5)
    unfamiliar = frozenset(f"t{i}" for i in range(12)) - {"t9"}
    for ctx in (CTX, learned_context()):
        for familiar in (None, unfamiliar):
            chosen = ev.calibrate(lists, ctx, familiar)
            assert chosen == ev.calibrate(lists, ctx, familiar, share_answers=False)
    # and the lists are varied enough that the rules differ: several depths and margin cuts answer
    rules = ev.cascade_rules(lists)
    assert len({r.depth for r in rules}) >= 3 and len({r.max_margin for r in rules}) >= 4


def test_the_answer_at_a_depth_does_not_depend_on_the_rule_that_chose_it() -> None:
    """What `calibrate`'s sharing rests on: two cascades that fine-rank a list equally deep give it
    the same answer, whatever their margin cuts."""
    lists = varied_lists(40, seed=6)
    fusion, params = ev._fit_scores(lists, CTX)
    compared = 0
    for j in lists:
        by_depth: dict[int, ev.Ranked] = {}
        for cascade in ev.cascade_rules(lists):
            calibration = FineCalibration(params.min_score if params else None, fusion, params, cascade, None)
            answer = ev.fine_ranked(j, calibration, CTX)
            if answer.fine_depth in by_depth:
                assert answer == by_depth[answer.fine_depth]
                compared += 1
            by_depth[answer.fine_depth] = answer
    assert compared > len(lists)
