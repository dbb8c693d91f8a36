"""The records that flow through assetmatch: what sources yield and what the lake stores.

Every source yields these pydantic models; the lake turns them into Delta rows (see
`assetmatch.lake.tables`). They are deliberately small: a table with its columns and keys, one
logged query, one labelled requirement, one glossary term.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from assetmatch.text import normalize_text


class Column(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Column name as in the source.")
    type: str = Field(default="", description="Declared type, as the source spells it.")
    comment: str = Field(default="", description="Column comment / description (any language).")
    nullable: bool = Field(default=True, description="Whether the column accepts NULL.")
    primary_key: bool = Field(default=False, description="Part of the table's primary key.")


class ForeignKey(BaseModel):
    model_config = ConfigDict(extra="forbid")

    columns: list[str] = Field(description="Referencing columns of this table.")
    ref_asset_id: str = Field(description="asset_id of the referenced table.")
    ref_columns: list[str] = Field(default_factory=list, description="Referenced columns.")


def default_asset_id(business: str, database: str, schema: str, name: str) -> str:
    """Stable id of a table: its business and qualified name, lower-cased, dot-joined."""
    parts = [business, database, schema, name]
    return ".".join(p.strip().lower() for p in parts if p and p.strip())


class TableAsset(BaseModel):
    """One warehouse table or view with everything a matcher may read about it."""

    model_config = ConfigDict(extra="forbid")

    asset_id: str = Field(
        default="", description="Stable id; derived from business + qualified name if empty."
    )
    business: str = Field(description="The tenant (a game, a product line) that owns this table.")
    source: str = Field(default="", description="Name of the configured source that reported it.")
    database: str = Field(default="", description="Database / catalog.")
    schema_name: str = Field(default="", description="Schema (namespace) inside the database.")
    name: str = Field(description="Table name as in the source.")
    kind: Literal["table", "view"] = "table"
    comment: str = Field(default="", description="Table comment / description.")
    columns: list[Column] = Field(default_factory=list)
    foreign_keys: list[ForeignKey] = Field(default_factory=list)
    row_count: int | None = Field(default=None, description="Row-count estimate, if the source has one.")
    properties: dict[str, str] = Field(default_factory=dict, description="Free-form extra metadata.")
    in_catalog: bool = Field(
        default=True,
        description="False when the table is only declared (e.g. a dbt source in YAML) and the warehouse "
        "catalog did not report it: its columns, if any, are documentation, not verified.",
    )

    def model_post_init(self, __context: object) -> None:
        if not self.asset_id:
            self.asset_id = default_asset_id(self.business, self.database, self.schema_name, self.name)

    def normalized(self) -> TableAsset:
        """A copy with every text field normalized (whitespace, control chars, full-width forms):
        ids, qualifiers, name, comment, column names/types/comments and FK targets.

        Copies only the columns whose text changes: a catalog of 10k tables x 30 columns is 300k
        column objects, and copying every one of them would dominate the ingest.
        """
        columns = []
        for column in self.columns:
            name, type_, comment = (
                normalize_text(column.name),
                normalize_text(column.type),
                normalize_text(column.comment),
            )
            if (name, type_, comment) != (column.name, column.type, column.comment):
                column = column.model_copy(update={"name": name, "type": type_, "comment": comment})
            columns.append(column)
        foreign_keys = [
            ForeignKey(
                columns=[normalize_text(c) for c in fk.columns],
                ref_asset_id=normalize_text(fk.ref_asset_id),
                ref_columns=[normalize_text(c) for c in fk.ref_columns],
            )
            for fk in self.foreign_keys
        ]
        return self.model_copy(
            update={
                "asset_id": normalize_text(self.asset_id),
                "business": normalize_text(self.business),
                "database": normalize_text(self.database),
                "schema_name": normalize_text(self.schema_name),
                "name": normalize_text(self.name),
                "comment": normalize_text(self.comment),
                "columns": columns,
                "foreign_keys": foreign_keys,
            }
        )

    def content_hash(self) -> str:
        """sha256 over the content that matters to matching; run ids and timestamps excluded."""
        return hash_asset_dump(self.model_dump(mode="json"))


def hash_asset_dump(dump: dict[str, Any]) -> str:
    """The content hash of a `TableAsset.model_dump()` (the merge dumps each asset once and reuses it).

    The source name is left out (the same table reported by another source is the same content),
    and so is `in_catalog` when it is True (its default).
    Row counts are estimates that drift on a live warehouse (reltuples, TABLE_ROWS): only their
    order of magnitude is hashed, so drift alone does not rewrite a row as "updated".
    """
    payload = {k: v for k, v in dump.items() if k != "source"}
    if payload.get("in_catalog", True):  # the default is left out: hashes from before the flag stay valid
        payload.pop("in_catalog", None)
    if payload.get("row_count") is not None:
        payload["row_count"] = len(str(max(int(payload["row_count"]), 0)))
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class QueryLogEntry(BaseModel):
    """One query an analyst ran, with the tables it read (resolved to asset ids where possible)."""

    model_config = ConfigDict(extra="forbid")

    query_id: str = Field(default="", description="Stable id; hash of time+user+sql if empty.")
    ts: datetime
    user: str = ""
    business: str
    sql: str
    requirement: str | None = Field(default=None, description="The analyst's request text, if logged.")
    tables: list[str] = Field(default_factory=list, description="Tables read, as asset ids.")
    source: str = ""

    def model_post_init(self, __context: object) -> None:
        if not self.query_id:
            key = f"{self.ts.isoformat()}|{self.user}|{self.business}|{self.sql}"
            self.query_id = hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]


class Requirement(BaseModel):
    """A labelled requirement: the text an analyst wrote and the tables that answer it."""

    model_config = ConfigDict(extra="forbid")

    id: str
    business: str
    text: str
    gold_assets: list[str] = Field(default_factory=list)
    split: str = Field(default="train", description="train | test | dev (never tune on dev/test).")
    ts: datetime | None = Field(
        default=None, description="When the requirement was made (for point-in-time)."
    )
    sql: str | None = None
    source: str = ""
    databases: list[Annotated[str, Field(min_length=1)]] | None = Field(
        default=None,
        min_length=1,
        description="The databases the request was asked in (its scope, as `databases` on /v1/match); "
        "None: the whole library. Fitting, training and the gate ask it there again.",
    )


def scope_of(databases: Iterable[str] | None) -> tuple[str, ...] | None:
    """A scope as one value: its databases sorted and unique (a scope is a set); None for none (an
    empty list read back from the lake included: a stored scope is never empty)."""
    return tuple(sorted(set(databases or ()))) or None


class GlossaryTerm(BaseModel):
    """A business term, its synonyms and aliases (any language), and the tables it points to."""

    model_config = ConfigDict(extra="forbid")

    business: str
    term: str
    synonyms: list[str] = Field(default_factory=list)
    description: str = ""
    assets: list[str] = Field(default_factory=list, description="asset ids this term points to.")
    source: str = ""
