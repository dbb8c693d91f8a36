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

    # the requester's scope: a question whose words fit a school table best, asked inside the store
    # database, is answered with store's tables only
    question = "full name and age of each student"
    unscoped = runner.invoke(app, ["-c", str(config), "match", "-b", "shop", question, "--json"])
    assert json.loads(unscoped.output)["ranked"][0]["asset_id"] == "shop.school.student"
    scoped = runner.invoke(app, ["-c", str(config), "match", "-b", "shop", question, "-d", "store", "--json"])
    assert scoped.exit_code == 0, scoped.output
    answer_ids = [t["asset_id"] for t in json.loads(scoped.output)["ranked"]]
    assert answer_ids and answer_ids[0] == "shop.store.customer", scoped.output
    assert all(a.startswith("shop.store.") for a in answer_ids), answer_ids
    titled = runner.invoke(
        app, ["-c", str(config), "match", "-b", "shop", "exam scores", "--database", "school"]
    )
    assert titled.exit_code == 0 and "(databases: school)" in titled.output, titled.output
    unknown = runner.invoke(app, ["-c", str(config), "match", "-b", "shop", "exam scores", "-d", "nowhere"])
    assert unknown.exit_code == 2 and "'nowhere'" in unknown.output, unknown.output
    assert "Traceback" not in unknown.output
