"""The lake: Delta tables in a folder or object store, read and written with `deltalake`.

Reads take an optional `version` (time travel); every write is one Delta commit tagged with the
run id in its commit metadata, so a crash mid-write leaves the previous version intact.

Writes from several threads of one process (the ingest flow merges sources in parallel) are
serialized by a per-lake lock: each merge reads the current state and commits in one critical
section. A commit that loses a race with another process (`CommitFailedError`) is retried from a
fresh read by tenacity.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pa_ds
import pyarrow.fs as pa_fs
from deltalake import CommitProperties, DeltaTable, write_deltalake
from deltalake.exceptions import CommitFailedError, TableNotFoundError
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from assetmatch.config import Settings
from assetmatch.lake import tables as T
from assetmatch.models import (
    Column,
    ForeignKey,
    GlossaryTerm,
    QueryLogEntry,
    Requirement,
    TableAsset,
    hash_asset_dump,
)

R = TypeVar("R")
_LOCKS: dict[str, threading.RLock] = {}
_LOCKS_GUARD = threading.Lock()


def delta_dataset(dt: DeltaTable) -> tuple[pa_ds.Dataset, bool]:
    """A Delta table's current files as a pyarrow dataset, and whether it may be scanned on pyarrow's
    thread pool.

    deltalake reads through its own Python filesystem handler by default, which pyarrow calls from
    its I/O threads; a process that exits while one of them is still busy aborts ("terminate called
    without an active exception", exit 134: delta-io/delta-rs#2184) — 7 of 20 runs of a script that
    only read one small table, even decoded on the calling thread. A local table is read through
    pyarrow's own filesystem instead, which never calls back into Python (0 of 20, scanned threaded).
    A remote one keeps the handler (it carries `lake.storage_options`) and is decoded on the calling
    thread, which makes the abort rarer, not impossible."""
    if dt.table_uri.startswith("file://"):
        raw, root = pa_fs.FileSystem.from_uri(dt.table_uri)
        return dt.to_pyarrow_dataset(filesystem=pa_fs.SubTreeFileSystem(root, raw)), True
    return dt.to_pyarrow_dataset(), False


def read_delta(dt: DeltaTable, columns: Sequence[str] | None = None) -> pa.Table:
    """A Delta table's rows (these `columns`) as one Arrow table (`delta_dataset`)."""
    dataset, threaded = delta_dataset(dt)
    return dataset.to_table(columns=None if columns is None else list(columns), use_threads=threaded)


def utcnow() -> datetime:
    return datetime.now(UTC)


def _lake_lock(uri: str) -> threading.RLock:
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(uri, threading.RLock())


def _retry_on_conflict(fn: Callable[[], R]) -> R:
    """Run a read-then-commit step, retrying it from scratch when another writer won the race."""
    retrying = retry(
        retry=retry_if_exception_type(CommitFailedError),
        stop=stop_after_attempt(5),
        wait=wait_random_exponential(multiplier=0.05, max=2),
        reraise=True,
    )
    return retrying(fn)()


def _row_digest(row: dict[str, Any], ignore: Iterable[str] = ("run_id",)) -> str:
    """Digest of a lake row without bookkeeping columns, to skip rewriting unchanged rows."""
    payload = {k: v for k, v in row.items() if k not in set(ignore)}
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


@dataclass
class MergeResult:
    """What one asset merge did."""

    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    soft_deleted: int = 0
    restored: int = 0
    version: int | None = None
    changed_ids: list[str] = field(default_factory=list)
    # asset_id -> content hash of every asset of the batch (stored or left unchanged)
    content_hashes: dict[str, str] = field(default_factory=dict)

    @property
    def wrote(self) -> bool:
        return bool(self.inserted or self.updated or self.soft_deleted or self.restored)


@dataclass
class UpsertResult:
    """What one keyed upsert did (query_log, requirements, glossary)."""

    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    version: int | None = None


def dump_hash(dump: dict[str, Any]) -> str:
    """`TableAsset.content_hash()` computed from an existing `model_dump()` of the asset.

    The merge dumps each asset once and derives both the hash and the row from that dump (a
    TableAsset holds only JSON types, so its python and json dumps are equal); a unit test keeps
    this equal to `content_hash()`.
    """
    return hash_asset_dump(dump)


def asset_to_row(
    asset: TableAsset,
    run_id: str,
    now: datetime,
    content_hash: str | None = None,
    dump: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The `assets` lake row of an asset (`dump`: its `model_dump()`, when the caller has it)."""
    d = dump if dump is not None else asset.model_dump()
    return {
        "asset_id": d["asset_id"],
        "business": d["business"],
        "source": d["source"],
        "database": d["database"],
        "schema_name": d["schema_name"],
        "name": d["name"],
        "kind": d["kind"],
        "comment": d["comment"],
        "columns": d["columns"],
        "foreign_keys": d["foreign_keys"],
        "row_count": d["row_count"],
        "properties": json.dumps(d["properties"], ensure_ascii=False, sort_keys=True),
        "in_catalog": d.get("in_catalog", True),
        "content_hash": content_hash or dump_hash(d),
        "deleted": False,
        "deleted_at": None,
        "first_seen_at": now,
        "updated_at": now,
        "run_id": run_id,
    }


def row_to_asset(row: dict[str, Any]) -> TableAsset:
    return TableAsset(
        asset_id=row["asset_id"],
        business=row["business"],
        source=row["source"] or "",
        database=row["database"] or "",
        schema_name=row["schema_name"] or "",
        name=row["name"],
        kind=row["kind"] or "table",
        comment=row["comment"] or "",
        columns=[Column(**c) for c in row["columns"] or []],
        foreign_keys=[
            ForeignKey(
                columns=fk["columns"] or [],
                ref_asset_id=fk["ref_asset_id"],
                ref_columns=fk["ref_columns"] or [],
            )
            for fk in row["foreign_keys"] or []
        ],
        row_count=row["row_count"],
        properties=json.loads(row["properties"]) if row.get("properties") else {},
        in_catalog=row.get("in_catalog") is not False,  # null: a row written before the column existed
    )


def _apply_filters(data: pa.Table, filters: Sequence[tuple[str, str, Any]]) -> pa.Table:
    for column, op, value in filters:
        values = data[column]
        if op == "=":
            mask = pc.equal(values, value)
        elif op == "!=":
            mask = pc.not_equal(values, value)
        elif op == "in":
            mask = pc.is_in(values, pa.array(list(value), values.type))
        else:
            raise ValueError(f"unsupported filter operator {op!r} (use =, != or in)")
        data = data.filter(pc.fill_null(mask, False))
    return data


class Lake:
    """Handle on the lake's Delta tables (see `assetmatch.lake.tables`)."""

    def __init__(self, uri: str | Path, storage_options: dict[str, str] | None = None) -> None:
        self.uri = str(uri).rstrip("/")
        self.storage_options = storage_options or None
        self._lock = _lake_lock(self.uri)

    @classmethod
    def from_settings(cls, settings: Settings) -> Lake:
        opts = {k: v.get_secret_value() for k, v in settings.lake.storage_options.items()}
        return cls(settings.lake.uri, opts)

    # ---- paths and versions -------------------------------------------------------------
    def path(self, table: str) -> str:
        if table not in T.SCHEMAS:
            raise KeyError(f"unknown lake table {table!r} (known: {sorted(T.SCHEMAS)})")
        return f"{self.uri}/{table}"

    def table(self, table: str, version: int | None = None) -> DeltaTable | None:
        """The Delta table at `version` (latest if None); None when it does not exist yet.

        A version that does not exist (never written, or vacuumed) is a ValueError naming the
        versions there are.
        """
        try:
            dt = DeltaTable(self.path(table), storage_options=self.storage_options)
        except TableNotFoundError:
            return None
        if version is not None and version != dt.version():
            latest = dt.version()
            if version < 0 or version > latest:
                raise ValueError(f"lake table {table!r} has no version {version} (versions 0..{latest})")
            try:
                dt.load_as_version(version)
            except Exception as exc:  # deltalake raises a generic error for vacuumed versions
                raise ValueError(f"lake table {table!r}: version {version} cannot be read ({exc})") from exc
        return dt

    def exists(self, table: str) -> bool:
        return self.table(table) is not None

    def version(self, table: str) -> int | None:
        dt = self.table(table)
        return None if dt is None else dt.version()

    def versions(self) -> dict[str, int | None]:
        """Current version of every lake table (None = not created yet). Recorded by every stage."""
        return {name: self.version(name) for name in T.SCHEMAS}

    def history(self, table: str, limit: int | None = None) -> list[dict[str, Any]]:
        """Commits of `table`, newest first, each with its version, timestamp, operation and the
        `assetmatch.run_id` / `assetmatch.operation` metadata written by this class."""
        dt = self.table(table)
        return [] if dt is None else dt.history(limit)

    # ---- reads ---------------------------------------------------------------------------
    def read_arrow(
        self,
        table: str,
        version: int | None = None,
        columns: Sequence[str] | None = None,
        filters: list[tuple[str, str, Any]] | None = None,
    ) -> pa.Table:
        """The table at `version` (latest if None); an empty table of the right schema if absent.

        filters: a conjunction of `(column, op, value)` with op `=`, `!=` or `in`, e.g.
        `[("business", "=", "g1")]`. Applied to the Arrow table after the read: deltalake's own
        pushed-down filters fail on files written with string_view columns (pyarrow has no
        string/string_view comparison kernel), and the lake's tables are small enough.
        """
        dt = self.table(table, version)
        schema = T.SCHEMAS[table]
        if dt is None:
            if version is not None:
                raise ValueError(f"lake table {table!r} does not exist, so it has no version {version}")
            empty = schema.empty_table()
            return empty.select(list(columns)) if columns else empty
        wanted = list(columns) if columns else None
        if not filters:
            return read_delta(dt, wanted)
        needed = None if wanted is None else list(dict.fromkeys(wanted + [f[0] for f in filters]))
        data = _apply_filters(read_delta(dt, needed), filters)
        return data.select(wanted) if wanted else data

    def read_assets(
        self,
        version: int | None = None,
        businesses: Iterable[str] | None = None,
        include_deleted: bool = False,
    ) -> list[TableAsset]:
        return [a for batch in self.iter_assets(version, businesses, include_deleted) for a in batch]

    def iter_assets(
        self,
        version: int | None = None,
        businesses: Iterable[str] | None = None,
        include_deleted: bool = False,
        batch_rows: int = 2048,
    ) -> Iterator[list[TableAsset]]:
        """The assets at `version` (latest if None), at most `batch_rows` at a time, in the order of
        the table's files (`asset_batches`, each batch converted on its own)."""
        for batch in self.asset_batches(version, businesses, include_deleted, batch_rows):
            yield [row_to_asset(r) for r in batch.to_pylist()]

    def asset_batches(
        self,
        version: int | None = None,
        businesses: Iterable[str] | None = None,
        include_deleted: bool = False,
        batch_rows: int = 2048,
    ) -> Iterator[pa.RecordBatch]:
        """The `assets` rows at `version` (latest if None) as Arrow record batches of at most
        `batch_rows` rows, in the order of the table's files; `row_to_asset` makes a row an asset.

        The Delta files are scanned as a stream, so a caller that does not keep the rows holds one
        batch, never the table: an index build of 10^5 tables would otherwise hold them all (~15 KB
        each as Python objects).
        """
        dt = self.table(T.ASSETS, version)
        if dt is None:
            if version is not None:
                raise ValueError(f"lake table {T.ASSETS!r} does not exist, so it has no version {version}")
            return
        wanted = None if businesses is None else list(businesses)
        dataset, threaded = delta_dataset(dt)  # see there: how a scan can abort the process at exit
        for batch in dataset.to_batches(batch_size=batch_rows, use_threads=threaded):
            if not include_deleted and batch.num_rows:
                batch = batch.filter(pc.invert(pc.fill_null(batch["deleted"], False)))
            if wanted is not None and batch.num_rows:
                column = batch["business"]
                batch = batch.filter(pc.fill_null(pc.is_in(column, pa.array(wanted, column.type)), False))
            if batch.num_rows:
                yield batch

    def read_query_log(self, version: int | None = None, business: str | None = None) -> list[QueryLogEntry]:
        rows = self.read_arrow(T.QUERY_LOG, version).to_pylist()
        return [
            QueryLogEntry(**{k: v for k, v in r.items() if k != "run_id"})
            for r in rows
            if business is None or r["business"] == business
        ]

    def read_requirements(
        self, version: int | None = None, business: str | None = None, split: str | None = None
    ) -> list[Requirement]:
        rows = self.read_arrow(T.REQUIREMENTS, version).to_pylist()
        return [
            Requirement(**{k: v for k, v in r.items() if k != "run_id"})
            for r in rows
            if (business is None or r["business"] == business) and (split is None or r["split"] == split)
        ]

    def read_glossary(self, version: int | None = None, business: str | None = None) -> list[GlossaryTerm]:
        rows = self.read_arrow(T.GLOSSARY, version).to_pylist()
        return [
            GlossaryTerm(**{k: v for k, v in r.items() if k != "run_id"})
            for r in rows
            if business is None or r["business"] == business
        ]

    def read_quarantine(self, run_id: str | None = None, source: str | None = None) -> list[dict[str, Any]]:
        """Rows refused by validation, oldest first; optionally one run's or one source's."""
        filters: list[tuple[str, str, Any]] = []
        if run_id is not None:
            filters.append(("run_id", "=", run_id))
        if source is not None:
            filters.append(("source", "=", source))
        rows = self.read_arrow(T.QUARANTINE, filters=filters or None).to_pylist()
        return sorted(rows, key=lambda r: r["quarantined_at"])

    def live_asset_ids(self, source: str) -> set[str]:
        """Ids of the not-deleted assets that `source` reported last time (for the shrink guard)."""
        data = self.read_arrow(T.ASSETS, columns=["asset_id", "deleted"], filters=[("source", "=", source)])
        return {a for a, d in zip(data["asset_id"].to_pylist(), data["deleted"].to_pylist()) if not d}

    def asset_history(self, asset_id: str, max_versions: int = 100) -> list[dict[str, Any]]:
        """Time travel on one asset: every version of `assets` where its row changed, newest first.

        Each entry: version, timestamp, run_id, change (inserted / updated / soft_deleted /
        restored) and the row as it was after that commit. Scans at most `max_versions` commits.
        """
        dt = self.table(T.ASSETS)
        if dt is None:
            return []
        commits = {c["version"]: c for c in dt.history(max_versions)}
        versions = sorted(commits)
        previous: dict[str, Any] | None = None
        if versions and versions[0] > 0:
            # the row as it was just before the scanned window, so the first entry is classified right
            previous = self._asset_row_at(dt, asset_id, versions[0] - 1)
        changes: list[dict[str, Any]] = []
        for version in versions:
            row = self._asset_row_at(dt, asset_id, version)
            if row is None or (
                previous is not None
                and row["content_hash"] == previous["content_hash"]
                and row["deleted"] == previous["deleted"]
            ):
                previous = row if row is not None else previous
                continue
            if previous is None:
                change = "inserted"
            elif row["deleted"] and not previous["deleted"]:
                change = "soft_deleted"
            elif previous["deleted"] and not row["deleted"]:
                change = "restored"
            else:
                change = "updated"
            meta = commits[version]
            changes.append(
                {
                    "version": version,
                    "timestamp": datetime.fromtimestamp(meta["timestamp"] / 1000, UTC),
                    "run_id": meta.get("assetmatch.run_id"),
                    "change": change,
                    "row": row,
                }
            )
            previous = row
        return list(reversed(changes))

    def _asset_row_at(self, dt: DeltaTable, asset_id: str, version: int) -> dict[str, Any] | None:
        try:
            dt.load_as_version(version)
        except Exception:  # vacuumed or never existed: nothing to show for that version
            return None
        rows = _apply_filters(read_delta(dt), [("asset_id", "=", asset_id)]).to_pylist()
        return rows[0] if rows else None

    # ---- writes --------------------------------------------------------------------------
    def _commit(self, run_id: str, operation: str) -> CommitProperties:
        return CommitProperties(
            custom_metadata={"assetmatch.run_id": run_id, "assetmatch.operation": operation}
        )

    def append(self, table: str, rows: list[dict[str, Any]], run_id: str) -> int | None:
        """Append rows (append-only tables: quarantine, feedback, promotions). Returns the new version."""
        if not rows:
            return self.version(table)
        data = pa.Table.from_pylist(rows, schema=T.SCHEMAS[table])

        def write() -> int | None:
            write_deltalake(
                self.path(table),
                data,
                mode="append",
                schema_mode="merge",  # a lake written before a column was added gains it
                storage_options=self.storage_options,
                commit_properties=self._commit(run_id, "append"),
            )
            return self.version(table)

        with self._lock:
            return _retry_on_conflict(write)

    def upsert(
        self, table: str, rows: list[dict[str, Any]], run_id: str, skip_unchanged: bool = True
    ) -> int | None:
        """MERGE rows on the table's key (`tables.KEYS`): update matched, insert new. One commit.

        Returns the table's version afterwards; `upsert_rows` does the same and says what changed.
        """
        return self.upsert_rows(table, rows, run_id, skip_unchanged).version

    def upsert_rows(
        self, table: str, rows: list[dict[str, Any]], run_id: str, skip_unchanged: bool = True
    ) -> UpsertResult:
        """MERGE rows on the table's key, counting inserted / updated / unchanged rows.

        Rows whose content (all columns but run_id) equals the stored row are left alone, so a
        re-ingest of the same log writes no new version. Of several rows with the same key the
        last one wins.
        """
        keys = T.KEYS[table]
        latest: dict[tuple[Any, ...], dict[str, Any]] = {}
        for row in rows:
            latest[tuple(row[k] for k in keys)] = row
        if not latest:
            return UpsertResult(version=self.version(table))
        schema = T.SCHEMAS[table]

        def write() -> UpsertResult:
            result = UpsertResult()
            dt = self.table(table)
            candidates = list(latest.values())
            stored: dict[tuple[Any, ...], str] = {}
            if dt is not None:
                # a table written before a column was added has no such column: its rows read as null
                columns = [n for n in schema.names if n != "run_id"]
                present = set(dt.schema().to_arrow().names)
                current = read_delta(dt, [n for n in columns if n in present]).to_pylist()
                stored = {
                    tuple(r[k] for k in keys): _row_digest({n: r.get(n) for n in columns}) for r in current
                }
            if stored and skip_unchanged:
                # round-trip through Arrow so both sides compare in the same types (timestamps, nulls)
                normalized = pa.Table.from_pylist(candidates, schema=schema).to_pylist()
                changed = [
                    row
                    for row, norm in zip(candidates, normalized)
                    if stored.get(tuple(row[k] for k in keys)) != _row_digest(norm)
                ]
                result.unchanged = len(candidates) - len(changed)
                candidates = changed
            result.updated = sum(1 for row in candidates if tuple(row[k] for k in keys) in stored)
            result.inserted = len(candidates) - result.updated
            if not candidates:
                result.version = None if dt is None else dt.version()
                return result
            data = pa.Table.from_pylist(candidates, schema=schema)
            if dt is None:
                write_deltalake(
                    self.path(table),
                    data,
                    mode="append",
                    storage_options=self.storage_options,
                    commit_properties=self._commit(run_id, "create"),
                )
            else:
                predicate = " AND ".join(f"t.`{k}` = s.`{k}`" for k in keys)
                (
                    dt.merge(
                        data,
                        predicate=predicate,
                        source_alias="s",
                        target_alias="t",
                        merge_schema=True,  # a lake written before a column was added gains it
                        commit_properties=self._commit(run_id, "upsert"),
                    )
                    .when_matched_update_all()
                    .when_not_matched_insert_all()
                    .execute()
                )
            result.version = self.version(table)
            return result

        with self._lock:
            return _retry_on_conflict(write)

    def merge_assets(
        self,
        assets: Sequence[TableAsset],
        run_id: str,
        snapshot_of: str | None = None,
        now: datetime | None = None,
        keep_ids: Iterable[str] = (),
    ) -> MergeResult:
        """Upsert assets on asset_id, skipping rows whose content hash is unchanged.

        snapshot_of: the name of a full-snapshot source. Its live assets missing from `assets`
        (and from `keep_ids`: ids the source reported but validation refused, which keep their
        previous version) are soft-deleted (deleted=true, deleted_at=now), never removed. A
        soft-deleted asset that comes back is restored. Everything happens in one Delta commit,
        or none when nothing changed.
        """
        now = now or utcnow()
        kept = set(keep_ids)
        with self._lock:
            return _retry_on_conflict(lambda: self._merge_assets(assets, run_id, snapshot_of, now, kept))

    def _merge_assets(
        self,
        assets: Sequence[TableAsset],
        run_id: str,
        snapshot_of: str | None,
        now: datetime,
        kept: set[str],
    ) -> MergeResult:
        result = MergeResult()
        current = self.read_arrow(T.ASSETS, columns=["asset_id", "content_hash", "deleted", "source"])
        # the stored hash and deleted flag of the batch's assets only: a re-ingest that read few
        # tables (change detection) converts few rows to Python, not the whole table
        known: dict[str, tuple[str, bool]] = {}
        if assets and current.num_rows:
            ids = current["asset_id"]
            mine = current.filter(pc.is_in(ids, pa.array([a.asset_id for a in assets], ids.type)))
            known = {
                a: (h, bool(d))
                for a, h, d in zip(
                    mine["asset_id"].to_pylist(),
                    mine["content_hash"].to_pylist(),
                    mine["deleted"].to_pylist(),
                )
            }
        upserts: list[dict[str, Any]] = []
        seen: set[str] = set(kept)
        for asset in assets:
            if asset.asset_id in seen and asset.asset_id not in kept:
                raise ValueError(f"merge_assets: asset_id {asset.asset_id!r} appears twice in one batch")
            seen.add(asset.asset_id)
            dump = asset.model_dump()
            digest = dump_hash(dump)
            result.content_hashes[asset.asset_id] = digest
            previous = known.get(asset.asset_id)
            if previous is None:
                result.inserted += 1
            elif previous[1]:
                result.restored += 1
            elif previous[0] != digest:
                result.updated += 1
            else:
                result.unchanged += 1
                continue
            upserts.append(asset_to_row(asset, run_id, now, digest, dump))
            result.changed_ids.append(asset.asset_id)
        tombstones: list[str] = []
        if snapshot_of is not None and current.num_rows:
            # the source's live assets it did not report (nor keep), computed in Arrow
            ids = current["asset_id"]
            live = pc.and_(
                pc.equal(current["source"], snapshot_of), pc.invert(pc.fill_null(current["deleted"], False))
            )
            gone = pc.invert(pc.is_in(ids, pa.array(list(seen), ids.type)))
            tombstones = ids.filter(pc.fill_null(pc.and_(live, gone), False)).to_pylist()
        result.soft_deleted = len(tombstones)
        result.changed_ids.extend(tombstones)
        if not upserts and not tombstones:
            result.version = self.version(T.ASSETS)
            return result

        schema = T.SCHEMAS[T.ASSETS]
        rows = upserts + [
            {
                **{n: None for n in schema.names},
                "asset_id": a,
                "deleted": True,
                "deleted_at": now,
                "run_id": run_id,
            }
            for a in tombstones
        ]
        data = pa.Table.from_pylist(rows, schema=schema)
        dt = self.table(T.ASSETS)
        if dt is None:
            write_deltalake(
                self.path(T.ASSETS),
                data,
                mode="append",
                storage_options=self.storage_options,
                commit_properties=self._commit(run_id, "merge_assets"),
            )
        else:
            update_all = {n: f"s.{n}" for n in schema.names if n != "first_seen_at"}
            (
                dt.merge(
                    data,
                    predicate="t.asset_id = s.asset_id",
                    source_alias="s",
                    target_alias="t",
                    merge_schema=True,  # a lake written before a column was added (in_catalog) gains it
                    commit_properties=self._commit(run_id, "merge_assets"),
                )
                .when_matched_update(updates=update_all, predicate="s.deleted = false")
                .when_matched_update(
                    updates={"deleted": "true", "deleted_at": "s.deleted_at", "run_id": "s.run_id"},
                    predicate="s.deleted = true",
                )
                .when_not_matched_insert_all(predicate="s.deleted = false")
                .execute()
            )
        result.version = self.version(T.ASSETS)
        return result
