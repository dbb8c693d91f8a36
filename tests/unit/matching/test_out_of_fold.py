"""Fine rankers train on out-of-fold coarse lists: no requirement's list comes from a coarse model
fitted on that requirement, and the production candidate source serves those lists."""

from __future__ import annotations

from typing import Any

import joblib
import numpy as np
import pytest
from index_fakes import ListIndex
from sklearn.base import BaseEstimator, ClassifierMixin

from assetmatch.config import Settings
from assetmatch.matching import fusion
from assetmatch.matching.fusion import TrainingGroup, fit_learned_fusion, out_of_fold_by_request
from assetmatch.matching.matcher import Matcher, oof_key
from assetmatch.matching.selection import SelectionParams, SetSelector
from assetmatch.matching.types import Hit
from assetmatch.models import Column, TableAsset
from assetmatch.ranking.candidates import CoarseCandidates


class Recorder(ClassifierMixin, BaseEstimator):
    """Scores 1 the rows of requirements it was fitted on (feature 0 is the requirement's number),
    `unseen` the others: a coarse model that memorised its training requirements, made visible.
    With `unseen` > 0, a list scored 0 was never scored by any model at all."""

    def __init__(self, unseen: float = 0.0) -> None:
        self.unseen = unseen

    def fit(self, x: np.ndarray, y: np.ndarray) -> Recorder:
        self.seen_ = set(x[:, 0].tolist())
        self.classes_ = np.array([0, 1])
        return self

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        p = np.array([1.0 if v in self.seen_ else self.unseen for v in x[:, 0]])
        return np.column_stack([1 - p, p])


def groups(n: int = 12) -> list[TrainingGroup]:
    out = []
    for i in range(n):
        features = np.column_stack([np.full(4, float(i)), np.arange(4.0)])
        out.append(
            TrainingGroup(
                f"r{i}", f"db{i % 4}", features, np.array([1, 0, 0, 0]), [f"t{j}" for j in range(4)], 1
            )
        )
    return out


def test_out_of_fold_scores_never_come_from_a_model_fitted_on_the_same_requirement() -> None:
    data = groups()
    model, oof = fit_learned_fusion(data, ["req", "x"], grid={"recorder": Recorder()})
    assert all(np.all(scores == 0.0) for scores in oof)  # every list ranked by a model that never saw it
    assert np.all(model.predict(data[0].features) == 1.0)  # the final model did see them all


def test_the_second_stage_is_cross_validated_out_of_fold_too() -> None:
    """Its rows start with the first stage's (the requirement's number first), and when it is kept
    the out-of-fold lists returned are its own, scored by second-stage models that never saw the
    requirement either."""

    class LastColumn(Recorder):
        """Scores 1 the rows of requirements it was fitted on; unseen rows by their last column."""

        def predict_proba(self, x: np.ndarray) -> np.ndarray:
            seen = np.array([v in self.seen_ for v in x[:, 0]])
            p = np.where(seen, 1.0, 0.5 + 0.05 * x[:, -1])
            return np.column_stack([1 - p, p])

    data = [  # eight candidates each, the gold one first (x = 0: one stage ranks it last)
        TrainingGroup(
            f"r{i}",
            f"db{i % 4}",
            np.column_stack([np.full(8, float(i)), np.arange(8.0)]),
            np.array([1, 0, 0, 0, 0, 0, 0, 0]),
            [f"t{j}" for j in range(8)],
            1,
        )
        for i in range(12)
    ]

    def context(ids: Any, first: np.ndarray) -> np.ndarray:  # what puts the gold row first
        return -np.arange(float(len(ids)))[:, None]

    model, oof = fit_learned_fusion(data, ["req", "x"], grid={"last column": LastColumn()}, context=context)
    assert model.cv is not None and model.cv.second_chosen == "last column" and model.second is not None
    assert model.cv.scores["last column"] < 0.01 < 1.0 < model.cv.second_scores["last column"]
    for scores in oof:  # the second stage's, never the 1.0 of a model that saw the requirement
        np.testing.assert_allclose(scores, 0.5 - 0.05 * np.arange(8.0))


