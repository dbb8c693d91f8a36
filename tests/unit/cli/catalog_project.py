"""A first-day project for CLI tests: a catalog file as the only source, lexical + graph recall,
no Feast, a SQLite MLflow registry; `ingest` and `index build` already run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from typer.testing import CliRunner


def catalog_project(folder: Path, tables: list[dict[str, Any]]) -> tuple[Path, str]:
    """Write the catalog and the config under `folder`, ingest and build the index; the config path
    and what `index build` printed."""
    from assetmatch.cli import app

    catalog = folder / "tables.jsonl"
    catalog.write_text("\n".join(json.dumps(t) for t in tables) + "\n")
    config = folder / "assetmatch.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "lake": {"uri": str(folder / "lake")},
                "recall": {"index_root": str(folder / "indexes"), "paths": ["lexical", "graph"]},
                "feast": {"enabled": False},
                "mlflow": {"tracking_uri": f"sqlite:///{folder / 'mlflow.db'}"},
                "sources": [{"name": "catalog", "type": "catalog_file", "options": {"path": str(catalog)}}],
            }
        )
    )
    runner = CliRunner()
    for step in (["ingest"], ["index", "build"]):
        done = runner.invoke(app, ["-c", str(config), *step])
        assert done.exit_code == 0, done.output
    return config, done.output
