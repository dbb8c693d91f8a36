"""The Matcher: business isolation (own + shared businesses only), stages, fine-ranking hook."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping, Sequence

import pytest
from index_fakes import ListIndex

from assetmatch.config import BusinessConfig, Settings
from assetmatch.matching.fine import Cascade, FineCalibration, Fusion
from assetmatch.matching.matcher import (
    Matcher,
    UnknownBusinessError,
    UnknownDatabaseError,
    visible_businesses,
)
from assetmatch.matching.selection import SelectionParams, SetSelector
from assetmatch.matching.types import Hit
from assetmatch.models import Column, TableAsset
from assetmatch.types import Siblings


def _asset(business: str, name: str, cols: list[str]) -> TableAsset:
    return TableAsset(business=business, database=business, name=name, columns=[Column(name=c) for c in cols])


ASSETS = [
    _asset("game_a", "payments", ["user_id", "amount"]),
    _asset("game_a", "users", ["user_id", "country"]),
    _asset("game_b", "payments", ["user_id", "amount"]),
    _asset("common", "calendar", ["day", "holiday"]),
]


class LeakyIndex(ListIndex):
    """An index whose recall ignores `businesses` (a buggy path): the Matcher must still isolate."""

    def __init__(self) -> None:
        super().__init__(ASSETS)

    def hits(self) -> list[Hit]:
        return [Hit(a, 10.0 - i, i + 1, "lexical", ["payments"]) for i, a in enumerate(self.assets)]

    def expand(
        self,
        seeds: Mapping[str, float],
        businesses: Collection[str],
        k: int = 20,
        unused_tables: Collection[str] = (),
        databases: Collection[str] | None = None,
    ) -> list[Hit]:
        return [Hit(a, 1.0, i + 1, "graph") for i, a in enumerate(seeds)]

    def neighbors(self, asset_id: str) -> set[str]:
        return {"game_a.game_a.users"} if asset_id == "game_a.game_a.payments" else set()


def settings(shared: bool) -> Settings:
    return Settings(
        businesses=[
            BusinessConfig(name="game_a"),
            BusinessConfig(name="game_b"),
            BusinessConfig(name="common", shared=shared),
        ]
    )


def test_visible_businesses() -> None:
    assert visible_businesses(settings(shared=True), "game_a") == ["game_a", "common"]
    assert visible_businesses(settings(shared=False), "game_a") == ["game_a"]
    with pytest.raises(UnknownBusinessError, match="unknown business 'game_z'"):
        visible_businesses(settings(shared=True), "game_z")
    # no businesses declared (e.g. a benchmark library): any business name is its own tenant
    assert visible_businesses(Settings(), "anything") == ["anything"]


@pytest.mark.parametrize("shared", [True, False])
def test_match_never_returns_another_business(shared: bool) -> None:
    index = LeakyIndex()
    matcher = Matcher(index, settings(shared), selector=SetSelector(SelectionParams(min_score=0.0)))  # type: ignore[arg-type]
    result = matcher.match("game_a", "payments by country", k=10)
    businesses = {t.business for t in result.ranked}
    assert "game_b" not in businesses
    assert ("common" in businesses) is shared
    assert set(result.selected) <= {t.asset_id for t in result.ranked}
    assert all(index.assets[a].business in {"game_a", "common"} for a in result.selected)
    assert index.asked[0] == (["game_a", "common"] if shared else ["game_a"])
    assert {"recall", "coarse", "select", "total"} <= set(result.timings_ms)
    top = result.ranked[0]
    assert top.asset_id == "game_a.game_a.payments" and top.selected
    assert any(r.startswith("lexical #1 (payments)") for r in top.reasons)


def test_a_scope_holds_even_when_the_index_ignores_it() -> None:
    """The scope is isolated like the business: a path that ignored it loses its hits outside it."""
    index = LeakyIndex()
    matcher = Matcher(index, settings(True), selector=SetSelector(SelectionParams(min_score=0.0)))  # type: ignore[arg-type]
    whole = matcher.match("game_a", "payments by country", k=10)
    assert {t.business for t in whole.ranked} == {"game_a", "common"}
    scoped = matcher.match("game_a", "payments by country", k=10, databases=["common"])
    assert [t.asset_id for t in scoped.ranked] == ["common.common.calendar"]
    assert scoped.selected == ["common.common.calendar"]
    with pytest.raises(UnknownDatabaseError, match="'game_b'"):  # not visible to game_a
        matcher.match("game_a", "payments by country", databases=["game_b"])


class ReverseFine:
    """A fine ranker that prefers the coarse list's last table (confidently: logits -20, 0, 20 ...)."""

    direction = 1.0  # -1: keeps the coarse order instead

    def __init__(self, calibration: FineCalibration | None = None) -> None:
        self.seen: list[str] = []
        self.examples: dict[str, str] = {}
        self.siblings: dict[str, tuple[str, ...]] = {}
        self._calibration = calibration or FineCalibration()

    def logits(
        self,
        business: str,
        requirement: str,
        assets: Sequence[TableAsset],
        examples: Mapping[str, str] | None = None,
        siblings: Siblings | None = None,
    ) -> list[float]:
        self.seen = [a.asset_id for a in assets]
        self.examples = dict(examples or {})
        self.siblings = {a: None if names is None else tuple(names) for a, names in (siblings or {}).items()}
        return [self.direction * (-20.0 + 40.0 * i) for i in range(len(assets))]

    def version(self, business: str) -> str:
        return f"{business}-v3"

    def calibration(self, business: str) -> FineCalibration:
        return self._calibration


