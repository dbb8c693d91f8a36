"""Each recall path on a tiny two-business library, and business isolation across all of them."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from assetmatch.matching.types import Hit
from assetmatch.recall.documents import lexical_tokens, table_document
from assetmatch.recall.index import IndexSet


def ids(hits: list[Hit]) -> list[str]:
    return [h.asset_id for h in hits]


def test_documents_use_names_comments_columns_and_keys(built: IndexSet) -> None:
    asset = built.assets["music.singer_in_concert"]
    doc = table_document(asset)
    assert doc.startswith("table singer in concert")
    assert "references concert, singer" in doc
    tokens = lexical_tokens(built.assets["game.dws_user_active_1d"])
    assert {"user", "activ", "活跃"} <= set(tokens) and "dws" not in tokens


def test_lexical_matches_identifiers_and_explains(built: IndexSet) -> None:
    hits = built.recall("total pay amount per order", ["game"], paths=["lexical"])["lexical"]
    assert hits[0].asset_id == "game.dwd_pay_order_di"
    assert hits[0].path == "lexical" and hits[0].rank == 1
    assert {"pay", "amount", "order"} <= set(hits[0].matched)


def test_lexical_matches_chinese_comments(built: IndexSet) -> None:
    hits = built.recall("各注册渠道的用户", ["game"], paths=["lexical"])["lexical"]
    assert hits[0].asset_id == "game.dim_user"
    assert "渠道" in hits[0].matched


def test_chinese_requirement_finds_english_schema_through_glosses(built: IndexSet) -> None:
    result = built.recall("每个歌手的年龄是多少？", ["music"], paths=["lexical", "dense"])
    assert result["lexical"][0].asset_id == "music.singer"
    assert "singer" in result["lexical"][0].matched  # matched via the CC-CEDICT gloss of 歌手
    assert result["dense"][0].asset_id == "music.singer"
    assert "translation" in result["dense"][0].matched[0]


def test_english_requirement_is_untouched_by_translation(built: IndexSet) -> None:
    text = "age of each singer"
    assert built.lexical_weights(text) == {"age": 1.0, "singer": 1.0}
    _, gloss = built.query_vectors(text)
    assert gloss == ""


def test_dense_ranks_by_meaning(built: IndexSet) -> None:
    hits = built.recall("which performers appeared at which shows", ["music"], paths=["dense"])["dense"]
    assert hits[0].asset_id in {"music.singer_in_concert", "music.concert", "music.singer"}
    assert [h.rank for h in hits] == list(range(1, len(hits) + 1))
    assert all(a.score >= b.score for a, b in itertools.pairwise(hits))


def test_glossary_maps_colloquial_terms_to_tables(built: IndexSet) -> None:
    hits = built.recall("普通活跃的人数", ["game"], paths=["glossary"])["glossary"]
    assert ids(hits) == ["game.dws_user_active_1d"]
    assert hits[0].matched == ["glossary term: 普通活跃"]
    hits = built.recall("users from channel a", ["game"], paths=["glossary"])["glossary"]
    assert ids(hits) == ["game.dim_user"]


def test_usage_votes_for_tables_of_similar_past_requests(built: IndexSet) -> None:
    # the query log says "virtual goods" meant the item tables; nothing in their metadata says so
    hits = built.recall("best spenders on virtual goods", ["game"], paths=["usage"])["usage"]
    assert set(ids(hits)[:2]) == {"game.dwd_item_purchase_di", "game.dim_item"}
    assert "similar past request" in hits[0].matched[0]
    # each table carries the nearest past request that used it, for the fine ranker to read
    assert all(h.example and h.example in h.matched[0] for h in hits)
    # train requirements vote too
    hits = built.recall("whales ranked by recharge", ["game"], paths=["usage"])["usage"]
    assert ids(hits)[0] == "game.dwd_pay_order_di"


def test_each_usage_hit_says_how_close_its_nearest_past_request_is(built: IndexSet) -> None:
    """`Hit.nearest`: the highest cosine between the request and a past request that used the table
    and voted — near 1 for a logged twin, lower for a loose neighbour, never one left out."""
    import numpy as np

    text = "whales by total recharge"  # logged, with its paraphrase "who recharged the most"
    vector = built.query_vectors(text)[0][0]
    voted = {h.asset_id: h for h in built.recall(text, ["game"], paths=["usage"])["usage"]}
    twin = voted["game.dwd_pay_order_di"]
    assert twin.nearest == pytest.approx(1.0, abs=1e-3)  # the request itself is in the history
    from assetmatch.recall.paths import USAGE_MIN_COSINE, USAGE_NEIGHBOURS

    assert len(built.past) <= USAGE_NEIGHBOURS  # so every past request related to the text votes

    def best(row: int, left_out: set[int]) -> float:
        """The best cosine above the path's floor among the past requests that used the table."""
        sims = [
            float(built.usage_vectors[i] @ vector) for i in built.past_rows_using([row]) if i not in left_out
        ]
        return max((c for c in sims if c >= USAGE_MIN_COSINE), default=0.0)

    for hit in voted.values():
        assert hit.nearest == pytest.approx(best(built.row_of[hit.asset_id], set()), abs=1e-5)
    left = {h.asset_id: h for h in built.recall(text, ["game"], paths=["usage"], leave_own_out=True)["usage"]}
    own = set(built.past_rows_of_request(text))
    for hit in left.values():  # what is left out of the vote is left out of `nearest` too
        assert hit.nearest == pytest.approx(best(built.row_of[hit.asset_id], own), abs=1e-5)
        assert hit.nearest < twin.nearest
    assert all(np.isfinite(h.nearest) and h.nearest >= 0 for h in left.values())


