"""What the fine ranker did, where users look: the /v1/match response, /metrics and `assetmatch match`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from assetmatch.cli.matching import fine_line
from assetmatch.config import Settings
from assetmatch.matching.types import MatchResult
from assetmatch.serving.metrics import ServingMetrics
from assetmatch.serving.reload import LatestIndexSource

ALL = {"X-API-Key": "key-all"}
SKIPPED = "cascade: the coarse answer is certain or its top table unfamiliar"


class CascadeEngine:
    """The real coarse Matcher, reporting the fine outcome a cascade would: ga fine-ranked 3 tables
    with adapter version 7, gb skipped by the cascade."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.fine_ranker = None

    def match(self, business: str, text: str, k: int = 10, databases: Any = None) -> MatchResult:
        result: MatchResult = self.inner.match(business, text, k, databases)
        if business == "ga":
            result.fine_depth, result.model_version = 3, "7"
        else:
            result.fine_skipped = SKIPPED
        return result


class CascadeIndex(LatestIndexSource):
    def load(self) -> Any:
        return CascadeEngine(super().load())


@pytest.fixture(scope="module")
def cascade_client(deployment: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    from assetmatch.serving.app import create_app

    app = create_app(
        deployment,
        index_source=CascadeIndex(deployment),
        model_source=None,
        spool_dir=str(tmp_path_factory.mktemp("spool")),
    )
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def _post(client: Any, business: str, text: str) -> dict[str, Any]:
    response = client.post("/v1/match", json={"business": business, "requirement": text}, headers=ALL)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_coarse_only_answers_say_no_fine_ranker_ran(client: Any) -> None:
    body = _post(client, "ga", "daily active users by channel")
    assert body["fine_depth"] == 0 and body["fine_skipped"] == ""
    metrics = client.get("/metrics").text
    assert 'assetmatch_fine_requests_total{business="ga",fine="none"}' in metrics
    assert 'assetmatch_fine_pairs_count{business="ga"}' in metrics


def test_response_and_metrics_carry_the_fine_outcome(cascade_client: Any) -> None:
    ran = _post(cascade_client, "ga", "weekly payment amount per region")
    assert ran["fine_depth"] == 3 and ran["fine_skipped"] == "" and ran["model_version"] == "7"
    skipped = _post(cascade_client, "gb", "weekly payment amount per region")
    assert skipped["fine_depth"] == 0 and skipped["fine_skipped"] == SKIPPED
    again = _post(cascade_client, "ga", "weekly payment amount per region")  # the cache answers
    assert again["cached"] and again["fine_depth"] == 3
    metrics = _samples(cascade_client.get("/metrics").text)
    assert metrics['assetmatch_fine_requests_total{business="ga",fine="ran"}'] == 1  # cached: not counted
    assert metrics['assetmatch_fine_requests_total{business="gb",fine="skipped"}'] == 1
    assert metrics['assetmatch_fine_pairs_sum{business="ga"}'] == 3
    assert metrics['assetmatch_fine_pairs_count{business="gb"}'] == 1
    assert metrics['assetmatch_fine_pairs_sum{business="gb"}'] == 0


def test_openapi_documents_the_fields(client: Any) -> None:
    props = client.get("/openapi.json").json()["components"]["schemas"]["MatchResponse"]["properties"]
    assert props["fine_depth"]["type"] == "integer" and props["fine_skipped"]["type"] == "string"


def test_metric_outcomes() -> None:
    metrics = ServingMetrics()
    metrics.fine_answer("ga", 5, "")
    metrics.fine_answer("ga", 0, SKIPPED)
    metrics.fine_answer("gb", 0, "")
    text = _samples(metrics.render().decode())
    assert text['assetmatch_fine_requests_total{business="ga",fine="ran"}'] == 1
    assert text['assetmatch_fine_requests_total{business="ga",fine="skipped"}'] == 1
    assert text['assetmatch_fine_requests_total{business="gb",fine="none"}'] == 1
    assert text['assetmatch_fine_pairs_sum{business="ga"}'] == 5
    assert text['assetmatch_fine_pairs_bucket{business="ga",le="0.0"}'] == 1


def test_cli_line_names_depth_and_adapter_or_why_skipped() -> None:
    ran = MatchResult("ga", "r", [], [], model_version="assetmatch-ranker-ga/4", fine_depth=10)
    assert fine_line(ran) == "fine ranker: 10 tables (adapter assetmatch-ranker-ga v4)"
    assert (
        fine_line(MatchResult("ga", "r", [], [], fine_skipped=SKIPPED)) == f"fine ranker skipped: {SKIPPED}"
    )
    assert fine_line(MatchResult("ga", "r", [], [], model_version="rrf")) == ""


def test_cli_match_without_a_registry_says_so(deployment: Settings, tmp_path: Path) -> None:
    import yaml
    from typer.testing import CliRunner

    from assetmatch.cli import app

    config = tmp_path / "assetmatch.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "lake": {"uri": deployment.lake.uri},
                "recall": {"index_root": deployment.recall.index_root, "paths": ["lexical"]},
                "mlflow": {"tracking_uri": f"sqlite:///{tmp_path / 'absent' / 'mlflow.db'}"},
                "businesses": [b.model_dump() for b in deployment.businesses],
                "feast": {"enabled": False},
            }
        ),
        encoding="utf-8",
    )
    result = CliRunner().invoke(app, ["--config", str(config), "match", "daily revenue", "-b", "ga"])
    assert result.exit_code == 0, result.output
    assert "fine ranker: none (no MLflow registry yet)" in result.output
    assert not (tmp_path / "absent").exists()  # looking did not create a registry


def _samples(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out
