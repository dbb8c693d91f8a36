"""`catalog_file` source: table listings exported from a metastore (JSON Lines, JSON, YAML or CSV).

JSON Lines / JSON / YAML: one record per table, e.g. the benchmark files in
`../shared/benchmarks/*/assets.jsonl.gz`:

    {"asset_id": "perpetrator.people", "business": "perpetrator", "database": "perpetrator",
     "table": "people", "table_comment": "people",
     "columns": [{"name": "People_ID", "type": "number", "comment": "people id", "primary_key": true}],
     "foreign_keys": [["People_ID", "other_table.col"]]}

Aliases accepted: `table`/`name`, `table_comment`/`comment`/`description`, `schema`/`schema_name`,
column `comment`/`description`. Foreign keys are `[col, "table.col"]` pairs (or `"schema.table.col"`)
on the referencing table, or objects `{columns, ref_table | ref_asset_id, ref_columns}`; a referenced
table is resolved to the asset_id this file gives it (same database first), so ids stay consistent.

CSV: one row per column with the header
`database,schema,table,table_comment,column,type,column_comment,primary_key` (optional: `business`,
`nullable`, `references` as `table.col`, `asset_id`, `kind`, `row_count`).

A record that cannot be read is counted as `bad_records` and reported with its line number.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pydantic import Field, ValidationError

from assetmatch.models import Column, ForeignKey, TableAsset, default_asset_id
from assetmatch.sources._files import (
    BadRecords,
    FileSourceConfig,
    Record,
    as_bool,
    as_list,
    as_text,
    detect_format,
    expand_paths,
    first,
    iter_records,
)
from assetmatch.sources.base import Source

TABLE_KEYS = ("table", "name", "table_name")
COMMENT_KEYS = ("table_comment", "comment", "description")
SCHEMA_KEYS = ("schema", "schema_name")
DATABASE_KEYS = ("database", "catalog", "db")


class CatalogFileConfig(FileSourceConfig):
    business: str | None = Field(
        default=None,
        description="Business for every table, overriding the file's `business` field. Without it the "
        "record's own `business` is used, else the source's `business` / `business_map`.",
    )


def _shape(value: Any) -> str:
    return f"a string ({value!r})" if isinstance(value, str) else f"a {type(value).__name__}"


def _expect_list(key: str, value: Any) -> None:
    """Refuse a field that must be a list but is not: a string would be read one character at a time."""
    if value is not None and not isinstance(value, list | tuple):
        raise ValueError(f"`{key}` is {_shape(value)}, expected a list")


class _Resolver:
    """Maps a referenced table name to the asset_id the file gives that table."""

    def __init__(self) -> None:
        self.by_schema: dict[tuple[str, str, str], str] = {}
        self.by_database: dict[tuple[str, str], set[str]] = {}

    def add(self, database: str, schema: str, table: str, asset_id: str) -> None:
        db, sc, tb = database.lower(), schema.lower(), table.lower()
        self.by_schema[(db, sc, tb)] = asset_id
        self.by_database.setdefault((db, tb), set()).add(asset_id)

    def resolve(self, database: str, schema: str, ref: str) -> str | None:
        """`ref` is `table` or `schema.table`, in `database`; same schema first, then unique in the database."""
        db = database.lower()
        if "." in ref:
            ref_schema, ref_table = ref.rsplit(".", 1)
            return self.by_schema.get((db, ref_schema.lower(), ref_table.lower()))
        found = self.by_schema.get((db, schema.lower(), ref.lower()))
        if found:
            return found
        candidates = self.by_database.get((db, ref.lower()), set())
        return next(iter(candidates)) if len(candidates) == 1 else None


class CatalogFileSource(Source[CatalogFileConfig]):
    """Tables and columns from exported catalog files (JSON Lines, JSON, YAML, CSV; `.gz` allowed)."""

    config_class = CatalogFileConfig

    # -- records -> tables ---------------------------------------------------------------------
    def _business(self, record: Record, database: str, schema: str) -> str:
        if self.config.business:
            return self.config.business
        return self.resolve_business(database, schema, explicit=as_text(record.get("business")) or None) or ""

    def _tables(self) -> Iterator[tuple[str, Record]]:
        """Table-shaped records: JSON/YAML records as they are, CSV rows grouped per table."""
        csv_tables: dict[tuple[str, ...], tuple[str, Record]] = {}
        bad = BadRecords(self.report, "assets")
        for location, fmt, record in iter_records(
            self.config, self.report, table="assets", list_key="tables"
        ):
            if fmt != "csv":
                yield location, record
                continue
            # CSV: one row per column. Grouping needs the whole file (rows of a table may be
            # scattered); a CSV catalog is one row per column, which is small enough to hold.
            key: tuple[str, ...] = tuple(
                as_text(first(record, *k, default=""))
                for k in (("business",), DATABASE_KEYS, SCHEMA_KEYS, TABLE_KEYS)
            )
            if not key[3]:
                bad(location, "no `table` value", record)
                continue
            table = csv_tables.get(key)
            if table is None:
                table = (location, {**record, "columns": [], "foreign_keys": []})
                csv_tables[key] = table
            merged = table[1]
            for field in (*COMMENT_KEYS, "asset_id", "kind", "row_count"):
                if field in record and not merged.get(field):
                    merged[field] = record[field]
            column = as_text(first(record, "column", "column_name"))
            if column:
                try:  # check this row's flags here, so a bad cell names its own line
                    primary_key = as_bool(record.get("primary_key", False))
                    nullable = as_bool(record.get("nullable", True))
                except ValueError as exc:
                    bad(location, f"column {column!r}: {exc}", record)
                    continue
                merged["columns"].append(
                    {
                        "name": column,
                        "type": record.get("type", record.get("column_type", "")),
                        "comment": first(record, "column_comment", "column_description", default=""),
                        "primary_key": primary_key,
                        "nullable": nullable,
                    }
                )
                if record.get("references"):
                    merged["foreign_keys"].append([column, record["references"]])
        yield from csv_tables.values()

    def _build_resolver(self) -> _Resolver:
        """First pass: the asset_id of every table in the files, for foreign-key targets."""
        resolver = _Resolver()
        quiet = type(self.report)(source=self.report.source)  # bad records are reported by the main pass
        saved, self.report = self.report, quiet
        try:
            for _, record in self._tables():
                name = as_text(first(record, *TABLE_KEYS))
                if not name:
                    continue
                database = as_text(first(record, *DATABASE_KEYS, default=""))
                schema = as_text(first(record, *SCHEMA_KEYS, default=""))
                asset_id = as_text(record.get("asset_id")) or default_asset_id(
                    self._business(record, database, schema), database, schema, name
                )
                resolver.add(database, schema, name, asset_id)
        finally:
            self.report = saved
        return resolver

    def _foreign_keys(
        self, raw: Any, database: str, schema: str, business: str, resolver: _Resolver
    ) -> list[ForeignKey]:
        keys: list[ForeignKey] = []
        _expect_list("foreign_keys", raw)
        for fk in raw or []:
            if isinstance(fk, list | tuple) and len(fk) == 2:
                column, target = as_text(fk[0]), as_text(fk[1])
                if "." not in target:
                    raise ValueError(f"foreign key target {target!r} is not `table.column`")
                ref_table, ref_column = target.rsplit(".", 1)
                keys.append(
                    ForeignKey(
                        columns=[column],
                        ref_asset_id=self._ref_id(ref_table, database, schema, business, resolver),
                        ref_columns=[ref_column],
                    )
                )
            elif isinstance(fk, dict):
                ref_id = as_text(fk.get("ref_asset_id"))
                if not ref_id:
                    ref_table = as_text(first(fk, "ref_table", "references", "table"))
                    if not ref_table:
                        raise ValueError(f"foreign key {fk!r} names no `ref_table` or `ref_asset_id`")
                    ref_id = self._ref_id(ref_table, database, schema, business, resolver)
                keys.append(
                    ForeignKey(
                        columns=as_list(fk.get("columns")),
                        ref_asset_id=ref_id,
                        ref_columns=as_list(fk.get("ref_columns")),
                    )
                )
            else:
                raise ValueError(f"foreign key {fk!r} is neither `[column, table.column]` nor an object")
        return keys

    def _ref_id(self, ref_table: str, database: str, schema: str, business: str, resolver: _Resolver) -> str:
        found = resolver.resolve(database, schema, ref_table)
        if found:
            return found
        self.report.count("unresolved_foreign_keys")
        ref_schema, _, name = ref_table.rpartition(".")
        return default_asset_id(business, database, ref_schema or schema, name)

    def _columns(self, raw: Any) -> list[Column]:
        columns: list[Column] = []
        _expect_list("columns", raw)
        for item in raw or []:
            if isinstance(item, str):
                columns.append(Column(name=item))
                continue
            if not isinstance(item, dict):
                raise ValueError(f"column {item!r} is neither a name nor an object")
            name = as_text(first(item, "name", "column", "column_name"))
            if not name:
                raise ValueError(f"column {item!r} has no name")
            columns.append(
                Column(
                    name=name,
                    type=as_text(first(item, "type", "data_type", default="")),
                    comment=as_text(first(item, "comment", "description", "column_comment", default="")),
                    nullable=as_bool(item.get("nullable", True)),
                    primary_key=as_bool(item.get("primary_key", False)),
                )
            )
        return columns

    def _asset(self, record: Record, resolver: _Resolver) -> TableAsset:
        name = as_text(first(record, *TABLE_KEYS))
        if not name:
            raise ValueError("no table name (`table` or `name`)")
        database = as_text(first(record, *DATABASE_KEYS, default=""))
        schema = as_text(first(record, *SCHEMA_KEYS, default=""))
        business = self._business(record, database, schema)
        if not business:
            self.report.count("no_business")
        row_count = record.get("row_count")
        properties = record.get("properties") or {}
        if not isinstance(properties, dict):
            raise ValueError(f"`properties` is {_shape(properties)}, expected an object")
        return TableAsset(
            asset_id=as_text(record.get("asset_id")),
            business=business,
            source=self.name,
            database=database,
            schema_name=schema,
            name=name,
            kind="view" if "view" in as_text(record.get("kind")).lower() else "table",
            comment=as_text(first(record, *COMMENT_KEYS, default="")),
            columns=self._columns(record.get("columns")),
            foreign_keys=self._foreign_keys(record.get("foreign_keys"), database, schema, business, resolver),
            row_count=int(row_count) if row_count not in (None, "") else None,
            properties={str(k): as_text(v) for k, v in properties.items()},
        )

    def iter_assets(self) -> Iterator[TableAsset]:
        for path in expand_paths(self.config.path):  # fail fast on a bad path or format, before any work
            detect_format(path, self.config.format)
        resolver = self._build_resolver()
        bad = BadRecords(self.report, "assets")
        for location, record in self._tables():
            try:
                asset = self._asset(record, resolver)
            except ValidationError as exc:
                problems = "; ".join(
                    f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
                )
                bad(location, problems, record)
                continue
            except (ValueError, TypeError) as exc:
                bad(location, str(exc), record)
                continue
            self.report.count("tables" if asset.kind == "table" else "views")
            self.report.count("columns", len(asset.columns))
            self.report.count("foreign_keys", len(asset.foreign_keys))
            yield asset
