"""The `in_catalog` flag of an asset survives the lake, and a lake written before the column existed gains it."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
from deltalake import write_deltalake

from assetmatch.lake import tables as T
from assetmatch.lake.delta import Lake, asset_to_row
from assetmatch.models import Column, TableAsset, hash_asset_dump


def _asset(name: str, in_catalog: bool = True) -> TableAsset:
    columns = [Column(name="id", type="int")] if in_catalog else []
    return TableAsset(business="b", database="db", name=name, columns=columns, in_catalog=in_catalog)


def test_flag_round_trips(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    lake.merge_assets([_asset("seen"), _asset("declared", in_catalog=False)], "r1")
    read = {a.name: a for a in lake.read_assets()}
    assert (read["seen"].in_catalog, read["declared"].in_catalog) == (True, False)
    assert read["declared"].content_hash() == _asset("declared", in_catalog=False).content_hash()
    again = lake.merge_assets([_asset("seen"), _asset("declared", in_catalog=False)], "r2")
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, 2)


def test_hash_unchanged_for_assets_in_the_catalog() -> None:
    # the default is left out of the hash: lakes written before the flag keep their hashes
    asset = _asset("seen")
    dump = asset.model_dump()
    dump.pop("in_catalog")
    assert asset.content_hash() == hash_asset_dump(dump)
    assert (
        _asset("x", in_catalog=False).content_hash()
        != _asset("x").model_copy(update={"columns": []}).content_hash()
    )


def test_lake_written_before_the_column(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    old_schema = pa.schema([f for f in T.SCHEMAS[T.ASSETS] if f.name != "in_catalog"])
    now = datetime.now(UTC)
    row = asset_to_row(_asset("old"), "r0", now)
    row.pop("in_catalog")
    write_deltalake(lake.path(T.ASSETS), pa.Table.from_pylist([row], schema=old_schema), mode="append")

    assert [a.in_catalog for a in lake.read_assets()] == [True]  # no column: in the catalog
    result = lake.merge_assets([_asset("old"), _asset("declared", in_catalog=False)], "r1")
    assert (result.inserted, result.unchanged) == (1, 1)
    read = {a.name: a.in_catalog for a in lake.read_assets()}
    assert read == {"old": True, "declared": False}