def test_each_usage_hit_says_how_many_words_its_nearest_past_request_shares(built: IndexSet) -> None:
    """`Hit.nearest_words`: the highest Jaccard of BM25 tokens between the request and a past request
    that used the table and voted — 1 for a logged copy, less for a rewording, never one left out."""
    from assetmatch.recall.paths import jaccard
    from assetmatch.recall.tokenize import tokenize

    text = "whales by total recharge"
    words = frozenset(tokenize(text))
    voted = {h.asset_id: h for h in built.recall(text, ["game"], paths=["usage"])["usage"]}
    assert voted["game.dwd_pay_order_di"].nearest_words == 1.0  # the request itself is logged
    own = set(built.past_rows_of_request(text))
    left = {h.asset_id: h for h in built.recall(text, ["game"], paths=["usage"], leave_own_out=True)["usage"]}
    for hit in left.values():
        row = built.row_of[hit.asset_id]
        shares = [jaccard(words, built.past_words(i)) for i in built.past_rows_using([row]) if i not in own]
        # a past request that shares a word votes (the fixture's history is below the neighbours' cap)
        assert hit.nearest_words == pytest.approx(max(shares, default=0.0)) and hit.nearest_words < 1.0
    assert jaccard(frozenset(), frozenset()) == 0.0
    assert jaccard(frozenset({"a", "b"}), frozenset({"b", "c"})) == pytest.approx(1 / 3)


def test_a_labelled_requirement_being_judged_does_not_vote_for_itself(built: IndexSet) -> None:
    text = "whales by total recharge"  # a train requirement, so in the usage history
    own = built.past_rows_of_request(text)
    assert own and built.past_rows_of_request("  Whales by TOTAL   recharge ") == own  # case, spacing
    # its paraphrase, logged with the same query (up to case and spacing), is the same request
    assert {built.past[i].text for i in own} == {text, "who recharged the most"}
    voted = built.recall(text, ["game"], paths=["usage"])["usage"]
    assert any(text in m for h in voted for m in h.matched)  # a live request may find its twin
    left = built.recall(text, ["game"], paths=["usage"], leave_own_out=True)["usage"]
    assert all(text not in m and "who recharged" not in m for h in left for m in h.matched)
    # nor is it the past request the fine ranker is shown beside a table
    assert any(h.example.lower() == text for h in voted)
    assert all(h.example and h.example.lower() != text for h in left)
    # only the same request is left out: a similar request whose query is not known to be the same
    # one votes, as it would for a new request in serving
    paraphrase = built.recall("whales ranked by recharge", ["game"], paths=["usage"], leave_own_out=True)
    assert ids(paraphrase["usage"])[0] == "game.dwd_pay_order_di"
    assert built.past_rows_of_request("whales ranked by recharge") == []


def test_tables_taken_as_never_used_get_no_vote_from_past_requests(built: IndexSet) -> None:
    text = "whales ranked by recharge"
    assert ids(built.recall(text, ["game"], paths=["usage"])["usage"])[0] == "game.dwd_pay_order_di"
    cold = built.recall(text, ["game"], paths=["usage"], unused_tables=["game.dwd_pay_order_di"])["usage"]
    assert "game.dwd_pay_order_di" not in ids(cold)
    # nor does any past request that used it vote for the other tables it used
    used_it = built.past_rows_using([built.row_of["game.dwd_pay_order_di"]])
    assert "game.dwd_pay_order_di" in built.used_tables()
    assert used_it and all(built.past[i].text[:80] not in m for i in used_it for h in cold for m in h.matched)


