"""Records to the flat frames the GX suites check, plus the checks GX cannot express.

GX works on flat columns. A table's column list is nested, so what the suites need from it is
derived here (`n_columns`, `longest_column_text`), and `broken_encoding` is computed with
`assetmatch.text.has_broken_encoding` (GX has no expectation that calls our own function; the
suite then checks the derived flag). Checks *inside* a nested list, empty or duplicate column
names on one table, are plain Python in `python_problems`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd
from pydantic import BaseModel

from assetmatch.models import GlossaryTerm, QueryLogEntry, Requirement, TableAsset
from assetmatch.text import has_broken_encoding

ROW_INDEX = "row_index"
Record = TableAsset | QueryLogEntry | Requirement | GlossaryTerm


def _nonblank(value: str | None) -> str | None:
    """Blank strings become nulls so one not-null expectation catches missing and empty values."""
    return value if value and value.strip() else None


def _broken(texts: Iterable[str | None]) -> bool:
    return any(has_broken_encoding(t) for t in texts)


def record_key(table: str, record: BaseModel) -> str:
    """The record's merge key as text (what the quarantine table shows)."""
    if isinstance(record, TableAsset):
        return record.asset_id
    if isinstance(record, QueryLogEntry):
        return record.query_id
    if isinstance(record, Requirement):
        return record.id
    if isinstance(record, GlossaryTerm):
        return f"{record.business}/{record.term}"
    raise TypeError(f"no key for {type(record).__name__} in table {table!r}")


def _asset_row(a: TableAsset) -> dict[str, Any]:
    column_texts = [len(c.comment) for c in a.columns] + [len(c.name) for c in a.columns]
    return {
        "asset_id": _nonblank(a.asset_id),
        "business": _nonblank(a.business),
        "name": _nonblank(a.name),
        "kind": a.kind,
        "comment": a.comment,
        "n_columns": len(a.columns),
        "in_catalog": a.in_catalog,  # declared-only tables may have no columns (the suite's row_condition)
        "longest_column_text": max(column_texts, default=0),
        "broken_encoding": _broken(
            [a.comment, a.name, *(c.comment for c in a.columns), *(c.name for c in a.columns)]
        ),
    }


def _query_row(q: QueryLogEntry) -> dict[str, Any]:
    return {
        "query_id": _nonblank(q.query_id),
        "business": _nonblank(q.business),
        "sql": _nonblank(q.sql),
        "requirement": q.requirement or "",
        "broken_encoding": _broken([q.sql, q.requirement]),
    }


def _requirement_row(r: Requirement) -> dict[str, Any]:
    return {
        "id": _nonblank(r.id),
        "business": _nonblank(r.business),
        "text": _nonblank(r.text),
        "split": r.split,
        "broken_encoding": _broken([r.text, r.sql]),
    }


def _glossary_row(g: GlossaryTerm) -> dict[str, Any]:
    return {
        "business": _nonblank(g.business),
        "term": _nonblank(g.term),
        "description": g.description,
        "broken_encoding": _broken([g.term, g.description, *g.synonyms]),
    }


_ROWS = {
    "assets": _asset_row,
    "query_log": _query_row,
    "requirements": _requirement_row,
    "glossary": _glossary_row,
}


def to_frame(table: str, records: Sequence[BaseModel]) -> pd.DataFrame:
    """One row per record, in order, with a `row_index` column GX reports bad rows by."""
    make = _ROWS[table]
    rows = [make(r) for r in records]  # type: ignore[operator]
    frame = pd.DataFrame(rows)
    frame.insert(0, ROW_INDEX, range(len(rows)))
    return frame


def python_problems(table: str, record: BaseModel) -> list[str]:
    """Reasons GX cannot check because they live inside nested lists (columns of one table)."""
    if not isinstance(record, TableAsset):
        return []
    problems: list[str] = []
    names = [c.name for c in record.columns]
    if any(not n.strip() for n in names):
        problems.append("empty column name")
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})
        problems.append(f"duplicate column name: {', '.join(dupes)}")
    return problems
