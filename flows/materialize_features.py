"""Prefect flow `materialize-features`: feature snapshots from the lake into Feast's online store.

Thin wiring only: the work is `assetmatch.pipeline.materialize_features`, the same function
`assetmatch features materialize` and the nightly flow run. Deploy with e.g.
`python flows/materialize_features.py` (serves a daily schedule) or through infra/prefect.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task

from assetmatch import pipeline


@task(
    name="materialize",
    task_run_name="materialize",
    retries=2,
    retry_delay_seconds=30,
    retry_condition_fn=pipeline.retry_if_transient,
)
def materialize_task(config_path: str, full: bool) -> dict[str, Any]:
    """Build due snapshots (pinned lake versions, recorded in the report) and load the online store."""
    return pipeline.materialize_features(pipeline.settings_for_run(config_path), full=full)


@flow(name="materialize-features", log_prints=False)
def materialize_features(config_path: str | None = None, full: bool = False) -> dict[str, Any]:
    """Compute feature snapshots from the lake and materialize them (incremental unless `full`).

    Args:
        config_path: Path of the assetmatch.yaml to run with (absolute, or relative to the repository
            root). Empty: $ASSETMATCH_CONFIG of the worker, else ./assetmatch.yaml; the run fails at
            once, writing nothing, when none exists.
        full: Recompute every snapshot day instead of only the due ones.
    """
    report = materialize_task(str(pipeline.config_file(config_path)), full)
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
        parameters={"config_path": str(config.resolve()) if config.exists() else None},
    )