def test_fine_ranker_lists_hold_out_the_request_not_its_database() -> None:
    """The coarse model's CV holds out databases; the fine rankers' lists hold out only the request
    and its paraphrases (feature 0 is the query's number: r{i} and r{i+12} are paraphrases), scored
    by models that did see the rest of its database (`unseen` marks what no model saw), first stage
    and second alike."""

    class Recorder2(Recorder):
        """Also records the databases it was fitted on (feature 1)."""

        def fit(self, x: np.ndarray, y: np.ndarray) -> Recorder2:
            super().fit(x, y)
            self.databases_ = set(x[:, 1].tolist())
            return self

        def predict_proba(self, x: np.ndarray) -> np.ndarray:
            p = np.array(
                [1.0 if q in self.seen_ else 0.5 if d in self.databases_ else 0.25 for q, d in x[:, :2]]
            )
            return np.column_stack([1 - p, p])

    data = []
    for i in range(24):
        query, db = i % 12, i % 3
        features = np.column_stack([np.full(4, float(query)), np.full(4, float(db)), np.arange(4.0)])
        gold = np.array([1, 0, 0, 0])
        data.append(
            TrainingGroup(f"r{i}", f"db{db}", features, gold, [f"t{j}" for j in range(4)], 1, "", f"q{query}")
        )
    model, by_database = fit_learned_fusion(data, ["query", "db", "x"], grid={"r": Recorder2()})
    assert all(np.all(scores == 0.25) for scores in by_database)  # its database never seen
    by_request = out_of_fold_by_request(data, model)
    assert by_request is not None and len(by_request) == len(data)
    assert all(np.all(scores == 0.5) for scores in by_request)  # its database seen, its request not
    # with a second stage (its rows: the first stage's plus context), refitted the same way
    second = fit_learned_fusion(data, ["query", "db", "x"], grid={"r": Recorder2()})[0]
    second.second = Recorder2().fit(data[0].features, data[0].labels)  # what the fit kept: refitted per fold
    stacked = out_of_fold_by_request(data, second, context=lambda ids, p: p[:, None])
    with pytest.raises(ValueError, match="second stage"):  # never first-stage lists for a two-stage model
        out_of_fold_by_request(data, second)
    assert stacked is not None and all(np.all(scores == 0.5) for scores in stacked)
    # one database: the model's own folds already hold out requests
    one = [
        TrainingGroup(g.requirement_id, "dw", g.features, g.labels, g.asset_ids, 1, "", g.query) for g in data
    ]
    assert out_of_fold_by_request(one, model) is None


def test_folds_fitted_side_by_side_score_as_one_after_the_other(monkeypatch: pytest.MonkeyPatch) -> None:
    """A mid-sized fit's folds run in two worker processes; every out-of-fold score is the one the
    same gradient boosting gives fitted in-process, fold after fold, and the one a model fitted by
    hand on the other databases' groups gives that group alone (each group gets its own scores back)."""
    from sklearn.base import clone
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.model_selection import GroupKFold

    rng = np.random.default_rng(0)
    data = []
    for i in range(60):
        features = rng.normal(size=(100, 5))
        labels = (features[:, 0] + 0.5 * rng.normal(size=100) > 1.5).astype(int)
        data.append(TrainingGroup(f"r{i}", f"db{i % 6}", features, labels, [f"t{j}" for j in range(100)], 1))
    grid = {"hgb": HistGradientBoostingClassifier(max_iter=20, random_state=0)}
    workers: list[int] = []
    real = fusion._fold_workers

    def counted(n_rows: int, n_folds: int) -> int:
        workers.append(forced)
        return forced

    monkeypatch.setattr(fusion, "_fold_workers", counted)
    forced = 1
    _, one_by_one = fit_learned_fusion(data, [f"f{j}" for j in range(5)], grid=grid)
    forced = 2
    _, side_by_side = fit_learned_fusion(data, [f"f{j}" for j in range(5)], grid=grid)
    assert workers == [1, 2]
    assert real(6_000, 4) == min(4, joblib.cpu_count()) and real(1_000, 4) == real(200_000, 4) == 1
    for a, b in zip(one_by_one, side_by_side, strict=True):
        np.testing.assert_array_equal(a, b)
    by_hand: list[np.ndarray] = [np.zeros(0)] * len(data)
    databases = [g.group for g in data]
    for train_idx, test_idx in GroupKFold(n_splits=4).split(np.arange(len(data)), groups=databases):
        x = np.vstack([data[i].features for i in train_idx])
        model = clone(grid["hgb"]).fit(x, np.concatenate([data[i].labels for i in train_idx]))
        for i in test_idx:
            by_hand[i] = model.predict_proba(data[i].features)[:, 1]
    for expected, got in zip(by_hand, side_by_side, strict=True):
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    assert len({float(s.sum()) for s in side_by_side}) == len(data)  # no two groups alike: a swap shows


ASSETS = [
    TableAsset(business="g", database="g", name=name, columns=[Column(name="id")])
    for name in ("users", "payments", "items")
]


