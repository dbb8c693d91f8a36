"""The scope a labelled request was asked in (`databases`) survives the lake, and lakes written before
the column existed keep every row and gain it: `requirements` (merged) and `feedback` (appended)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from deltalake import write_deltalake
from pydantic import ValidationError

from assetmatch.lake import tables as T
from assetmatch.lake.delta import Lake
from assetmatch.models import Requirement, scope_of
from assetmatch.serving.feedback import Answer, feedback_row
from assetmatch.training.pairs import labelled_from_lake

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def _requirement_row(rid: str, databases: list[str] | None = None) -> dict[str, Any]:
    req = Requirement(id=rid, business="shop", text=f"invoices {rid}", gold_assets=["shop.sales.invoices"])
    return {**req.model_copy(update={"databases": databases}).model_dump(), "run_id": "r"}


def _without(table: str, column: str) -> pa.Schema:
    return pa.schema([f for f in T.SCHEMAS[table] if f.name != column])


def test_requirements_written_before_the_column_keep_their_rows_and_gain_it(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    old = _requirement_row("old")
    old.pop("databases")
    write_deltalake(
        lake.path(T.REQUIREMENTS), pa.Table.from_pylist([old], schema=_without(T.REQUIREMENTS, "databases"))
    )
    assert [r.databases for r in lake.read_requirements()] == [None]

    result = lake.upsert_rows(
        T.REQUIREMENTS, [_requirement_row("old"), _requirement_row("new", ["sales"])], "r1"
    )
    assert (result.inserted, result.unchanged) == (1, 1)  # the old row, with no scope, is the same row
    assert {r.id: r.databases for r in lake.read_requirements()} == {"old": None, "new": ["sales"]}
    assert lake.upsert_rows(T.REQUIREMENTS, [_requirement_row("new", ["sales"])], "r2").unchanged == 1


def test_feedback_of_a_scoped_request_becomes_a_scoped_label(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    before = feedback_row(
        "req-0", Answer("shop", "invoices billed", ("shop.billing.invoices",), "champion", "1"), []
    )
    before.pop("databases")
    before["used_assets"] = ["shop.billing.invoices"]
    write_deltalake(
        lake.path(T.FEEDBACK), pa.Table.from_pylist([before], schema=_without(T.FEEDBACK, "databases"))
    )

    scoped = Answer(
        "shop", "invoices issued", ("shop.sales.invoices",), "champion", "1", databases=("sales",)
    )
    lake.append(T.FEEDBACK, [feedback_row("req-1", scoped, ["shop.sales.invoices"])], "r1")
    assert lake.read_arrow(T.FEEDBACK).num_rows == 2

    labels = {
        r.text: r for r in labelled_from_lake(lake, "shop", {"shop.sales.invoices", "shop.billing.invoices"})
    }
    assert labels["invoices issued"].databases == ("sales",)
    assert labels["invoices billed"].databases is None
    assert all(r.origin == "feedback" for r in labels.values())


@pytest.mark.parametrize("databases", [[], [""]])
def test_a_requirement_scope_names_databases(databases: list[str]) -> None:
    with pytest.raises(ValidationError, match="databases"):
        Requirement(id="r", business="shop", text="invoices", databases=databases)


def test_a_scope_is_a_set() -> None:
    assert scope_of(["sales", "billing", "sales"]) == ("billing", "sales")
    assert scope_of([]) is None
    assert scope_of(None) is None
