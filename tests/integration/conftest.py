"""Integration fixtures shared across files (add yours here)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from servers import PREFECT, free_port, stop, wait_healthy

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVER_START_S = 240  # ~14 s on an idle machine; minutes on a busy 2-core one


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """One temporary Prefect API (SQLite in a temp PREFECT_HOME) for the whole session: starting one
    costs seconds, so every flow test shares it. Request it in tests that run flows."""
    home = tmp_path_factory.mktemp("prefect-home")
    previous = os.environ.get("PREFECT_HOME")
    os.environ["PREFECT_HOME"] = str(home)
    from prefect.testing.utilities import prefect_test_harness

    try:
        with prefect_test_harness(server_startup_timeout=120):
            yield
    finally:
        if previous is None:
            os.environ.pop("PREFECT_HOME", None)
        else:
            os.environ["PREFECT_HOME"] = previous


@pytest.fixture
def prefect_server(pg_url: str, tmp_path: Path) -> Iterator[dict[str, str]]:
    """`prefect server start` on a fresh PostgreSQL database; yields the environment that reaches it
    (for `prefect` commands and workers: PREFECT_API_URL, and ASSETMATCH_REPO_ROOT for the pull step)."""
    port = free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_API_DATABASE_CONNECTION_URL": pg_url.replace(
            "postgresql+psycopg://", "postgresql+asyncpg://"
        ),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_UI_ENABLED": "false",
    }
    env.pop("PREFECT_API_URL", None)
    log = tmp_path / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port), "--no-ui"],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        api = f"http://127.0.0.1:{port}/api"
        wait_healthy(proc, f"{api}/health", SERVER_START_S, log, "prefect server")
        yield {**env, "PREFECT_API_URL": api, "ASSETMATCH_REPO_ROOT": str(REPO_ROOT)}
    finally:
        stop(proc)
