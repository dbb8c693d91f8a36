"""A first day through the CLI: a catalog file only (no labels, no query log, no glossary) ->
`ingest`, `index build` fits on synthetic requirements, `match --json` says so and answers a
foreign-key question with both tables."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from catalog_project import catalog_project
from typer.testing import CliRunner

TABLES: list[dict[str, Any]] = [
    {
        "business": "shop",
        "database": "store",
        "table": "customer",
        "columns": [{"name": "customer_id", "primary_key": True}, "full_name", "city"],
    },
    {
        "business": "shop",
        "database": "store",
        "table": "orders",
        "table_comment": "order",
        "columns": [{"name": "order_id", "primary_key": True}, "customer_id", "quantity", "order_date"],
        "foreign_keys": [["customer_id", "customer.customer_id"]],
    },
    {
        "business": "shop",
        "database": "store",
        "table": "warehouse",
        "columns": ["warehouse_id", "region", "capacity"],
    },
    {
        "business": "shop",
        "database": "school",
        "table": "student",
        "columns": [{"name": "student_id", "primary_key": True}, "first_name", "age"],
    },
    {
        "business": "shop",
        "database": "school",
        "table": "exam",
        "columns": ["exam_id", "student_id", "score", "subject"],
        "foreign_keys": [["student_id", "student.student_id"]],
    },
    {
        "business": "shop",
        "database": "school",
        "table": "teacher",
        "columns": ["teacher_id", "teacher_name", "salary"],
    },
]


def test_first_day_cli_fits_on_synthetic_requirements_and_says_so(tmp_path: Path) -> None:
    from assetmatch.cli import app

    config, built = catalog_project(tmp_path, TABLES)
    assert "0 labelled" in built and "(synthetic)" in built

    runner = CliRunner()
    answer = runner.invoke(
        app,
        [
            "-c",
            str(config),
            "match",
            "-b",
            "shop",
            "Show the full name of each customer and the quantity of their order",
            "--json",
        ],
    )
    assert answer.exit_code == 0, answer.output
    result = json.loads(answer.output)
    assert result["coarse_model"] == "synthetic"
    assert set(result["selected"]) == {"shop.store.customer", "shop.store.orders"}

    shown = runner.invoke(
        app, ["-c", str(config), "match", "-b", "shop", "average exam score of each student"]
    )
    assert shown.exit_code == 0, shown.output
    assert "requirements synthesized from the library's metadata" in shown.output