class Index(ListIndex):
    """Every table a lexical hit; the usage path found a past request that used the second table
    (`payments`)."""

    def __init__(self, assets: list[TableAsset] = ASSETS) -> None:
        super().__init__(assets)
        self.used = list(self.assets)[1]

    def recall(self, *args: Any, **kwargs: Any) -> dict[str, list[Hit]]:
        usage = Hit(self.used, 0.5, 1, "usage", [], "paid users by day")
        return {**super().recall(*args, **kwargs), "usage": [usage]}

    def used_tables(self) -> list[str]:
        return [self.used]


def test_coarse_candidates_serve_out_of_fold_lists_for_fitted_requirements_and_live_ones_otherwise() -> None:
    index = Index()
    matcher = Matcher(index, Settings(), selector=SetSelector(SelectionParams(min_score=0.5)))  # type: ignore[arg-type]
    items, payments, users = (a.asset_id for a in reversed(ASSETS))
    folded = {oof_key("g", "Paying  USERS"): ([items, payments, users], [0.9, 0.6, 0.1])}
    candidates = CoarseCandidates(matcher, folded)
    answer = candidates.coarse("g", "paying users", 3)  # same text, other case and spacing
    assert answer.ids == [items, payments, users] and answer.scores == [0.9, 0.6, 0.1]
    assert answer.selected == [items, payments]  # the coarse selection's rules on the folded scores
    assert candidates.oof_hits == 1
    live = candidates.coarse("g", "something never fitted", 3)
    assert live.ids == [payments, users, items] and candidates.oof_hits == 1  # two paths found payments
    # a labelled requirement: its own usage entries neither vote nor are shown to the fine ranker
    assert index.left_own_out == [True, True]
    assert answer.examples == live.examples == {payments: "paid users by day"}
    assert candidates("g", "paying users", 2) == [items, payments]


def test_one_database_still_gives_every_requirement_an_out_of_fold_list() -> None:
    # every requirement from one database (e.g. games whose warehouses are all named "dw"): there is
    # no database to hold out, yet every list must come from a model that was fitted, just not on it
    data = [
        TrainingGroup(g.requirement_id, "dw", g.features, g.labels, g.asset_ids, g.n_gold, f"text {i}")
        for i, g in enumerate(groups())
    ]
    _, oof = fit_learned_fusion(data, ["req", "x"], grid={"witness": Recorder(unseen=0.25)})
    assert all(np.all(scores == 0.25) for scores in oof)


def test_paraphrases_of_one_text_share_a_fold_when_grouped_by_text() -> None:
    base = groups(8)
    data = [
        TrainingGroup(
            f"r{i}", "dw", base[i % 4].features, base[i].labels, base[i].asset_ids, 1, f"Text {i % 4}"
        )
        for i in range(8)
    ]
    # r0 and r4 are the same text (same feature 0): a model fitted on r4 would score r0 as seen
    _, oof = fit_learned_fusion(data, ["req", "x"], grid={"witness": Recorder(unseen=0.25)})
    assert all(np.all(scores == 0.25) for scores in oof)


def test_the_coarse_fit_recalls_every_requirement_without_its_own_usage_entries() -> None:
    # a fitted requirement is in the usage history; a new request never is: fitting with its own vote
    # would teach the coarse model to trust a usage signal serving never sees, and make its
    # out-of-fold lists easier than serving's
    from assetmatch.matching.fit import fit_matching
    from assetmatch.models import Requirement

    index = Index()
    ids = list(index.assets)
    train = [
        Requirement(id=f"r{i}", business="g", text=f"request {i}", gold_assets=[ids[i % 3]], split="train")
        for i in range(12)
    ]
    no_copies = Settings.model_validate({"matching": {"cold_history_share": 0.0}})  # one recall each
    fit = fit_matching(index, no_copies, train)  # type: ignore[arg-type]
    assert fit.report["trained"] and index.left_own_out == [True] * len(train)


