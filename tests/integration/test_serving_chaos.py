"""The chaos benchmark's faults (assetmatch.serving.faults), each injected for real into a serving
app with adapters in MLflow, a Redis cache of its own and a Delta lake: answers stay 200 (or the
documented 401/503), never 500; a refused state never goes live and the error clears once the fault
is undone; every accepted feedback row reaches the lake under its own business."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import SecretStr

from assetmatch.config import Settings

pytestmark = pytest.mark.integration

MAIN, VICTIM = "chaos-main", "chaos-victim"


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@contextmanager
def one_torch_thread() -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Settings]:
    """ga and gb, 30 synthetic tables each, an untrained champion adapter each in MLflow (sqlite);
    keys in a keys file the app re-reads."""
    from assetmatch.serving.synthetic import synthetic_deployment

    keys_file = tmp_path / "keys.yaml"
    keys_file.write_text(yaml.safe_dump({digest(MAIN): ["*"], digest(VICTIM): ["ga"]}), encoding="utf-8")
    with one_torch_thread():
        settings = synthetic_deployment(tmp_path / "deploy", ("ga", "gb"), tables=30, paths=("lexical",))
    serving = settings.serving.model_copy(
        update={
            "api_keys": {},
            "api_keys_file": str(keys_file),
            "reload_interval_s": 0,
            "max_wait_ms": 5,
            "feedback_flush_interval_s": 3600,  # flushed by the test, when it says so
        }
    )
    ranker = settings.ranker.model_copy(update={"max_length": 64, "device": "cpu"})
    yield settings.model_copy(update={"serving": serving, "ranker": ranker})


def app_client(settings: Settings, spool: Path) -> Any:
    from fastapi.testclient import TestClient

    from assetmatch.serving.app import create_app

    return TestClient(create_app(settings, spool_dir=str(spool)), raise_server_exceptions=False)


def test_a_corrupt_calibration_is_refused_and_its_adapter_unloaded(
    deployment: Settings, tmp_path: Path
) -> None:
    from assetmatch.serving.faults import move_alias_to_corrupt_version

    with one_torch_thread(), app_client(deployment, tmp_path / "spool") as client:
        ctx = client.app.state.ctx
        loaded = set(ctx.scorer.adapters)
        assert loaded == {"ga@1", "gb@1"}
        fault = move_alias_to_corrupt_version(deployment, "ga", kind="calibration")
        assert client.portal.call(ctx.reloader.reload) is False
        assert set(ctx.scorer.adapters) == loaded  # what the failed attempt loaded is gone again
        ready = client.get("/readyz").json()
        assert "calibration" in ready["reload_error"] and ready["adapters_loaded"] == 2
        metrics = client.get("/metrics").text
        assert "assetmatch_adapters_loaded 2.0" in metrics and "assetmatch_reload_failing 1.0" in metrics
        answer = client.post(
            "/v1/match", json={"business": "ga", "requirement": "daily revenue"}, headers={"X-API-Key": MAIN}
        )
        assert answer.status_code == 200 and answer.json()["model_version"] == "1"

        fault.undo()  # the alias goes back to version 1, which serves
        assert client.portal.call(ctx.reloader.reload) is False
        assert client.get("/readyz").json()["reload_error"] is None
        assert "assetmatch_reload_failing 0.0" in client.get("/metrics").text


def test_every_fault_in_turn_keeps_answers_and_feedback(deployment: Settings, tmp_path: Path) -> None:
    from assetmatch.lake import tables as T
    from assetmatch.lake.delta import Lake
    from assetmatch.serving import faults
    from assetmatch.serving.loadgen import free_port

    redis = faults.PrivateRedis(free_port(), tmp_path / "redis.log")
    redis.start()
    serving = deployment.serving.model_copy(update={"redis_cache_url": SecretStr(redis.url)})
    settings = deployment.model_copy(update={"serving": serving})
    statuses: list[int] = []
    accepted: dict[str, str] = {}  # request id -> business of the answer
    try:
        with one_torch_thread(), app_client(settings, tmp_path / "spool") as client:
            ctx = client.app.state.ctx

            def traffic(tag: str, victim_status: int = 200) -> None:
                for i, business in enumerate(("ga", "gb", "ga")):
                    body = {"business": business, "requirement": f"top channel by payment amount {tag} {i}"}
                    answer = client.post("/v1/match", json=body, headers={"X-API-Key": MAIN})
                    statuses.append(answer.status_code)
                    assert answer.status_code == 200, (tag, answer.text)
                    data = answer.json()
                    used = data["selected"][:1] or [data["tables"][0]["asset_id"]]
                    sent = client.post(
                        "/v1/feedback",
                        json={"request_id": data["request_id"], "used_assets": used},
                        headers={"X-API-Key": MAIN},
                    )
                    statuses.append(sent.status_code)
                    assert sent.status_code == 200, (tag, sent.text)
                    accepted[data["request_id"]] = business
                victim = client.post(
                    "/v1/match",
                    json={"business": "ga", "requirement": f"login days {tag}"},
                    headers={"X-API-Key": VICTIM},
                )
                statuses.append(victim.status_code)
                assert victim.status_code == victim_status, (tag, victim.text)

            def reload() -> bool:
                client.portal.call(client.app.state.key_watcher.refresh)
                return bool(client.portal.call(ctx.reloader.reload))

            def error() -> str | None:
                value: str | None = client.get("/readyz").json()["reload_error"]
                return value

            traffic("before")
            serving_index = ctx.holder.current.index_version

            fault = faults.publish_inconsistent_index(settings.recall.index_root)
            assert reload() is False and "consistency check" in (error() or "")
            traffic("bad-index")
            assert ctx.holder.current.index_version == serving_index
            fault.undo()
            assert reload() is False and error() is None

            fault = faults.move_alias_to_corrupt_version(settings, "gb", kind="weights")
            assert reload() is False and error()
            traffic("corrupt-adapter")
            fault.undo()
            assert reload() is False and error() is None

            fault = redis.outage()
            traffic("redis-down")
            fault.undo()
            traffic("redis-back")
            assert 'assetmatch_cache_errors_total{op="get"}' in client.get("/metrics").text

            fault = faults.make_lake_table_unwritable(settings.lake.uri, T.FEEDBACK)
            traffic("lake-unwritable")
            assert client.portal.call(ctx.feedback.flush) == 0 and ctx.feedback.pending > 0
            fault.undo()
            assert client.portal.call(ctx.feedback.flush) > 0 and ctx.feedback.pending == 0

            fault = faults.revoke_key(serving.api_keys_file or "", digest(VICTIM))
            reload()
            traffic("key-revoked", victim_status=401)
            fault.undo()
            reload()
            traffic("key-back")
    finally:
        redis.stop()
    assert 500 not in statuses
    rows = Lake.from_settings(settings).read_arrow(T.FEEDBACK).to_pylist()
    assert len(rows) == len(accepted)  # nothing lost, nothing twice
    assert {r["request_id"]: r["business"] for r in rows} == accepted  # nothing mis-attributed
    assert not list((tmp_path / "spool").glob("*.jsonl"))
