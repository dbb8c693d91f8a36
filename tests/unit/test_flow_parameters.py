"""What the Prefect UI shows of every deployed flow: each parameter with a type and a description,
and every task run with a stable name (no random suffix)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
FLOW_FILES = sorted(p for p in (REPO_ROOT / "flows").glob("*.py") if not p.name.startswith("_"))


def _flows_in(path: Path) -> tuple[list[Any], list[Any]]:
    from prefect import Flow, Task

    spec = importlib.util.spec_from_file_location(f"flow_{path.stem}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    values = list(vars(module).values())
    return [v for v in values if isinstance(v, Flow)], [v for v in values if isinstance(v, Task)]


@pytest.mark.parametrize("path", FLOW_FILES, ids=lambda p: p.name)
def test_parameters_are_typed_and_described(path: Path) -> None:
    from prefect.utilities.callables import parameter_schema

    flows, _ = _flows_in(path)
    assert flows
    for flow in flows:
        properties = parameter_schema(flow.fn).model_dump()["properties"]
        for name, schema in properties.items():
            assert "type" in schema or "anyOf" in schema, (flow.name, name, schema)
            assert len(schema.get("description") or "") > 20, (flow.name, name, schema)
        if "config_path" in properties:
            assert "ASSETMATCH_CONFIG" in properties["config_path"]["description"]


@pytest.mark.parametrize("path", FLOW_FILES, ids=lambda p: p.name)
def test_every_task_run_has_a_stable_name(path: Path) -> None:
    _, tasks = _flows_in(path)
    for task in tasks:
        assert isinstance(task.task_run_name, str) and task.task_run_name, task.name
