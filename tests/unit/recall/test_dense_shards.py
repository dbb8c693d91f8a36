"""Per-business dense shards: shard-local rebuilds, the index type chosen by shard size, lazy loading."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from assetmatch.config import Settings
from assetmatch.lake import Lake
from assetmatch.models import Column, TableAsset
from assetmatch.recall import dense as dense_module
from assetmatch.recall.dense import (
    HNSW_FILE,
    IVFPQ_FILE,
    VECTORS_FILE,
    DenseIndex,
    ShardInfo,
    shard_kind,
    write_shard,
)
from assetmatch.recall.index import IndexSet


@pytest.fixture
def lake_and_settings(tmp_path: Path, encoder: Any, filled_lake: Any) -> tuple[Lake, Settings]:
    # threshold 2: both fixture businesses (5 and 3 tables) get HNSW shards, so each has a FAISS file
    return filled_lake(tmp_path, hnsw_threshold=2)  # type: ignore[no-any-return]


def test_a_change_in_one_business_rebuilds_only_its_shard(
    lake_and_settings: tuple[Lake, Settings], table_editor: Any, shard_stats: Any
) -> None:
    lake, settings = lake_and_settings
    first = IndexSet.build(lake, settings)
    assert first.build_stats is not None and sorted(first.build_stats.rebuilt_shards) == ["game", "music"]
    assert {b: s["kind"] for b, s in first.manifest["dense_shards"].items()} == {
        "game": "hnsw",
        "music": "hnsw",
    }
    assert first.manifest["dense_index"] == "hnsw"

    table_editor(lake)
    second = IndexSet.build(lake, settings)
    stats = second.build_stats
    assert stats is not None
    assert (stats.rebuilt_shards, stats.reused_shards) == (["music"], ["game"])
    assert (stats.embedded_assets, stats.reused_assets) == (1, 7)  # only the changed table re-encoded
    assert (
        second.manifest["counts"]["rebuilt_shards"] == 1 and second.manifest["counts"]["reused_shards"] == 1
    )

    # the unchanged business's files are the previous index's files (hard links), the changed one's new
    before, after = shard_stats(first, "dense", "game"), shard_stats(second, "dense", "game")
    assert set(after) == {VECTORS_FILE, HNSW_FILE}
    assert all(after[name].st_ino == before[name].st_ino for name in after)
    music_before, music_after = shard_stats(first, "dense", "music"), shard_stats(second, "dense", "music")
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


@pytest.fixture
def one_faiss_thread() -> Any:
    """FAISS trains with one OpenMP thread: its spinning threads crawl on a shared, loaded machine."""
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


def _low_rank(n: int, dim: int, latent: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Clusters in a `latent`-dimensional subspace, plus a little noise in every dimension."""
    basis, _ = np.linalg.qr(rng.normal(size=(dim, latent)))
    centers = rng.normal(size=(n // 20, latent))
    z = centers[rng.integers(0, len(centers), n)] + 0.6 * rng.normal(size=(n, latent))
    x = z @ basis.T + 0.05 * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), basis


def test_ivfpq_and_hnsw_shards_keep_recall_at_10_within_a_hundredth_of_flat(
    tmp_path: Path, one_faiss_thread: Any
) -> None:
    """IVF-PQ above `ivfpq_threshold`, on vectors shaped like sentence embeddings: clustered in a few
    directions (MiniLM's table documents have a low intrinsic dimension: on the 10,150 vectors of
    benchmarks/recall_scale.py's tables, IVF-PQ with these parameters finds 0.999 of the exact top 10).
    Isotropic noise in all 384 dimensions, as in the HNSW test above, defeats any coarse quantizer and
    is no sentence encoder's output."""
    rng = np.random.default_rng(3)
    n = 20_000
    vectors, basis = _low_rank(n, 384, 16, rng)
    targets = rng.choice(n, 200, replace=False)
    queries = vectors[targets] + 0.2 * (rng.normal(size=(200, 16)) @ basis.T).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    recall_at_10: dict[str, float] = {}
    top: dict[str, list[set[int]]] = {}
    assert (shard_kind(n, n), shard_kind(n, 1000), shard_kind(n, 1000, 1000)) == ("flat", "hnsw", "ivfpq")
    for kind in ("flat", "hnsw", "ivfpq"):
        params = write_shard(tmp_path / kind / "shards" / "biz", vectors, kind)
        dense = DenseIndex(tmp_path / kind, {"biz": ShardInfo("biz", kind, n, "d", params)}, {"biz": (0, n)})
        top[kind] = [{row for row, _ in dense.search(q, ["biz"], 10)} for q in queries]
        recall_at_10[kind] = float(np.mean([t in found for t, found in zip(targets, top[kind])]))
    assert 0.5 < recall_at_10["flat"] < 1  # not a trivial fixture
    assert abs(recall_at_10["hnsw"] - recall_at_10["flat"]) <= 0.01
    assert abs(recall_at_10["ivfpq"] - recall_at_10["flat"]) <= 0.01
    overlap = np.mean([len(a & b) / 10 for a, b in zip(top["flat"], top["ivfpq"])])
    assert overlap >= 0.95
    # the point of IVF-PQ: its index holds codes, not vectors (48 bytes a row instead of 1,536)
    folder = tmp_path / "ivfpq" / "shards" / "biz"
    assert (folder / IVFPQ_FILE).stat().st_size * 5 < (folder / VECTORS_FILE).stat().st_size
    assert params["nlist"] == 512 and params["nprobe"] == 64 and params["m"] == 48 and params["nbits"] == 8


def test_a_shard_above_the_ivfpq_threshold_records_its_kind_and_parameters(
    lake_and_settings: tuple[Lake, Settings],
    monkeypatch: pytest.MonkeyPatch,
    one_faiss_thread: Any,
    shard_stats: Any,
) -> None:
    lake, settings = lake_and_settings
    settings = settings.model_copy(deep=True)
    settings.recall.ivfpq_threshold = 4  # game (5 tables) gets IVF-PQ, music (3) stays HNSW
    monkeypatch.setattr(dense_module, "IVFPQ_MIN_ROWS", 1)  # the fixture is far below a trainable size
    first = IndexSet.build(lake, settings)
    shards = first.manifest["dense_shards"]
    assert (shards["game"]["kind"], shards["music"]["kind"]) == ("ivfpq", "hnsw")
    assert first.manifest["dense_index"] == "mixed"
    assert set(shards["game"]["params"]) == {"nlist", "m", "nbits", "nprobe", "refine", "train_rows"}
    assert shards["music"]["params"]["M"] == 32
    assert set(shard_stats(first, "dense", "game")) == {VECTORS_FILE, IVFPQ_FILE}

    loaded = IndexSet.load_latest(settings.recall.index_root, settings)
    hits = loaded.recall("user payment orders", ["game"], paths=["dense"])["dense"]
    assert len(hits) == 5 and {loaded.assets[h.asset_id].business for h in hits} == {"game"}

    lake.merge_assets(
        [
            TableAsset(
                business="music", name="concert", comment="concerts and tours", columns=[Column(name="Year")]
            )
        ],
        run_id="edit",
    )
    second = IndexSet.build(lake, settings)
    assert second.build_stats is not None and second.build_stats.reused_shards == ["game"]
    assert second.manifest["dense_shards"]["game"] == shards["game"]  # kind and parameters kept


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
