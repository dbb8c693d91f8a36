"""Helpers for integration tests that start a real server process (Prefect, MLflow) on loopback."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

PREFECT = str(Path(sys.executable).with_name("prefect"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def log_tail(path: Path, n: int = 3000) -> str:
    return path.read_text(errors="replace")[-n:] if path.exists() else ""


def wait_healthy(
    proc: subprocess.Popen[bytes], health_url: str, timeout_s: float, log: Path, name: str
) -> None:
    """Poll `health_url` until it answers 200; fail with the server's log if it exits or times out."""
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            pytest.fail(f"{name} exited with {proc.returncode}:\n{log_tail(log)}")
        try:
            if httpx.get(health_url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"{name} not healthy in {timeout_s:.0f} s:\n{log_tail(log)}")
        time.sleep(1)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the process group a test started (server or worker and its children), then kill."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def start_worker(
    env: dict[str, str], pool: str, log: Path, cwd: Path, *options: str
) -> subprocess.Popen[bytes]:
    """A Prefect process worker polling `pool` every 2 s, in its own process group (`options`: more
    `prefect worker start` flags, e.g. --name, --limit)."""
    with open(log, "wb") as out:
        return subprocess.Popen(
            [PREFECT, "worker", "start", "--pool", pool, "--type", "process", *options],
            env={**env, "PREFECT_WORKER_QUERY_SECONDS": "2", "PREFECT_WORKER_PREFETCH_SECONDS": "2",
                 "PREFECT_WORKER_HEARTBEAT_SECONDS": "5"},
            cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
