"""Load generation for the serving benchmarks: a server subprocess and a bounded async client.

`ServerProcess` starts `assetmatch serve` on loopback with a config file and waits until /readyz
answers 200; `drive` sends /v1/match requests at a fixed concurrency for a bounded time and keeps
every request's start time, latency, status, model version and fine-ranking depth.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import yaml

from assetmatch.config import Settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(settings: Settings, path: Path, serving: dict[str, Any]) -> Path:
    """A YAML config holding the deployment's locations plus the given serving options. Query vectors
    are not kept between requests (`recall.cache_query_vectors`): a load test replays a few hundred
    texts, which a real deployment would mostly see once."""
    data = {
        "lake": {"uri": settings.lake.uri},
        "recall": {
            "index_root": settings.recall.index_root,
            "paths": list(settings.recall.paths),
            "cache_query_vectors": False,
        },
        "mlflow": {
            "tracking_uri": settings.mlflow.tracking_uri,
            "artifact_location": settings.mlflow.artifact_location,
        },
        "training": {"adapters_dir": settings.training.adapters_dir},
        "businesses": [b.model_dump() for b in settings.businesses],
        "ranker": {
            "device": "cpu",
            "max_length": settings.ranker.max_length,
            "quantize": settings.ranker.quantize,
        },
        "serving": serving,
    }
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


class ServerProcess:
    """`assetmatch serve` in a child process (own CPU scheduling, like production)."""

    def __init__(self, config: Path, port: int, log: Path, extra_env: dict[str, str] | None = None) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
               "MLFLOW_DISABLE_TELEMETRY": "true", **(extra_env or {})}  # fmt: skip
        exe = Path(sys.executable).with_name("assetmatch")
        self._log = log.open("w")
        self.proc = subprocess.Popen(
            [str(exe), "--config", str(config), "serve", "--port", str(port), "--log-level", "warning"],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
        )

    def wait_ready(self, timeout_s: float = 600) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}; see {self._log.name}")
            try:
                response = httpx.get(f"{self.url}/readyz", timeout=2)
                if response.status_code == 200:
                    body: dict[str, Any] = response.json()
                    return body
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise TimeoutError("server not ready in time")

    def stop(self, timeout_s: float = 180) -> int | None:
        """SIGTERM (graceful: drains in-flight requests, flushes feedback) and wait.

        uvicorn re-raises the signal once its shutdown is complete, so a clean exit reads -15.
        """
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:  # not drained in time: say so, and do not leave it behind
            self.proc.kill()
            self.proc.wait()
            return None
        finally:
            self._log.close()


@dataclass
class Sample:
    start: float  # seconds since the run began
    latency_s: float
    status: int
    model_version: str
    business: str
    fine_depth: int = 0  # tables the fine ranker scored for this answer (0: coarse answered)
    degraded: bool = False  # the fine ranker was shed for load: the coarse ranking answered instead


Item = tuple[str, str, Sequence[str] | None]
"""One real request to send: business, requirement text, and its scope (`databases`; None: unscoped)."""


async def drive(
    url: str,
    key: str,
    businesses: Sequence[str],
    requirements: Sequence[str],
    concurrency: int,
    seconds: float,
    k: int = 10,
    on_tick: Callable[[float], None] | None = None,
    items: Sequence[Item] | None = None,
    user_id: str | None = None,
) -> list[Sample]:
    """`concurrency` closed-loop clients for `seconds`; every request is counted, failed or not.

    Request n asks `requirements[n]` (made unique with " #n") of `businesses[n]`, both cycled; with
    `items`, (business, requirement, databases) triples are sent as they are, cycled (for real
    requirements; databases None: unscoped). `user_id` goes with every request (it picks the A/B arm)."""
    samples: list[Sample] = []
    begin = time.perf_counter()
    counter = 0

    async def client(worker: int, http: httpx.AsyncClient) -> None:
        nonlocal counter
        while time.perf_counter() - begin < seconds:
            counter += 1
            n = counter
            databases: Sequence[str] | None = None
            if items:
                business, text, databases = items[n % len(items)]
            else:
                business = businesses[n % len(businesses)]
                text = f"{requirements[n % len(requirements)]} #{n}"
            body: dict[str, Any] = {"business": business, "requirement": text, "k": k}
            if databases:
                body["databases"] = list(databases)
            if user_id:
                body["user_id"] = user_id
            t0 = time.perf_counter()
            try:
                response = await http.post(f"{url}/v1/match", json=body, headers={"X-API-Key": key})
                status = response.status_code
                answer = response.json() if status == 200 else {}
                version, depth = answer.get("model_version", ""), int(answer.get("fine_depth", 0))
                degraded = bool(answer.get("degraded", False))
            except httpx.HTTPError:
                status, version, depth, degraded = 0, "", 0, False
            samples.append(
                Sample(t0 - begin, time.perf_counter() - t0, status, version, business, depth, degraded)
            )
            if on_tick is not None:
                on_tick(time.perf_counter() - begin)

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=120) as http:
        await asyncio.gather(*(client(i, http) for i in range(concurrency)))
    return samples


def percentiles(samples: Sequence[Sample]) -> dict[str, float]:
    ok = np.array([s.latency_s for s in samples if s.status == 200]) * 1000
    if not len(ok):
        return {"n": 0}
    return {
        "n": len(samples),
        "ok": len(ok),
        "p50_ms": float(np.percentile(ok, 50)),
        "p95_ms": float(np.percentile(ok, 95)),
        "p99_ms": float(np.percentile(ok, 99)),
        "mean_ms": float(ok.mean()),
    }
