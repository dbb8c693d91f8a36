"""Prefect flow `train-rankers`: retrain the LoRA fine ranker of every business whose data changed.

Thin wiring only: `assetmatch.training.train.plan_training` compares each business's data
fingerprint (labelled requirements + library content) with the one recorded in its last MLflow
run; `run_training` trains, logs and registers the new version as `challenger` (the same calls
`assetmatch train` makes). One task per business, tagged for the `gpu` work pool
(settings.training.work_pool), so a GPU worker picks them up when there is one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task

from assetmatch.config import load_settings


@task(name="plan-training")
def plan_task(config_path: str | None, businesses: list[str] | None) -> list[dict[str, Any]]:
    from assetmatch.training.train import plan_training

    return [
        {"business": p.business, "changed": p.changed, "fingerprint": p.fingerprint, "labelled": p.labelled}
        for p in plan_training(load_settings(config_path), businesses)
    ]


@task(name="train-ranker", tags=["gpu"], retries=1, retry_delay_seconds=60)
def train_task(config_path: str | None, business: str) -> dict[str, Any]:
    """Train one business's adapter and register it as `challenger`."""
    from assetmatch.training.train import run_training

    result, version = run_training(load_settings(config_path), business)
    return {"business": business, "version": version, "metrics": result.metrics()}


@flow(name="train-rankers")
def train_rankers(
    config_path: str | None = None, businesses: list[str] | None = None, force: bool = False
) -> list[dict[str, Any]]:
    """Train every business whose data fingerprint changed since its last run (all with `force`)."""
    logger = get_run_logger()
    plans = plan_task(config_path, businesses)
    todo = [p["business"] for p in plans if p["changed"] or force]
    for p in plans:
        if p["business"] not in todo:
            logger.info("%s: data unchanged (fingerprint %s), skipped", p["business"], p["fingerprint"][:12])
    futures = [train_task.with_options(tags=["gpu", f"business:{b}"]).submit(config_path, b) for b in todo]
    return [f.result() for f in futures]


if __name__ == "__main__":
    config = Path("assetmatch.yaml")
    train_rankers.serve(
        name="nightly", cron="0 2 * * *", parameters={"config_path": str(config) if config.exists() else None}
    )