def test_fine_ranker_reranks_top_n_and_uses_business_threshold() -> None:
    cfg = settings(shared=False)
    cfg.matching.fine_top_n = 2
    cfg.matching.fine_thresholds = {"game_a": 0.5}
    fine = ReverseFine()
    matcher = Matcher(LeakyIndex(), cfg, fine_ranker=fine)  # type: ignore[arg-type]
    result = matcher.match("game_a", "payments", k=5)
    assert len(fine.seen) == 2  # only the coarse top-N is rescored
    assert result.ranked[0].fine_score == pytest.approx(1.0) and result.ranked[0].asset_id == fine.seen[1]
    assert result.model_version == "game_a-v3"
    # fine scores 1.0 and 0.0 against the business threshold 0.5: one table selected
    assert result.selected == [fine.seen[1]]
    assert "fine" in result.timings_ms


class HistoryIndex(LeakyIndex):
    """LeakyIndex whose usage path found a past request that used `payments` (game_a)."""

    def recall(self, *args: object, **kwargs: object) -> dict[str, list[Hit]]:
        hits = super().recall(*args, **kwargs)  # type: ignore[arg-type]
        past = "payments by country last week"
        usage = Hit(
            "game_a.game_a.payments", 0.5, 1, "usage", [f"used by a similar past request: {past}"], past
        )
        return {**hits, "usage": [usage]}


def test_the_fine_ranker_is_shown_the_past_request_the_usage_path_found() -> None:
    cfg = settings(shared=False)
    cfg.matching.fine_top_n = 2
    fine = ReverseFine()
    Matcher(HistoryIndex(), cfg, fine_ranker=fine).match("game_a", "payments", k=5)  # type: ignore[arg-type]
    assert "game_a.game_a.payments" in fine.seen
    assert fine.examples == {"game_a.game_a.payments": "payments by country last week"}


class TwoDatabaseIndex(LeakyIndex):
    """game_a's tables live in two databases (game_a and an archive)."""

    def __init__(self) -> None:
        archive = TableAsset(business="game_a", database="archive", name="old_payments", columns=[])
        ListIndex.__init__(self, [*ASSETS, archive])


