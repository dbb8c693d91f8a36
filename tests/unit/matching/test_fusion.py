"""Coarse ranking on hand-built hits: RRF arithmetic, features, learned fusion fit / save / load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from assetmatch.matching.fusion import (
    FeatureBuilder,
    LearnedFusion,
    RRFRanker,
    TrainingGroup,
    collect_candidates,
    cv_groups_of,
    fit_learned_fusion,
    simplest_of_the_best,
)
from assetmatch.matching.types import Hit
from assetmatch.models import Column, ForeignKey, TableAsset


def _asset(db: str, name: str, cols: list[str]) -> TableAsset:
    return TableAsset(
        asset_id=f"{db}.{name}",
        business="lib",
        database=db,
        name=name,
        columns=[Column(name=c) for c in cols],
    )


ASSETS = {
    a.asset_id: a
    for a in [
        _asset("school", "student", ["student_id", "name", "age"]),
        _asset("school", "has_pet", ["student_id", "pet_id"]),
        _asset("school", "pets", ["pet_id", "pet_type"]),
        _asset("shop", "orders", ["order_id", "amount"]),
    ]
}
EDGES = {
    "school.student": {"school.has_pet"},
    "school.has_pet": {"school.student", "school.pets"},
    "school.pets": {"school.has_pet"},
    "shop.orders": set(),
}


def hits() -> dict[str, list[Hit]]:
    return {
        "lexical": [
            Hit("school.student", 9.0, 1, "lexical", ["student"]),
            Hit("shop.orders", 3.0, 2, "lexical", ["order"]),
        ],
        "dense": [
            Hit("school.pets", 0.8, 1, "dense"),
            Hit("school.student", 0.7, 2, "dense"),
            Hit("shop.orders", 0.1, 3, "dense"),
        ],
    }


def test_rrf_scores_and_order() -> None:
    cands = collect_candidates(hits())
    assert cands["school.student"].rrf == pytest.approx(1 / 61 + 1 / 62)
    assert cands["school.pets"].rrf == pytest.approx(1 / 61)
    assert cands["shop.orders"].rrf == pytest.approx(1 / 62 + 1 / 63)
    ranked = RRFRanker().rank("students with pets", list(cands.values()))
    assert [c.asset_id for c in ranked] == ["school.student", "shop.orders", "school.pets"]
    assert cands["school.student"].matched["lexical"] == ["student"]


def test_duplicate_hits_keep_the_best_rank() -> None:
    cands = collect_candidates({"lexical": [Hit("a.t", 1.0, 4, "lexical"), Hit("a.t", 2.0, 2, "lexical")]})
    assert cands["a.t"].path_ranks == {"lexical": 2}
    assert cands["a.t"].path_scores == {"lexical": 2.0}


def test_feature_rows_hand_checked() -> None:
    builder = FeatureBuilder(ASSETS, lambda a: EDGES.get(a, set()), paths=["lexical", "dense"])
    cands = list(collect_candidates(hits()).values())
    x = builder.matrix("name of students with pets", cands)
    names = builder.feature_names
    assert x.shape == (3, len(names))
    row = dict(zip(names, x[[c.asset_id for c in cands].index("school.pets")]))
    assert row["lexical_present"] == 0.0 and row["lexical_score"] == 0.0
    assert row["dense_present"] == 1.0 and row["dense_inv_rank"] == 1.0
    assert row["dense_score_norm"] == pytest.approx(1.0)
    assert row["name_overlap"] == 1.0  # "pets" stems to "pet", in the query
    assert row["fk_degree"] == 1.0
    # school is the top group (student has the best RRF); pets is second of its group
    assert row["group_is_top"] == 1.0 and row["group_rank"] == 1.0 and row["rank_in_group"] == 2.0
    assert row["group_n_candidates"] == 2.0
    # its neighbour has_pet is not a candidate
    assert row["neighbor_n_candidates"] == 0.0
    orders = dict(zip(names, x[[c.asset_id for c in cands].index("shop.orders")]))
    assert orders["group_is_top"] == 0.0 and orders["group_rank"] == 2.0 and orders["name_overlap"] == 0.0


def test_request_terms_are_the_query_tokens_a_table_contains() -> None:
    builder = FeatureBuilder(ASSETS)
    terms = builder.request_terms(
        "name of students with pets", ["school.student", "school.pets", "shop.orders"]
    ).contained
    assert {"name", "student"} <= terms["school.student"] and "pet" not in terms["school.student"]
    assert "pet" in terms["school.pets"] and "name" not in terms["school.pets"]
    assert terms["shop.orders"] == frozenset()


def test_key_terms_are_the_request_terms_a_table_holds_only_in_a_foreign_key() -> None:
    fact = TableAsset(
        business="g",
        name="dws_user_pay_1d",
        comment="用户付费日汇总",
        columns=[Column(name="channel_id", comment="渠道ID"), Column(name="pay_amount", comment="付费金额")],
        foreign_keys=[ForeignKey(columns=["channel_id"], ref_asset_id="g.dim_channel")],
    )
    dim = TableAsset(
        business="g",
        name="dim_channel",
        comment="渠道维表",
        columns=[Column(name="channel_id", comment="渠道ID", primary_key=True)],
        foreign_keys=[ForeignKey(columns=["channel_id"], ref_asset_id="g.dim_channel")],  # a self key
    )
    staff = TableAsset(
        business="g",
        name="staff",
        columns=[Column(name="staff_id"), Column(name="manager_id")],
        foreign_keys=[ForeignKey(columns=["manager_id"], ref_asset_id="g.staff")],
    )
    builder = FeatureBuilder({a.asset_id: a for a in (fact, dim, staff)})
    ids = [fact.asset_id, dim.asset_id]
    terms = builder.request_terms("各渠道付费用户对比", ids)
    keys = terms.in_keys
    assert ("渠道", "g.dim_channel") in keys[fact.asset_id]
    assert {term for term, _ in keys[fact.asset_id]} <= terms.contained[fact.asset_id]
    assert not any(term == "付费" for term, _ in keys[fact.asset_id])  # its own comment's word
    assert keys[dim.asset_id] == frozenset()  # its name says "渠道" itself
    assert builder.request_terms("pay amount per channel", ids).in_keys[fact.asset_id] == {
        ("channel", "g.dim_channel")
    }
    # a key to the table itself names no other table to join
    staff_terms = builder.request_terms("staff per manager", [staff.asset_id])
    assert staff_terms.in_keys[staff.asset_id] == frozenset()
    assert "manag" in staff_terms.contained[staff.asset_id]


def test_metadata_group_features_ignore_the_history_vote() -> None:
    # past requests (usage) vote for the shop's orders table; the tables' own words favour school
    voted = {
        **hits(),
        "usage": [Hit("shop.orders", 0.9, 1, "usage")],
        "graph": [Hit("shop.orders", 0.5, 1, "graph")],
    }
    builder = FeatureBuilder(
        ASSETS, lambda a: EDGES.get(a, set()), paths=["lexical", "dense", "usage", "graph"]
    )
    cands = list(collect_candidates(voted).values())
    x = builder.matrix("name of students with pets", cands)
    row = {c.asset_id: dict(zip(builder.feature_names, r)) for c, r in zip(cands, x)}
    orders, student = row["shop.orders"], row["school.student"]
    assert orders["group_is_top"] == 1.0 and student["group_rank"] == 2.0  # with the vote: shop first
    assert student["metadata_group_is_top"] == 1.0 and orders["metadata_group_rank"] == 2.0
    assert student["metadata_rrf_norm"] == 1.0
    assert orders["metadata_rrf_norm"] == pytest.approx((1 / 62 + 1 / 63) / (1 / 61 + 1 / 62))


def test_the_nearest_past_request_is_a_feature_against_the_lists_nearest() -> None:
    """How close each table's nearest past request is, by cosine and in words, and against the
    list's nearest (`Hit.nearest`, `Hit.nearest_words`)."""
    # two tables the usage path voted for: one used by a near-twin of the request (by cosine), the
    # other by a request that shares more of its words; the rest with no vote at all
    voted = {
        **hits(),
        "usage": [
            Hit("shop.orders", 0.3, 1, "usage", nearest=0.95, nearest_words=0.4),
            Hit("school.student", 0.2, 2, "usage", nearest=0.45, nearest_words=0.6),
        ],
    }
    builder = FeatureBuilder(ASSETS, paths=["lexical", "dense", "usage"])
    cands = list(collect_candidates(voted).values())
    x = builder.matrix("name of students with pets", cands)
    row = {c.asset_id: dict(zip(builder.feature_names, r)) for c, r in zip(cands, x)}
    assert (
        row["shop.orders"]["usage_nearest"] == pytest.approx(0.95)
        and row["shop.orders"]["usage_nearest_gap"] == 0
    )
    assert row["school.student"]["usage_nearest_gap"] == pytest.approx(0.45 - 0.95)
    assert row["shop.orders"]["usage_nearest_words"] == pytest.approx(0.4)  # in words, the other is nearer
    assert row["shop.orders"]["usage_nearest_words_gap"] == pytest.approx(0.4 - 0.6)
    assert row["school.student"]["usage_nearest_words_gap"] == 0
    others = [a for a in row if a not in {"shop.orders", "school.student"}]
    assert others and all(row[a]["usage_nearest"] == 0 for a in others)


