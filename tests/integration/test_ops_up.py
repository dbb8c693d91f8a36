"""`assetmatch -c CONFIG ops up` for real: the Prefect server, a worker per work pool and MLflow come up,
every deployment defaults to CONFIG, and one SIGTERM stops every process it started."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest
import yaml
from servers import free_port, log_tail

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
ASSETMATCH = str(Path(sys.executable).with_name("assetmatch"))
UP_TIMEOUT_S = 600  # server + deploy + workers + MLflow: ~1 min on an idle machine, more on a busy 2-core one
# What the server may take to answer while its workers and MLflow are still starting beside it: the
# test checks what it answers, not how fast (a 10 s limit timed out once on a 2-core CI machine)
API_TIMEOUT_S = 60


@pytest.mark.timeout(900)
def test_ops_up_carries_the_config_serves_every_pool_and_stops_on_sigterm(tmp_path: Path) -> None:
    config = tmp_path / "assetmatch.yaml"
    config.write_text(
        yaml.safe_dump(
            {"lake": {"uri": str(tmp_path / "lake")},
             "mlflow": {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}}
        )
    )  # fmt: skip
    prefect_port, mlflow_port = free_port(), free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_WORKER_QUERY_SECONDS": "2",
        "PREFECT_WORKER_HEARTBEAT_SECONDS": "5",
    }
    env.pop("PREFECT_API_URL", None)
    env.pop("ASSETMATCH_CONFIG", None)
    log = tmp_path / "ops.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [ASSETMATCH, "-c", str(config), "ops", "up",
             "--prefect-port", str(prefect_port), "--mlflow-port", str(mlflow_port)],
            env=env, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + UP_TIMEOUT_S
        while "up  Prefect UI" not in log_tail(log, 100_000):
            assert proc.poll() is None, f"ops up exited with {proc.returncode}:\n{log_tail(log)}"
            assert time.monotonic() < deadline, f"ops up not up in {UP_TIMEOUT_S} s:\n{log_tail(log)}"
            time.sleep(1)
        api = f"http://127.0.0.1:{prefect_port}/api"
        assert httpx.get(f"http://127.0.0.1:{mlflow_port}/health", timeout=API_TIMEOUT_S).status_code == 200

        deployments = httpx.post(f"{api}/deployments/filter", json={}, timeout=API_TIMEOUT_S).json()
        assert len(deployments) >= 7, deployments
        for d in deployments:
            assert d["parameters"]["config_path"] == str(config), (d["name"], d["parameters"])
        by_name = {d["name"]: d for d in deployments}
        assert by_name["train-rankers"]["work_pool_name"] == "gpu"
        for pool in ("default", "gpu"):  # a worker serves every pool deployed to
            status = httpx.get(f"{api}/work_pools/{pool}", timeout=API_TIMEOUT_S).json()["status"]
            assert status == "READY", pool

        children = psutil.Process(proc.pid).children(recursive=True)
        assert len(children) >= 4, children  # server, two workers, MLflow (and their own children)
        for child in children:
            if child.name().startswith("prefect") or "worker" in " ".join(child.cmdline()):
                assert child.environ().get("ASSETMATCH_CONFIG") == str(config)
                break
        else:
            pytest.fail(f"no Prefect child among {[c.cmdline() for c in children]}")
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # to ops up alone: it must stop its children itself
            proc.wait(timeout=120)

    assert proc.returncode == 0, log_tail(log)
    _, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, [(p.pid, p.cmdline()) for p in alive]
    for port in (prefect_port, mlflow_port):
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
