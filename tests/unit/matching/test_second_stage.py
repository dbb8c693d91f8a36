"""The coarse model's second stage: context features of the first stage's scores, when CV keeps it,
and that it survives save / load (joblib and the numpy predictor)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from assetmatch.matching.fusion import (
    CONTEXT_FEATURES,
    FeatureBuilder,
    LearnedFusion,
    TrainingGroup,
    fit_learned_fusion,
)
from assetmatch.matching.predictor import LinearPredictor
from assetmatch.models import Column, TableAsset


def _asset(db: str, name: str) -> TableAsset:
    return TableAsset(
        asset_id=f"{db}.{name}", business="lib", database=db, name=name, columns=[Column(name="id")]
    )


def test_context_features_hand_checked() -> None:
    assets = {a.asset_id: a for a in [_asset("school", n) for n in ("student", "has_pet", "pets")]}
    assets["shop.orders"] = _asset("shop", "orders")
    edges = {
        "school.student": {"school.has_pet"},
        "school.has_pet": {"school.student", "school.pets"},
        "school.pets": {"school.has_pet"},
    }
    builder = FeatureBuilder(assets, neighbors=lambda a: edges.get(a, set()))
    ids = ["school.student", "school.pets", "school.has_pet", "shop.orders"]
    rows = builder.context(ids, np.array([0.9, 0.6, 0.1, 0.5]))
    assert rows.shape == (4, len(CONTEXT_FEATURES))
    bridge = dict(zip(CONTEXT_FEATURES, rows[2]))
    assert bridge["first_score"] == pytest.approx(0.1)
    assert bridge["first_score_norm"] == pytest.approx(0.1 / 0.9)
    assert bridge["first_inv_rank"] == pytest.approx(1 / 4)
    assert bridge["first_group_is_top"] == 1.0
    assert (
        bridge["linked_to_first_top"]
        == bridge["linked_to_first_second"]
        == bridge["joins_first_top_two"]
        == 1.0
    )
    assert bridge["linked_in_first_top3"] == 2.0  # student and pets; orders (third) is not a neighbour
    assert bridge["neighbor_max_first_norm"] == pytest.approx(1.0)
    assert bridge["neighbor_top2_first_norm"] == pytest.approx((0.9 + 0.6) / 0.9)
    assert bridge["group_other_max_first_norm"] == pytest.approx(1.0)
    assert bridge["group_first_share"] == pytest.approx(1.6 / 2.1)
    top = dict(zip(CONTEXT_FEATURES, rows[0]))
    assert top["joins_first_top_two"] == 0.0  # the top table does not join itself to the second
    assert top["group_other_max_first_norm"] == pytest.approx(0.6 / 0.9)
    orders = dict(zip(CONTEXT_FEATURES, rows[3]))
    assert orders["first_group_is_top"] == 0.0 and orders["group_other_max_first_norm"] == 0.0
    assert orders["linked_to_first_top"] == orders["neighbor_max_first_norm"] == 0.0
    assert orders["group_first_share"] == pytest.approx(0.5 / 2.1)
    assert builder.context([], np.zeros(0)).shape == (0, len(CONTEXT_FEATURES))


# A ring of eight tables t0-t1-...-t7-t0. Each requirement names two tables two apart (strong first
# feature) and needs the one between them too: the bridge, whose own features look like every
# other table's. Only the first stage's scores of its neighbours tell it apart.
RING = [f"db.t{j}" for j in range(8)]
RING_ASSETS = {a: _asset("db", a.split(".")[1]) for a in RING}


def _ring_neighbors(asset_id: str) -> set[str]:
    j = RING.index(asset_id)
    return {RING[(j - 1) % 8], RING[(j + 1) % 8]}


def _bridge_groups(n: int, seed: int) -> list[TrainingGroup]:
    rng = np.random.default_rng(seed)
    groups = []
    for i in range(n):
        start = int(rng.integers(8))
        gold = {RING[start], RING[(start + 1) % 8], RING[(start + 2) % 8]}
        x = rng.normal(size=(8, 3))
        x[start, 0] += 3.0
        x[(start + 2) % 8, 0] += 3.0
        y = np.array([int(a in gold) for a in RING])
        groups.append(TrainingGroup(f"r{i}", f"g{i % 6}", x, y, list(RING), 3, f"request {i}"))
    return groups


def _grid() -> dict[str, object]:
    from sklearn.linear_model import LogisticRegression

    return {"logreg": LogisticRegression(max_iter=1000)}


def test_the_second_stage_is_kept_when_it_ranks_the_bridge_table_better(tmp_path: Path) -> None:
    builder = FeatureBuilder(RING_ASSETS, neighbors=_ring_neighbors)
    groups = _bridge_groups(90, seed=3)
    names = ["signal", "noise1", "noise2"]
    model, oof = fit_learned_fusion(groups, names, folds=3, grid=_grid(), context=builder.context)
    assert model.cv is not None and model.second is not None
    assert model.cv.second_chosen == "logreg"
    assert model.cv.second_scores["logreg"] > model.cv.scores["logreg"] + 0.1

    def all_gold_at_3(scores: list[np.ndarray]) -> float:
        return float(
            np.mean(
                [set(np.argsort(-s)[:3]) == set(np.flatnonzero(g.labels)) for g, s in zip(groups, scores)]
            )
        )

    # the out-of-fold scores returned are the second stage's: what selection is calibrated on
    assert all_gold_at_3(oof) > 0.8
    first_only = [model.predict(g.features) for g in groups]
    assert all_gold_at_3(first_only) < 0.6  # the bridge is a coin toss among the other six

    # what `scores` reads the context through (`bind` would also check the builder's feature names,
    # which these synthetic columns are not)
    model.builder = builder
    fresh = _bridge_groups(30, seed=4)
    served = [model.scores(g.features, g.asset_ids) for g in fresh]
    assert (
        np.mean([set(np.argsort(-s)[:3]) == set(np.flatnonzero(g.labels)) for g, s in zip(fresh, served)])
        > 0.75
    )

    # saved and loaded: the numpy predictor carries both stages, and so does the joblib model
    path = model.save(tmp_path / "coarse.joblib")
    loaded = LearnedFusion.load(path)
    assert isinstance(loaded.model, LinearPredictor) and isinstance(loaded.second, LinearPredictor)
    assert loaded.cv is not None and loaded.cv.second_chosen == "logreg"
    loaded.builder = builder
    for g, s in zip(fresh, served):
        np.testing.assert_allclose(loaded.scores(g.features, g.asset_ids), s, rtol=0, atol=1e-9)
    LearnedFusion.predictor_path(path).unlink()
    from_joblib = LearnedFusion.load(path)
    from_joblib.builder = builder
    assert not isinstance(from_joblib.second, LinearPredictor)  # the scikit-learn model itself
    np.testing.assert_allclose(from_joblib.scores(fresh[0].features, fresh[0].asset_ids), served[0])


def test_a_second_stage_that_adds_nothing_is_not_kept() -> None:
    builder = FeatureBuilder(RING_ASSETS, neighbors=_ring_neighbors)
    rng = np.random.default_rng(5)
    groups = []
    for i in range(90):  # two gold tables chosen at random: their neighbours say nothing
        gold = set(rng.choice(8, size=2, replace=False).tolist())
        x = rng.normal(size=(8, 3))
        y = np.array([int(j in gold) for j in range(8)])
        x[y == 1, 0] += 3.0
        groups.append(TrainingGroup(f"r{i}", f"g{i % 6}", x, y, list(RING), 2, f"request {i}"))
    model, _ = fit_learned_fusion(groups, ["a", "b", "c"], folds=3, grid=_grid(), context=builder.context)
    assert model.cv is not None and model.cv.second_scores  # it was cross-validated
    assert model.cv.second_chosen is None and model.second is None
    model.builder = builder
    np.testing.assert_array_equal(model.scores(groups[0].features, RING), model.predict(groups[0].features))


def test_the_second_stage_needs_the_builder() -> None:
    builder = FeatureBuilder(RING_ASSETS, neighbors=_ring_neighbors)
    groups = _bridge_groups(60, seed=6)
    model, _ = fit_learned_fusion(groups, ["a", "b", "c"], folds=3, grid=_grid(), context=builder.context)
    assert model.second is not None
    with pytest.raises(RuntimeError, match="bind"):
        model.scores(groups[0].features, RING)
