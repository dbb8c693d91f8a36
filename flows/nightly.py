"""Prefect flow `nightly`: ingest -> indexes + coarse fit -> features -> train -> promote, each stage
skipping itself when its inputs did not change.

Thin wiring over `assetmatch.pipeline` (the same functions `run_nightly` calls in one process): every
source, stage and business is its own task run, so the Prefect UI shows what ran, what was skipped and
what failed, each with its artifact (`nightly-ingest`, `nightly-index`, `nightly-features`,
`nightly-train`, `ab-gate-<business>`), and the flow run carries the summary artifact
`nightly-summary`. A failed source or business does not stop the others; the flow run fails at the
end, after the summary, when any part failed.

Parameters: `config_path` (assetmatch.yaml; default $ASSETMATCH_CONFIG or ./assetmatch.yaml),
`full` (rebuild indexes and features and retrain every business), `businesses` (limit training and
promotion to these). Deployed by infra/prefect/prefect.yaml; `python flows/nightly.py` serves it at 01:00.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from assetmatch import pipeline
from assetmatch.config import load_settings


def _key(prefix: str, name: str) -> str:
    """An artifact key (lowercase letters, digits and dashes only)."""
    return prefix + "".join(c if c.isalnum() else "-" for c in name.lower())


@task(name="ingest-source", task_run_name="ingest-{source}")
def ingest_source_task(config_path: str | None, source: str, run_id: str) -> dict[str, Any]:
    """Extract, validate and merge one source; a failure comes back as its summary, never raised."""
    settings = load_settings(config_path)
    return pipeline.ingest_one(settings, settings.source(source), run_id)


@task(name="index-and-fit")
def index_task(config_path: str | None, full: bool) -> pipeline.StageResult:
    """Rebuild the recall indexes and the coarse fit unless the lake versions they read are unchanged."""
    result = pipeline.index_stage(load_settings(config_path), full)
    if result.status == "ran":
        manifest = result.details["manifest"]
        versions = ", ".join(f"`{t}` v{v}" for t, v in manifest["lake"]["versions"].items())
        create_markdown_artifact(
            f"# Index `{manifest['id']}`\n\nLake: {versions}\n\nCounts: {result.counts}\n\n"
            f"Coarse fit: {manifest.get('fit', {})}",
            key="nightly-index",
            description=f"index {manifest['id']}",
        )
    return result


@task(name="materialize-features")
def features_task(config_path: str | None, full: bool) -> pipeline.StageResult:
    """Materialize Feast features unless the lake versions they read are those of the last run."""
    result = pipeline.features_stage(load_settings(config_path), full)
    if result.status == "ran":
        create_table_artifact(
            [{"key": k, "value": str(v)} for k, v in result.details["report"].items()],
            key="nightly-features",
            description="feature materialization report",
        )
    return result


@task(name="plan-training")
def plan_train_task(config_path: str | None, businesses: list[str] | None, force: bool) -> pipeline.TrainPlan:
    return pipeline.plan_train(load_settings(config_path), businesses, force)


@task(name="train-ranker", task_run_name="train-{business}", tags=["gpu"])
def train_task(config_path: str | None, business: str) -> dict[str, Any]:
    """Train one business's adapter and register it as `challenger`."""
    return pipeline.train_one(load_settings(config_path), business)


@task(name="plan-promotion")
def plan_promotion_task(config_path: str | None, businesses: list[str] | None) -> pipeline.TrainPlan:
    return pipeline.plan_promotion(load_settings(config_path), businesses)


@task(name="ab-gate", task_run_name="ab-gate-{business}")
def gate_task(config_path: str | None, business: str) -> dict[str, Any]:
    """Champion vs challenger on held-out requirements; promote or refuse; record the decision."""
    outcome = pipeline.promote_one(load_settings(config_path), business)
    create_markdown_artifact(
        outcome["markdown"], key=_key("ab-gate-", business), description=f"A/B gate decision for {business}"
    )
    return outcome


