"""`dbt` source: models, seeds, snapshots and sources from dbt's artifacts (manifest v3 to v12).

`manifest.json` (from `dbt parse` / `dbt build`) gives every relation with its documentation:
descriptions of tables and columns, tags, materialization, and the tests that imply keys
(`relationships` tests become foreign keys, `not_null` tests non-nullable columns, a column with
both `unique` and `not_null` tests the primary key when the table declares none).
`catalog.json` (from `dbt docs generate`), when given, adds what only the warehouse knows: column
types and order, table comments, owner and row-count stats. Ephemeral and disabled models are not
relations in the warehouse and are skipped.

Fidelity rules, for manifests of every schema version from v3 (dbt 0.21) to v12 (dbt 1.8+):

- Tests attach to their table through `attached_node` (v9+), else through `depends_on.nodes`
  (the one relation a `not_null` / `unique` test depends on; for `relationships`, the relation its
  `model` argument refs); the column is `column_name` or `test_metadata.kwargs.column_name`.
- A table the catalog does not report is kept with `in_catalog=False` (a source declared in YAML
  only, a model not built yet): its documented columns are all we know. Without a catalog file
  every table is such a table.
- Documented columns the catalog lacks on a table it does report are stale documentation: they
  are not turned into columns; their names go to the `dbt_stale_columns` property and the
  `stale_columns` count.
- Database, schema and table names take the catalog's spelling when it has the table; tables it
  lacks take the spelling the catalog uses for the same database / schema, so one database never
  shows as two.
- Nested fields (BigQuery STRUCT / RECORD sub-fields `a.b`) stay with their top-level column `a`:
  their types and descriptions are folded into its type and comment.
- A node that cannot be read (no `name`, `columns` that are not a mapping, ...) is refused with a
  reason (quarantined by the pipeline); the other nodes still ingest.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import Field

from assetmatch.config import ConfigError
from assetmatch.models import Column, ForeignKey, TableAsset, default_asset_id
from assetmatch.sources._files import as_text
from assetmatch.sources.base import Source, SourceConfig

RELATION_TYPES = ("model", "seed", "snapshot")
# `ref('name')`, `ref('package', 'name')`, `source('source_name', 'table')` in a test's `model` argument
_REF = re.compile(r"""\bref\(\s*(?:['"][^'"]+['"]\s*,\s*)?['"]([^'"]+)['"]""")
_SOURCE = re.compile(r"""\bsource\(\s*['"]([^'"]+)['"]\s*,\s*['"]([^'"]+)['"]""")


class DbtConfig(SourceConfig):
    manifest_path: str = Field(description="Path of dbt's target/manifest.json.")
    catalog_path: str | None = Field(
        default=None,
        description="Path of dbt's target/catalog.json (adds column types, comments and row stats). "
        "Without it every table is kept as declared, with `in_catalog=False`.",
    )
    include_sources: bool = Field(
        default=True, description="Also yield dbt sources (the raw tables models read)."
    )


def _load_json(path: str, what: str) -> dict[str, Any]:
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"dbt {what} {path!r} does not exist")
    try:
        with file.open(encoding="utf-8") as handle:
            doc = json.load(handle)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"dbt {what} {path!r} is not valid JSON (line {exc.lineno}: {exc.msg})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"dbt {what} {path!r} is not UTF-8 text ({exc.reason})") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"dbt {what} {path!r}: expected a JSON object at the top level")
    for key in ("nodes", "sources"):
        if doc.get(key) is not None and not isinstance(doc[key], dict):
            raise ConfigError(
                f"dbt {what} {path!r}: `{key}` is a {type(doc[key]).__name__}, expected an object"
            )
    return doc


def _malformed(node: Any) -> str | None:
    """Why a relation node cannot be read, or None when it can."""
    if not isinstance(node, dict):
        return f"the node is a {type(node).__name__}, expected an object"
    name = node.get("name")
    if not isinstance(name, str) or not name.strip():
        return "no `name`"
    for key in ("alias", "identifier", "database", "schema", "description"):
        if node.get(key) is not None and not isinstance(node[key], str):
            return f"`{key}` is a {type(node[key]).__name__}, expected text"
    for key in ("config", "meta"):
        if node.get(key) is not None and not isinstance(node[key], dict):
            return f"`{key}` is a {type(node[key]).__name__}, expected an object"
    columns = node.get("columns")
    if columns is not None:
        if not isinstance(columns, dict):
            return f"`columns` is a {type(columns).__name__}, expected an object of columns"
        for key, col in columns.items():
            if not isinstance(col, dict):
                return f"column {key!r} is a {type(col).__name__}, expected an object"
    if node.get("constraints") is not None and not isinstance(node["constraints"], list):
        return "`constraints` is not a list"
    return None


class _Case:
    """The catalog's spelling of databases and schemas, for tables the catalog does not report."""

    def __init__(self, entries: dict[str, Any]) -> None:
        self.databases: dict[str, str] = {}
        self.schemas: dict[tuple[str, str], str] = {}
        for entry in entries.values():
            meta = (entry or {}).get("metadata") or {} if isinstance(entry, dict) else {}
            database, schema = as_text(meta.get("database")), as_text(meta.get("schema"))
            if database:
                self.databases.setdefault(database.lower(), database)
            if schema:
                self.schemas.setdefault((database.lower(), schema.lower()), schema)

    def names(self, database: str, schema: str) -> tuple[str, str]:
        return (
            self.databases.get(database.lower(), database),
            self.schemas.get((database.lower(), schema.lower()), schema),
        )


class DbtSource(Source[DbtConfig]):
    """Tables and views documented in a dbt project (manifest.json + optional catalog.json)."""

    config_class = DbtConfig

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._names: dict[str, tuple[str, str, str]] = {}  # uid -> (database, schema, name) as stored

    # -- names ---------------------------------------------------------------------------------
    @staticmethod
    def _manifest_name(node: dict[str, Any]) -> str:
        if node.get("resource_type") == "source":
            return str(node.get("identifier") or node["name"])
        return str(node.get("alias") or node["name"])

    def _resolve_names(
        self, uid: str, node: dict[str, Any], entry: dict[str, Any] | None, case: _Case
    ) -> None:
        """(database, schema, name) of a relation: the catalog's spelling when it has the table."""
        meta = (entry or {}).get("metadata") or {}
        database = as_text(meta.get("database")) or as_text(node.get("database"))
        schema = as_text(meta.get("schema")) or as_text(node.get("schema"))
        name = as_text(meta.get("name")) or self._manifest_name(node)
        if not entry:
            spelled, schema = case.names(database, schema)
            # the catalog folds this database's case (Snowflake: UPPER): the table name follows it
            if spelled != database and spelled in (database.upper(), database.lower()):
                name = name.upper() if spelled.isupper() else name.lower()
            database = spelled
        self._names[uid] = (database, schema, name)

    def _business(self, uid: str, node: dict[str, Any]) -> str:
        config = node.get("config") or {}
        meta = {**(config.get("meta") or {}), **(node.get("meta") or {})}
        database, schema, _ = self._names[uid]
        explicit = meta.get("business")
        return self.resolve_business(database, schema, as_text(explicit) or None) or ""

    def _asset_id(self, uid: str, node: dict[str, Any]) -> str:
        database, schema, name = self._names[uid]
        return default_asset_id(self._business(uid, node), database, schema, name)

    # -- tests ---------------------------------------------------------------------------------
    def _test_target(
        self, test: dict[str, Any], relations: dict[str, dict[str, Any]], by_name: dict[str, str]
    ) -> str | None:
        """The relation a test checks: `attached_node` (v9+), else what `depends_on` and `model` say."""
        attached = test.get("attached_node")
        if attached:
            return str(attached)
        depends = [n for n in (test.get("depends_on") or {}).get("nodes") or [] if n in relations]
        if len(depends) == 1:
            return str(depends[0])
        model = as_text(((test.get("test_metadata") or {}).get("kwargs") or {}).get("model"))
        source = _SOURCE.search(model)
        ref = _REF.search(model)
        uid = by_name.get(f"source:{source[1]}.{source[2]}") if source else None
        uid = uid or (by_name.get(f"ref:{ref[1]}") if ref else None)
        return uid if uid in depends else None

    def _test_facts(
        self, manifest: dict[str, Any], relations: dict[str, dict[str, Any]]
    ) -> tuple[dict[str, list[ForeignKey]], dict[str, set[str]], dict[str, set[str]]]:
        """Foreign keys (`relationships`), NOT NULL (`not_null`) and unique (`unique`) columns per relation."""
        by_name: dict[str, str] = {}
        for uid, node in relations.items():
            if node.get("resource_type") == "source":
                by_name.setdefault(f"source:{node.get('source_name')}.{node['name']}", uid)
            else:
                by_name.setdefault(f"ref:{node['name']}", uid)
        foreign_keys: dict[str, list[ForeignKey]] = {}
        not_null: dict[str, set[str]] = {}
        unique: dict[str, set[str]] = {}
        for node in (manifest.get("nodes") or {}).values():
            if not isinstance(node, dict) or node.get("resource_type") != "test":
                continue
            metadata = node.get("test_metadata")
            if not isinstance(metadata, dict):
                continue
            name = metadata.get("name")
            raw_kwargs = metadata.get("kwargs")
            kwargs: dict[str, Any] = raw_kwargs if isinstance(raw_kwargs, dict) else {}
            column = kwargs.get("column_name") or node.get("column_name")
            if name not in ("not_null", "unique", "relationships") or not column:
                continue
            target = self._test_target(node, relations, by_name)
            if target is None or target not in relations:
                self.report.count("unattached_tests")
                continue
            if name == "not_null":
                not_null.setdefault(target, set()).add(str(column).lower())
            elif name == "unique":
                unique.setdefault(target, set()).add(str(column).lower())
            elif kwargs.get("field"):
                parents = [n for n in (node.get("depends_on") or {}).get("nodes") or [] if n != target]
                parents = parents or [target]  # a self-reference
                if len(parents) != 1 or parents[0] not in relations:
                    self.report.count("unresolved_relationships")
                    continue
                foreign_keys.setdefault(target, []).append(
                    ForeignKey(
                        columns=[str(column)],
                        ref_asset_id=self._asset_id(parents[0], relations[parents[0]]),
                        ref_columns=[str(kwargs["field"])],
                    )
                )
        return foreign_keys, not_null, unique

    # -- columns -------------------------------------------------------------------------------
    def _columns(
        self,
        node: dict[str, Any],
        catalog_entry: dict[str, Any] | None,
        not_null: set[str],
        unique: set[str],
    ) -> tuple[list[Column], list[str]]:
        """The table's columns, and the documented ones the catalog does not have (stale docs)."""
        documented = {str(name).lower(): col for name, col in (node.get("columns") or {}).items()}
        primary_key = {
            str(c).lower()
            for con in node.get("constraints") or []
            if isinstance(con, dict) and con.get("type") == "primary_key"
            for c in con.get("columns") or []
        }
        ordered: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
        stale: list[str] = []
        if catalog_entry:
            warehouse = sorted(
                (
                    {**c, "name": str(c.get("name") or key)}
                    for key, c in (catalog_entry.get("columns") or {}).items()
                    if isinstance(c, dict)
                ),
                key=lambda c: c.get("index") or 0,
            )
            for col in warehouse:
                ordered.append((col["name"], documented.pop(col["name"].lower(), {}), col))
            stale = [str(doc.get("name") or key) for key, doc in documented.items()]
        else:  # not in the catalog (or no catalog): the documentation is all there is
            ordered = [(str(doc.get("name") or key), doc, {}) for key, doc in documented.items()]

        declared_pk = bool(primary_key) or any(
            c.get("type") == "primary_key" for _, doc, _ in ordered for c in doc.get("constraints") or []
        )
        tested_pk = set() if declared_pk else unique & not_null
        if len(tested_pk) > 1:  # several unique + not-null columns: candidate keys, not one primary key
            tested_pk = set()
        columns: list[Column] = []
        by_name: dict[str, Column] = {}
        nested: dict[str, list[tuple[str, str, str]]] = {}
        for name, doc, col in ordered:
            constraints = {c.get("type") for c in doc.get("constraints") or [] if isinstance(c, dict)}
            comment = as_text(doc.get("description") or col.get("comment"))
            type_ = as_text(col.get("type") or doc.get("data_type"))
            head, dot, rest = name.partition(".")
            if dot and head.lower() in by_name:  # a nested field: kept with its top-level column
                nested.setdefault(head.lower(), []).append((rest, type_, comment))
                self.report.count("nested_fields")
                continue
            column = Column(
                name=name,
                type=type_,
                comment=comment,
                nullable=not ({"not_null", "primary_key"} & constraints or name.lower() in not_null),
                primary_key="primary_key" in constraints or name.lower() in primary_key | tested_pk,
            )
            if column.primary_key:
                column.nullable = False
            columns.append(column)
            by_name[name.lower()] = column
        for head, fields in nested.items():
            self._fold(by_name[head], fields)
        return columns, stale

    @staticmethod
    def _fold(parent: Column, fields: list[tuple[str, str, str]]) -> None:
        """Nested fields `(path, type, description)` on their top-level column: listed in its type
        when the type does not spell them (BigQuery's RECORD), their descriptions in its comment."""
        if "<" not in parent.type:
            listed = ", ".join(f"{path} {type_}".strip() for path, type_, _ in fields)
            parent.type = f"{parent.type or 'STRUCT'}<{listed}>"
        notes = [f"{path}: {comment}" for path, _, comment in fields if comment]
        parent.comment = "; ".join(([parent.comment] if parent.comment else []) + notes)

    # -- relations -----------------------------------------------------------------------------
    def _relations(self, manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """Readable relation nodes by unique id; malformed ones are refused with their reason."""
        candidates: list[tuple[str, Any]] = []
        for uid, node in (manifest.get("nodes") or {}).items():
            kind = node.get("resource_type") if isinstance(node, dict) else None
            if kind in RELATION_TYPES or (not isinstance(node, dict) and not str(uid).startswith("test.")):
                candidates.append((str(uid), node))
        if self.config.include_sources:
            candidates.extend((str(uid), node) for uid, node in (manifest.get("sources") or {}).items())
        relations: dict[str, dict[str, Any]] = {}
        for uid, node in candidates:
            problem = _malformed(node)
            if problem is not None:
                self.report.count("malformed_nodes")
                self.report.reject("assets", uid, f"malformed dbt node: {problem}", node)
                continue
            config = node.get("config") or {}
            if config.get("enabled") is False or config.get("materialized") == "ephemeral":
                self.report.count("skipped_not_relations")
                continue
            relations[uid] = node
        return relations

    def iter_assets(self) -> Iterator[TableAsset]:
        manifest = _load_json(self.config.manifest_path, "manifest")
        catalog = _load_json(self.config.catalog_path, "catalog") if self.config.catalog_path else {}
        catalog_entries = {
            uid: entry
            for uid, entry in {**(catalog.get("nodes") or {}), **(catalog.get("sources") or {})}.items()
            if isinstance(entry, dict)
        }
        case = _Case(catalog_entries)
        relations = self._relations(manifest)
        for uid, node in relations.items():
            self._resolve_names(uid, node, catalog_entries.get(uid), case)
        foreign_keys, not_null, unique = self._test_facts(manifest, relations)

        for uid, node in relations.items():
            entry = catalog_entries.get(uid)
            meta = (entry or {}).get("metadata") or {}
            stats = (entry or {}).get("stats") or {}
            materialized = as_text((node.get("config") or {}).get("materialized"))
            is_view = (
                materialized in ("view", "materialized_view") or "VIEW" in as_text(meta.get("type")).upper()
            )
            row_stat = stats.get("row_count") or stats.get("num_rows") or {}
            row_count = row_stat.get("value") if row_stat.get("include", True) else None
            properties = {
                "dbt_unique_id": uid,
                "dbt_resource_type": as_text(node.get("resource_type")),
                "dbt_path": as_text(node.get("original_file_path")),
            }
            if materialized:
                properties["dbt_materialized"] = materialized
            if node.get("tags"):
                properties["dbt_tags"] = ",".join(map(str, node["tags"]))
            if meta.get("owner"):
                properties["owner"] = str(meta["owner"])
            columns, stale = self._columns(node, entry, not_null.get(uid, set()), unique.get(uid, set()))
            if stale:
                properties["dbt_stale_columns"] = ",".join(stale)
                self.report.count("stale_columns", len(stale))
                self.report.warn(
                    f"{uid}: {len(stale)} documented column(s) not in the catalog, not stored as columns: "
                    + ", ".join(stale[:10])
                )
            database, schema, name = self._names[uid]
            asset = TableAsset(
                business=self._business(uid, node),
                source=self.name,
                database=database,
                schema_name=schema,
                name=name,
                kind="view" if is_view else "table",
                comment=as_text(node.get("description") or meta.get("comment")),
                columns=columns,
                foreign_keys=foreign_keys.get(uid, []),
                row_count=int(row_count) if isinstance(row_count, int | float) else None,
                properties=properties,
                in_catalog=entry is not None,
            )
            if entry is None:
                self.report.count("not_in_catalog")
            self.report.count(f"{node.get('resource_type')}s")
            self.report.count("columns", len(asset.columns))
            self.report.count("foreign_keys", len(asset.foreign_keys))
            yield asset
