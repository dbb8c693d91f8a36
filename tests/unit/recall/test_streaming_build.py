"""The build streams the lake's tables and holds one business's at a time; the index it returns reads
a business's tables on first use."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from assetmatch.config import Settings
from assetmatch.lake import Lake
from assetmatch.models import Column, TableAsset
from assetmatch.recall import index as index_module
from assetmatch.recall.assets import BusinessAssets
from assetmatch.recall.index import IndexSet


def _alive_tables() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if type(o) is TableAsset)


def _library(businesses: int, per_business: int) -> list[TableAsset]:
    return [
        TableAsset(
            business=f"b{b}",
            source="s",
            name=f"t{i}_orders",
            comment="orders per user",
            columns=[Column(name="user_id"), Column(name=f"amount_{i}")],
        )
        for b in range(businesses)
        for i in range(per_business)
    ]


@pytest.fixture
def lexical_settings(tmp_path: Path) -> Settings:
    return Settings(
        lake={"uri": str(tmp_path / "lake")},
        recall={"index_root": str(tmp_path / "indexes"), "paths": ["lexical", "glossary", "graph"]},
    )


def test_iter_assets_streams_batches_of_the_live_tables(lexical_settings: Settings) -> None:
    lake = Lake.from_settings(lexical_settings)
    lake.merge_assets(_library(3, 5), run_id="r")
    gone = [a for a in _library(3, 5) if a.name == "t0_orders"]
    lake.merge_assets([a for a in _library(3, 5) if a not in gone], run_id="r2", snapshot_of="s")
    batches = list(lake.iter_assets(batch_rows=4))
    assert all(len(batch) <= 4 for batch in batches) and len(batches) >= 3
    streamed = sorted(a.asset_id for batch in batches for a in batch)
    assert streamed == sorted(a.asset_id for a in lake.read_assets()) and len(streamed) == 12
    assert all(a.name != "t0_orders" for batch in batches for a in batch)  # soft-deleted: left out
    with_deleted = [a for batch in lake.iter_assets(include_deleted=True) for a in batch]
    assert len(with_deleted) == 15
    only = [a.business for batch in lake.iter_assets(businesses=["b1"]) for a in batch]
    assert only == ["b1"] * 4
    assert [a for batch in lake.iter_assets(version=0) for a in batch] and lake.version("assets") == 1


def test_the_build_holds_one_business_at_a_time(
    lexical_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake = Lake.from_settings(lexical_settings)
    lake.merge_assets(_library(6, 20), run_id="r")
    real_iter = Lake.asset_batches

    def small_batches(self: Lake, *args: Any, **kwargs: Any) -> Iterator[Any]:
        return real_iter(self, *args, **{**kwargs, "batch_rows": 7})

    monkeypatch.setattr(Lake, "asset_batches", small_batches)
    before = _alive_tables()
    seen: list[int] = []
    real_read = index_module.read_spill

    def counting_read(paths: list[str], business: str) -> list[TableAsset]:
        seen.append(_alive_tables() - before)  # tables alive when the next business is read
        return real_read(paths, business)

    monkeypatch.setattr(index_module, "read_spill", counting_read)
    built = IndexSet.build(lake, lexical_settings)
    assert len(seen) == 6 and max(seen) == 0  # the previous business's tables are gone by then
    assert built.manifest["counts"]["largest_business"] == 20
    assert _alive_tables() - before == 0  # nor does the built index hold any table...

    assert isinstance(built.assets, BusinessAssets) and built.assets.loaded == []
    table = built.assets["b3.t5_orders"]  # ...until one is asked for: then its business only
    assert table.business == "b3" and built.assets.loaded == ["b3"]
    assert _alive_tables() - before == 20


def test_the_built_index_answers_like_the_loaded_one(
    tmp_path: Path,
    encoder: Any,
    make_settings: Callable[[Path], Settings],
    lake_filler: Callable[[Lake], None],
) -> None:
    settings = make_settings(tmp_path)
    lake = Lake.from_settings(settings)
    lake_filler(lake)
    built = IndexSet.build(lake, settings)
    loaded = IndexSet.load(built.folder)
    assert built.asset_ids == loaded.asset_ids == sorted(loaded.asset_ids, key=lambda a: (a.split(".")[0], a))
    assert built.ranges == loaded.ranges and built.row_of == loaded.row_of
    assert dict(built.assets.items()) == dict(loaded.assets.items())
    assert [built.business_of(row) for row in range(len(built.asset_ids))] == [
        loaded.assets[a].business for a in loaded.asset_ids
    ]
    for text, businesses in (("付费金额", ["game"]), ("singer age", ["music"]), ("user", ["game", "music"])):
        assert built.recall(text, businesses) == loaded.recall(text, businesses)
    assert built.assets.get("game.nope") is None and "game.dim_user" in built.assets
    with pytest.raises(KeyError):
        built.assets["game.nope"]


def test_a_loaded_index_reads_a_business_s_tables_on_first_use(lexical_settings: Settings) -> None:
    lake = Lake.from_settings(lexical_settings)
    lake.merge_assets(_library(4, 10), run_id="r")
    folder = IndexSet.build(lake, lexical_settings).folder
    gc.collect()
    before = _alive_tables()
    loaded = IndexSet.load(folder)
    assert isinstance(loaded.assets, BusinessAssets) and loaded.assets.loaded == []
    assert _alive_tables() - before == 0 and len(loaded.assets) == 40 and "b2.t3_orders" in loaded.assets
    assert loaded.recall("orders per user", ["b2"])["lexical"]  # a query reads no table...
    assert loaded.assets["b2.t3_orders"].business == "b2"  # ...a table asked for reads its business
    assert loaded.assets.loaded == ["b2"] and _alive_tables() - before == 10
    assert loaded.assets.problems() == []


def test_a_tables_file_changed_after_the_build_is_named_not_served(lexical_settings: Settings) -> None:
    lake = Lake.from_settings(lexical_settings)
    lake.merge_assets(_library(3, 4), run_id="r")
    folder = IndexSet.build(lake, lexical_settings).folder
    tables = folder / index_module.ASSETS_FILE
    lines = tables.read_bytes().splitlines(keepends=True)
    # b1's first line swapped for b0's first: same length, another business's table
    swapped = [*lines[:4], lines[0], *lines[5:]]
    tables.write_bytes(b"".join(swapped))
    loaded = IndexSet.load(folder)
    assert loaded.assets.problems() == []  # the size is right...
    assert loaded.assets["b0.t0_orders"].name == "t0_orders"
    with pytest.raises(ValueError, match=r"business 'b1' do not hold its rows 4\.\.8"):
        loaded.assets["b1.t2_orders"]  # ...but b1's lines are not b1's tables
    tables.write_bytes(b"".join(lines[:-2]))  # cut short
    assert "holds" in IndexSet.load(folder).assets.problems()[0]
    (folder / index_module.ASSET_ROWS_FILE).unlink()
    with pytest.raises(index_module.IndexLoadError, match=r"asset_rows\.json is missing"):
        IndexSet.load(folder)


def test_a_loaded_index_keeps_at_most_tables_in_memory(lexical_settings: Settings) -> None:
    lake = Lake.from_settings(lexical_settings)
    lake.merge_assets(_library(4, 10), run_id="r")
    folder = IndexSet.build(lake, lexical_settings).folder
    capped = lexical_settings.model_copy(
        update={"recall": lexical_settings.recall.model_copy(update={"tables_in_memory": 25})}
    )
    before = _alive_tables()
    loaded = IndexSet.load(folder, capped)
    for business in ("b0", "b1", "b0", "b2"):  # b0 used again: b1 is the least recently used
        assert loaded.assets[f"{business}.t1_orders"].business == business
    assert loaded.assets.loaded == ["b0", "b2"]
    assert loaded.assets["b1.t9_orders"].name == "t9_orders"  # read again when asked for
    assert loaded.assets.loaded == ["b1", "b2"]
    assert _alive_tables() - before == 20  # what the index holds, never the 40 of the library