def _synthetic_groups(n: int, seed: int) -> list[TrainingGroup]:
    """Requirements where the gold tables have the higher first feature; noise elsewhere."""
    rng = np.random.default_rng(seed)
    groups = []
    for i in range(n):
        x = rng.normal(size=(6, 3))
        y = np.zeros(6, dtype=int)
        y[:2] = 1
        x[:2, 0] += 2.5
        groups.append(TrainingGroup(f"r{i}", f"db{i % 7}", x, y, [f"t{j}" for j in range(6)], 2))
    return groups


def test_learned_fusion_fits_chooses_by_cv_and_round_trips(tmp_path: Path) -> None:
    from sklearn.linear_model import LogisticRegression

    groups = _synthetic_groups(60, seed=1)
    names = ["signal", "noise1", "noise2"]
    grid = {"logreg": LogisticRegression(), "logreg_weak": LogisticRegression(C=1e-6)}
    model, oof = fit_learned_fusion(groups, names, folds=3, grid=grid)
    assert model.cv is not None and set(model.cv.scores) == {"logreg", "logreg_weak"}
    best = max(model.cv.scores.values())
    assert model.cv.scores[model.cv.chosen] >= best - 0.5 / model.cv.n_requirements
    assert len(oof) == len(groups) and all(len(p) == 6 for p in oof)
    probs = model.predict(groups[0].features)
    assert probs[:2].mean() > probs[2:].mean()
    path = model.save(tmp_path / "coarse.joblib")
    loaded = LearnedFusion.load(path)
    assert loaded.feature_names == names
    np.testing.assert_allclose(loaded.predict(groups[0].features), probs)