def test_usage_never_reads_dev_or_test_requirements(built: IndexSet) -> None:
    assert {p.origin for p in built.past} == {"query_log", "requirements"}
    assert all("secret" not in p.text for p in built.past)
    hits = built.recall("secret request about leaderboards", ["game"], paths=["usage"])["usage"]
    assert "game.dim_item" not in ids(hits) or all("secret" not in m for h in hits for m in h.matched)


def test_graph_expand_reaches_bridge_tables(built: IndexSet) -> None:
    hits = built.expand({"music.singer": 1.0, "music.concert": 0.8}, ["music"])
    assert "music.singer_in_concert" in ids(hits)
    bridge = next(h for h in hits if h.asset_id == "music.singer_in_concert")
    assert bridge.path == "graph" and any("fk with" in m for m in bridge.matched)


def test_graph_uses_query_log_co_usage(built: IndexSet) -> None:
    assert built.neighbors("game.dim_item") == {"game.dwd_item_purchase_di"}
    assert built.neighbors("game.dim_user") == {
        "game.dws_user_active_1d",
        "game.dwd_pay_order_di",
    }
    assert built.neighbors("no.such.table") == set()


def test_graph_of_tables_never_used_keeps_foreign_keys_and_drops_co_usage(built: IndexSet) -> None:
    # game.dim_item is linked to game.dwd_item_purchase_di by query-log co-usage only
    warm = ids(built.expand({"game.dim_item": 1.0}, ["game"]))
    assert "game.dwd_item_purchase_di" in warm
    cold = built.expand({"game.dim_item": 1.0}, ["game"], unused_tables=["game.dim_item"])
    assert ids(cold) == ["game.dim_item"]  # nothing else links to it without the history
    # foreign keys stay: music has no history here, and its walk is the same either way
    seeds = {"music.singer": 1.0, "music.concert": 0.8}
    music = built.expand(seeds, ["music"])
    assert [(h.asset_id, h.score) for h in music] == [
        (h.asset_id, h.score)
        for h in built.expand(seeds, ["music"], unused_tables=["music.singer", "music.concert"])
    ]
    assert built.neighbors("game.dim_item") == {"game.dwd_item_purchase_di"}  # the index is unchanged


def test_join_graph_without_co_usage() -> None:
    from assetmatch.recall.graph import FK_WEIGHT, JoinGraph

    # 0-1 foreign key and co-used, 1-2 co-used, 2-3 foreign key, 3-4 co-used
    graph = JoinGraph.build(5, [(0, 1), (2, 3)], [[0, 1], [1, 2], [3, 4], [3, 4]])
    cold = graph.without_co_usage([1])
    assert cold.edge_kind(0, 1) == "fk" and cold.adjacency[0, 1] == FK_WEIGHT
    assert cold.edge_kind(1, 2) is None and cold.adjacency[1, 2] == 0
    assert set(cold.neighbors(1).tolist()) == {0}
    # edges that do not touch row 1 are as they were
    assert cold.edge_kind(3, 4) == "co-usage" and cold.adjacency[3, 4] == graph.adjacency[3, 4]
    assert cold.adjacency[2, 3] == FK_WEIGHT and (cold.adjacency != cold.adjacency.T).nnz == 0
    assert graph.edge_kind(0, 1) == "fk+co-usage" and graph.adjacency[1, 2] > 0  # the original untouched
    assert graph.without_co_usage([]) is graph


@pytest.mark.parametrize(
    "text",
    [
        "singer age",
        "用户支付金额",
        "普通活跃",
        "best spenders on virtual goods",
        "巡演",
        "channel A concert singer",
    ],
)
def test_business_isolation(built: IndexSet, text: str) -> None:
    for business, other in (("game", "music."), ("music", "game.")):
        result = built.recall(text, [business], k=50)
        assert set(result) == {"lexical", "dense", "glossary", "usage"}
        for hits in result.values():
            assert not [h for h in hits if h.asset_id.startswith(other)]
        seeds = {a: 1.0 for a in built.assets}  # even seeds from everywhere stay inside
        assert all(h.asset_id.startswith(business + ".") for h in built.expand(seeds, [business]))


def test_unknown_business_and_empty_text_give_nothing(built: IndexSet) -> None:
    assert all(h == [] for h in built.recall("singer", ["nobody"]).values())
    assert all(h == [] for h in built.recall("   ", ["music"]).values())
    assert built.expand({"music.singer": 1.0}, ["game"]) == []


def test_paths_can_be_turned_off(built: IndexSet, monkeypatch: Any) -> None:
    assert set(built.recall("singer", ["music"], paths=["lexical"])) == {"lexical"}
    monkeypatch.setattr(built, "paths", ("lexical", "dense"))
    assert set(built.recall("singer", ["music"])) == {"lexical", "dense"}
    assert built.expand({"music.singer": 1.0}, ["music"]) == []
