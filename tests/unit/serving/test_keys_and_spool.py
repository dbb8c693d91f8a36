"""API keys re-read without a restart (revocation within the reload interval), and the feedback spool
kept beside the config file whatever the working directory."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from assetmatch.config import Settings, load_settings
from assetmatch.lake import tables as T
from assetmatch.lake.delta import Lake
from assetmatch.serving.auth import hash_key
from assetmatch.serving.feedback import Answer, FeedbackWriter, feedback_row

BODY = {"business": "ga", "requirement": "daily revenue of user", "k": 3}


def config_file(deployment: Settings, folder: Path, serving: dict[str, Any]) -> Path:
    from assetmatch.serving.loadgen import write_config

    folder.mkdir(parents=True, exist_ok=True)
    return write_config(deployment, folder / "assetmatch.yaml", serving)


def wait_for(predicate: Any, timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_a_key_revoked_in_the_config_is_refused_within_the_interval(
    deployment: Settings, tmp_path: Path
) -> None:
    from fastapi.testclient import TestClient

    from assetmatch.serving.app import create_app

    keys = {hash_key("key-a"): ["ga"], hash_key("key-b"): ["ga"]}
    path = config_file(deployment, tmp_path / "cfg", {"api_keys": keys, "reload_interval_s": 0.2})
    app = create_app(load_settings(path), model_source=None)
    with TestClient(app, raise_server_exceptions=False) as client:

        def status(key: str) -> int:
            return int(client.post("/v1/match", json=BODY, headers={"X-API-Key": key}).status_code)

        assert status("key-a") == 200 and status("key-b") == 200
        data = yaml.safe_load(path.read_text())
        del data["serving"]["api_keys"][hash_key("key-a")]
        path.write_text(yaml.safe_dump(data))
        assert wait_for(lambda: status("key-a") == 401), "revoked key still accepted"
        assert status("key-b") == 200
        # a config that no longer parses keeps the keys in force
        path.write_text("serving: {api_keys: [unclosed")
        assert wait_for(
            lambda: 'assetmatch_key_reloads_total{outcome="failed"}' in client.get("/metrics").text
        )
        assert status("key-b") == 200 and status("key-a") == 401


def test_keys_file_adds_and_revokes_keys(deployment: Settings, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from assetmatch.serving.app import create_app

    keys_file = tmp_path / "cfg" / "keys.json"
    keys_file.parent.mkdir(parents=True)
    keys_file.write_text(json.dumps({}))
    path = config_file(deployment, tmp_path / "cfg", {"api_keys_file": "keys.json", "reload_interval_s": 0.2})
    app = create_app(load_settings(path), model_source=None)
    with TestClient(app, raise_server_exceptions=False) as client:

        def status() -> int:
            return int(client.post("/v1/match", json=BODY, headers={"X-API-Key": "new-key"}).status_code)

        assert status() == 401
        keys_file.write_text(json.dumps({hash_key("new-key"): ["ga"]}))
        assert wait_for(lambda: status() == 200), "added key not accepted"
        keys_file.write_text(json.dumps({}))
        assert wait_for(lambda: status() == 401), "revoked key still accepted"


def test_the_spool_folder_sits_beside_the_config_and_is_replayed_from_anywhere(
    deployment: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from assetmatch.serving.app import create_app

    path = config_file(deployment, tmp_path / "cfg", {"reload_interval_s": 0})
    monkeypatch.chdir(tmp_path)
    settings = load_settings(path)
    expected = (tmp_path / "cfg" / ".assetmatch" / "serving" / "feedback-spool").resolve()
    app = create_app(settings, model_source=None)
    assert app.state.ctx.feedback.spool_dir == expected

    # rows spooled by an earlier run (the lake was unwritable at its shutdown) ...
    blocked = tmp_path / "blocked"
    blocked.write_text("not a folder")
    answer = Answer("ga", "daily revenue", ("ga.x",), "champion", "")

    async def spool() -> None:
        writer = FeedbackWriter(Lake(blocked), spool_dir=expected)
        await writer.start()
        writer.add(feedback_row("1" * 32, answer, ["ga.x"]))
        await writer.stop()

    asyncio.run(spool())
    assert len(list(expected.glob("feedback-*.jsonl"))) == 1
    # ... are appended by a restart from another working directory
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    lake = Lake(tmp_path / "lake-restart")
    restarted = create_app(load_settings(path), model_source=None, lake=lake)
    assert asyncio.run(restarted.state.ctx.feedback.replay_spool()) == 1
    assert [r["request_id"] for r in lake.read_arrow(T.FEEDBACK).to_pylist()] == ["1" * 32]
    assert not list(expected.glob("feedback-*.jsonl"))


def test_a_failed_row_is_counted_once_however_many_flushes_fail(tmp_path: Path) -> None:
    from assetmatch.serving.metrics import ServingMetrics

    blocked = tmp_path / "blocked"
    blocked.write_text("not a folder")
    metrics = ServingMetrics()
    answer = Answer("ga", "daily revenue", ("ga.x",), "champion", "")

    async def run() -> None:
        writer = FeedbackWriter(Lake(blocked), spool_dir=tmp_path / "spool", metrics=metrics)
        for i in range(3):
            writer.add(feedback_row(f"{i:032x}", answer, ["ga.x"]))
        for _ in range(4):  # four retries of the same three rows
            assert await writer.flush() == 0
        writer.lake = Lake(tmp_path / "lake")  # the lake is writable again
        assert await writer.flush() == 3

    asyncio.run(run())
    text = metrics.render().decode()
    assert 'assetmatch_feedback_rows_total{outcome="flush_failed"} 3.0' in text
    assert 'assetmatch_feedback_rows_total{outcome="written"} 3.0' in text
