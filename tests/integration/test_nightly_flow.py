"""The `nightly` flow deployed from infra/prefect/prefect.yaml to a real Prefect server (PostgreSQL
backed) and run three times by real process workers on a one-game demo warehouse: the first run does
every stage, its training sent to the `train-rankers` deployment and picked up by the worker on the
`gpu` pool; the second finds nothing changed and skips everything after ingest, with the reasons; the
third has a broken source: its task is Failed, the other sources' tasks Completed, the run Failed."""

from __future__ import annotations

import asyncio
import csv
import glob
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
import yaml
from servers import PREFECT, log_tail, start_worker, stop

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
RUN_TIMEOUT_S = 900


@pytest.fixture
def demo_config(tmp_path: Path) -> Path:
    """A one-game demo warehouse whose rankers train for a handful of steps."""
    from assetmatch.demo.warehouse import build_demo

    paths = build_demo(tmp_path / "demo", businesses=["card"])
    # a third of the labelled requirements and the latest queries: enough for every stage, quick on 2 cores
    reqs = paths.requirements["card"]
    reqs.write_text(
        "".join(reqs.read_text(encoding="utf-8").splitlines(keepends=True)[::3]), encoding="utf-8"
    )
    with open(paths.query_logs["card"], encoding="utf-8", newline="") as f:
        header, *rows = list(csv.reader(f))
    with open(paths.query_logs["card"], "w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows([header, *rows[-150:]])
    config = yaml.safe_load(paths.config.read_text(encoding="utf-8"))
    config["training"]["ranker"] = {
        "max_steps": 3, "batch_size": 8, "max_length": 64, "synthetic_per_table": 0,
        "candidate_k": 8, "max_validation": 8,
    }  # fmt: skip
    config["promotion"] = {"bootstrap_samples": 200}
    paths.config.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return paths.config


@pytest.fixture
def worker(prefect_server: dict[str, str], tmp_path: Path) -> Iterator[Path]:
    """The nightly (pool `default`) and train-rankers (pool `gpu`) deployments from prefect.yaml, and a
    process worker polling each pool. Yields the default worker's log (the gpu one's is beside it)."""
    env = prefect_server
    for args in (
        ["work-pool", "create", "default", "--type", "process", "--overwrite"],
        ["work-pool", "create", "gpu", "--type", "process", "--overwrite"],
        ["--no-prompt", "deploy", "--name", "nightly", "--name", "train-rankers",
         "--prefect-file", "infra/prefect/prefect.yaml"],
    ):  # fmt: skip
        done = subprocess.run([PREFECT, *args], env=env, cwd=REPO_ROOT, capture_output=True, timeout=300)
        assert done.returncode == 0, done.stdout.decode()[-3000:] + done.stderr.decode()[-3000:]
    log = tmp_path / "worker.log"
    procs = [
        start_worker(env, "default", log, tmp_path),
        start_worker(env, "gpu", tmp_path / "gpu.log", tmp_path),
    ]
    try:
        yield log
    finally:
        for proc in procs:
            stop(proc)


async def _run_and_wait(api: str, config: Path, worker_log: Path) -> tuple[Any, list[Any], dict[str, str]]:
    """Trigger nightly/nightly, wait for a final state; its task runs and artifacts (key -> data)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api}):
        async with get_client() as client:
            deployment = await client.read_deployment_by_name("nightly/nightly")
            run = await client.create_flow_run_from_deployment(
                deployment.id, parameters={"config_path": str(config)}
            )
            deadline = time.monotonic() + RUN_TIMEOUT_S
            while True:
                run = await client.read_flow_run(run.id)
                if run.state is not None and run.state.is_final():
                    break
                assert time.monotonic() < deadline, (
                    f"nightly not done in {RUN_TIMEOUT_S} s:\n{log_tail(worker_log)}"
                )
                await asyncio.sleep(2)
            only_this = FlowRunFilter(id=FlowRunFilterId(any_=[UUID(str(run.id))]))
            tasks = await client.read_task_runs(flow_run_filter=only_this)
            artifacts = await client.read_artifacts(flow_run_filter=only_this)
    return run, tasks, {a.key: str(a.data) for a in artifacts if a.key}


async def _training_runs(api: str) -> list[Any]:
    """Every run of the train-rankers deployment."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api}):
        async with get_client() as client:
            return list(
                await client.read_flow_runs(
                    deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["train-rankers"]))
                )
            )