def test_the_coarse_fit_also_sees_requirements_as_if_their_tables_had_no_usage_history() -> None:
    # fitted only on lists where past requests voted for the gold tables, the model follows the usage
    # path on a new database too, whose nearest past requests used other databases' tables
    from assetmatch.matching.fit import COLD_SUFFIX, fit_matching
    from assetmatch.models import Requirement

    index = Index()  # the usage path votes for payments
    ids = list(index.assets)
    train = [
        Requirement(id=f"r{i}", business="g", text=f"request {i}", gold_assets=[ids[i % 3]], split="train")
        for i in range(12)
    ]
    voted_for = [r for r in train if r.gold_assets == [ids[1]]]
    settings = Settings.model_validate(
        {"matching": {"cold_history_share": 1.0, "cold_history_in_scope": False}}
    )
    fit = fit_matching(index, settings, train)  # type: ignore[arg-type]
    # each requirement the history voted for is recalled again with its database's history left out
    assert [u for u in index.unused if u] == [[ids[1]]] * len(voted_for)
    assert index.left_own_out == [True] * (len(train) + len(voted_for))
    assert fit.report["n_cold_history"] == len(voted_for)
    # the fine rankers' lists are the requirements as recalled, one each
    assert len(fit.oof) == len(train) and COLD_SUFFIX not in "".join(fit.oof)

    index = Index()
    fit = fit_matching(index, Settings.model_validate({"matching": {"cold_history_share": 0.0}}), train)  # type: ignore[arg-type]
    assert fit.report["n_cold_history"] == 0 and not any(index.unused)


def test_a_cold_copy_is_also_asked_inside_its_own_database_where_no_candidate_has_a_past_request() -> None:
    # a database onboarded before its query log, asked in scope: every candidate lacks a past request,
    # a list the library-wide cold copy never shows (the other databases' tables keep their history)
    from assetmatch.matching.fit import fit_matching
    from assetmatch.models import Requirement

    assets = [
        TableAsset(business="g", database=database, name=name, columns=[Column(name="id")])
        for database, name in (("shop", "users"), ("shop", "payments"), ("crm", "items"))
    ]

    ids = [a.asset_id for a in assets]
    train = [
        Requirement(id=f"r{i}", business="g", text=f"request {i}", gold_assets=[ids[i % 3]], split="train")
        for i in range(12)
    ]
    voted_for = [r for r in train if r.gold_assets == [ids[1]]]
    index = Index(assets)  # the history used shop's payments
    fit = fit_matching(index, Settings.model_validate({"matching": {"cold_history_share": 1.0}}), train)  # type: ignore[arg-type]
    assert fit.report["n_cold_history"] == fit.report["n_cold_history_in_scope"] == len(voted_for)
    # asked as it was (unscoped), then cold across the library, then cold inside "shop"
    cold = [(u, s) for u, s in zip(index.unused, index.scopes) if u]
    assert cold == [([ids[1]], None), ([ids[1]], ["shop"])] * len(voted_for)
    assert len(fit.oof) == len(train) and "#cold" not in "".join(fit.oof)

    # where the library holds one database the scoped copy recalls the same list: not fitted twice
    one = [r.model_copy(update={"gold_assets": [ASSETS[i % 3].asset_id]}) for i, r in enumerate(train)]
    fit = fit_matching(Index(), Settings.model_validate({"matching": {"cold_history_share": 1.0}}), one)  # type: ignore[arg-type]
    assert fit.report["n_cold_history_in_scope"] == 0 and fit.report["n_cold_history"] == len(voted_for)
    # and switched off, no recall is asked in scope
    index = Index(assets)  # the history used shop's payments
    off = Settings.model_validate({"matching": {"cold_history_share": 1.0, "cold_history_in_scope": False}})
    fit = fit_matching(index, off, train)  # type: ignore[arg-type]
    assert fit.report["n_cold_history_in_scope"] == 0 and index.scopes == [None] * (
        len(train) + len(voted_for)
    )


def test_the_published_fine_lists_are_held_out_by_request_where_the_model_holds_out_databases() -> None:
    from assetmatch.matching.fit import fit_matching
    from assetmatch.models import Requirement

    no_copies = Settings.model_validate({"matching": {"cold_history_share": 0.0}})

    def fit_on(databases: list[str]) -> dict[str, Any]:
        assets = [
            TableAsset(business="g", database=db, name=f"{name}{i}", columns=[Column(name="id")])
            for i, db in enumerate(databases)
            for name in ("users", "payments", "items")
        ]
        ids = [a.asset_id for a in assets]
        train = [
            Requirement(
                id=f"r{i}", business="g", text=f"request {i}", gold_assets=[ids[i % 6]], split="train"
            )
            for i in range(24)
        ]
        fit = fit_matching(ListIndex(assets), no_copies, train)  # type: ignore[arg-type]
        assert len(fit.oof) == len(train)
        return fit.report

    two = fit_on(["shop", "crm"])
    assert two["cv_folds"] == 2  # the model's folds: the two databases
    assert two["fine_lists_held_out_by"] == "request"
    one = fit_on(["dw", "dw"])  # its folds hold out requests already
    assert one["fine_lists_held_out_by"] == "the coarse model's folds"
