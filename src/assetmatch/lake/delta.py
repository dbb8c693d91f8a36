"""The lake: Delta tables in a folder or object store, read and written with `deltalake`.

Reads take an optional `version` (time travel); every write is one Delta commit tagged with the
run id in its commit metadata, so a crash mid-write leaves the previous version intact.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import CommitProperties, DeltaTable, write_deltalake
from deltalake.exceptions import TableNotFoundError

from assetmatch.lake import tables as T
from assetmatch.models import Column, ForeignKey, GlossaryTerm, QueryLogEntry, Requirement, TableAsset


def utcnow() -> datetime:
    return datetime.now(UTC)


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

    @property
    def wrote(self) -> bool:
        return bool(self.inserted or self.updated or self.soft_deleted or self.restored)


def asset_to_row(asset: TableAsset, run_id: str, now: datetime, content_hash: str | None = None) -> dict[str, Any]:
    return {
        "asset_id": asset.asset_id,
        "business": asset.business,
        "source": asset.source,
        "database": asset.database,
        "schema_name": asset.schema_name,
        "name": asset.name,
        "kind": asset.kind,
        "comment": asset.comment,
        "columns": [c.model_dump() for c in asset.columns],
        "foreign_keys": [fk.model_dump() for fk in asset.foreign_keys],
        "row_count": asset.row_count,
        "properties": json.dumps(asset.properties, ensure_ascii=False, sort_keys=True),
        "content_hash": content_hash or asset.content_hash(),
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
            ForeignKey(columns=fk["columns"] or [], ref_asset_id=fk["ref_asset_id"], ref_columns=fk["ref_columns"] or [])
            for fk in row["foreign_keys"] or []
        ],
        row_count=row["row_count"],
        properties=json.loads(row["properties"]) if row.get("properties") else {},
    )


class Lake:
    """Handle on the lake's Delta tables (see `assetmatch.lake.tables`)."""

    def __init__(self, uri: str | Path, storage_options: dict[str, str] | None = None) -> None:
        self.uri = str(uri).rstrip("/")
        self.storage_options = storage_options or None

    @classmethod
    def from_settings(cls, settings: Any) -> Lake:
        opts = {k: v.get_secret_value() for k, v in settings.lake.storage_options.items()}
        return cls(settings.lake.uri, opts)

    # ---- paths and versions -------------------------------------------------------------
    def path(self, table: str) -> str:
        if table not in T.SCHEMAS:
            raise KeyError(f"unknown lake table {table!r} (known: {sorted(T.SCHEMAS)})")
        return f"{self.uri}/{table}"

    def table(self, table: str, version: int | None = None) -> DeltaTable | None:
        try:
            return DeltaTable(self.path(table), version=version, storage_options=self.storage_options)
        except TableNotFoundError:
            return None

    def exists(self, table: str) -> bool:
        return self.table(table) is not None

    def version(self, table: str) -> int | None:
        dt = self.table(table)
        return None if dt is None else dt.version()

    def versions(self) -> dict[str, int | None]:
        """Current version of every lake table (None = not created yet). Recorded by every stage."""
        return {name: self.version(name) for name in T.SCHEMAS}

    def history(self, table: str, limit: int | None = None) -> list[dict[str, Any]]:
        dt = self.table(table)
        return [] if dt is None else dt.history(limit)

    # ---- reads ---------------------------------------------------------------------------
    def read_arrow(
        self, table: str, version: int | None = None, columns: Sequence[str] | None = None
    ) -> pa.Table:
        """The whole table at `version` (latest if None); an empty table of the right schema if absent."""
        dt = self.table(table, version)
        schema = T.SCHEMAS[table]
        if dt is None:
            if version is not None:
                raise ValueError(f"lake table {table!r} does not exist, so it has no version {version}")
            empty = schema.empty_table()
            return empty.select(list(columns)) if columns else empty
        data = dt.to_pyarrow_table(columns=list(columns) if columns else None)
        return data

    def read_assets(
        self,
        version: int | None = None,
        businesses: Iterable[str] | None = None,
        include_deleted: bool = False,
    ) -> list[TableAsset]:
        data = self.read_arrow(T.ASSETS, version)
        if not include_deleted and data.num_rows:
            data = data.filter(pc.invert(pc.fill_null(data["deleted"], False)))
        if businesses is not None and data.num_rows:
            data = data.filter(pc.is_in(data["business"], pa.array(list(businesses), pa.string())))
        return [row_to_asset(r) for r in data.to_pylist()]

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

    # ---- writes --------------------------------------------------------------------------
    def _commit(self, run_id: str, operation: str) -> CommitProperties:
        return CommitProperties(custom_metadata={"assetmatch.run_id": run_id, "assetmatch.operation": operation})

    def append(self, table: str, rows: list[dict[str, Any]], run_id: str) -> int | None:
        """Append rows (append-only tables: quarantine, feedback, promotions). Returns the new version."""
        if not rows:
            return self.version(table)
        data = pa.Table.from_pylist(rows, schema=T.SCHEMAS[table])
        write_deltalake(
            self.path(table),
            data,
            mode="append",
            storage_options=self.storage_options,
            commit_properties=self._commit(run_id, "append"),
        )
        return self.version(table)

    def upsert(self, table: str, rows: list[dict[str, Any]], run_id: str) -> int | None:
        """MERGE rows on the table's key (`tables.KEYS`): update matched, insert new. One commit."""
        if not rows:
            return self.version(table)
        keys = T.KEYS[table]
        data = pa.Table.from_pylist(rows, schema=T.SCHEMAS[table])
        dt = self.table(table)
        if dt is None:
            write_deltalake(
                self.path(table),
                data,
                mode="append",
                storage_options=self.storage_options,
                commit_properties=self._commit(run_id, "create"),
            )
        else:
            predicate = " AND ".join(f"t.{k} = s.{k}" for k in keys)
            (
                dt.merge(
                    data,
                    predicate=predicate,
                    source_alias="s",
                    target_alias="t",
                    commit_properties=self._commit(run_id, "upsert"),
                )
                .when_matched_update_all()
                .when_not_matched_insert_all()
                .execute()
            )
        return self.version(table)

    def merge_assets(
        self,
        assets: Sequence[TableAsset],
        run_id: str,
        snapshot_of: str | None = None,
        now: datetime | None = None,
    ) -> MergeResult:
        """Upsert assets on asset_id, skipping rows whose content hash is unchanged.

        snapshot_of: the name of a full-snapshot source. Its live assets missing from `assets`
        are soft-deleted (deleted=true, deleted_at=now), never removed. A soft-deleted asset that
        comes back is restored. Everything happens in one Delta commit, or none when nothing changed.
        """
        now = now or utcnow()
        result = MergeResult()
        current = self.read_arrow(T.ASSETS, columns=["asset_id", "content_hash", "deleted", "source"])
        known: dict[str, tuple[str, bool]] = {
            a: (h, bool(d))
            for a, h, d in zip(
                current["asset_id"].to_pylist(), current["content_hash"].to_pylist(), current["deleted"].to_pylist()
            )
        }
        upserts: list[dict[str, Any]] = []
        seen: set[str] = set()
        for asset in assets:
            seen.add(asset.asset_id)
            digest = asset.content_hash()
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
            upserts.append(asset_to_row(asset, run_id, now, digest))
            result.changed_ids.append(asset.asset_id)
        tombstones: list[str] = []
        if snapshot_of is not None and current.num_rows:
            for asset_id, source, deleted in zip(
                current["asset_id"].to_pylist(), current["source"].to_pylist(), current["deleted"].to_pylist()
            ):
                if source == snapshot_of and not deleted and asset_id not in seen:
                    tombstones.append(asset_id)
        result.soft_deleted = len(tombstones)
        result.changed_ids.extend(tombstones)
        if not upserts and not tombstones:
            result.version = self.version(T.ASSETS)
            return result

        schema = T.SCHEMAS[T.ASSETS]
        rows = upserts + [
            {**{n: None for n in schema.names}, "asset_id": a, "deleted": True, "deleted_at": now, "run_id": run_id}
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
