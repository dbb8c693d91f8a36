"""Prefect flow `train-rankers`: retrain the LoRA fine ranker of every business whose data changed.

Thin wiring over `assetmatch.pipeline` (`plan_train` compares each business's data fingerprint with
the one recorded in its last MLflow run; `train_one` trains, logs and registers the new version as
`challenger`: the same calls `assetmatch nightly` makes). Deployed on the `gpu` work pool
(settings.training.work_pool); the `nightly` flow starts one run of this deployment per business
(`businesses=[b]`, `force=true`) when a worker serves that pool, and trains in-process otherwise.
One task per business, one after the other (they share the accelerator); a failing business is a
Failed task, the others still run, and the flow run fails at the end.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task

from assetmatch import pipeline


@task(name="plan-training", task_run_name="plan-training")
def plan_task(config_path: str, businesses: list[str] | None, force: bool) -> pipeline.TrainPlan:
    return pipeline.plan_train(pipeline.settings_for_run(config_path), businesses, force)


@task(name="train-ranker", task_run_name="train-{business}")
def train_task(config_path: str, business: str) -> dict[str, Any]:
    """Train one business's adapter and register it as `challenger`."""
    return pipeline.train_one(pipeline.settings_for_run(config_path), business)


@flow(name="train-rankers")
def train_rankers(
    config_path: str | None = None, businesses: list[str] | None = None, force: bool = False
) -> dict[str, Any]:
    """Train every business whose data fingerprint changed since its last run (all with `force`).

    Args:
        config_path: Path of the assetmatch.yaml to run with (absolute, or relative to the repository
            root). Empty: $ASSETMATCH_CONFIG of the worker, else ./assetmatch.yaml; the run fails at
            once, writing nothing, when none exists.
        businesses: Limit training to these business names. Empty: every business.
        force: Retrain even when a business's data is unchanged.
    """
    logger = get_run_logger()
    config = str(pipeline.config_file(config_path))
    t0 = time.perf_counter()
    plan = plan_task(config, businesses, force)
    outcomes = {b: pipeline.outcome(train_task(config, b, return_state=True)) for b in plan.todo}
    result = pipeline.outcome_result("train", outcomes, plan.kept, time.perf_counter() - t0, "trained")
    for note in result.notes:
        logger.info("%s", note)
    if result.failures:
        raise RuntimeError(f"training failed for: {', '.join(sorted(result.failures))}")
    return result.as_dict()


if __name__ == "__main__":
    config = Path("assetmatch.yaml")
    train_rankers.serve(
        name="nightly",
        cron="0 2 * * *",
        parameters={"config_path": str(config.resolve()) if config.exists() else None},
    )