@pytest.mark.timeout(1500)  # minutes on a busy shared 2-core machine; ~3 min when it is quiet
def test_nightly_deployed_runs_everything_then_nothing(
    prefect_server: dict[str, str], demo_config: Path, worker: Path
) -> None:
    from assetmatch.config import load_settings
    from assetmatch.pipeline import published_manifest
    from assetmatch.registry.mlflow import Registry

    api = prefect_server["PREFECT_API_URL"]

    # 1. first night: every stage runs, each as its own task run with its artifact
    run, tasks, artifacts = asyncio.run(_run_and_wait(api, demo_config, worker))
    assert run.state.is_completed(), f"{run.state}\n{log_tail(worker)}"
    names = {t.name for t in tasks}  # stable names: no random suffix
    expected = {"ingest-catalog-card", "ingest-query-log", "ingest-glossary", "ingest-requirements",
                "index-and-fit", "materialize-features", "plan-training", "train-card", "plan-promotion",
                "ab-gate-card"}  # fmt: skip
    assert expected <= names, names
    assert all(t.state.is_completed() for t in tasks), [(t.name, t.state.name) for t in tasks]
    assert {"nightly-summary", "nightly-ingest", "nightly-index", "nightly-features", "ab-gate-card"} <= set(
        artifacts
    )
    summary = artifacts["nightly-summary"]
    print(summary)  # per-stage seconds, shown with -s
    for stage in ("ingest", "indexes", "features", "train", "promote"):
        assert f"| {stage} | ✅ ran |" in summary, summary
    assert "| serve | ⏭️ skipped | nothing to do" in summary
    assert re.search(r"\| promote \| ✅ ran \| promoted: (card|none)", summary), summary
    assert "card: promoted" in summary or "card: refused" in summary  # the verdict, with its reason
    assert "trained on deployment train-rankers/train-rankers on pool 'gpu'" in summary, summary

    # training went to the gpu pool: one run of the train-rankers deployment, picked up by its worker
    (training,) = asyncio.run(_training_runs(api))
    assert training.state.is_completed() and training.work_pool_name == "gpu", training
    assert training.parameters["businesses"] == ["card"] and training.name == "train-card"

    settings = load_settings(demo_config)
    manifest = published_manifest(settings)
    assert manifest is not None and manifest["counts"]["assets"] == 40
    registry = Registry.from_settings(settings)
    judged = registry.versions("card")
    assert len(judged) == 1 and "gate.verdict" in judged[0].tags  # trained once, judged once

    # 2. second night, nothing changed: ingest runs, everything after it skips itself, saying why
    run2, tasks2, artifacts2 = asyncio.run(_run_and_wait(api, demo_config, worker))
    assert run2.state.is_completed(), f"{run2.state}\n{log_tail(worker)}"
    summary2 = artifacts2["nightly-summary"]
    print(summary2)
    assert "| ingest | ✅ ran | no source changed" in summary2, summary2
    for stage in ("indexes", "features", "train", "promote", "serve"):
        assert f"| {stage} | ⏭️ skipped |" in summary2, summary2
    assert "| indexes | ⏭️ skipped | index " in summary2 and "is current" in summary2
    assert "card: left alone: data unchanged" in summary2
    assert "card: left alone: challenger v1 already judged" in summary2
    by_name2 = {t.name: t for t in tasks2}
    assert by_name2["index-and-fit"].state.name == "Skipped"
    assert by_name2["materialize-features"].state.name == "Skipped"
    assert not any(n.startswith(("train-card", "ab-gate-card")) for n in by_name2), by_name2
    assert "nightly-index" not in artifacts2 and "nightly-features" not in artifacts2
    assert published_manifest(settings)["id"] == manifest["id"]  # type: ignore[index]
    assert len(registry.versions("card")) == 1
    assert len(asyncio.run(_training_runs(api))) == 1

    # 3. a source breaks: its task is Failed with the error, the others Completed, the run Failed
    glossary = next(s for s in settings.sources if s.name == "glossary")
    for path in glob.glob(glossary.options["path"]):  # no file left: the source fails
        Path(path).unlink()
    run3, tasks3, artifacts3 = asyncio.run(_run_and_wait(api, demo_config, worker))
    assert run3.state.is_failed(), run3.state
    assert "ingest/glossary" in (run3.state.message or ""), run3.state.message
    by_name3 = {t.name: t for t in tasks3}
    assert by_name3["ingest-glossary"].state.is_failed(), by_name3["ingest-glossary"].state
    assert by_name3["ingest-glossary"].run_count == 1  # a missing file is not transient
    for name in ("ingest-catalog-card", "ingest-query-log", "ingest-requirements"):
        assert by_name3[name].state.is_completed(), (name, by_name3[name].state)
    summary3 = artifacts3["nightly-summary"]
    print(summary3)
    assert "| ingest | ❌ failed | 1 of 4 source(s) failed: glossary |" in summary3, summary3
    assert "- **ingest / glossary**:" in summary3
    assert "| indexes | ⏭️ skipped |" in summary3  # the later stages still ran on what is there
