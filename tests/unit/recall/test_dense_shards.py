"""Per-business dense shards: shard-local rebuilds, the index type chosen by shard size, lazy loading."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from assetmatch.config import Settings
from assetmatch.lake import Lake
from assetmatch.models import Column, TableAsset
from assetmatch.recall.dense import HNSW_FILE, VECTORS_FILE, DenseIndex, ShardInfo, shard_kind, write_shard
from assetmatch.recall.index import IndexSet


@pytest.fixture
def lake_and_settings(
    tmp_path: Path, encoder: Any, lake_filler: Callable[[Lake], None]
) -> tuple[Lake, Settings]:
    # threshold 2: both fixture businesses (5 and 3 tables) get HNSW shards, so each has a FAISS file
    settings = Settings(
        lake={"uri": str(tmp_path / "lake")},
        recall={"index_root": str(tmp_path / "indexes"), "hnsw_threshold": 2},
    )
    lake = Lake.from_settings(settings)
    lake_filler(lake)
    return lake, settings


def _shard_files(index: IndexSet, business: str) -> dict[str, os.stat_result]:
    folder = index.folder / "dense" / "shards" / index.manifest["dense_shards"][business]["folder"]
    return {p.name: p.stat() for p in folder.iterdir()}


def test_a_change_in_one_business_rebuilds_only_its_shard(lake_and_settings: tuple[Lake, Settings]) -> None:
    lake, settings = lake_and_settings
    first = IndexSet.build(lake, settings)
    assert first.build_stats is not None and sorted(first.build_stats.rebuilt_shards) == ["game", "music"]
    assert {b: s["kind"] for b, s in first.manifest["dense_shards"].items()} == {
        "game": "hnsw",
        "music": "hnsw",
    }
    assert first.manifest["dense_index"] == "hnsw"

    changed = TableAsset(
        business="music",
        name="concert",
        comment="concerts and their tours",
        columns=[Column(name="concert_ID"), Column(name="concert_Name"), Column(name="Year")],
    )
    lake.merge_assets([changed], run_id="edit")
    second = IndexSet.build(lake, settings)
    stats = second.build_stats
    assert stats is not None
    assert (stats.rebuilt_shards, stats.reused_shards) == (["music"], ["game"])
    assert (stats.embedded_assets, stats.reused_assets) == (1, 7)  # only the changed table re-encoded
    assert (
        second.manifest["counts"]["rebuilt_shards"] == 1 and second.manifest["counts"]["reused_shards"] == 1
    )

    # the unchanged business's files are the previous index's files (hard links), the changed one's new
    before, after = _shard_files(first, "game"), _shard_files(second, "game")
    assert set(after) == {VECTORS_FILE, HNSW_FILE}
    assert all(after[name].st_ino == before[name].st_ino for name in after)
    music_before, music_after = _shard_files(first, "music"), _shard_files(second, "music")
    assert all(music_after[name].st_ino != music_before[name].st_ino for name in music_after)
    assert second.manifest["dense_shards"]["game"] == first.manifest["dense_shards"]["game"]
    assert (
        second.manifest["dense_shards"]["music"]["digest"]
        != first.manifest["dense_shards"]["music"]["digest"]
    )

    # a full build rebuilds every shard
    full = IndexSet.build(lake, settings, full=True)
    assert full.build_stats is not None and sorted(full.build_stats.rebuilt_shards) == ["game", "music"]


def test_shards_load_lazily_and_a_query_reads_only_its_businesses(
    lake_and_settings: tuple[Lake, Settings],
) -> None:
    lake, settings = lake_and_settings
    IndexSet.build(lake, settings)
    index = IndexSet.load_latest(settings.recall.index_root, settings)
    assert index.dense is not None and index.dense.loaded == []
    hits = index.recall("concert tours by year", ["music"], paths=["dense"])["dense"]
    assert hits and {index.assets[h.asset_id].business for h in hits} == {"music"}
    assert index.dense.loaded == ["music"]
    assert isinstance(index.dense.shard("music").vectors, np.memmap)  # memory-mapped, not read
    assert len(index.dense.vectors) == len(index.asset_ids) == index.dense.rows


def _clustered(n: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    centers = rng.normal(size=(max(1, n // 20), dim))
    x = centers[rng.integers(0, len(centers), n)] + 0.6 * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_hnsw_shard_keeps_recall_at_10_within_a_hundredth_of_flat(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    vectors = _clustered(3000, 384, rng)
    targets = rng.choice(len(vectors), 200, replace=False)
    queries = vectors[targets] + 0.25 * rng.normal(size=(200, 384)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    ranges = {"biz": (0, len(vectors))}
    recall_at_10: dict[str, float] = {}
    top: dict[str, list[set[int]]] = {}
    for threshold in (10_000, 1_000):  # the same shard, flat below the threshold, HNSW above
        kind = shard_kind(len(vectors), threshold)
        write_shard(tmp_path / kind / "shards" / "biz", vectors, kind)
        dense = DenseIndex(tmp_path / kind, {"biz": ShardInfo("biz", kind, len(vectors), "d")}, ranges)
        top[kind] = [{row for row, _ in dense.search(q, ["biz"], 10)} for q in queries]
        recall_at_10[kind] = float(np.mean([t in found for t, found in zip(targets, top[kind])]))
    assert set(recall_at_10) == {"flat", "hnsw"} and 0.5 < recall_at_10["flat"] < 1  # not a trivial fixture
    assert abs(recall_at_10["hnsw"] - recall_at_10["flat"]) <= 0.01
    overlap = np.mean([len(a & b) / 10 for a, b in zip(top["flat"], top["hnsw"])])
    assert overlap >= 0.95  # and HNSW finds (nearly) the same ten rows as the exact search


def test_a_loaded_index_still_answers_after_its_folder_is_pruned(
    lake_and_settings: tuple[Lake, Settings], caplog: pytest.LogCaptureFixture
) -> None:
    import shutil

    lake, settings = lake_and_settings
    IndexSet.build(lake, settings)
    index = IndexSet.load_latest(settings.recall.index_root, settings)
    assert index.dense is not None
    queries, _ = index.query_vectors("concert tours by year")
    shutil.rmtree(index.folder)  # what `publish.prune` does to an old folder a server may still hold
    with caplog.at_level("WARNING", logger="assetmatch.recall.dense"):
        found = index.dense.search(queries, ["music"], 3)
    # the mapped vectors answer exactly; the HNSW file that could not be read is named
    rows = range(*index.ranges["music"])
    assert len(found) == 3 and all(row in rows for row, _ in found)
    assert "hnsw.faiss unreadable, searching it exactly" in caplog.text