def test_learned_fusion_refuses_mismatched_features(tmp_path: Path) -> None:
    from sklearn.linear_model import LogisticRegression

    model, _ = fit_learned_fusion(
        _synthetic_groups(20, seed=2), ["a", "b", "c"], folds=2, grid={"lr": LogisticRegression()}
    )
    builder = FeatureBuilder(ASSETS, paths=["lexical"])
    with pytest.raises(ValueError, match="other features"):
        model.bind(builder)


def test_fit_needs_both_labels() -> None:
    group = TrainingGroup("r", "db", np.zeros((3, 2)), np.zeros(3, dtype=int), ["a", "b", "c"], 1)
    with pytest.raises(ValueError, match="all gold or all non-gold"):
        fit_learned_fusion([group], ["x", "y"])
    with pytest.raises(ValueError, match="no training requirements"):
        fit_learned_fusion([], ["x"])


class _DatedUsage:
    """A FeatureProvider whose one feature is the day of the month it is read for: online reads are
    'today' (day 28), point-in-time reads the requested day, so a leak from the future shows."""

    def __init__(self) -> None:
        self.feature_names = ["queries_30d"]
        self.historical_rows: list[tuple[str, object]] = []

    def online(self, asset_ids: list[str]) -> dict[str, dict[str, float]]:
        return {a: {"queries_30d": 28.0} for a in asset_ids}

    def historical(self, rows: list[tuple[str, object]]) -> list[dict[str, float]]:
        self.historical_rows += rows
        return [{"queries_30d": float(ts.day)} for _, ts in rows]  # type: ignore[attr-defined]


def test_training_features_are_read_as_of_each_requirement_not_today() -> None:
    from datetime import UTC, datetime

    from assetmatch.matching.fit import point_in_time_features
    from assetmatch.models import Requirement

    provider = _DatedUsage()
    builder = FeatureBuilder(ASSETS, paths=["lexical", "dense"], feature_provider=provider)
    cands = list(collect_candidates(hits()).values())
    dated = Requirement(id="a", business="lib", text="students", ts=datetime(2026, 3, 5, tzinfo=UTC))
    undated = Requirement(id="b", business="lib", text="students")
    stored = point_in_time_features(provider, [(dated, cands), (undated, cands)])
    assert len(provider.historical_rows) == len(cands)  # one batched call, dated requirement only
    assert {ts for _, ts in provider.historical_rows} == {dated.ts}
    assert stored[1] is None
    column = builder.feature_names.index("fp_queries_30d")
    assert set(builder.matrix(dated.text, cands, stored[0])[:, column]) == {5.0}
    assert set(builder.matrix(undated.text, cands, stored[1])[:, column]) == {28.0}  # online
    assert point_in_time_features(None, [(dated, cands)]) == [None]


