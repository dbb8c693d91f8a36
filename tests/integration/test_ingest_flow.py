"""The `ingest-metadata` Prefect flow, run for real on a temporary Prefect API, and the CLI on top
of the same pipeline. Artifacts are read back through the Prefect client."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from assetmatch.lake import tables as T
from assetmatch.lake.delta import Lake

pytestmark = pytest.mark.integration
REPO_ROOT = Path(__file__).resolve().parents[2]


def load_flow_module(name: str = "ingest") -> ModuleType:
    """flows/<name>.py, loaded as a fresh module (tests may replace its tasks' options)."""
    spec = importlib.util.spec_from_file_location(f"{name}_flow", REPO_ROOT / "flows" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_catalog(path: Path, business: str, names: list[str], comment: str = "") -> None:
    with path.open("w", encoding="utf-8") as f:
        for name in names:
            record: dict[str, Any] = {
                "business": business,
                "database": "dw",
                "table": name,
                "comment": comment or f"{name} table",
                "columns": [
                    {"name": "id", "type": "int", "primary_key": True},
                    {"name": "dt", "type": "date"},
                ],
            }
            f.write(json.dumps(record) + "\n")
        if business == "g2":  # one table without columns: quarantined, the rest lands
            f.write(
                json.dumps({"business": business, "database": "dw", "table": "empty_one", "columns": []})
                + "\n"
            )


def write_config(tmp_path: Path) -> Path:
    write_catalog(tmp_path / "g1.jsonl", "g1", ["orders", "users", "items"])
    write_catalog(tmp_path / "g2.jsonl", "g2", ["events", "sessions", "devices"])
    config = tmp_path / "assetmatch.yaml"
    config.write_text(
        f"""
lake:
  uri: {tmp_path / "lake"}
businesses: [{{name: g1}}, {{name: g2}}]
sources:
  - {{name: cat-g1, type: catalog_file, business: g1, options: {{path: "{tmp_path / "g1.jsonl"}"}}}}
  - {{name: cat-g2, type: catalog_file, business: g2, options: {{path: "{tmp_path / "g2.jsonl"}"}}}}
"""
    )
    return config


def test_flow_runs_sources_in_parallel_and_publishes_artifacts(tmp_path: Path, prefect_harness: None) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    flow_module = load_flow_module()
    config = write_config(tmp_path)
    state = flow_module.ingest(config_path=str(config), run_id="flow-run-1", return_state=True)
    assert state.is_completed(), state.message
    result = state.result()
    assert result["ok"] and result["run_id"] == "flow-run-1"
    assert result["totals"]["assets"]["inserted"] == 6 and result["totals"]["assets"]["quarantined"] == 1

    lake = Lake(str(tmp_path / "lake"))
    assert len(lake.read_assets()) == 6
    assert [r["record_key"] for r in lake.read_quarantine(run_id="flow-run-1")] == ["g2.dw.empty_one"]
    assert {c["assetmatch.run_id"] for c in lake.history(T.ASSETS)} == {"flow-run-1"}

    flow_run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
        task_runs = client.read_task_runs()
    by_key = {a.key: a for a in artifacts}
    assert set(by_key) == {"ingest-counts", "ingest-validation"}
    counts = by_key["ingest-counts"].data
    rows = json.loads(counts) if isinstance(counts, str) else counts
    g2 = next(r for r in rows if r["source"] == "cat-g2" and r["table"] == "assets")
    assert (g2["inserted"], g2["quarantined"], g2["status"]) == (3, 1, "ok")
    assert "no columns: 1" in by_key["ingest-validation"].data
    ours = [t for t in task_runs if t.flow_run_id == flow_run_id]
    assert sorted(t.name for t in ours) == ["ingest-cat-g1", "ingest-cat-g2"]

    # a re-run with nothing changed writes no new asset version; a failing guard fails the flow
    again = flow_module.ingest(config_path=str(config), return_state=True)
    assert again.is_completed() and lake.version(T.ASSETS) == result["versions_after"]["assets"]
    write_catalog(tmp_path / "g1.jsonl", "g1", ["orders"])  # 2 of 3 tables gone: shrink guard
    failed = flow_module.ingest(config_path=str(config), return_state=True)
    assert failed.is_failed() and "cat-g1" in (failed.message or "")
    assert len(lake.read_assets()) == 6


def _task_runs(flow_run_id: Any) -> dict[str, Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return {t.name: t for t in runs}


def test_a_failing_source_is_a_failed_task_and_only_transient_errors_are_retried(
    tmp_path: Path, prefect_harness: None, pg_url: str
) -> None:
    """Four sources: a good catalog; a missing catalog file; PostgreSQL on a closed port (the sql
    source marks it transient: retried); an unknown PostgreSQL role (a refused login: not retried)."""
    from servers import free_port

    flow_module = load_flow_module()
    # retried at once: the test is about which errors are retried, not how long the waits are
    flow_module.ingest_source_task = flow_module.ingest_source_task.with_options(retry_delay_seconds=0)
    write_catalog(tmp_path / "g1.jsonl", "g1", ["orders", "users", "items"])
    database = pg_url.rsplit("/", 1)[1]
    sql = {"type": "sql", "business": "g1", "options": {"connect_retries": 1, "retry_wait_s": 0}}
    config = tmp_path / "assetmatch.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "lake": {"uri": str(tmp_path / "lake")},
                "sources": [
                    {"name": "good", "type": "catalog_file", "business": "g1",
                     "options": {"path": str(tmp_path / "g1.jsonl")}},
                    {"name": "missing", "type": "catalog_file", "business": "g1",
                     "options": {"path": str(tmp_path / "nowhere.jsonl")}},
                    {**sql, "name": "closed-port", "options": {**sql["options"],
                     "url": f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/{database}"}},
                    {**sql, "name": "bad-login", "options": {**sql["options"],
                     "url": f"postgresql+psycopg://no_such_role_x@127.0.0.1:5432/{database}"}},
                ],
            }
        )
    )  # fmt: skip
    state = flow_module.ingest(config_path=str(config), return_state=True)
    assert state.is_failed()
    for name in ("missing", "closed-port", "bad-login"):
        assert name in (state.message or ""), state.message
    assert "3 of 4 source(s) failed" in (state.message or "")

    runs = _task_runs(state.state_details.flow_run_id)
    assert set(runs) == {"ingest-good", "ingest-missing", "ingest-closed-port", "ingest-bad-login"}
    assert runs["ingest-good"].state.is_completed()
    for name in ("ingest-missing", "ingest-closed-port", "ingest-bad-login"):
        assert runs[name].state.is_failed(), (name, runs[name].state)
    assert runs["ingest-closed-port"].run_count == 1 + len(flow_module.RETRY_DELAYS_S)  # retried
    assert runs["ingest-bad-login"].run_count == 1  # a refused login: waiting cannot fix it
    assert runs["ingest-missing"].run_count == 1
    assert len(Lake(str(tmp_path / "lake")).read_assets()) == 3  # the good source landed


def test_no_config_or_no_source_fails_at_once_and_writes_nothing(
    tmp_path: Path, prefect_harness: None, monkeypatch: Any
) -> None:
    flow_module = load_flow_module()
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ASSETMATCH_CONFIG", raising=False)
    state = flow_module.ingest(return_state=True)
    assert state.is_failed() and "no config" in (state.message or "")
    empty = tmp_path / "empty.yaml"
    empty.write_text(yaml.safe_dump({"lake": {"uri": str(tmp_path / "lake")}}))
    state = flow_module.ingest(config_path=str(empty), return_state=True)
    assert state.is_failed() and "no sources configured" in (state.message or "")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.yaml"]


def test_cli_ingest_show_history_and_quarantine(tmp_path: Path) -> None:
    from assetmatch.cli import app

    config = write_config(tmp_path)
    runner = CliRunner()
    result = runner.invoke(app, ["-c", str(config), "ingest", "--run-id", "cli-1"])
    assert result.exit_code == 0, result.output
    assert "cat-g2" in result.output and "ingest run cli-1" in result.output

    write_catalog(tmp_path / "g1.jsonl", "g1", ["orders", "users", "items"], comment="new words")
    result = runner.invoke(app, ["-c", str(config), "ingest", "-s", "cat-g1", "--run-id", "cli-2", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["totals"]["assets"]["updated"] == 3

    shown = runner.invoke(
        app, ["-c", str(config), "lake", "show", "assets", "--where", "business=g1", "--json"]
    )
    assert shown.exit_code == 0 and {r["comment"] for r in json.loads(shown.output)} == {"new words"}
    old = runner.invoke(
        app, ["-c", str(config), "lake", "show", "assets", "--version", "0", "--json", "-n", "100"]
    )
    assert {r["comment"] for r in json.loads(old.output) if r["business"] == "g1"} == {
        "orders table",
        "users table",
        "items table",
    }
    history = runner.invoke(
        app, ["-c", str(config), "lake", "show", "assets", "--id", "g1.dw.orders", "--json"]
    )
    assert [(h["change"], h["run_id"]) for h in json.loads(history.output)] == [
        ("updated", "cli-2"),
        ("inserted", "cli-1"),
    ]
    commits = runner.invoke(app, ["-c", str(config), "lake", "history", "assets", "--json"])
    assert [c["assetmatch.run_id"] for c in json.loads(commits.output)] == ["cli-2", "cli-1", "cli-1"]
    quarantine = runner.invoke(app, ["-c", str(config), "lake", "quarantine", "--run-id", "cli-1", "--json"])
    assert [r["reason"] for r in json.loads(quarantine.output)] == ["no columns"]
    listed = runner.invoke(app, ["-c", str(config), "sources", "list", "--json"])
    assert "catalog_file" in json.loads(listed.output)["installed"]

    write_catalog(tmp_path / "g1.jsonl", "g1", [])  # every table gone: the guard refuses, exit 1
    result = runner.invoke(app, ["-c", str(config), "ingest", "-s", "cat-g1"])
    assert result.exit_code == 1 and "max_shrink_fraction" in result.output
    bad = runner.invoke(app, ["-c", str(config), "lake", "show", "assets", "--version", "42"])
    assert bad.exit_code == 2 and "no version 42" in bad.output
