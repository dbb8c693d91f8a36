"""Per-business BM25 shards: shard-local rebuilds, lazy loading, and scores equal to one library-wide
bm25s index (library-wide statistics), so hits of several businesses stay comparable."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from assetmatch.config import Settings
from assetmatch.lake import Lake
from assetmatch.models import TableAsset
from assetmatch.recall.documents import lexical_tokens
from assetmatch.recall.index import IndexSet
from assetmatch.recall.lexical import Bm25Index, CorpusStats, write_lexical_shard
from assetmatch.recall.paths import top_rows

QUERIES = [
    "singer age by country",
    "user payment orders per channel",
    "日活跃用户",  # Chinese: own tokens plus CC-CEDICT glosses, weighted
    "concert name and year of each singer",
    "item purchases price",
]


@pytest.fixture
def lake_and_settings(tmp_path: Path, encoder: Any, filled_lake: Any) -> tuple[Lake, Settings]:
    return filled_lake(tmp_path, paths=["lexical", "glossary", "graph"])  # type: ignore[no-any-return]


def _library_wide(index: IndexSet, text: str, businesses: Sequence[str], k: int = 50) -> list[Any]:
    """The lexical path as it was: one bm25s index over every table of the library."""
    bm25 = Bm25Index.build([lexical_tokens(index.assets[a]) for a in index.asset_ids])
    total, parts = bm25.scores(index.lexical_weights(text))
    spans = sorted(index.ranges[b] for b in businesses)
    return [
        (
            index.asset_ids[row],
            score,
            sorted((t for t, v in parts.items() if v[row] > 0), key=lambda t: -parts[t][row]),
        )
        for row, score in top_rows(total, spans, k)
    ]


def _sharded(index: IndexSet, text: str, businesses: Sequence[str], k: int = 50) -> list[Any]:
    return [
        (h.asset_id, h.score, h.matched) for h in index.recall(text, businesses, k, ["lexical"])["lexical"]
    ]


def test_a_change_in_one_business_rewrites_only_its_lexical_shard(
    lake_and_settings: tuple[Lake, Settings], table_editor: Any, shard_stats: Any
) -> None:
    lake, settings = lake_and_settings
    first = IndexSet.build(lake, settings)
    assert first.build_stats is not None
    assert sorted(first.build_stats.rebuilt_lexical_shards) == ["game", "music"]
    assert first.manifest["counts"]["retokenized_assets"] == 8

    table_editor(lake)
    second = IndexSet.build(lake, settings)
    stats = second.build_stats
    assert stats is not None
    assert (stats.rebuilt_lexical_shards, stats.reused_lexical_shards) == (["music"], ["game"])
    assert second.manifest["counts"]["retokenized_assets"] == 1  # the music shard's other tables reuse tokens
    before, after = shard_stats(first, "lexical", "game"), shard_stats(second, "lexical", "game")
    assert after and all(after[name].st_ino == before[name].st_ino for name in after)  # hard links
    music_before, music_after = (
        shard_stats(first, "lexical", "music"),
        shard_stats(second, "lexical", "music"),
    )
    assert all(music_after[name].st_ino != music_before[name].st_ino for name in music_after)
    hits = second.recall("tours", ["music"], paths=["lexical"])["lexical"]
    assert [(h.asset_id, h.matched) for h in hits] == [("music.concert", ["tour"])]  # the new comment

    full = IndexSet.build(lake, settings, full=True)
    assert full.build_stats is not None and sorted(full.build_stats.rebuilt_lexical_shards) == [
        "game",
        "music",
    ]


def test_sharded_scores_equal_one_library_wide_bm25_index(lake_and_settings: tuple[Lake, Settings]) -> None:
    lake, settings = lake_and_settings
    built = IndexSet.build(lake, settings)
    for text in QUERIES:
        for businesses in (["game"], ["music"], ["game", "music"]):
            expected = _library_wide(built, text, businesses)
            assert _sharded(built, text, businesses) == expected, (text, businesses)
    assert any(_sharded(built, text, ["game", "music"]) for text in QUERIES)  # not a vacuous comparison

    # after a change in music only, game's linked shard still scores like a fresh library-wide index:
    # the statistics it is scored with are the new library's, not those of the build that wrote it
    lake.merge_assets(
        [TableAsset(business="music", name=f"user_payment_{i}", comment="payments") for i in range(6)],
        run_id="grow",
    )
    grown = IndexSet.load(IndexSet.build(lake, settings).folder)
    assert grown.manifest["counts"]["reused_lexical_shards"] == 1
    for text in QUERIES:
        for businesses in (["game"], ["game", "music"]):
            assert _sharded(grown, text, businesses) == _library_wide(grown, text, businesses)
    game_hit = dict((a, s) for a, s, _ in _sharded(built, "user payment", ["game"]))
    game_hit_now = dict((a, s) for a, s, _ in _sharded(grown, "user payment", ["game"]))
    assert game_hit["game.dwd_pay_order_di"] > game_hit_now["game.dwd_pay_order_di"]  # "payment" got commoner


def test_shards_load_lazily_and_a_query_reads_only_its_businesses(
    lake_and_settings: tuple[Lake, Settings],
) -> None:
    lake, settings = lake_and_settings
    IndexSet.build(lake, settings)
    index = IndexSet.load_latest(settings.recall.index_root, settings)
    assert index.lexical.loaded == [] and index.lexical.num_docs == len(index.asset_ids)
    hits = index.recall("singer age", ["music"], paths=["lexical"])["lexical"]
    assert hits[0].asset_id == "music.singer"
    assert index.lexical.loaded == ["music"]


def test_a_table_scores_the_same_in_a_small_and_a_large_business(tmp_path: Path) -> None:
    """The same document in a 1-table and a 50-table shard: one score, as in one library-wide index
    (a shard's own idf would favour the small business)."""
    same = ["daily", "active", "user"]
    small, large = [same], [same] + [["order", f"t{i}", "amount"] for i in range(49)]
    corpus = CorpusStats()
    for name, docs in (("small", small), ("large", large)):
        counts = write_lexical_shard(tmp_path / "shards" / name, docs, {})
        corpus.add(counts.vocab, counts.df, counts.docs, counts.length)
    from assetmatch.recall.lexical import LexicalIndex, LexicalShardInfo

    shards = {"small": LexicalShardInfo("small", 1, "d1"), "large": LexicalShardInfo("large", 50, "d2")}
    index = LexicalIndex(tmp_path, shards, {"large": (0, 50), "small": (50, 51)}, corpus)
    found = index.search({"daily": 1.0, "active": 1.0}, ["small", "large"], 10)
    assert [row for row, _, _ in found] == [0, 50]  # a tie, broken by row order
    assert found[0][1] == found[1][1] > 0
    bm25 = Bm25Index.build(large + small)
    total, _ = bm25.scores({"daily": 1.0, "active": 1.0})
    assert np.float32(found[0][1]) == total[0] == total[50]
