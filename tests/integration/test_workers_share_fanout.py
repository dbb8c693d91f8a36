"""Two process workers on one work pool share a fan-out: the `nightly` flow sends each business's
training to its own run of the `train-rankers` deployment (`run_deployment`, pool `gpu`); two local
process workers poll that pool, each taking one run at a time (`--limit 1`, so a busy worker leaves
the next run to the other), and between them they run every one, each run Completed."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from servers import PREFECT, log_tail, start_worker, stop
from test_ingest_flow import load_flow_module
from tiny_project import write_project

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKERS = ("fanout-a", "fanout-b")
BUSINESSES = ["game", "shop"]
READY_TIMEOUT_S = 300  # two worker processes registering: seconds idle, minutes on a busy 2-core machine


def _workers_online(client: Any, logs: dict[str, Path]) -> None:
    """Wait until both workers poll the `gpu` pool and the pool is READY (nightly routes by that)."""
    from prefect.client.schemas.objects import WorkerStatus, WorkPoolStatus

    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        online = {w.name for w in client.read_workers_for_work_pool("gpu") if w.status == WorkerStatus.ONLINE}
        if set(WORKERS) <= online and client.read_work_pool("gpu").status == WorkPoolStatus.READY:
            return
        assert time.monotonic() < deadline, "\n".join(log_tail(log) for log in logs.values())
        time.sleep(1)


def _worker_of(client: Any, run_id: Any) -> set[str]:
    """The workers that logged submitting this flow run ("Worker 'NAME' submitting flow run 'ID'")."""
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
    return {name for name in WORKERS for log in logs if f"Worker '{name}' submitting" in log.message}


@pytest.mark.timeout(900)  # ~2 min on an idle machine; minutes more on a busy 2-core one
def test_two_workers_share_the_training_fan_out(prefect_server: dict[str, str], tmp_path: Path) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

    from assetmatch import pipeline
    from assetmatch.config import load_settings

    env = prefect_server
    config = write_project(tmp_path / "project", BUSINESSES)
    settings = load_settings(config)
    for stage in (pipeline.ingest_stage(settings), pipeline.index_stage(settings)):  # nightly then skips it
        assert stage.status == "ran", stage
    for args in (
        ["work-pool", "create", "gpu", "--type", "process", "--overwrite"],
        ["--no-prompt", "deploy", "--name", "train-rankers", "--prefect-file", "infra/prefect/prefect.yaml"],
    ):
        done = subprocess.run([PREFECT, *args], env=env, cwd=REPO_ROOT, capture_output=True, timeout=300)
        assert done.returncode == 0, done.stdout.decode()[-3000:] + done.stderr.decode()[-3000:]
    logs = {name: tmp_path / f"{name}.log" for name in WORKERS}
    workers = [
        start_worker(env, "gpu", logs[name], tmp_path, "--name", name, "--limit", "1") for name in WORKERS
    ]
    try:
        with temporary_settings({PREFECT_API_URL: env["PREFECT_API_URL"], PREFECT_HOME: env["PREFECT_HOME"]}):
            with get_client(sync_client=True) as client:
                _workers_online(client, logs)
            # the flow itself runs here; its training fans out to the pool as deployment runs
            state = load_flow_module("nightly").nightly(config_path=str(config), return_state=True)
            with get_client(sync_client=True) as client:
                runs = client.read_flow_runs(
                    deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["train-rankers"]))
                )
                ran_by = {run.name: _worker_of(client, run.id) for run in runs}
    finally:
        for proc in workers:
            stop(proc)
    worker_logs = "\n".join(log_tail(log) for log in logs.values())
    assert state.is_completed(), f"{state}\n{worker_logs}"
    train = next(s for s in state.result()["stages"] if s["stage"] == "train")
    assert train["status"] == "ran" and train["reason"] == "trained: game, shop", train
    assert "trained on deployment train-rankers/train-rankers on pool 'gpu'" in train["notes"][0], train

    assert sorted(run.name for run in runs) == ["train-game", "train-shop"]  # one run per business
    for run in runs:
        assert run.state is not None and run.state.is_completed(), (run.name, run.state, worker_logs)
        business = run.name.removeprefix("train-")
        assert run.work_pool_name == "gpu" and run.parameters["businesses"] == [business], run
    # each run was taken by a worker; two workers can race for one run, and the loser logs its
    # submission too (then Prefect aborts it), so a run may name both — but both must have had a share
    assert all(ran_by.values()), ran_by
    assert set().union(*ran_by.values()) == set(WORKERS), ran_by
