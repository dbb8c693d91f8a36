"""`query_log` source: the queries analysts ran, with the tables each one reads.

Input: CSV or JSON Lines (optionally .gz) with one query per row: time, user, business, sql and
optionally the requirement text the analyst was answering. Column names are options.

Table extraction uses sqlglot's scope analysis, so CTE names, subquery aliases and table aliases
are not mistaken for tables, and a CTE that shadows a real table is told apart from it. Each table
is qualified with the `database` / `default_schema` options into the same asset id the `sql` source
gives it (`default_asset_id(business, database, schema, table)`), so a log and a catalog of the
same warehouse line up. SQL sqlglot cannot parse is still yielded, with `tables=[]`, counted as
`unparsed_sql` and warned about: the pipeline decides whether to quarantine it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import sqlglot
from pydantic import Field, ValidationError
from sqlglot import exp
from sqlglot.errors import SqlglotError
from sqlglot.optimizer.scope import traverse_scope

from assetmatch.models import QueryLogEntry, default_asset_id
from assetmatch.sources._files import BadRecords, FileSourceConfig, as_text, iter_records
from assetmatch.sources.base import Source

_MAX_SQL_WARNINGS = 50


class QueryLogConfig(FileSourceConfig):
    dialect: str | None = Field(
        default=None,
        description="sqlglot dialect of the logged SQL (postgres, mysql, hive, trino...); none = generic.",
    )
    database: str = Field(
        default="",
        description="Database used to qualify table names that do not name one (as the sql source).",
    )
    default_schema: str = Field(
        default="", description="Schema used to qualify table names that do not name one (e.g. public)."
    )
    business: str | None = Field(
        default=None,
        description="Business of rows that have no business column value (default: the source's business).",
    )
    time_column: str = Field(
        default="time", description="Column with the query time (ISO 8601 or Unix seconds)."
    )
    user_column: str = Field(default="user", description="Column with the user who ran the query.")
    business_column: str = Field(default="business", description="Column with the business (tenant).")
    sql_column: str = Field(default="sql", description="Column with the SQL text.")
    requirement_column: str = Field(
        default="requirement", description="Column with the analyst's request text, if logged."
    )


def parse_time(value: Any) -> datetime:
    """ISO 8601 text or Unix seconds; naive times are taken as UTC."""
    if isinstance(value, datetime):
        ts = value
    elif isinstance(value, int | float) or (isinstance(value, str) and value.replace(".", "", 1).isdigit()):
        ts = datetime.fromtimestamp(float(value), tz=UTC)
    elif isinstance(value, str) and value.strip():
        ts = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    else:
        raise ValueError(f"not a time: {value!r}")
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def tables_read(sql: str, dialect: str | None = None) -> list[tuple[str, str, str]]:
    """`(catalog, schema, table)` of every real table the statements in `sql` read, in order, deduplicated.

    Raises sqlglot's errors for SQL it cannot parse, and ValueError for text that parses into
    something that is not a statement (sqlglot parses `this is not sql` as an expression).
    """
    seen: dict[tuple[str, str, str], None] = {}
    for statement in sqlglot.parse(sql, read=dialect):
        if statement is None:
            continue
        if isinstance(statement, exp.Command) or not isinstance(statement, exp.Query | exp.DML | exp.DDL):
            raise ValueError(f"not a query sqlglot understands ({type(statement).__name__})")
        for scope in traverse_scope(statement):
            # scope.sources maps each name visible in FROM/JOIN to a Table or to a nested Scope
            # (CTE, derived table): only Table nodes that are not CTE references are real tables.
            for source in scope.sources.values():
                if isinstance(source, exp.Table) and isinstance(source.this, exp.Identifier):
                    seen.setdefault((source.catalog, source.db, source.name), None)
    return list(seen)


class QueryLogSource(Source[QueryLogConfig]):
    """Query-log entries from CSV / JSON Lines files, with the tables each query reads as asset ids."""

    config_class = QueryLogConfig

    def _asset_ids(self, sql: str, business: str, location: str) -> list[str]:
        try:
            tables = tables_read(sql, self.config.dialect)
        except (SqlglotError, ValueError, RecursionError) as exc:
            self.report.count("unparsed_sql")
            if self.report.counts["unparsed_sql"] <= _MAX_SQL_WARNINGS:
                reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
                self.report.warn(f"{location}: SQL not parsed, yielded with no tables: {reason}")
            return []
        ids = []
        for catalog, schema, name in tables:
            database = catalog or self.config.database
            ids.append(default_asset_id(business, database, schema or self.config.default_schema, name))
        return ids

    def iter_query_log(self) -> Iterator[QueryLogEntry]:
        cfg = self.config
        bad = BadRecords(self.report, "query_log")
        # sqlglot logs a warning for every statement it falls back on; the report has them already
        logging.getLogger("sqlglot").setLevel(logging.ERROR)
        for location, _fmt, record in iter_records(cfg, self.report, table="query_log"):
            sql = as_text(record.get(cfg.sql_column)).strip()
            if not sql:
                bad(location, f"no SQL in column {cfg.sql_column!r}", record)
                continue
            try:
                ts = parse_time(record.get(cfg.time_column))
            except (ValueError, TypeError, OverflowError, OSError) as exc:
                bad(location, f"column {cfg.time_column!r}: {exc}", record)
                continue
            business = (
                as_text(record.get(cfg.business_column))
                or cfg.business
                or self.resolve_business(cfg.database, cfg.default_schema)
                or ""
            )
            requirement = as_text(record.get(cfg.requirement_column)) or None
            try:
                entry = QueryLogEntry(
                    ts=ts,
                    user=as_text(record.get(cfg.user_column)),
                    business=business,
                    sql=sql,
                    requirement=requirement,
                    tables=self._asset_ids(sql, business, location),
                    source=self.name,
                )
            except ValidationError as exc:
                bad(
                    location,
                    "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()),
                    record,
                )
                continue
            self.report.count("queries")
            yield entry