def _per_business(
    stage: str, plan: pipeline.TrainPlan, run_one: Any, config_path: str | None, verb: str
) -> pipeline.StageResult:
    """One task run per business, one after the other (they share the CPU/GPU); failures isolated."""
    t0 = time.perf_counter()
    outcomes: dict[str, dict[str, Any] | BaseException] = {}
    for business in plan.todo:
        try:
            outcomes[business] = run_one(config_path, business)
        except Exception as exc:  # this business failed; the others still run
            outcomes[business] = exc
    return pipeline.outcome_result(stage, outcomes, plan.kept, time.perf_counter() - t0, verb)


def _guarded(stage: str, fn: Any, *args: Any) -> Any:
    """A stage-level task that raised becomes a failed StageResult (the next stages still run)."""
    try:
        return fn(*args)
    except Exception as exc:
        return pipeline.StageResult(stage, "failed", f"{type(exc).__name__}: {exc}",
                                    failures={"stage": f"{type(exc).__name__}: {exc}"})  # fmt: skip


@flow(name="nightly", log_prints=False)
def nightly(
    config_path: str | None = None, full: bool = False, businesses: list[str] | None = None
) -> dict[str, Any]:
    """The nightly pipeline: every stage runs only when its inputs changed (all of them with `full`)."""
    from assetmatch.ingest import new_run_id

    logger = get_run_logger()
    started = time.perf_counter()
    settings = load_settings(config_path)
    result = pipeline.NightlyResult()

    # 1. ingest: one task per source, in parallel (the lake serializes the commits)
    t0 = time.perf_counter()
    run_id = new_run_id()
    futures = [
        ingest_source_task.submit(config_path, spec.name, run_id) for spec in settings.sources if spec.enabled
    ]
    ingest = pipeline.ingest_result([f.result() for f in futures], time.perf_counter() - t0)
    create_table_artifact(
        [{"source": s["source"], "status": s["status"], "error": s["error"] or "",
          **{t: c["inserted"] + c["updated"] + c["soft_deleted"] for t, c in s["tables"].items()}}
         for s in ingest.details["sources"]],
        key="nightly-ingest", description=f"ingest run {run_id}: rows written per source and table",
    )  # fmt: skip
    result.stages.append(ingest)

    # 2-3. indexes + coarse fit, features
    result.stages.append(_guarded("indexes", index_task, config_path, full))
    result.stages.append(_guarded("features", features_task, config_path, full))

    # 4-5. per business: train those whose data changed, then gate those with a new challenger
    plan = _guarded("train", plan_train_task, config_path, businesses, full)
    train = (
        plan
        if isinstance(plan, pipeline.StageResult)
        else _per_business("train", plan, train_task, config_path, "trained")
    )
    result.stages.append(train)
    gates = _guarded("promote", plan_promotion_task, config_path, businesses)
    promote = (
        gates
        if isinstance(gates, pipeline.StageResult)
        else _per_business("promote", gates, gate_task, config_path, "judged")
    )
    result.stages.append(promote)

    # 6. serving picks up new champions / indexes by itself
    result.stages.append(pipeline.serve_stage(result.stages))
    result.seconds = time.perf_counter() - started
    create_markdown_artifact(result.markdown(), key="nightly-summary", description="nightly pipeline summary")
    for s in result.stages:
        logger.info("%s: %s (%s) in %.1f s", s.stage, s.status, s.reason, s.seconds)
    if not result.ok:
        failed = "; ".join(
            f"{s.stage}/{part}: {err}" for s in result.stages for part, err in s.failures.items()
        )
        raise RuntimeError(f"nightly pipeline: some parts failed: {failed}")
    summary: dict[str, Any] = result.as_dict()
    for stage in summary["stages"]:
        stage.pop("details", None)  # manifests and per-source summaries stay in the artifacts
    return summary


if __name__ == "__main__":
    config = Path("assetmatch.yaml")
    nightly.serve(
        name="nightly",
        cron="0 1 * * *",
        parameters={"config_path": str(config.resolve()) if config.exists() else None},
    )
