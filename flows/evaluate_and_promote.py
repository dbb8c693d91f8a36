"""Prefect flow `evaluate-and-promote`: the A/B gate for every business with a challenger.

Thin wiring over `assetmatch.registry.promotion.evaluate_and_promote` (the same call as
`assetmatch promote`): the decision goes to MLflow tags and the `promotions` Delta table in the
library; the flow adds a Markdown Prefect artifact per business.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from assetmatch.config import load_settings


@task(name="businesses-with-challenger")
def pending_task(config_path: str | None, businesses: list[str] | None) -> list[str]:
    from assetmatch.registry.mlflow import Registry

    registry = Registry.from_settings(load_settings(config_path))
    names = businesses or registry.businesses()
    return [b for b in names if registry.version_by_alias(b, "challenger") is not None]


@task(name="ab-gate")
def gate_task(config_path: str | None, business: str) -> dict[str, Any]:
    """Champion vs challenger on held-out requirements; promote or refuse; record the decision."""
    from assetmatch.registry.promotion import evaluate_and_promote

    outcome = evaluate_and_promote(load_settings(config_path), business)
    key = "ab-gate-" + "".join(c if c.isalnum() else "-" for c in business.lower())
    create_markdown_artifact(outcome.markdown, key=key, description=f"A/B gate decision for {business}")
    return {
        "business": business,
        "verdict": outcome.decision.verdict,
        "reason": outcome.decision.reason,
        "champion_version": outcome.champion_version,
        "challenger_version": outcome.challenger_version,
        "decision_id": outcome.decision.decision_id,
    }


@flow(name="evaluate-and-promote")
def evaluate_and_promote_flow(
    config_path: str | None = None, businesses: list[str] | None = None
) -> list[dict[str, Any]]:
    """Run the gate for each business that has a challenger waiting."""
    logger = get_run_logger()
    results = [gate_task(config_path, b) for b in pending_task(config_path, businesses)]
    for r in results:
        logger.info("%s: %s (%s)", r["business"], r["verdict"], r["reason"])
    return results


if __name__ == "__main__":
    config = Path("assetmatch.yaml")
    evaluate_and_promote_flow.serve(
        name="after-training",
        cron="0 4 * * *",
        parameters={"config_path": str(config) if config.exists() else None},
    )
