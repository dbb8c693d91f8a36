"""infra/prefect/prefect.yaml: every deployment points at a real flow, with parameters it accepts,
on a known work pool, with a description; every flow under flows/ is deployed."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
PREFECT_FILE = REPO_ROOT / "infra" / "prefect" / "prefect.yaml"


def _deployments() -> list[dict[str, Any]]:
    return list(yaml.safe_load(PREFECT_FILE.read_text(encoding="utf-8"))["deployments"])


def test_pull_step_moves_runs_to_the_repository_root() -> None:
    spec = yaml.safe_load(PREFECT_FILE.read_text(encoding="utf-8"))
    (step,) = spec["pull"]
    assert (
        step["prefect.deployments.steps.set_working_directory"]["directory"] == "{{ $ASSETMATCH_REPO_ROOT }}"
    )


def test_every_flow_file_is_deployed() -> None:
    deployed = {d["entrypoint"].split(":")[0] for d in _deployments()}
    flows = {f"flows/{p.name}" for p in (REPO_ROOT / "flows").glob("*.py") if not p.name.startswith("_")}
    assert flows <= deployed, flows - deployed


@pytest.mark.parametrize("deployment", _deployments(), ids=lambda d: d["name"])
def test_deployment_entrypoint_parameters_and_pool(deployment: dict[str, Any], monkeypatch: Any) -> None:
    from prefect.flows import load_flow_from_entrypoint

    monkeypatch.chdir(REPO_ROOT)  # entrypoints are relative to the repository root
    flow = load_flow_from_entrypoint(deployment["entrypoint"])
    accepted = set(inspect.signature(flow.fn).parameters)
    assert set(deployment.get("parameters", {})) <= accepted
    for name in accepted:
        assert name in deployment["description"], f"{deployment['name']}: parameter {name} not documented"
    assert deployment["work_pool"]["name"] in ("default", "gpu")
    if deployment["entrypoint"].endswith(":train_rankers"):
        assert deployment["work_pool"]["name"] == "gpu"


def test_nightly_runs_at_night_on_the_default_pool() -> None:
    (nightly,) = [d for d in _deployments() if d["entrypoint"] == "flows/nightly.py:nightly"]
    assert nightly["work_pool"]["name"] == "default"
    (schedule,) = nightly["schedules"]
    _minute, hour, *_ = schedule["cron"].split()
    assert 0 <= int(hour) <= 5 and schedule["timezone"] == "UTC"
