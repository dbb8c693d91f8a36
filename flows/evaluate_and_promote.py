"""Prefect flow `evaluate-and-promote`: the A/B gate for every business whose challenger waits for it.

Thin wiring over `assetmatch.pipeline` (`plan_promotion` picks the businesses whose `challenger` has
no gate verdict yet, `promote_one` runs the gate: the same calls as `assetmatch nightly` and the
`nightly` flow): the decision goes to MLflow tags and the `promotions` Delta table in the library;
the flow adds a Markdown artifact per business and a summary. One task per business: a failing gate
is a Failed task, the others still run, and the flow run fails at the end.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from assetmatch import pipeline


@task(name="plan-promotion", task_run_name="plan-promotion")
def plan_task(config_path: str, businesses: list[str] | None) -> pipeline.TrainPlan:
    return pipeline.plan_promotion(pipeline.settings_for_run(config_path), businesses)


@task(name="ab-gate", task_run_name="ab-gate-{business}")
def gate_task(config_path: str, business: str) -> dict[str, Any]:
    """Champion vs challenger on held-out requirements; promote or refuse; record the decision."""
    outcome = pipeline.promote_one(pipeline.settings_for_run(config_path), business)
    key = "ab-gate-" + "".join(c if c.isalnum() else "-" for c in business.lower())
    create_markdown_artifact(outcome["markdown"], key=key, description=f"A/B gate decision for {business}")
    return {k: v for k, v in outcome.items() if k != "markdown"}


@flow(name="evaluate-and-promote")
def evaluate_and_promote_flow(
    config_path: str | None = None, businesses: list[str] | None = None
) -> list[dict[str, Any]]:
    """Run the gate for each business whose challenger has no verdict yet.

    Args:
        config_path: Path of the assetmatch.yaml to run with (absolute, or relative to the repository
            root). Empty: $ASSETMATCH_CONFIG of the worker, else ./assetmatch.yaml; the run fails at
            once, writing nothing, when none exists.
        businesses: Limit the gate to these business names. Empty: every business with a challenger.
    """
    logger = get_run_logger()
    config = str(pipeline.config_file(config_path))
    t0 = time.perf_counter()
    plan = plan_task(config, businesses)
    outcomes = {b: pipeline.outcome(gate_task(config, b, return_state=True)) for b in plan.todo}
    result = pipeline.promote_result(outcomes, plan.kept, time.perf_counter() - t0)
    create_markdown_artifact(
        pipeline.NightlyResult([result], result.seconds).markdown(),
        key="promotion-summary",
        description="A/B gate verdicts",
    )
    for note in result.notes:
        logger.info("%s", note)
    if result.failures:
        raise RuntimeError(f"A/B gate failed for: {', '.join(sorted(result.failures))}")
    return [o for o in outcomes.values() if not isinstance(o, BaseException)]


if __name__ == "__main__":
    config = Path("assetmatch.yaml")
    evaluate_and_promote_flow.serve(
        name="after-training",
        cron="0 4 * * *",
        parameters={"config_path": str(config.resolve()) if config.exists() else None},
    )