def test_a_near_tie_in_cross_validation_goes_to_the_simpler_model() -> None:
    """Grid order is simplest first; a later model must beat it by half a requirement (0.5 / n)."""
    # the two demo builds: the deeper model ahead by 3e-6 of 1,685 requirements -> a tie
    scores = {"logreg": 0.9330060, "hgb_15_leaves": 0.9616539, "hgb_31_leaves": 0.9616568}
    assert simplest_of_the_best(scores, 1685) == "hgb_15_leaves"
    assert simplest_of_the_best(dict(reversed(scores.items())), 1685) == "hgb_31_leaves"
    # one requirement's answer more (1 / n) is a difference
    assert simplest_of_the_best({"simple": 0.90, "deep": 0.90 + 1 / 1685}, 1685) == "deep"
    assert simplest_of_the_best({"simple": 0.90, "deep": 0.90 + 0.4 / 1685}, 1685) == "simple"
    with pytest.raises(ValueError, match="no model"):
        simplest_of_the_best({}, 10)


def test_group_coverage_reads_the_whole_database_not_only_the_recalled_table() -> None:
    # two databases with a `student` table; only school also has pets, so "students with pets"
    # is school's question even though shop's namesake is the only one recalled from shop
    assets = {**ASSETS, "shop.student": _asset("shop", "student", ["student_id", "name"])}
    builder = FeatureBuilder(assets, paths=["lexical"])
    cands = list(
        collect_candidates(
            {
                "lexical": [
                    Hit("shop.student", 9.0, 1, "lexical", ["student"]),
                    Hit("school.student", 8.0, 2, "lexical", ["student"]),
                ]
            }
        ).values()
    )
    x = builder.matrix("name of students with pets", cands)
    row = {c.asset_id: dict(zip(builder.feature_names, r)) for c, r in zip(cands, x)}
    school, shop = row["school.student"], row["shop.student"]
    # request tokens: name, students/student, pets/pet ... school covers all, shop not the pets
    assert school["group_coverage"] == 1.0 and school["group_coverage_is_top"] == 1.0
    assert school["group_coverage_gap"] == 0.0
    assert 0.0 < shop["group_coverage"] < 1.0 and shop["group_coverage_is_top"] == 0.0
    assert shop["group_coverage_gap"] == pytest.approx(shop["group_coverage"] - 1.0)


def test_siblings_are_the_other_tables_of_the_same_business_and_database() -> None:
    other_business = TableAsset(asset_id="x.school.rooms", business="x", database="school", name="rooms")
    assets = {
        **ASSETS,
        "shop.student": _asset("shop", "student", ["student_id"]),
        "x.school.rooms": other_business,
    }
    builder = FeatureBuilder(assets)
    assert builder.siblings("school.student") == ("has_pet", "pets")  # library order, not itself
    assert builder.siblings("shop.student") == ("orders",)  # the namesake's database, not school's
    assert builder.siblings("gone.table") == ()
    # business x's tables live in one database: its context would tell no candidate from another
    assert builder.siblings("x.school.rooms") is None
    x_two = TableAsset(asset_id="x.shop.till", business="x", database="shop", name="till")
    builder = FeatureBuilder({**assets, x_two.asset_id: x_two})
    assert builder.siblings("x.school.rooms") == ()  # another business's "school" is another database
    assert builder.siblings("x.shop.till") == ()


def test_cross_validation_groups_hold_out_databases_else_requests_and_their_paraphrases() -> None:
    def group(rid: str, db: str, text: str, query: str = "") -> TrainingGroup:
        return TrainingGroup(rid, db, np.zeros((1, 1)), np.ones(1, dtype=int), ["t"], 1, text, query)

    # two databases: a database is held out whole
    assert cv_groups_of([group("a", "db1", "x"), group("b", "db2", "y")]) == ["db1", "db2"]
    # one database: copies of one text go together, and so do the paraphrases of one query
    one = [
        group("a", "db", "Orders per day"),
        group("b", "db", "orders  PER day"),
        group("c", "db", "daily orders", "select day, count(*) from orders group by day"),
        group("d", "db", "how many orders each day", "select day, count(*) from orders group by day"),
        group("e", "db", "daily users", "select day, count(*) from users group by day"),
    ]
    got = cv_groups_of(one)
    assert got[0] == got[1] and got[2] == got[3]
    assert len(set(got)) == 3
