"""A tiny assetmatch project behind real sources, for tests that run the pipeline's entry points:
a catalog file per business (the tables of test_rankers_pipeline), one requirements file labelling
some businesses, and a config whose every path lies in one folder (so a copy of the folder is an
identical project once its config is rewritten with `copy_project`)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from test_ingest_flow import write_catalog
from test_rankers_pipeline import REQUIREMENTS, TABLES

CONFIG = "assetmatch.yaml"
REQUIREMENTS_FILE = "requirements.jsonl"


def requirement(business: str, i: int, text: str, gold: Sequence[str]) -> dict[str, Any]:
    """One labelled requirement as the `requirements` source reads it (gold: table names)."""
    return {"id": f"{business}-r{i}", "business": business, "text": text, "split": "train",
            "gold_assets": [f"{business}.dw.{table}" for table in gold]}  # fmt: skip


def add_requirement(root: Path, business: str, text: str, gold: Sequence[str]) -> None:
    """A new labelled requirement for `business` in the project's requirements file."""
    path = root / REQUIREMENTS_FILE
    lines = path.read_text(encoding="utf-8").splitlines()
    record = requirement(business, len(lines), text, gold)
    path.write_text("\n".join([*lines, json.dumps(record)]) + "\n", encoding="utf-8")


def write_project(
    root: Path, labelled: Sequence[str], unlabelled: Sequence[str] = (), *, shared_adapter: bool = False
) -> Path:
    """The project's sources and config under `root`; returns the config file. Training is a single
    step on pairs of 16 tokens: these tests check decisions and wiring, not ranking quality."""
    root.mkdir(parents=True, exist_ok=True)
    sources: list[dict[str, Any]] = []
    for business in (*labelled, *unlabelled):
        write_catalog(root / f"{business}.jsonl", business, list(TABLES))
        sources.append({"name": f"catalog-{business}", "type": "catalog_file", "business": business,
                        "options": {"path": str(root / f"{business}.jsonl")}})  # fmt: skip
    records = [requirement(b, i, text, gold) for b in labelled for i, (text, gold) in enumerate(REQUIREMENTS)]
    (root / REQUIREMENTS_FILE).write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    sources.append({"name": "requirements", "type": "requirements",
                    "options": {"path": str(root / REQUIREMENTS_FILE)}})  # fmt: skip
    config = {
        "lake": {"uri": str(root / "lake")},
        "businesses": [{"name": b} for b in (*labelled, *unlabelled)],
        "sources": sources,
        "recall": {"index_root": str(root / "indexes")},
        "feast": {"enabled": False, "data_dir": str(root / "feast")},
        "mlflow": {"tracking_uri": f"sqlite:///{root / 'mlflow.db'}",
                   "artifact_location": str(root / "mlartifacts")},
        "ranker": {"device": "cpu", "max_length": 16, "quantize": "none"},
        "training": {
            "adapters_dir": str(root / "adapters"),
            "shared_adapter": shared_adapter,
            "ranker": {"max_steps": 1, "batch_size": 4, "max_length": 16, "candidate_k": 3,
                       "max_validation": 4, "validation_fraction": 0.4, "synthetic_per_table": 0},
        },
        "promotion": {"bootstrap_samples": 100, "latency_budget_ms": 600_000},
    }  # fmt: skip
    path = root / CONFIG
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def copy_project(root: Path, to: Path) -> Path:
    """An identical project at `to` (lake, indexes, MLflow database, adapters); returns its config,
    whose paths point into `to`. The registry's records keep pointing at `root`'s artifacts."""
    shutil.copytree(root, to)
    config = to / CONFIG
    config.write_text(config.read_text(encoding="utf-8").replace(str(root), str(to)), encoding="utf-8")
    return config
