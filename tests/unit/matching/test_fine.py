"""The fine stage's fitted parts: fusion with coarse scores, the cascade rule, calibration files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from assetmatch.matching.fine import (
    Cascade,
    FineCalibration,
    Fusion,
    coarse_margin,
    read_calibration,
    rerank,
    write_calibration,
)
from assetmatch.matching.selection import SelectionParams


def test_fusion_learns_from_the_coarse_score_when_the_adapter_is_noise() -> None:
    rng = np.random.default_rng(3)
    lists = []
    for _ in range(300):
        gold = int(rng.integers(6))
        coarse = [0.9 if i == gold else float(rng.uniform(0, 0.5)) for i in range(6)]
        lists.append(([float(v) for v in rng.normal(0, 1, 6)], coarse, [i == gold for i in range(6)]))
    fusion = Fusion.fit(lists)
    assert fusion.weights[3] + fusion.weights[4] > 1.0  # the coarse score carries the signal
    probs = fusion.probs([2.0, -2.0], [0.1, 0.9])
    assert probs[1] > probs[0]


def test_older_three_weight_fusion_is_padded_and_means_the_same() -> None:
    old = Fusion(weights=[1.0, 0.5, -0.2], bias=0.1)
    assert old.weights == [1.0, 0.5, -0.2, 0.0, 0.0]
    assert old.probs([1.0, 0.0], [0.3, 0.9]) == pytest.approx(old.probs([1.0, 0.0]))
    with pytest.raises(ValueError, match="at most 5"):
        Fusion(weights=[0.0] * 6)
    with pytest.raises(ValueError, match="2 logits but 1 coarse"):
        Fusion().probs([0.0, 1.0], [0.5])


@pytest.mark.parametrize(
    ("cascade", "ids", "coarse", "selected", "familiar", "expected"),
    [
        (Cascade(), ["a", "b", "c"], [0.9, 0.5, 0.1], ["a"], None, 3),  # always, up to the cap
        (Cascade(depth=2), ["a", "b", "c"], [0.9, 0.5, 0.1], ["a"], None, 2),  # only as deep as fitted
        (Cascade(max_margin=0.3), ["a", "b", "c"], [0.9, 0.5, 0.1], ["a"], None, 0),  # gap 0.4: certain
        (Cascade(max_margin=0.5), ["a", "b", "c"], [0.9, 0.5, 0.1], ["a"], None, 3),  # gap 0.4: uncertain
        (Cascade(max_margin=0.5), ["a", "b", "c"], [0.9, 0.8, 0.1], ["a", "b"], None, 0),  # 0.8 -> 0.1
        (Cascade(max_margin=0.1), ["a"], [0.9], ["a"], None, 0),  # nothing left out: nothing to decide
        (Cascade(), ["x", "a"], [0.9, 0.5], ["x"], {"a"}, 0),  # top table of an unlearned database
        (Cascade(familiar_only=False), ["x", "a"], [0.9, 0.5], ["x"], {"a"}, 2),
        # a table the coarse answer keeps is of a database no adapter saw: defer
        (Cascade(), ["a", "b", "x"], [0.9, 0.8, 0.7], ["a", "x"], {"a", "b"}, 0),
        # x would be ranked beside a and b: its noise score could take the top; defer
        (Cascade(), ["a", "b", "x"], [0.9, 0.8, 0.7], ["a", "b"], {"a", "b"}, 0),
        (Cascade(depth=2), ["a", "b", "x"], [0.9, 0.8, 0.7], ["a", "b"], {"a", "b"}, 2),  # x not ranked
        # x kept by the coarse selection beyond the fitted depth: still defer
        (Cascade(depth=1), ["a", "b", "x"], [0.9, 0.8, 0.7], ["a", "x"], {"a", "b"}, 0),
        # a calibration saved before every ranked table was checked is served as it was gated
        (Cascade(familiar_ranked=False), ["a", "b", "x"], [0.9, 0.8, 0.7], ["a", "b"], {"a", "b"}, 3),
        (Cascade(), [], [], [], None, 0),
    ],
)
def test_cascade_decision_on_constructed_score_lists(
    cascade: Cascade,
    ids: list[str],
    coarse: list[float],
    selected: list[str],
    familiar: set[str] | None,
    expected: int,
) -> None:
    assert cascade.depth_for(ids, coarse, selected, familiar, cap=20) == expected


def test_a_cascade_says_when_it_asks_the_adapter() -> None:
    assert "never asked" in Cascade.never().describe()
    assert "never asked" in Cascade.from_dict({"max_margin": 0.0, "depth": 0}).describe()  # saved before
    assert Cascade(max_margin=0.6773, depth=8).describe() == (
        "cascade: asked on every list of learned tables whose coarse margin is below 0.68, the coarse top 8"
    )
    assert Cascade.always().describe() == "cascade: asked on every list, the coarse top fine_top_n"


def test_coarse_margin() -> None:
    assert coarse_margin([0.9, 0.6, 0.5], 1) == pytest.approx(0.3)
    assert coarse_margin([0.9, 0.6, 0.5], 2) == pytest.approx(0.1)
    assert coarse_margin([0.9], 1) == float("inf")


def test_rerank_sorts_the_judged_head_and_keeps_the_tail_unjudged() -> None:
    answer = rerank(["a", "b", "c", "d"], [0.9, 0.8, 0.7, 0.6], [-5.0, 5.0], Fusion())
    assert answer.ids == ["b", "a", "c", "d"] and answer.depth == 2
    assert answer.scores[2:] == [0.0, 0.0] and set(answer.fine) == {"a", "b"}


def test_calibration_round_trip_and_clear_errors(tmp_path: Path) -> None:
    cal = FineCalibration(
        0.35,
        Fusion([1.0, 0.2, -0.1, 2.0, 0.5], -0.3),
        SelectionParams(min_score=0.35, same_group=False),
        Cascade(0.2, 8, True),
        frozenset({"t.a", "t.b"}),
        {"validation_requirements": 40},
    )
    write_calibration(tmp_path, cal)
    assert read_calibration(tmp_path) == cal
    assert read_calibration(tmp_path / "missing") == FineCalibration()
    (tmp_path / "calibration.json").write_text(json.dumps({"fusion": {"weights": "x"}}), encoding="utf-8")
    with pytest.raises(ValueError, match="not a valid calibration file"):
        read_calibration(tmp_path)


def test_a_calibration_saved_before_the_ranked_tables_were_checked_reads_as_it_was_gated() -> None:
    old = FineCalibration.from_dict({"cascade": {"max_margin": None, "depth": 3, "familiar_only": True}})
    assert old.cascade.familiar_ranked is False
    new = FineCalibration(cascade=Cascade(depth=3))
    assert FineCalibration.from_dict(new.to_dict()).cascade == new.cascade
    assert new.cascade.familiar_ranked is True


def test_the_set_model_selects_fused_scores_only_where_the_coarse_stage_has_one() -> None:
    from assetmatch.matching.selection import SetSelector
    from assetmatch.matching.set_model import SET_FEATURES, LearnedSetSelector, SetModel

    n = len(SET_FEATURES)
    model = SetModel([0.0] * n, [1.0] * n, [0.0] * n, 0.0, [0.0] * n, 0.0)
    coarse_rules = SelectionParams(min_score=0.5)
    fused_rules = SelectionParams(min_score=0.2, same_group=False)
    cal = FineCalibration(0.2, selection=fused_rules, set_model=True)
    chosen = cal.selector(LearnedSetSelector(coarse_rules, model))
    # the coarse stage's model, reading the rules calibrated on fused scores as its "rules' set"
    assert isinstance(chosen, LearnedSetSelector) and chosen.model is model and chosen.params == fused_rules
    plain = cal.selector(SetSelector(coarse_rules))  # the coarse model was refitted without one
    assert not isinstance(plain, LearnedSetSelector) and plain.params == fused_rules
    assert not isinstance(FineCalibration(0.2, selection=fused_rules).selector(chosen), LearnedSetSelector)
    assert FineCalibration.from_dict(cal.to_dict()).set_model
    assert not FineCalibration.from_dict({"threshold": 0.3}).set_model  # saved before: the rules


def test_the_coarse_set_is_kept_only_where_the_fine_ranking_keeps_the_top_table() -> None:
    keep = FineCalibration(0.2, keep_coarse_set=True)
    assert keep.keeps_coarse_set(["a", "b"], ["a", "c", "b"])
    assert not keep.keeps_coarse_set(["a", "b"], ["b", "a"])
    assert not keep.keeps_coarse_set([], ["a"]) and not keep.keeps_coarse_set(["a"], [])
    assert not FineCalibration(0.2).keeps_coarse_set(["a"], ["a"])  # off: the fused scores' set
    assert FineCalibration.from_dict(keep.to_dict()).keep_coarse_set
    assert not FineCalibration.from_dict({"threshold": 0.3}).keep_coarse_set  # saved before: as gated
