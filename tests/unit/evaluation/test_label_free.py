"""`eval --label-free` fits on what the product synthesizes from the library, never on a label."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from assetmatch.config import Settings
from assetmatch.evaluation.harness import EvalOptions, run_eval

ASSETS: list[dict[str, Any]] = [
    {
        "asset_id": "store.customer",
        "business": "store",
        "database": "store",
        "table": "customer",
        "table_comment": "customer",
        "columns": [{"name": "customer_id", "primary_key": True}, {"name": "full_name"}, {"name": "city"}],
        "foreign_keys": [],
    },
    {
        "asset_id": "store.orders",
        "business": "store",
        "database": "store",
        "table": "orders",
        "table_comment": "order",
        "columns": [{"name": "order_id"}, {"name": "customer_id"}, {"name": "quantity"}],
        "foreign_keys": [["customer_id", "customer.customer_id"]],
    },
    {
        "asset_id": "school.student",
        "business": "school",
        "database": "school",
        "table": "student",
        "table_comment": "student",
        "columns": [{"name": "student_id"}, {"name": "first_name"}, {"name": "age"}],
        "foreign_keys": [],
    },
    {
        "asset_id": "school.exam",
        "business": "school",
        "database": "school",
        "table": "exam",
        "table_comment": "exam",
        "columns": [{"name": "exam_id"}, {"name": "student_id"}, {"name": "score"}],
        "foreign_keys": [["student_id", "student.student_id"]],
    },
]
# train labels deliberately point at the WRONG tables: a fit that read them would learn nonsense
TRAIN = [
    {
        "id": f"t{i}",
        "business": "store",
        "text": f"customer names {i}",
        "gold_assets": ["school.exam"],
        "split": "train",
    }
    for i in range(30)
]
DEV = [
    {"id": "d1", "business": "store", "text": "full name of each customer and their order quantity",
     "gold_assets": ["store.customer", "store.orders"], "split": "dev"},
    {"id": "d2", "business": "school", "text": "average exam score of each student",
     "gold_assets": ["school.exam", "school.student"], "split": "dev"},
]  # fmt: skip


def write_dataset(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in (("assets.jsonl.gz", ASSETS), ("requirements.jsonl.gz", TRAIN + DEV)):
        with gzip.open(folder / name, "wt", encoding="utf-8") as f:
            f.write("\n".join(json.dumps(r) for r in rows) + "\n")
    return folder


def lexical_settings() -> Settings:
    return Settings.model_validate({"recall": {"paths": ["lexical", "graph"]}})


def test_label_free_fits_only_on_synthetic_requirements(tmp_path: Path) -> None:
    dataset = write_dataset(tmp_path / "data")
    run = run_eval(EvalOptions(dataset=dataset, split="dev", label_free=True), lexical_settings())
    assert run.fit["trained_on"] == "synthetic"
    assert run.fit["n_labelled"] == 0
    assert run.fit["n_train_requirements"] == run.fit["n_synthetic"] > 0  # nothing else was fitted
    assert run.metrics["all_gold_at_3"] == 1.0  # the misleading train labels were never read

    labelled = run_eval(EvalOptions(dataset=dataset, split="dev"), lexical_settings())
    assert labelled.fit["n_labelled"] == len(TRAIN)  # the same dataset's labels, when allowed


def test_label_free_refuses_other_labelled_data(tmp_path: Path) -> None:
    dataset = write_dataset(tmp_path / "data")
    with pytest.raises(ValueError, match="label-free"):
        EvalOptions(dataset=dataset, label_free=True, fit_on=dataset)
    with pytest.raises(ValueError, match="label-free"):
        EvalOptions(dataset=dataset, label_free=True, fit_limit=10)