def test_the_fine_ranker_is_shown_the_other_tables_of_each_tables_database() -> None:
    cfg = settings(shared=False)
    cfg.matching.fine_top_n = 2
    fine = ReverseFine()
    Matcher(LeakyIndex(), cfg, fine_ranker=fine).match("game_a", "payments", k=5)  # type: ignore[arg-type]
    # one database per business: nothing to tell the candidates apart, no context shown
    assert set(fine.siblings) == set(fine.seen) and set(fine.siblings.values()) == {None}
    index = TwoDatabaseIndex()
    Matcher(index, cfg, fine_ranker=fine).match("game_a", "payments", k=5)  # type: ignore[arg-type]
    assert set(fine.siblings) == set(fine.seen)
    for asset_id, names in fine.siblings.items():
        assert names is not None
        asset = index.assets[asset_id]
        expected = {
            a.name
            for a in index.assets.values()
            if (a.business, a.database) == (asset.business, asset.database) and a.asset_id != asset_id
        }
        assert set(names) == expected and expected  # every one of them, and only its own database's


def test_selection_uses_the_fine_scores_and_the_adapters_rules_when_an_adapter_is_active() -> None:
    """With an adapter, the set is chosen on fused fine probabilities by the rules calibrated with it
    (here: every judged table), not by the coarse selection (which keeps the top table only)."""
    cfg = settings(shared=False)
    rules = SelectionParams(min_score=0.0, same_group=False, fk_closure=False, max_tables=4)
    fine = ReverseFine(FineCalibration(threshold=0.0, selection=rules))
    coarse_only = SetSelector(SelectionParams(min_score=1.1))  # coarse: top table only
    plain = Matcher(LeakyIndex(), cfg, selector=coarse_only)  # type: ignore[arg-type]
    assert len(plain.match("game_a", "payments").selected) == 1
    matcher = Matcher(LeakyIndex(), cfg, selector=coarse_only, fine_ranker=fine)  # type: ignore[arg-type]
    result = matcher.match("game_a", "payments", k=5)
    assert len(fine.seen) == 2 and result.selected == [fine.seen[1], fine.seen[0]]
    assert all(t.fine_score is not None for t in result.ranked)


class AgreeingFine(ReverseFine):
    """A fine ranker that keeps the coarse order (logits 20, -20, ...): the top table stays."""

    direction = -1.0


def test_keep_coarse_set_lets_fused_scores_decide_the_set_only_where_the_top_table_changes() -> None:
    """`FineCalibration.keep_coarse_set`: a fine ranking that keeps the coarse top table answers with
    the coarse selection's set (its ranking is still the fine one); one that changes the top table
    answers with the set the fused scores select."""
    cfg = settings(shared=False)
    rules = SelectionParams(min_score=0.0, same_group=False, fk_closure=False, max_tables=4)
    coarse_only = SetSelector(SelectionParams(min_score=1.1))  # coarse: top table only
    calibration = FineCalibration(threshold=0.0, selection=rules, keep_coarse_set=True)
    coarse = Matcher(LeakyIndex(), cfg, selector=coarse_only).match("game_a", "payments", k=5)  # type: ignore[arg-type]

    agreeing = AgreeingFine(calibration)
    kept = Matcher(LeakyIndex(), cfg, selector=coarse_only, fine_ranker=agreeing).match(
        "game_a", "payments", k=5
    )  # type: ignore[arg-type]
    assert kept.fine_depth == 2 and kept.ranked[0].fine_score is not None
    assert kept.selected == coarse.selected and len(kept.selected) == 1
    deciding = AgreeingFine(dataclasses.replace(calibration, keep_coarse_set=False))
    fused = Matcher(LeakyIndex(), cfg, selector=coarse_only, fine_ranker=deciding).match(
        "game_a", "payments", k=5
    )  # type: ignore[arg-type]
    assert len(fused.selected) == 2  # the same ranking, the fused scores' set
    cfg.matching.fine_thresholds = {"game_a": 0.0}  # a configured threshold decides, coarse set or not
    overridden = Matcher(LeakyIndex(), cfg, selector=coarse_only, fine_ranker=agreeing).match(
        "game_a", "payments", k=5
    )  # type: ignore[arg-type]
    assert len(overridden.selected) == 2
    cfg.matching.fine_thresholds = {}

    reversing = ReverseFine(calibration)
    changed = Matcher(LeakyIndex(), cfg, selector=coarse_only, fine_ranker=reversing).match(
        "game_a", "payments", k=5
    )  # type: ignore[arg-type]
    assert changed.ranked[0].asset_id != coarse.ranked[0].asset_id
    assert changed.selected == [reversing.seen[1], reversing.seen[0]]


