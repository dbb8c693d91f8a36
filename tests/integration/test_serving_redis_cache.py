"""The Redis response cache on the real Redis service: its URL comes through `${ENV}` (it used to
reach redis-py as the literal '${...}' and silently never cached), and failures are counted."""

from __future__ import annotations

import socket
import uuid
from pathlib import Path

import pytest

from assetmatch.config import load_settings
from assetmatch.serving.auth import hash_key
from assetmatch.serving.cache import RedisCache
from assetmatch.serving.metrics import ServingMetrics

pytestmark = [pytest.mark.integration]


def test_the_cache_url_from_env_caches_answers_in_redis(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import redis
    from fastapi.testclient import TestClient

    from assetmatch.serving.app import create_app
    from assetmatch.serving.loadgen import write_config
    from assetmatch.serving.synthetic import synthetic_deployment

    deployment = synthetic_deployment(
        tmp_path / "deploy", ("ga",), tables=20, adapters=False, paths=("lexical",)
    )
    monkeypatch.setenv("TEST_REDIS_HOSTPORT", redis_url)
    db = 0
    config = write_config(
        deployment,
        tmp_path / "assetmatch.yaml",
        {
            "api_keys": {hash_key("k"): ["*"]},
            "reload_interval_s": 0,
            "redis_cache_url": f"redis://${{TEST_REDIS_HOSTPORT}}/{db}",
        },
    )
    assert "${TEST_REDIS_HOSTPORT}" in config.read_text()
    settings = load_settings(config)
    text = f"daily revenue of user {uuid.uuid4().hex[:8]}"  # a fresh key: the Redis db is shared
    body = {"business": "ga", "requirement": text, "k": 5}
    app = create_app(settings, model_source=None)
    with TestClient(app) as client:
        first = client.post("/v1/match", json=body, headers={"X-API-Key": "k"}).json()
        second = client.post("/v1/match", json=body, headers={"X-API-Key": "k"}).json()
        metrics = client.get("/metrics").text
    assert first["cached"] is False and second["cached"] is True
    assert "assetmatch_cache_errors_total{" not in metrics  # no failure counted
    host, port = redis_url.split(":")
    keys = redis.Redis(host=host, port=int(port), db=db).keys("assetmatch:match:*")
    assert keys  # the answer really sits in Redis


def test_redis_down_answers_without_the_cache_and_counts_each_failure() -> None:
    with socket.socket() as sock:  # a port where nothing listens: Redis stopped
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    metrics = ServingMetrics()
    cache = RedisCache(f"redis://127.0.0.1:{port}/0", 60, metrics)
    assert cache.ping() is False
    assert cache.get("k") is None
    cache.put("k", {"v": 1})
    assert cache.get("k") is None
    text = metrics.render().decode()
    for op, count in (("ping", 1), ("get", 2), ("put", 1)):
        assert f'assetmatch_cache_errors_total{{op="{op}"}} {count}.0' in text, text
