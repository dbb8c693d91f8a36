"""`eval --scope database`: each requirement is matched inside its gold tables' database, as a request
that names its scope is served; namesakes of other databases then never take its answer."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

from assetmatch.config import Settings
from assetmatch.evaluation.harness import EvalOptions, Scope, run_eval
from assetmatch.evaluation.report import report_dict


def table(database: str, name: str, *columns: str) -> dict[str, Any]:
    return {
        "asset_id": f"{database}.{name}",
        "business": database,
        "database": database,
        "table": name,
        "table_comment": name,
        "columns": [{"name": c} for c in columns],
        "foreign_keys": [],
    }


ASSETS = [
    table("crm", "customer", "customer_id", "name", "city", "phone"),
    table("crm", "campaign", "campaign_id", "budget"),
    table("billing", "customer", "customer_id", "name"),  # the namesake the questions mean
    table("billing", "invoice", "invoice_id", "customer_id", "amount"),
]
DEV = [
    {"id": f"d{i}", "business": "billing", "text": text, "gold_assets": ["billing.customer"], "split": "dev"}
    for i, text in enumerate(["customer name and city", "phone and city of every customer"])
]


def test_scope_database_answers_inside_the_gold_database(tmp_path: Path) -> None:
    dataset = tmp_path / "data"
    dataset.mkdir()
    for name, rows in (("assets.jsonl.gz", ASSETS), ("requirements.jsonl.gz", DEV)):
        with gzip.open(dataset / name, "wt", encoding="utf-8") as f:
            f.write("\n".join(json.dumps(r) for r in rows) + "\n")
    settings = Settings.model_validate({"recall": {"paths": ["lexical", "graph"]}})

    def run(scope: Scope) -> Any:
        options = EvalOptions(dataset=dataset, split="dev", setting="union", label_free=True, scope=scope)
        return run_eval(options, settings)

    whole, scoped = run("none"), run("database")
    # the library as a whole: crm's customer table matches the words better, and takes the answer
    assert all(r["ranked"][0] == "crm.customer" for r in whole.per_requirement)
    assert whole.metrics["set_recall"] == 0.0
    # scoped: only billing's tables are candidates
    for row in scoped.per_requirement:
        assert row["ranked"][0] == "billing.customer"
        assert all(a.startswith("billing.") for a in row["ranked"] + row["selected"]), row
    assert scoped.metrics["set_recall"] == 1.0 and scoped.metrics["mrr"] == 1.0
    assert report_dict(scoped)["scope"] == "database" and report_dict(whole)["scope"] == "none"
