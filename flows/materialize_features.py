"""Prefect flow `materialize-features`: feature snapshots from the lake into Feast's online store.

Thin wiring only: the work is `assetmatch.features.store.materialize`, the same function
`assetmatch features materialize` runs. Deploy with e.g.
`python flows/materialize_features.py` (serves a daily schedule) or through infra/prefect.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task

from assetmatch.config import load_settings


@task(name="materialize", retries=2, retry_delay_seconds=30)
def materialize_task(config_path: str | None, full: bool) -> dict[str, Any]:
    """Build due snapshots (pinned lake versions, recorded in the report) and load the online store."""
    from assetmatch.features.store import materialize

    report = materialize(load_settings(config_path), full=full)
    return report.as_dict()


@flow(name="materialize-features", log_prints=False)
def materialize_features(config_path: str | None = None, full: bool = False) -> dict[str, Any]:
    """Compute feature snapshots from the lake and materialize them (incremental unless `full`)."""
    report = materialize_task(config_path, full)
    get_run_logger().info(
        "features: %s snapshot day(s), %s asset rows from lake versions %s",
        report["snapshots"],
        report["asset_rows"],
        report["lake_versions"],
    )
    return report


if __name__ == "__main__":
    config = Path("assetmatch.yaml")
    materialize_features.serve(
        name="daily",
        cron="30 0 * * *",
        parameters={"config_path": str(config) if config.exists() else None},
    )
