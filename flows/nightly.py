"""Prefect flow `nightly`: ingest -> indexes + coarse fit -> features -> train -> promote, each stage
skipping itself when its inputs did not change.

Thin wiring over `assetmatch.pipeline` (the plan -> run -> result functions `run_nightly` calls in one
process): every source, stage and business is its own task run with a stable name, so the Prefect UI
shows what ran, what skipped itself (a Completed state named `Skipped`, with the reason) and what
failed (a Failed task with its error). A failed source or business does not stop the others, the
stages after a failed one still run on what is there, and the flow run fails at the end, after the
summary artifact `nightly-summary` that names every failed part. Per-stage artifacts:
`nightly-ingest`, `nightly-index`, `nightly-features`, `ab-gate-<business>`.

Retries: a part is retried only when its error is transient (`pipeline.retry_if_transient`: a source
marks a dropped connection transient and a refused login not).

Training goes to the GPU work pool when there is one: if the `train-rankers/train-rankers`
deployment is on `training.work_pool` and a worker is online on that pool, each business is a run of
that deployment (started and awaited with `run_deployment`, shown as a subflow); otherwise it trains
in this flow run, on this worker's CPU, one business after the other.

Deployed by infra/prefect/prefect.yaml; `python flows/nightly.py` serves it at 01:00.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.states import Completed, State

from assetmatch import pipeline
from assetmatch.config import Settings

TRAIN_DEPLOYMENT = "train-rankers/train-rankers"
"""`<flow name>/<deployment name>` of the training deployment in infra/prefect/prefect.yaml."""
RETRY_DELAYS_S: list[float] = [10, 60]
"""Waits before the retries of a part that failed transiently (a database restarting, a network blip)."""


def _key(prefix: str, name: str) -> str:
    """An artifact key (lowercase letters, digits and dashes only)."""
    return prefix + "".join(c if c.isalnum() else "-" for c in name.lower())


def _stage_state(result: pipeline.StageResult) -> State[Any]:
    """A stage that skipped itself ends in a Completed state named Skipped, so the UI tells it apart."""
    if result.status == "skipped":
        return Completed(name="Skipped", message=result.reason, data=result)
    return Completed(message=result.reason, data=result)


@task(
    name="ingest-source",
    task_run_name="ingest-{source}",
    retries=len(RETRY_DELAYS_S),
    retry_delay_seconds=RETRY_DELAYS_S,
    retry_condition_fn=pipeline.retry_if_transient,
)
def ingest_source_task(config_path: str, source: str, run_id: str) -> dict[str, Any]:
    """Extract, validate and merge one source; raises when it fails (its task run is then Failed)."""
    settings = pipeline.settings_for_run(config_path)
    return pipeline.ingest_one(settings, settings.source(source), run_id)


@task(
    name="index-and-fit",
    task_run_name="index-and-fit",
    retries=1,
    retry_delay_seconds=60,
    retry_condition_fn=pipeline.retry_if_transient,
)
def index_task(config_path: str, full: bool) -> State[Any]:
    """Rebuild the recall indexes and the coarse fit unless the lake versions they read are unchanged."""
    result = pipeline.run_indexes(pipeline.settings_for_run(config_path), full)
    if result.status == "ran":
        manifest = result.details["manifest"]
        versions = ", ".join(f"`{t}` v{v}" for t, v in manifest["lake"]["versions"].items())
        create_markdown_artifact(
            f"# Index `{manifest['id']}`\n\nLake: {versions}\n\nCounts: {result.counts}\n\n"
            f"Coarse fit: {manifest.get('fit', {})}",
            key="nightly-index",
            description=f"index {manifest['id']}",
        )
    return _stage_state(result)


@task(
    name="materialize-features",
    task_run_name="materialize-features",
    retries=1,
    retry_delay_seconds=60,
    retry_condition_fn=pipeline.retry_if_transient,
)
def features_task(config_path: str, full: bool) -> State[Any]:
    """Materialize Feast features unless the lake versions they read are those of the last run."""
    result = pipeline.run_features(pipeline.settings_for_run(config_path), full)
    if result.status == "ran":
        create_table_artifact(
            [{"key": k, "value": str(v)} for k, v in result.details["report"].items()],
            key="nightly-features",
            description="feature materialization report",
        )
    return _stage_state(result)


@task(name="plan-training", task_run_name="plan-training")
def plan_train_task(config_path: str, businesses: list[str] | None, force: bool) -> pipeline.TrainPlan:
    return pipeline.plan_train(pipeline.settings_for_run(config_path), businesses, force)


@task(
    name="train-shared-ranker",
    task_run_name="train-shared-adapter",
    retries=1,
    retry_condition_fn=pipeline.retry_if_transient,
)
def train_shared_task(config_path: str, businesses: list[str]) -> dict[str, Any]:
    """The shared adapter (every business's data), which the per-business adapters start from."""
    return pipeline.train_shared(pipeline.settings_for_run(config_path), businesses)


@task(name="train-ranker", task_run_name="train-{business}")
def train_task(config_path: str, business: str) -> dict[str, Any]:
    """Train one business's adapter here and register it as `challenger`."""
    return pipeline.train_one(pipeline.settings_for_run(config_path), business)


class TrainingRunFailed(RuntimeError):
    """The training deployment's run did not complete. Transient when its infrastructure crashed
    (a lost worker or node), not when the training itself failed."""

    def __init__(self, message: str, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient

    def __reduce__(self) -> tuple[Any, ...]:  # keep `transient` when Prefect pickles the error
        return (type(self), (str(self), self.transient))


@task(
    name="train-ranker-on-pool",
    task_run_name="train-{business}",
    retries=1,
    retry_delay_seconds=60,
    retry_condition_fn=pipeline.retry_if_transient,
)
def train_on_pool_task(config_path: str, business: str, pool: str) -> dict[str, Any]:
    """Run the training deployment for one business on its work pool and wait for it."""
    from prefect.client.schemas.objects import FlowRun
    from prefect.deployments import run_deployment

    run: FlowRun = run_deployment(  # type: ignore[assignment]  # sync here: a FlowRun, not a coroutine
        TRAIN_DEPLOYMENT,
        parameters={"config_path": config_path, "businesses": [business], "force": True},
        flow_run_name=f"train-{business}",
        timeout=None,  # training takes as long as it takes; the deployment run has its own limits
    )
    state = run.state
    if state is None or not state.is_completed():
        name = state.name if state else "no state"
        message = state.message if state else ""
        raise TrainingRunFailed(
            f"{TRAIN_DEPLOYMENT} run {run.name} on pool {pool!r} ended {name}: {message}",
            transient=bool(state and state.is_crashed()),
        )
    return {"business": business, "pool": pool, "flow_run": run.name}


def training_pool(work_pool: str) -> tuple[str | None, str]:
    """The work pool to send training to (None: train in this flow run) and why."""
    if not work_pool:
        return None, "training.work_pool is empty"
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import WorkPoolStatus
    from prefect.exceptions import ObjectNotFound

    try:
        with get_client(sync_client=True) as client:
            deployment = client.read_deployment_by_name(TRAIN_DEPLOYMENT)
            if deployment.work_pool_name != work_pool:
                return None, (
                    f"deployment {TRAIN_DEPLOYMENT} is on pool {deployment.work_pool_name!r}, "
                    f"not training.work_pool {work_pool!r}"
                )
            pool = client.read_work_pool(work_pool)
    except ObjectNotFound:
        return None, f"no deployment {TRAIN_DEPLOYMENT} on pool {work_pool!r}"
    except Exception as exc:  # the API is unreachable or refuses: train here rather than not at all
        return None, f"could not look up the training deployment ({type(exc).__name__}: {exc})"
    if pool.status != WorkPoolStatus.READY:
        return None, f"no worker online on pool {work_pool!r}"
    return work_pool, f"deployment {TRAIN_DEPLOYMENT} on pool {work_pool!r}"


@task(name="plan-promotion", task_run_name="plan-promotion")
def plan_promotion_task(config_path: str, businesses: list[str] | None) -> pipeline.TrainPlan:
    return pipeline.plan_promotion(pipeline.settings_for_run(config_path), businesses)


@task(name="ab-gate", task_run_name="ab-gate-{business}")
def gate_task(config_path: str, business: str) -> dict[str, Any]:
    """Champion vs challenger on held-out requirements; promote or refuse; record the decision."""
    outcome = pipeline.promote_one(pipeline.settings_for_run(config_path), business)
    create_markdown_artifact(
        outcome["markdown"], key=_key("ab-gate-", business), description=f"A/B gate decision for {business}"
    )
    return {k: v for k, v in outcome.items() if k != "markdown"}


def _stage(stage: str, state: State[Any], seconds: float) -> pipeline.StageResult:
    value = pipeline.outcome(state)
    if isinstance(value, BaseException):
        return pipeline.failed_stage(stage, value, seconds)
    result: pipeline.StageResult = value
    return result


def _ingest(config_path: str, settings: Settings) -> pipeline.StageResult:
    """One task per source, in parallel (the lake serializes the commits); failures stay per source."""
    from assetmatch.ingest import new_run_id

    t0 = time.perf_counter()
    try:
        specs = pipeline.ingest_sources(settings)
    except Exception as exc:
        return pipeline.failed_stage("ingest", exc)
    run_id = new_run_id()
    futures = {spec.name: ingest_source_task.submit(config_path, spec.name, run_id) for spec in specs}
    summaries = []
    for spec in specs:
        futures[spec.name].wait()
        value = pipeline.outcome(futures[spec.name].state)
        summaries.append(
            pipeline.ingest_failed(spec, run_id, value) if isinstance(value, BaseException) else value
        )
    result = pipeline.ingest_result(summaries, time.perf_counter() - t0)
    create_table_artifact(
        [{"source": s["source"], "status": s["status"], "error": s["error"] or "",
          **{t: c["inserted"] + c["updated"] + c["soft_deleted"] + c["restored"] for t, c in s["tables"].items()}}
         for s in summaries],
        key="nightly-ingest", description=f"ingest run {run_id}: rows written per source and table",
    )  # fmt: skip
    return result


def _train(
    config_path: str, settings: Settings, businesses: list[str] | None, full: bool
) -> pipeline.StageResult:
    t0 = time.perf_counter()
    planned = pipeline.outcome(plan_train_task(config_path, businesses, full, return_state=True))
    if isinstance(planned, BaseException):
        return pipeline.failed_stage("train", planned, time.perf_counter() - t0)
    plan: pipeline.TrainPlan = planned
    pool, why = training_pool(settings.training.work_pool) if plan.todo else (None, "")
    outcomes: dict[str, dict[str, Any] | BaseException] = {}
    shared = pipeline.shared_plan(settings, plan)
    if shared:  # first: the per-business adapters start from it (a failure leaves them to start fresh)
        outcomes["shared adapter"] = pipeline.outcome(
            train_shared_task(config_path, shared, return_state=True)
        )
    if pool is not None:
        # each business is its own deployment run: several workers on the pool share them
        futures = {b: train_on_pool_task.submit(config_path, b, pool) for b in plan.todo}
        for business, future in futures.items():
            future.wait()
            outcomes[business] = pipeline.outcome(future.state)
    else:
        for business in plan.todo:  # one after the other: they share this worker's CPU
            outcomes[business] = pipeline.outcome(train_task(config_path, business, return_state=True))
    result = pipeline.outcome_result("train", outcomes, plan.kept, time.perf_counter() - t0, "trained")
    if plan.todo:
        where = f"on {why}" if pool else f"in this flow run on CPU ({why})"
        result.notes.insert(0, f"trained {where}")
    return result


def _promote(config_path: str, businesses: list[str] | None) -> pipeline.StageResult:
    t0 = time.perf_counter()
    planned = pipeline.outcome(plan_promotion_task(config_path, businesses, return_state=True))
    if isinstance(planned, BaseException):
        return pipeline.failed_stage("promote", planned, time.perf_counter() - t0)
    plan: pipeline.TrainPlan = planned
    outcomes = {b: pipeline.outcome(gate_task(config_path, b, return_state=True)) for b in plan.todo}
    return pipeline.promote_result(outcomes, plan.kept, time.perf_counter() - t0)


@flow(name="nightly", log_prints=False)
def nightly(
    config_path: str | None = None, full: bool = False, businesses: list[str] | None = None
) -> dict[str, Any]:
    """The nightly pipeline: every stage runs only when its inputs changed (all of them with `full`).

    Args:
        config_path: Path of the assetmatch.yaml to run with (absolute, or relative to the repository
            root). Empty: $ASSETMATCH_CONFIG of the worker, else ./assetmatch.yaml; the run fails at
            once, writing nothing, when none exists.
        full: Rebuild the indexes and features and retrain every business, even when unchanged.
        businesses: Limit training and promotion to these business names. Empty: every business.
    """
    logger = get_run_logger()
    started = time.perf_counter()
    config = str(pipeline.config_file(config_path))  # no usable config: fail before anything is written
    settings = pipeline.settings_for_run(config)
    result = pipeline.NightlyResult()

    result.stages.append(_ingest(config, settings))
    t0 = time.perf_counter()
    result.stages.append(
        _stage("indexes", index_task(config, full, return_state=True), time.perf_counter() - t0)
    )
    t0 = time.perf_counter()
    result.stages.append(
        _stage("features", features_task(config, full, return_state=True), time.perf_counter() - t0)
    )
    result.stages.append(_train(config, settings, businesses, full))
    result.stages.append(_promote(config, businesses))
    result.stages.append(pipeline.serve_stage(result.stages))  # serving picks up what changed by itself

    result.seconds = time.perf_counter() - started
    create_markdown_artifact(result.markdown(), key="nightly-summary", description="nightly pipeline summary")
    for s in result.stages:
        logger.info("%s: %s (%s) in %.1f s", s.stage, s.status, s.reason, s.seconds)
    if not result.ok:
        raise RuntimeError(
            f"nightly pipeline: {len(result.failed_parts())} part(s) failed: {', '.join(result.failed_parts())} "
            "(see the nightly-summary artifact)"
        )
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
