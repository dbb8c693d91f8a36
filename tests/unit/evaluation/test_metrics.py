"""Metrics on hand-checked examples."""

from __future__ import annotations

import math

import pytest

from assetmatch.evaluation import metrics as m

RANKED = ["a", "b", "c", "d", "e"]


def test_recall_and_all_gold_at_k() -> None:
    gold = {"b", "d"}
    assert m.recall_at_k(RANKED, gold, 1) == 0.0
    assert m.recall_at_k(RANKED, gold, 2) == 0.5
    assert m.recall_at_k(RANKED, gold, 4) == 1.0
    assert m.all_gold_at_k(RANKED, gold, 3) == 0.0
    assert m.all_gold_at_k(RANKED, gold, 4) == 1.0
    # k beyond the list and a gold table never ranked
    assert m.recall_at_k(RANKED, {"a", "z"}, 20) == 0.5
    assert m.all_gold_at_k(RANKED, {"a", "z"}, 20) == 0.0


def test_reciprocal_rank() -> None:
    assert m.reciprocal_rank(RANKED, {"c", "e"}) == pytest.approx(1 / 3)
    assert m.reciprocal_rank(RANKED, {"a"}) == 1.0
    assert m.reciprocal_rank(RANKED, {"z"}) == 0.0


def test_set_scores() -> None:
    s = m.set_scores(["a", "b", "c"], ["a", "d"])
    assert (s.precision, s.recall, s.exact) == (pytest.approx(1 / 3), 0.5, 0.0)
    assert s.f1 == pytest.approx(2 * (1 / 3) * 0.5 / (1 / 3 + 0.5))  # 0.4
    assert s.f1 == pytest.approx(0.4)
    exact = m.set_scores(["d", "a"], {"a", "d"})
    assert (exact.precision, exact.recall, exact.f1, exact.exact) == (1.0, 1.0, 1.0, 1.0)
    empty = m.set_scores([], {"a"})
    assert (empty.precision, empty.recall, empty.f1, empty.exact) == (0.0, 0.0, 0.0, 0.0)


def test_empty_gold_and_bad_k_are_errors() -> None:
    with pytest.raises(ValueError, match="no gold"):
        m.recall_at_k(RANKED, [], 5)
    with pytest.raises(ValueError, match="no gold"):
        m.set_scores(["a"], set())
    with pytest.raises(ValueError, match="positive"):
        m.all_gold_at_k(RANKED, {"a"}, 0)


def test_aggregates() -> None:
    rankings = [["a", "b", "c"], ["x", "y", "z"]]
    golds = [{"b"}, {"x", "z"}]
    out = m.ranking_metrics(rankings, golds, ks=(1, 3))
    assert out["recall_at_1"] == pytest.approx((0 + 0.5) / 2)
    assert out["all_gold_at_1"] == 0.0
    assert out["all_gold_at_3"] == 1.0
    assert out["mrr"] == pytest.approx((0.5 + 1.0) / 2)
    sets = m.set_metrics([["b"], ["x", "y"]], golds)
    assert sets["set_precision"] == pytest.approx((1 + 0.5) / 2)
    assert sets["set_recall"] == pytest.approx((1 + 0.5) / 2)
    assert sets["set_exact_match"] == 0.5
    assert sets["set_f1"] == pytest.approx((1 + 0.5) / 2)
    with pytest.raises(ValueError, match="2 rankings but 1"):
        m.ranking_metrics(rankings, golds[:1])


def test_percentiles() -> None:
    lat = m.latency_metrics({"total_ms": [1, 2, 3, 4, 100]})
    assert lat["total_ms_p50"] == 3.0
    assert lat["total_ms_p95"] == pytest.approx(4 + 0.8 * 96)  # numpy linear interpolation
    assert math.isnan(m.percentile([], 50))
