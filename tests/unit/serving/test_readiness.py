"""An app whose first load fails stays up, says why on /readyz and answers 503, never a trace."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from assetmatch.config import Settings
from assetmatch.serving.app import create_app
from assetmatch.serving.auth import hash_key


def test_nothing_published_means_not_ready_and_503(tmp_path: Path) -> None:
    settings = Settings.model_validate(
        {
            "lake": {"uri": str(tmp_path / "lake")},
            "recall": {"index_root": str(tmp_path / "no-index-here")},
            "businesses": [{"name": "ga"}],
            "serving": {"api_keys": {hash_key("k"): ["ga"]}, "reload_interval_s": 0},
        }
    )
    app = create_app(settings, model_source=None, spool_dir=str(tmp_path / "spool"))
    with TestClient(app, raise_server_exceptions=False) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["ready"] is False and "index" in ready.json()["reload_error"].lower()
        assert client.get("/healthz").status_code == 200
        answer = client.post(
            "/v1/match", json={"business": "ga", "requirement": "x"}, headers={"X-API-Key": "k"}
        )
        assert answer.status_code == 503 and answer.json()["error"] == "unavailable"
        assert "Traceback" not in answer.text
        assert "assetmatch_reload_failing 1.0" in client.get("/metrics").text