def test_cascade_keeps_the_coarse_answer_when_unfamiliar_or_certain() -> None:
    cfg = settings(shared=False)
    unfamiliar = ReverseFine(FineCalibration(familiar=frozenset({"game_a.game_a.users"})))
    matcher = Matcher(LeakyIndex(), cfg, fine_ranker=unfamiliar)  # type: ignore[arg-type]
    coarse = Matcher(LeakyIndex(), cfg).match("game_a", "payments", k=5)
    result = matcher.match("game_a", "payments", k=5)
    assert unfamiliar.seen == []  # the adapter was never asked
    assert result.fine_depth == 0 and result.fine_skipped.startswith("cascade")
    assert [t.asset_id for t in result.ranked] == [t.asset_id for t in coarse.ranked]
    assert result.selected == coarse.selected and result.model_version == coarse.model_version

    certain = ReverseFine(FineCalibration(cascade=Cascade(max_margin=-1.0)))  # any margin is >= -1
    assert (
        Matcher(LeakyIndex(), cfg, fine_ranker=certain).match("game_a", "payments").selected
        == coarse.selected
    )  # type: ignore[arg-type]
    assert certain.seen == []
    never = ReverseFine(FineCalibration(cascade=Cascade.never()))
    answer = Matcher(LeakyIndex(), cfg, fine_ranker=never).match("game_a", "payments")  # type: ignore[arg-type]
    assert never.seen == [] and "did not beat the coarse ranking" in answer.fine_skipped
    shallow = ReverseFine(FineCalibration(cascade=Cascade(depth=2), fusion=Fusion()))
    Matcher(LeakyIndex(), cfg, fine_ranker=shallow).match("game_a", "payments")  # type: ignore[arg-type]
    assert len(shallow.seen) == 2  # only as many candidates as the cascade asks for
    assert Matcher(LeakyIndex(), cfg, fine_ranker=shallow).match("game_a", "payments").fine_depth == 2  # type: ignore[arg-type]


def test_matching_cascade_switches_the_fine_stage_off_or_on_over_the_adapters_own_rule() -> None:
    """`matching.cascade`: never answers coarse-only with an adapter that would run; always runs an
    adapter whose calibration said never, at its calibrated depth, and still defers on tables of
    databases it did not learn."""
    cfg = settings(shared=False)
    coarse = Matcher(LeakyIndex(), cfg).match("game_a", "payments", k=5)
    cfg.matching.cascade = "never"
    eager = ReverseFine(FineCalibration(cascade=Cascade(depth=2)))
    off = Matcher(LeakyIndex(), cfg, fine_ranker=eager).match("game_a", "payments", k=5)  # type: ignore[arg-type]
    assert eager.seen == [] and off.fine_depth == 0 and "switched off" in off.fine_skipped
    assert off.selected == coarse.selected and off.model_version == coarse.model_version

    cfg.matching.cascade = "always"
    timid = ReverseFine(FineCalibration(cascade=dataclasses.replace(Cascade.never(), depth=2)))
    on = Matcher(LeakyIndex(), cfg, fine_ranker=timid).match("game_a", "payments", k=5)  # type: ignore[arg-type]
    assert len(timid.seen) == 2 and on.fine_depth == 2 and on.model_version == "game_a-v3"
    unfamiliar = ReverseFine(
        FineCalibration(cascade=Cascade.never(), familiar=frozenset({"game_a.game_a.users"}))
    )
    kept = Matcher(LeakyIndex(), cfg, fine_ranker=unfamiliar).match("game_a", "payments", k=5)  # type: ignore[arg-type]
    assert unfamiliar.seen == [] and "did not learn" in kept.fine_skipped
    cfg.matching.cascade = "calibrated"
    assert Matcher(LeakyIndex(), cfg, fine_ranker=timid).match("game_a", "payments").fine_depth == 0  # type: ignore[arg-type]
