"""The tables of an index, grouped by business without holding the library.

An index addresses tables by row, rows sorted by (business, asset id), so each business is one row
range. The lake's files are in no such order, and a library of 10^5 tables as `TableAsset` objects
(~15 KB each) is the largest thing a build would hold. So the build

1. streams the lake's asset rows a batch at a time into one set of Arrow files per business
   (`spill_by_business`: one batch in memory, compact columnar rows on disk), then
2. reads the businesses back one at a time, sorted (`read_spill`), does everything that needs a
   business's tables (tokens, BM25 shard, documents to embed) and appends them to `assets.jsonl`.

Its driver therefore holds one batch, then one business, plus a few numbers per table (ids, content
keys, row ranges). The index it returns reads a business's tables back from `assets.jsonl` on first
use (`BusinessAssets`), so the build's own result does not hold the library either.
"""

from __future__ import annotations

import contextlib
import os
import threading
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from itertools import chain, pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any

from assetmatch.models import TableAsset

if TYPE_CHECKING:  # pyarrow and the lake are needed by a build only, never to load an index
    import pyarrow as pa


def spill_by_business(batches: Iterable[pa.RecordBatch], folder: Path) -> dict[str, tuple[list[str], int]]:
    """Write the lake's asset rows into one Arrow file set per business under `folder` (pyarrow's
    partitioned dataset writer: a batch in memory at a time, `business=<name>/` folders). Returns
    business -> (its files, how many rows they hold)."""
    import pyarrow.dataset as ds

    stream = iter(batches)
    first = next(stream, None)
    if first is None:
        return {}
    ds.write_dataset(
        chain([first], stream),
        folder,
        schema=first.schema,
        format="ipc",
        partitioning=_partitioning(),
        max_partitions=1 << 30,  # a batch may hold every business
        existing_data_behavior="error",
    )
    spilled: dict[str, tuple[list[str], int]] = {}
    for fragment in ds.dataset(folder, format="ipc", partitioning=_partitioning()).get_fragments():
        business = ds.get_partition_keys(fragment.partition_expression)["business"]
        paths, rows = spilled.get(business, ([], 0))
        spilled[business] = ([*paths, fragment.path], rows + fragment.count_rows())
    return spilled


def _partitioning() -> Any:
    """Hive-style `business=<name>` folders, the name always a string (never inferred as a number)."""
    import pyarrow as pa
    import pyarrow.dataset as ds

    return ds.partitioning(pa.schema([("business", pa.string())]), flavor="hive")


def read_spill(paths: Sequence[str], business: str) -> list[TableAsset]:
    """One business's spilled rows as assets, sorted by asset id (the index's row order)."""
    import pyarrow.dataset as ds

    from assetmatch.lake.delta import row_to_asset

    table = ds.dataset(list(paths), format="ipc").to_table().sort_by("asset_id")
    assets: list[TableAsset] = []
    for batch in table.to_batches(max_chunksize=2048):
        for row in batch.to_pylist():
            row["business"] = business  # the folder holds it, not the file
            assets.append(row_to_asset(row))
    for before, after in pairwise(assets):
        if before.asset_id == after.asset_id:
            raise ValueError(f"asset {after.asset_id!r} was read twice from the lake")
    return assets


def asset_line(asset: TableAsset) -> bytes:
    """An asset as one line of `assets.jsonl` (UTF-8 JSON, as `TableAsset.model_validate_json` reads)."""
    return asset.model_dump_json().encode("utf-8") + b"\n"


class BusinessAssets(Mapping[str, TableAsset]):
    """An index's tables by id, read from its `assets.jsonl` a business at a time, on the first
    access to one of that business's tables, and kept while they are among the `max_tables` most
    recently used (whole businesses; the one just read is always kept).

    The file stays open, so the tables stay readable even if the index folder is pruned while this
    object lives (as the dense shards stay mapped). A business's lines are checked against the rows
    the index gives it when they are read: a file changed after the build raises `ValueError` there,
    and `problems()` finds a file cut short or grown without reading it."""

    def __init__(
        self,
        path: Path,
        row_of: Mapping[str, int],
        ranges: Mapping[str, tuple[int, int]],
        spans: Mapping[str, tuple[int, int]],
        max_tables: int | None = None,
    ) -> None:
        """row_of: asset id -> row, in row order (the index's own, shared); ranges: business ->
        [start, end) rows; spans: business -> [start, end) bytes of its lines in the file;
        max_tables: how many tables to keep parsed (None: all)."""
        self.path = path
        self._file = open(path, "rb")  # noqa: SIM115  # held for the object's life, see the class doc
        self._row_of = row_of
        self._ranges = dict(ranges)
        self._spans = dict(spans)
        order = sorted((start, business) for business, (start, _) in ranges.items())
        self._starts = [start for start, _ in order]
        self._businesses = [business for _, business in order]
        self._max_tables = max_tables
        self._loaded: OrderedDict[str, dict[str, TableAsset]] = OrderedDict()  # least recent first
        self._held = 0  # tables in _loaded
        self._lock = threading.Lock()

    def __del__(self) -> None:
        file = getattr(self, "_file", None)
        if file is not None:
            file.close()

    @property
    def loaded(self) -> list[str]:
        """Businesses whose tables are held now."""
        return sorted(self._loaded)

    def problems(self) -> list[str]:
        """What is wrong with the file as a whole, found from its size alone ([] when nothing)."""
        size = os.fstat(self._file.fileno()).st_size
        end = max((stop for _, stop in self._spans.values()), default=0)
        if size != end:
            return [f"{self.path.name} holds {size} bytes but its tables' lines end at byte {end}"]
        return []

    def _business(self, business: str) -> dict[str, TableAsset]:
        found = self._loaded.get(business)
        if found is not None:  # the hot path (every candidate of every query) takes no lock
            if self._max_tables is not None:
                with contextlib.suppress(KeyError):  # dropped meanwhile by another thread's read
                    self._loaded.move_to_end(business)
            return found
        with self._lock:  # one reader at a time: a business is parsed once, not by every thread
            found = self._loaded.get(business)
            if found is not None:
                return found
            start, end = self._spans[business]
            data = os.pread(self._file.fileno(), end - start, start)
            assets = [TableAsset.model_validate_json(line) for line in data.splitlines() if line.strip()]
            found = {a.asset_id: a for a in assets}
            self._check(business, found)
            self._loaded[business] = found
            self._held += len(found)
            while self._max_tables is not None and self._held > self._max_tables and len(self._loaded) > 1:
                _, dropped = self._loaded.popitem(last=False)
                self._held -= len(dropped)
            return found

    def _check(self, business: str, found: Mapping[str, TableAsset]) -> None:
        first, stop = self._ranges[business]
        wrong = [
            a
            for a, t in found.items()
            if t.business != business or not first <= self._row_of.get(a, -1) < stop
        ]
        if wrong or len(found) != stop - first:
            raise ValueError(
                f"{self.path}: the lines of business {business!r} do not hold its rows {first}..{stop} "
                f"({len(found)} tables read, {len(wrong)} of them not its own, e.g. {wrong[:3]}): "
                "the file was changed after the index was built"
            )

    def __getitem__(self, asset_id: str) -> TableAsset:
        row = self._row_of[asset_id]  # KeyError for a table the index does not hold
        business = self._businesses[bisect_right(self._starts, row) - 1]
        return self._business(business)[asset_id]

    def __contains__(self, asset_id: object) -> bool:
        return asset_id in self._row_of

    def __iter__(self) -> Iterator[str]:
        return iter(self._row_of)

    def __len__(self) -> int:
        return len(self._row_of)
