"""`dbt` source: models, seeds, snapshots and sources from dbt's artifacts.

`manifest.json` (from `dbt parse` / `dbt build`) gives every relation with its documentation:
descriptions of tables and columns, tags, materialization, and the tests that imply keys
(`relationships` tests become foreign keys, `not_null` tests non-nullable columns).
`catalog.json` (from `dbt docs generate`), when given, adds what only the warehouse knows: column
types and order, table comments, owner and row-count stats. Ephemeral and disabled models are not
relations in the warehouse and are skipped. Tested against the shape of manifest v12 / catalog v1.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import Field

from assetmatch.config import ConfigError
from assetmatch.models import Column, ForeignKey, TableAsset, default_asset_id
from assetmatch.sources.base import Source, SourceConfig

RELATION_TYPES = ("model", "seed", "snapshot")


class DbtConfig(SourceConfig):
    manifest_path: str = Field(description="Path of dbt's target/manifest.json.")
    catalog_path: str | None = Field(
        default=None,
        description="Path of dbt's target/catalog.json (adds column types, comments and row stats).",
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
    if not isinstance(doc, dict):
        raise ConfigError(f"dbt {what} {path!r}: expected a JSON object at the top level")
    return doc


class DbtSource(Source[DbtConfig]):
    """Tables and views documented in a dbt project (manifest.json + optional catalog.json)."""

    config_class = DbtConfig

    def _relation_name(self, node: dict[str, Any]) -> str:
        if node.get("resource_type") == "source":
            return str(node.get("identifier") or node["name"])
        return str(node.get("alias") or node["name"])

    def _asset_id(self, node: dict[str, Any]) -> str:
        database, schema = node.get("database") or "", node.get("schema") or ""
        return default_asset_id(self._business(node), database, schema, self._relation_name(node))

    def _business(self, node: dict[str, Any]) -> str:
        meta = {**(node.get("config", {}).get("meta") or {}), **(node.get("meta") or {})}
        explicit = meta.get("business")
        return self.resolve_business(node.get("database") or "", node.get("schema") or "", explicit) or ""

    def _test_facts(
        self, manifest: dict[str, Any], relations: dict[str, dict[str, Any]]
    ) -> tuple[dict[str, list[ForeignKey]], dict[str, set[str]]]:
        """Foreign keys from `relationships` tests and NOT NULL columns from `not_null` tests."""
        foreign_keys: dict[str, list[ForeignKey]] = {}
        not_null: dict[str, set[str]] = {}
        for node in manifest.get("nodes", {}).values():
            if node.get("resource_type") != "test" or not node.get("test_metadata"):
                continue
            name = node["test_metadata"].get("name")
            kwargs = node["test_metadata"].get("kwargs") or {}
            attached = node.get("attached_node")
            column = kwargs.get("column_name") or node.get("column_name")
            if not attached or not column:
                continue
            if name == "not_null":
                not_null.setdefault(attached, set()).add(str(column).lower())
            elif name == "relationships" and kwargs.get("field"):
                parents = [n for n in node.get("depends_on", {}).get("nodes", []) if n != attached] or [
                    attached
                ]
                if len(parents) != 1 or parents[0] not in relations:
                    self.report.count("unresolved_relationships")
                    continue
                foreign_keys.setdefault(attached, []).append(
                    ForeignKey(
                        columns=[str(column)],
                        ref_asset_id=self._asset_id(relations[parents[0]]),
                        ref_columns=[str(kwargs["field"])],
                    )
                )
        return foreign_keys, not_null

    def _columns(
        self, node: dict[str, Any], catalog_entry: dict[str, Any] | None, not_null: set[str]
    ) -> list[Column]:
        documented = {name.lower(): col for name, col in (node.get("columns") or {}).items()}
        primary_key = {
            str(c).lower()
            for con in node.get("constraints") or []
            if con.get("type") == "primary_key"
            for c in con.get("columns") or []
        }
        ordered: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
        if catalog_entry:
            warehouse = sorted(
                (catalog_entry.get("columns") or {}).values(), key=lambda c: c.get("index") or 0
            )
            for col in warehouse:
                ordered.append((str(col["name"]), documented.pop(str(col["name"]).lower(), {}), col))
        for doc in documented.values():  # documented but not in the catalog (or no catalog)
            ordered.append((str(doc["name"]), doc, {}))
        columns = []
        for name, doc, col in ordered:
            constraints = {c.get("type") for c in doc.get("constraints") or []}
            columns.append(
                Column(
                    name=name,
                    type=str(col.get("type") or doc.get("data_type") or ""),
                    comment=str(doc.get("description") or col.get("comment") or ""),
                    nullable=not ({"not_null", "primary_key"} & constraints or name.lower() in not_null),
                    primary_key="primary_key" in constraints or name.lower() in primary_key,
                )
            )
        return columns

    def iter_assets(self) -> Iterator[TableAsset]:
        manifest = _load_json(self.config.manifest_path, "manifest")
        catalog = _load_json(self.config.catalog_path, "catalog") if self.config.catalog_path else {}
        relations: dict[str, dict[str, Any]] = {}
        for uid, node in manifest.get("nodes", {}).items():
            if node.get("resource_type") not in RELATION_TYPES:
                continue
            config = node.get("config") or {}
            if config.get("enabled") is False or config.get("materialized") == "ephemeral":
                self.report.count("skipped_not_relations")
                continue
            relations[uid] = node
        if self.config.include_sources:
            relations.update(manifest.get("sources", {}))
        foreign_keys, not_null = self._test_facts(manifest, relations)
        catalog_entries = {**(catalog.get("nodes") or {}), **(catalog.get("sources") or {})}

        for uid, node in relations.items():
            entry = catalog_entries.get(uid)
            meta = (entry or {}).get("metadata") or {}
            stats = (entry or {}).get("stats") or {}
            materialized = str((node.get("config") or {}).get("materialized") or "")
            is_view = (
                materialized in ("view", "materialized_view") or "VIEW" in str(meta.get("type") or "").upper()
            )
            row_stat = stats.get("row_count") or stats.get("num_rows") or {}
            row_count = row_stat.get("value") if row_stat.get("include", True) else None
            properties = {
                "dbt_unique_id": uid,
                "dbt_resource_type": str(node.get("resource_type")),
                "dbt_path": str(node.get("original_file_path") or ""),
            }
            if materialized:
                properties["dbt_materialized"] = materialized
            if node.get("tags"):
                properties["dbt_tags"] = ",".join(map(str, node["tags"]))
            if meta.get("owner"):
                properties["owner"] = str(meta["owner"])
            asset = TableAsset(
                business=self._business(node),
                source=self.name,
                database=node.get("database") or "",
                schema_name=node.get("schema") or "",
                name=self._relation_name(node),
                kind="view" if is_view else "table",
                comment=str(node.get("description") or meta.get("comment") or ""),
                columns=self._columns(node, entry, not_null.get(uid, set())),
                foreign_keys=foreign_keys.get(uid, []),
                row_count=int(row_count) if isinstance(row_count, int | float) else None,
                properties=properties,
            )
            if entry is None and catalog:
                self.report.count("not_in_catalog")
            self.report.count(f"{node.get('resource_type')}s")
            self.report.count("columns", len(asset.columns))
            self.report.count("foreign_keys", len(asset.foreign_keys))
            yield asset
