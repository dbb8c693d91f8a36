"""`assetmatch ops up` before it starts anything: the deployments it creates carry the config it was
given (absolute), it serves every work pool they use, and a busy port or a missing config is an
error before any process starts."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from assetmatch.cli import app
from assetmatch.cli.ops import PREFECT_FILE, deployment_spec, port_in_use, work_pools

REPO_ROOT = Path(__file__).resolve().parents[2]


def _spec() -> dict[str, Any]:
    spec: dict[str, Any] = yaml.safe_load((REPO_ROOT / PREFECT_FILE).read_text(encoding="utf-8"))
    return spec


def test_every_deployment_defaults_to_the_config_ops_up_was_given(tmp_path: Path) -> None:
    config = tmp_path / "prod" / "assetmatch.yaml"
    spec = _spec()
    rendered = deployment_spec(spec, config)
    assert rendered["deployments"] and len(rendered["deployments"]) == len(spec["deployments"])
    for deployment, original in zip(rendered["deployments"], spec["deployments"], strict=True):
        assert deployment["parameters"]["config_path"] == str(config), deployment["name"]
        others = {k: v for k, v in deployment["parameters"].items() if k != "config_path"}
        assert others == {k: v for k, v in original["parameters"].items() if k != "config_path"}
    assert all(d["parameters"]["config_path"] is None for d in spec["deployments"])  # input untouched
    # what `prefect deploy` reads back is the same
    assert yaml.safe_load(yaml.safe_dump(rendered))["deployments"][0]["parameters"]["config_path"] == str(
        config
    )
    with pytest.raises(ValueError, match="absolute"):
        deployment_spec(spec, Path("assetmatch.yaml"))


def test_a_worker_for_every_pool_the_deployments_use() -> None:
    assert work_pools(_spec()) == ["default", "gpu"]


def test_a_busy_port_is_an_error_before_anything_starts(tmp_path: Path, monkeypatch: Any) -> None:
    config = tmp_path / "assetmatch.yaml"
    config.write_text(yaml.safe_dump({"lake": {"uri": str(tmp_path / "lake")}}))
    monkeypatch.chdir(REPO_ROOT)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert port_in_use(port)
        result = CliRunner().invoke(app, ["-c", str(config), "ops", "up", "--prefect-port", str(port)])
    assert result.exit_code == 2, result.output
    assert f"Prefect port {port} already in use" in " ".join(result.output.split())
    assert "starting" not in result.output


def test_ops_up_without_a_config_says_so(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ASSETMATCH_CONFIG", raising=False)
    result = CliRunner().invoke(app, ["ops", "up"])
    assert result.exit_code == 2 and "no config" in result.output
    missing = CliRunner().invoke(app, ["-c", str(tmp_path / "nope.yaml"), "ops", "up"])
    assert missing.exit_code == 2 and "does not exist" in missing.output
    assert list(tmp_path.iterdir()) == []
